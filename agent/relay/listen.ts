import { createServer, type Server } from 'node:net';
import type { Identity } from '../identity/index.ts';
import type { Logger } from '../util/log.ts';
import type { HostPort } from '../util/hostport.ts';
import { loadOrCreateRelayCert } from './cert.ts';
import { RelayServer } from './server.ts';
import { listenOn } from '../util/listen.ts';
import { AcceptGuard } from './admission.ts';
import { DEFAULT_RELAY_LIMITS, validateRelayLimits, type RelayLimits } from './config.ts';
import { Registry } from './registry.ts';
import { RelayStats } from './stats.ts';
import type { Directory } from './directory.ts';
import { MemoryNameTable, type NameTable } from './names.ts';
import { NameSnapshot } from './name-snapshot.ts';
import { join } from 'node:path';
import type { ClusterConfig } from './cluster/config.ts';
import { ReleaseShelf } from './releases.ts';

/** In a relay's state directory: its names, kept across restarts (relay/name-snapshot.ts). */
export const RELAY_NAMES_FILE = 'relay-names.json';

/**
 * The agent port's accept queue. A relay busy with a fleet's handshakes can
 * spend a second or more between two accepts; with Node's default of 511 the
 * kernel then dropped SYNs, and each such device waited out its 3 s connect
 * timeout before trying again (seen: 9,560 of those in a 10,000-device
 * return). The kernel caps it at net.core.somaxconn (4096 by default).
 */
export const AGENT_LISTEN_BACKLOG = 4096;

export interface RunningRelay {
  server: RelayServer;
  releases?: ReleaseShelf;
  listener: Server;
  port: number;
  close(): Promise<void>;
}

export interface StartRelayOptions {
  listen: HostPort;
  home: string;
  identity: Identity;
  log: Logger;
  limits?: Partial<RelayLimits>;
  fdLimit?: number;
  /** Join a relay cluster (--cluster): the address → relay map in Redis, links to the other relays. */
  cluster?: ClusterConfig;
  /** Serve the releases in this directory to agents (--releases DIR). */
  releases?: string;
}

/** Listens for agents on host:port (port 0 picks a free one) and hands each connection to a RelayServer. */
export async function startRelay(options: StartRelayOptions): Promise<RunningRelay> {
  const cert = await loadOrCreateRelayCert(options.home, options.identity);
  if (cert.made) options.log.info(`TLS certificate made (Ed25519, its key bound to ${options.identity.address}) in ${options.home}`);
  const registry = new Registry();
  const stats = new RelayStats();
  let directory: Directory | undefined;
  let names: NameTable | undefined;
  // Resolved here because a cluster's relay links need the window bound before the server exists.
  const limits = validateRelayLimits({ ...DEFAULT_RELAY_LIMITS, ...options.limits });
  if (options.cluster) {
    // Loaded only for a cluster member: a relay on its own never loads ioredis.
    const { ClusterDirectory } = await import('./cluster/directory.ts');
    const cluster = new ClusterDirectory({ sessions: registry, identity: options.identity, config: options.cluster, log: options.log.child('cluster'), stats, maxWindow: limits.maxStreamWindow });
    const { ClusterNameTable } = await import('./cluster/names.ts');
    names = new ClusterNameTable({ store: cluster.store, sessions: registry, holdMs: limits.nameHoldMs, keyPrefix: options.cluster.keyPrefix, log: options.log.child('cluster'), stats });
    directory = cluster;
  } else {
    // On its own, a relay keeps its names in its state directory: an upgrade's restart frees none.
    names = new MemoryNameTable({ sessions: registry, holdMs: limits.nameHoldMs, snapshot: new NameSnapshot(join(options.home, RELAY_NAMES_FILE), options.log) });
  }
  const releases = options.releases !== undefined ? new ReleaseShelf(options.releases, options.log.child('releases'), stats) : undefined;
  await releases?.start();
  const server = new RelayServer({ identity: options.identity, cert, log: options.log, limits, registry, directory, names, stats, releases });
  await server.directory.start();
  await server.names.start();
  const listener = createServer({ noDelay: true }, (socket) => server.handleSocket(socket));
  let port: number;
  try {
    port = await listenOn(listener, options.listen, undefined, AGENT_LISTEN_BACKLOG);
  } catch (err) {
    await server.names.close();
    await server.directory.close();
    throw err;
  }
  // From here on an 'error' (EMFILE at accept) pauses the listener instead of crashing the process.
  const guard = new AcceptGuard({ server: listener, host: options.listen.host, port, backlog: AGENT_LISTEN_BACKLOG, pauseMs: server.limits.acceptPauseMs, stats: server.stats, log: options.log, fdLimit: options.fdLimit });
  return {
    server,
    releases,
    listener,
    port,
    close: () =>
      new Promise<void>((resolve) => {
        guard.stop();
        server.close();
        if (listener.listening) listener.close(() => resolve());
        else resolve();
      }).then(async () => {
        await server.names.close();
        await server.directory.close();
      }),
  };
}
