import { readFileSync, statSync } from 'node:fs';
import { UsageError } from '../../util/errors.ts';
import { parseHostPort, formatHostPort, type HostPort } from '../../util/hostport.ts';
import { parseAddress } from '../../identity/index.ts';

/**
 * Where the cluster's shared address → relay map lives, as given to
 * `--cluster`:
 *
 *   redis://[user@]host:port[/db]           one Redis (rediss:// for TLS)
 *   redis://h1:p1,redis://h2:p2,...         a Redis Cluster (its seed nodes)
 *   redis+cluster://[user@]h1:p1[,h2:p2...] the same, written once
 *   redis+sentinel://[user@]h1:p1[,h2:p2...]/<master name>[/db]
 *
 * The password never comes from the URL (every user of the machine can read
 * a command line in /proc): it comes from --cluster-password-file or the
 * environment (CLUSTER_PASSWORD_ENV).
 */
export type RedisTarget =
  | { kind: 'single'; url: string; password?: string }
  | { kind: 'cluster'; nodes: HostPort[]; username?: string; password?: string; tls: boolean }
  | { kind: 'sentinel'; sentinels: HostPort[]; name: string; db: number; username?: string; password?: string; tls: boolean };

export interface ClusterConfig {
  redis: RedisTarget;
  /** Where other relays reach this one (what it writes into the map). */
  advertise: HostPort;
  /** Where agents reach this one, as the cluster's relays name it to their agents (default: advertise). */
  advertiseAgents?: HostPort;
  /** Checksummed addresses of the relays that may link to this one (may include its own). */
  allow: ReadonlySet<string>;
  /** ms: a map entry lives this long unless its relay refreshes it. */
  entryTtlMs: number;
  /** ms: how often a relay refreshes the entries of the devices it holds. */
  refreshIntervalMs: number;
  /** Prefix of every key and channel, so one Redis can serve several clusters. */
  keyPrefix: string;
}

/** Defaults: an entry survives two missed refreshes; 2 Redis calls per device per minute at rest. */
export const DEFAULT_CLUSTER_TIMING = Object.freeze({
  entryTtlMs: 90_000,
  refreshIntervalMs: 30_000,
  keyPrefix: 'diode:',
});

export function validateClusterConfig(config: ClusterConfig): ClusterConfig {
  if (!(config.refreshIntervalMs > 0)) throw new UsageError('cluster: the refresh interval must be positive');
  if (config.entryTtlMs <= config.refreshIntervalMs) {
    throw new UsageError(`cluster: the entry TTL (${config.entryTtlMs} ms) must exceed the refresh interval (${config.refreshIntervalMs} ms)`);
  }
  if (config.advertise.port === 0) throw new UsageError('--advertise: give the port other relays reach this one on (not 0)');
  return config;
}

/** The environment variable a relay reads the Redis password from (when --cluster-password-file is not given). */
export const CLUSTER_PASSWORD_ENV = 'DIODE_CLUSTER_PASSWORD';

/** The flags of `diode relay` that make it a cluster member. */
export interface ClusterFlags {
  cluster?: string;
  advertise?: string;
  'advertise-agents'?: string;
  'cluster-allow'?: string | string[];
  'cluster-password-file'?: string;
}

/**
 * The Redis password: the first line of --cluster-password-file (refused if
 * every user may read the file), else $DIODE_CLUSTER_PASSWORD, else none.
 */
export function clusterPassword(file: string | undefined, env: NodeJS.ProcessEnv = process.env): string | undefined {
  if (file === undefined) return env[CLUSTER_PASSWORD_ENV] || undefined;
  let text: string;
  try {
    if ((statSync(file).mode & 0o004) !== 0) throw new UsageError(`--cluster-password-file: ${file} is readable by every user of this machine; chmod 600 (or 640 for the relay's group) it`);
    text = readFileSync(file, 'utf8');
  } catch (err) {
    if (err instanceof UsageError) throw err;
    throw new UsageError(`--cluster-password-file: cannot read ${file} (${(err as NodeJS.ErrnoException).code ?? String(err)}); give a file holding the Redis password`);
  }
  const password = text.split(/\r?\n/)[0];
  if (!password) throw new UsageError(`--cluster-password-file: ${file} is empty; its first line is the Redis password`);
  return password;
}

/** The target with the password given apart from the URL. */
function withPassword(target: RedisTarget, password: string | undefined): RedisTarget {
  return password === undefined ? target : { ...target, password };
}

/** Builds the cluster config from the flags; undefined without --cluster (a relay on its own, as before). */
export function clusterConfigFromFlags(flags: ClusterFlags): ClusterConfig | undefined {
  if (!flags.cluster) {
    if (flags.advertise || flags['cluster-allow'] || flags['advertise-agents'] || flags['cluster-password-file']) {
      throw new UsageError('--advertise, --advertise-agents, --cluster-allow and --cluster-password-file need --cluster redis://host:port');
    }
    return undefined;
  }
  if (!flags.advertise) throw new UsageError('--cluster needs --advertise host:port: where the other relays reach this one');
  const allowText = ([] as string[]).concat(flags['cluster-allow'] ?? []).join(',');
  const allow = parseAllowList(allowText);
  if (allow.size === 0) throw new UsageError('--cluster needs --cluster-allow 0x...,0x...: the addresses of the relays in the cluster (diode address --home <relay home>)');
  return validateClusterConfig({
    redis: withPassword(parseRedisTarget(flags.cluster), clusterPassword(flags['cluster-password-file'])),
    advertise: parseHostPort(flags.advertise, '--advertise'),
    ...(flags['advertise-agents'] ? { advertiseAgents: advertisedForAgents(flags['advertise-agents']) } : {}),
    allow,
    ...DEFAULT_CLUSTER_TIMING,
  });
}

