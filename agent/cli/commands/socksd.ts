import type { ParsedArgs } from '../args.ts';
import type { CommandContext } from '../commands.ts';
import { loadOrCreateIdentity } from '../../identity/index.ts';
import { createLogger } from '../../util/log.ts';
import { parseHostPort, formatHostPort, isLoopbackHost } from '../../util/hostport.ts';
import { UsageError } from '../../util/errors.ts';
import { RelayLink } from '../../link/relay-link.ts';
import { startSocksServer } from '../../socks/server.ts';
import { diodeConnector, parseFallback } from '../../client/socks-connector.ts';
import { resolveRelays } from '../relays.ts';

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
  const { identity } = loadOrCreateIdentity(ctx.home);
  const log = createLogger('socksd');
  const link = new RelayLink({ relays, identity, log });
  // Listen first: a taken port is one line and exit 1 before any relay connection.
  const socks = await startSocksServer(listen, { connector: diodeConnector(link, identity, fallback), log });
  link.start();
  process.stdout.write(`socksd ${identity.address} listening on ${formatHostPort({ host: listen.host, port: socks.port })}\n`);
  if (remote) log.warn(`listening beyond loopback (--allow-remote): anyone who can reach ${formatHostPort(listen)} connects with this machine's key ${identity.address}`);
  if (fallback === 'direct') log.info('--fallback direct: names that are not <address>.diode are connected directly from this machine (DNS lookups included)');
  const signal = await ctx.stopSignal;
  log.info(`${signal}: shutting down`);
  await socks.close();
  await link.stop();
  return 0;
}
