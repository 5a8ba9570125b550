import type { ParsedArgs } from '../args.ts';
import type { CommandContext } from '../commands.ts';
import { loadOrCreateIdentity } from '../../identity/index.ts';
import { createLogger } from '../../util/log.ts';
import { parseHostPort, formatHostPort, isLoopbackHost } from '../../util/hostport.ts';
import { UsageError, errorMessage } from '../../util/errors.ts';
import { startSocksServer, SocksRefusal, type SocksConnector } from '../../socks/server.ts';
import { StreamStats } from '../../ops/stream-stats.ts';
import { baseStatus, parseMetricsFlag, startOps } from '../../ops/run.ts';
import { diodeConnector, parseFallback } from '../../client/socks-connector.ts';
import { clientLinks, currentLink } from '../../client/lookup.ts';
import { LearnedRelays } from '../../link/learned-relays.ts';
import { clientResolver } from '../../client/names.ts';
import { resolveRelays } from '../relays.ts';
import { clientStreamService } from '../../client/stream-service.ts';

export async function run(args: ParsedArgs, ctx: CommandContext): Promise<number> {
  if (args.positionals.length > 0) throw new UsageError(`socksd: unexpected "${args.positionals[0]}"; flags start with - (diode socksd --help)`);
  const listen = parseHostPort(args.flags.listen as string, '--listen', '127.0.0.1', true);
  const remote = !isLoopbackHost(listen.host);
  if (remote && !args.flags['allow-remote']) {
    throw new UsageError(
      `socksd: --listen ${formatHostPort(listen)} is beyond loopback: anyone who reaches it would act with this machine's key; add --allow-remote if that is what you want`,
    );
  }
  const fallback = parseFallback(args.flags.fallback as string);
  const relays = resolveRelays(args.flags.relay as string[] | undefined, ctx.home);
  const metrics = parseMetricsFlag(args.flags.metrics);
  const { identity } = loadOrCreateIdentity(ctx.home);
  const log = createLogger('socksd');
  const links = clientLinks(relays, identity, log, { learned: new LearnedRelays(ctx.home, log) });
  const stats = new StreamStats();
  const dial = diodeConnector(links, identity, clientResolver(ctx.home, links, (line) => log.info(line)), fallback);
  const connector: SocksConnector = (request, from) =>
    dial(request, from).catch((err: unknown) => {
      stats.fail(err instanceof SocksRefusal && err.reason ? err.reason : 'error', `${request.host}:${request.port}: ${errorMessage(err)}`);
      throw err;
    });
  // Listen first: a taken port is one line and exit 1 before any relay connection.
  const socks = await startSocksServer(listen, { connector, log, onOpen: (socket) => stats.track(socket) });
  for (const link of links) link.start();
  const listening = formatHostPort({ host: listen.host, port: socks.port });
  process.stdout.write(`socksd ${identity.address} listening on ${listening}\n`);
  if (remote) log.warn(`listening beyond loopback (--allow-remote): anyone who can reach ${formatHostPort(listen)} connects with this machine's key ${identity.address}`);
  if (fallback === 'direct') log.info('--fallback direct: names that are not <name>.diode or <address>.diode are connected directly from this machine (DNS lookups included)');
  const ops = await startOps({
    home: ctx.home,
    role: 'socksd',
    log,
    metrics,
    streams: clientStreamService({ home: ctx.home, identity, relays, links, stats }),
    status: () => {
      const linkStatus = currentLink(links).status();
      return {
        ...baseStatus('socksd', identity.address),
        connected: linkStatus.connected,
        link: linkStatus,
        listening: [`socks ${listening}`],
        streams: stats.snapshot(),
        ...(stats.lastError ? { lastError: stats.lastError } : {}),
      };
    },
  });
  const signal = await ctx.stopSignal;
  log.info(`${signal}: shutting down`);
  await ops.close();
  await socks.close();
  await Promise.all(links.map((l) => l.stop()));
  return 0;
}