/** --advertise-agents: a host agents can dial (no wildcard, no port 0). */
function advertisedForAgents(text: string): HostPort {
  const at = parseHostPort(text, '--advertise-agents');
  if (at.host === '0.0.0.0' || at.host === '::') throw new UsageError(`--advertise-agents: "${text}" is not an address agents can dial; give this relay's public name or IP`);
  return at;
}

export function parseAllowList(text: string): Set<string> {
  const out = new Set<string>();
  for (const item of text.split(',').map((s) => s.trim()).filter(Boolean)) {
    out.add(parseAddress(item, '--cluster-allow'));
  }
  return out;
}

const SCHEMES = /^(rediss?|redis\+cluster|rediss\+cluster|redis\+sentinel|rediss\+sentinel):\/\//;

/** A password in a --cluster URL: refused, with where it goes instead. */
function passwordInUrl(text: string): UsageError {
  return new UsageError(
    `--cluster: "${describePasswordless(text)}" holds a password, which every user of this machine can read in its command line (and the unit or relay.conf keeps it); ` +
      `put it in a file given with --cluster-password-file FILE, or in $${CLUSTER_PASSWORD_ENV}, and leave it out of the URL (a user name may stay)`,
  );
}

/** The URL text with whatever stood between ":" and "@" of its credentials blanked. */
function describePasswordless(text: string): string {
  return text.replace(/(\/\/[^:@/]*):[^@/]*@/g, '$1:***@');
}

export function parseRedisTarget(text: string): RedisTarget {
  const trimmed = text.trim();
  const scheme = SCHEMES.exec(trimmed)?.[1];
  if (!scheme) throw new UsageError(`--cluster: "${text}" must start with redis://, rediss://, redis+cluster:// or redis+sentinel://`);
  const tls = scheme.startsWith('rediss');
  if (scheme.endsWith('+cluster') || scheme.endsWith('+sentinel')) {
    const rest = trimmed.slice(scheme.length + 3);
    const { username, password, hosts } = splitCredentials(rest);
    if (password !== undefined) throw passwordInUrl(text);
    const [list, ...path] = hosts.split('/');
    const nodes = list.split(',').filter(Boolean).map((h) => parseHostPort(h, '--cluster'));
    if (nodes.length === 0) throw new UsageError(`--cluster: "${text}" names no host`);
    if (scheme.endsWith('+cluster')) {
      if (path.some(Boolean)) throw new UsageError(`--cluster: a Redis Cluster has no database or name in its URL ("${text}")`);
      return { kind: 'cluster', nodes, username, password, tls };
    }
    const name = path[0];
    if (!name) throw new UsageError(`--cluster: a Sentinel URL ends with the master's name: redis+sentinel://host:26379/mymaster ("${text}")`);
    const db = path[1] ? Number(path[1]) : 0;
    if (!Number.isInteger(db) || db < 0) throw new UsageError(`--cluster: "${path[1]}" is not a database number`);
    return { kind: 'sentinel', sentinels: nodes, name, db, username, password, tls };
  }
  const urls = trimmed.split(',').map((s) => s.trim()).filter(Boolean);
  for (const url of urls) checkRedisUrl(url);
  if (urls.some((u) => new URL(u).password)) throw passwordInUrl(text);
  if (urls.length === 1) return { kind: 'single', url: urls[0] };
  // Several plain URLs: the seed nodes of a Redis Cluster (credentials from the first).
  const first = new URL(urls[0]);
  return {
    kind: 'cluster',
    nodes: urls.map((u) => {
      const url = new URL(u);
      return { host: url.hostname.replace(/^\[|\]$/g, ''), port: Number(url.port || 6379) };
    }),
    username: first.username ? decodeURIComponent(first.username) : undefined,
    tls: first.protocol === 'rediss:',
  };
}

function checkRedisUrl(text: string): void {
  let url: URL;
  try {
    url = new URL(text);
  } catch {
    throw new UsageError(`--cluster: "${text}" is not a URL`);
  }
  if (url.protocol !== 'redis:' && url.protocol !== 'rediss:') throw new UsageError(`--cluster: "${text}" must be redis://host:port`);
  if (!url.hostname) throw new UsageError(`--cluster: "${text}" has no host`);
}

function splitCredentials(rest: string): { username?: string; password?: string; hosts: string } {
  const at = rest.lastIndexOf('@');
  if (at < 0) return { hosts: rest };
  const credentials = rest.slice(0, at);
  const colon = credentials.indexOf(':');
  const username = decodeURIComponent(colon < 0 ? credentials : credentials.slice(0, colon)) || undefined;
  const password = colon < 0 ? undefined : decodeURIComponent(credentials.slice(colon + 1));
  return { username, password, hosts: rest.slice(at + 1) };
}

/** The target in a log line, without its password. */
export function describeRedisTarget(target: RedisTarget): string {
  if (target.kind === 'single') {
    const url = new URL(target.url);
    if (url.password) url.password = '***';
    return url.toString();
  }
  if (target.kind === 'cluster') return `Redis Cluster ${target.nodes.map(formatHostPort).join(',')}`;
  return `Sentinel ${target.sentinels.map(formatHostPort).join(',')} master ${target.name}`;
}
