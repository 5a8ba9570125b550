import type { ParsedArgs } from '../args.ts';
import type { CommandContext } from '../commands.ts';
import { loadOrCreateIdentity } from '../../identity/index.ts';
import { parseHostPort, formatHostPort } from '../../util/hostport.ts';
import { createLogger } from '../../util/log.ts';
import { UsageError } from '../../util/errors.ts';
import { startRelay } from '../../relay/listen.ts';
import { relayLimitsFromFlags, type RelayLimitFlags } from '../../relay/config.ts';
import { baseStatus, parseMetricsFlag, startOps } from '../../ops/run.ts';
import { gatewayConfigFromFlags, gatewayEnabled, type GatewayFlags } from '../../gateway/config.ts';
import { clusterConfigFromFlags, describeRedisTarget, type ClusterFlags } from '../../relay/cluster/config.ts';
import { RETIRED_EXIT_CODE, Retirement, parseRetireOrder, readRetireOrder, retiredPath, writeRetireOrder, type RetireOrder } from '../../relay/retire.ts';
import { handOverRetirement, retireOrderPath } from '../../relay/retire-running.ts';
import { errorMessage } from '../../util/errors.ts';
import { rmSync } from 'node:fs';

export async function run(args: ParsedArgs, ctx: CommandContext): Promise<number> {
  if (args.positionals.length > 0) throw new UsageError(`relay: unexpected "${args.positionals[0]}"; flags start with - (diode relay --help)`);
  const listen = parseHostPort(args.flags.listen as string, '--listen', '0.0.0.0', true);
  const gatewayConfig = gatewayConfigFromFlags(args.flags as GatewayFlags);
  const limits = relayLimitsFromFlags(args.flags as RelayLimitFlags);
  const cluster = clusterConfigFromFlags(args.flags as ClusterFlags);
  const metrics = parseMetricsFlag(args.flags.metrics);
  const { identity } = loadOrCreateIdentity(ctx.home);
  const order = parseRetireOrder(args.flags['retire-to'] as string[] | undefined, args.flags['retire-deadline'] as string | undefined, identity.address);
  // A relay of this home already runs: the order is for it (a command on a running relay).
  if (order && (await handOverRetirement(ctx.home, order, (line) => process.stdout.write(line + '\n')))) return 0;
  const log = createLogger('relay');
  // A retirement survives restarts: a relay that retired keeps telling agents to move instead of serving.
  const retired = order ?? readRetireOrder(retiredPath(ctx.home), identity.address);
  if (order) writeRetireOrder(retiredPath(ctx.home), order);
  const releasesDir = args.flags.releases as string | undefined;
  if (releasesDir === '') throw new UsageError('--releases is empty; give the directory of the releases to serve');
  const relay = await startRelay({ listen, home: ctx.home, identity, log, limits, cluster, releases: releasesDir });
  const listening = [`agents ${formatHostPort({ host: listen.host, port: relay.port })}`];
  process.stdout.write(`relay ${identity.address} listening on ${formatHostPort({ host: listen.host, port: relay.port })}\n`);
  // What devices and clients should be given: the pinned form refuses any other relay at that host:port.
  const wildcard = listen.host === '0.0.0.0' || listen.host === '::';
  const pinned = `${identity.address}@${formatHostPort({ host: wildcard ? 'HOST' : listen.host, port: relay.port })}`;
  process.stdout.write(`pinned form for devices: --relay ${pinned}${wildcard ? " (HOST: this relay's public name or IP)" : ''}\n`);
  if (cluster) {
    process.stdout.write(
      `cluster ${describeRedisTarget(cluster.redis)}: advertised as ${formatHostPort(cluster.advertise)}, ${cluster.allow.size} relay address${cluster.allow.size === 1 ? '' : 'es'} allowed\n`,
    );
  }
  let gateway;
  if (gatewayEnabled(gatewayConfig)) {
    // Loaded only when asked for: a plain relay does not carry the HTTP gateway.
    const { startGateway } = await import('../../gateway/gateway.ts');
    gateway = await startGateway(relay.server, gatewayConfig, log.child('gateway'));
    for (const [name, at] of Object.entries(gateway.listening)) {
      listening.push(`gateway ${name} ${formatHostPort(at)}`);
      process.stdout.write(`gateway ${name} listening on ${formatHostPort(at)}\n`);
    }
  }
  const server = relay.server;
  let retirement: Retirement | undefined;
  let retiredNow: (how: 'retired') => void = () => {};
  const retiredDone = new Promise<'retired'>((resolve) => (retiredNow = resolve));
  const retire = (how: RetireOrder): void => {
    if (retirement) return void log.info('retire: this relay retires already; the new order is ignored');
    retirement = new Retirement(server, how, log);
    void retirement.start();
    void retirement.done.then(() => retiredNow('retired'));
  };
  if (retired) {
    if (!order) log.warn(`this relay retired (${retiredPath(ctx.home)}): it tells its agents to move and exits when none is left; delete that file to serve again`);
    retire(retired);
  }
  // SIGUSR2: `diode relay --retire-to ...` run for this home left the order in a file for us.
  const onRetireSignal = () => {
    try {
      const path = retireOrderPath(ctx.home, process.pid);
      const handed = readRetireOrder(path, identity.address);
      rmSync(path, { force: true });
      if (!handed) return void log.warn(`SIGUSR2: no retirement order in ${retireOrderPath(ctx.home, process.pid)}; nothing done`);
      writeRetireOrder(retiredPath(ctx.home), handed);
      retire(handed);
    } catch (err) {
      log.error(`SIGUSR2: ${errorMessage(err)}`);
    }
  };
  process.on('SIGUSR2', onRetireSignal);
  // SIGHUP: read --releases DIR again now (a new release was copied there).
  const onHangup = () => void relay.releases?.rescan();
  process.on('SIGHUP', onHangup);
  const ops = await startOps({
    home: ctx.home,
    role: 'relay',
    log,
    metrics,
    relayStats: server.stats,
    status: () => {
      const counters = server.stats.snapshot();
      const failed = Object.fromEntries(Object.entries(counters).filter(([k]) => k.startsWith('route_')).map(([k, v]) => [k.slice('route_'.length), v]));
      return {
        ...baseStatus('relay', identity.address),
        connected: relay.listener.listening,
        listening,
        sessions: server.registry.size,
        buffered: server.holds.used,
        streams: { opened: server.stats.get('stream_routed'), open: server.streamsOpen, failed, bytes: server.traffic.totals() },
        counters,
        ...(retirement ? { retiring: retirement.status() } : {}),
      };
    },
  });
  const signal = await Promise.race([ctx.stopSignal, retiredDone]);
  process.off('SIGUSR2', onRetireSignal);
  process.off('SIGHUP', onHangup);
  await ops.close();
  log.info(`${signal === 'retired' ? 'retirement complete' : signal}: shutting down; counters ${JSON.stringify(relay.server.stats.snapshot())}`);
  await gateway?.close();
  await relay.close();
  return signal === 'retired' ? RETIRED_EXIT_CODE : 0;
}
