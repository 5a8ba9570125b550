import type { ParsedArgs } from '../args.ts';
import type { CommandContext } from '../commands.ts';
import { loadOrCreateIdentity } from '../../identity/index.ts';
import { createLogger } from '../../util/log.ts';
import { parsePublishFlags, toPublished } from '../../device/port-spec.ts';
import { IncomingHandler, defaultAccessCheck, type AccessCheck } from '../../device/incoming.ts';
import { RelayLink } from '../../link/relay-link.ts';
import { LearnedRelays } from '../../link/learned-relays.ts';
import { startUpdates } from '../../update/agent-updates.ts';
import { DEVICE_DATA_POOL } from '../../link/data-pool.ts';
import { describeMappings, sshLine, warnUnreachableTargets } from '../../device/preflight.ts';
import { resolveRelays } from '../relays.ts';
import { formatRelayEntry } from '../../config/relay-entry.ts';
import { UsageError } from '../../util/errors.ts';
import { encodeFrame } from '../../protocol/frames.ts';
import { MAX_ALLOWED_ADDRESSES, MAX_CONTROL_BYTES, MAX_PUBLISHED_PORTS } from '../../protocol/limits.ts';
import type { PublishedPort } from '../../protocol/messages.ts';
import { StreamStats } from '../../ops/stream-stats.ts';
import { baseStatus, parseMetricsFlag, startOps } from '../../ops/run.ts';
import { formatHostPort } from '../../util/hostport.ts';
import { readConfigValue } from '../../config/read.ts';
import { parseNameList } from '../../names/name.ts';
import { NameClaimer } from '../../device/name-claim.ts';
import { writeLinkStatus } from '../../ops/status-file.ts';

export async function run(args: ParsedArgs, ctx: CommandContext): Promise<number> {
  // Parse everything before touching the network: a bad flag never half-starts.
  if (args.positionals.length > 0) {
    throw new UsageError(`publish: unexpected "${args.positionals[0]}"; each port item goes after a flag (-public 22:22 -public 80), several in one comma list (-public 22:22,80)`);
  }
  const mappings = parsePublishFlags({
    public: args.flags.public as string[] | undefined,
    private: args.flags.private as string[] | undefined,
    protected: args.flags.protected as string[] | undefined,
  });
  const relays = resolveRelays(args.flags.relay as string[] | undefined, ctx.home);
  // --name wins over the "name" config key (the image's diode.conf name=).
  const nameFlag = args.flags.name as string[] | undefined;
  const nameText = nameFlag && nameFlag.length > 0 ? nameFlag.join(',') : readConfigValue(ctx.home, 'name');
  const names = nameText ? parseNameList(nameText, nameFlag?.length ? '--name' : 'the name config key') : [];
  const statusFile = args.flags['status-file'] as string | undefined;
  if (statusFile === '') throw new UsageError('publish: --status-file is empty; give the path of the file to write (e.g. /run/diode/link.status)');
  const metrics = parseMetricsFlag(args.flags.metrics);
  // Protected ports: the fleet settings are checked before anything starts.
  const fleet = mappings.some((m) => m.mode === 'protected') ? await import('../../fleet/device.ts') : undefined;
  const settings = fleet?.fleetSettings(ctx.home);
  const { identity } = loadOrCreateIdentity(ctx.home);
  const log = createLogger('publish');
  const membership = settings && fleet!.openFleetMembership(settings, (line) => log.warn(line));
  const check: AccessCheck = (mapping, client) =>
    mapping.mode === 'protected' ? (membership?.isMember(client) ?? false) : defaultAccessCheck(mapping, client);
  const stats = new StreamStats();
  const handler = new IncomingHandler(mappings, log, { identity, check, stats });
  const published = toPublished(mappings);
  const learned = new LearnedRelays(ctx.home, log);
  const link = new RelayLink({ relays, identity, log, publish: published, dataPool: DEVICE_DATA_POOL, onStream: (s, _relay, data) => handler.handle(s, data), learned });
  const claimer = new NameClaimer({ identity, names, log, link });
  const named = names.length > 0 ? ` named ${names.join(', ')}` : '';
  process.stdout.write(`publishing ${describeMappings(mappings)} as ${identity.address}${named} via ${relays.map(formatRelayEntry).join(', ')}\n`);
  const ssh = sshLine(mappings, identity.address);
  if (ssh) process.stdout.write(`from another machine running diode socksd: ${ssh}\n`);
  if (settings) log.info(`protected ports admit members of fleet ${settings.fleet} (via ${settings.rpc}, answers cached ${settings.ttlSeconds} s)`);
  // The relay's limits, checked here first: a set it would refuse is a start-up error (exit 2), not a retry loop.
  checkPublishSet(published);
  const updates = await startUpdates(ctx.home, link, log);
  const ops = await startOps({
    home: ctx.home,
    role: 'publish',
    log,
    metrics,
    status: () => {
      const linkStatus = link.status();
      return {
        ...baseStatus('publish', identity.address),
        connected: linkStatus.connected,
        link: linkStatus,
        ports: mappings.map((m) => ({
          port: m.remotePort,
          mode: m.mode,
          local: formatHostPort({ host: m.host, port: m.localPort }),
          ...(m.mode === 'private' ? { allowed: m.allow.length } : {}),
        })),
        streams: stats.snapshot(),
        ...(names.length > 0 ? { names: claimer.status() } : {}),
        ...(stats.lastError ? { lastError: stats.lastError } : {}),
        update: updates.status(),
      };
    },
  });
  if (statusFile !== undefined) writeLinkStatus(statusFile, link, relays, log);
  link.start();
  // Checks that warn, never stop: a Pi's services and network may come up after the agent.
  void warnUnreachableTargets(mappings, (line) => log.warn(line));
  if (settings) void fleet!.warnUnreachableRpc(settings.rpc, (line) => log.warn(line));
  // A relay that refuses the set is that relay failing: the link passes it over and tries the others.
  // An installed update: stop cleanly; the service manager starts the launcher, which runs it.
  const outcome = await Promise.race([ctx.stopSignal, updates.restart.then((v) => `update ${v} installed`)]);
  log.info(`${outcome}: shutting down`);
  claimer.stop();
  updates.stop();
  await ops.close();
  await link.stop();
  await membership?.close();
  return 0;
}

/** The limits of docs/PROTOCOL.md §5, checked before anything connects. */
export function checkPublishSet(ports: PublishedPort[]): void {
  if (ports.length > MAX_PUBLISHED_PORTS) throw new UsageError(`publish: ${ports.length} ports; at most ${MAX_PUBLISHED_PORTS} may be published`);
  for (const p of ports) {
    if ((p.allow?.length ?? 0) > MAX_ALLOWED_ADDRESSES) {
      throw new UsageError(`publish: port ${p.port} lists ${p.allow!.length} addresses; at most ${MAX_ALLOWED_ADDRESSES} per port`);
    }
  }
  const bytes = encodeFrame({ t: 'publish', ports }).length - 4;
  if (bytes > MAX_CONTROL_BYTES) throw new UsageError(`publish: the publish set is ${bytes} bytes of JSON; at most ${MAX_CONTROL_BYTES} (fewer allow-list addresses in all)`);
}
