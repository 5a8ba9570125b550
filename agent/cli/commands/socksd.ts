import type { ParsedArgs } from '../args.ts';
import type { CommandContext } from '../commands.ts';
import { loadOrCreateIdentity } from '../../identity/index.ts';
import { createLogger } from '../../util/log.ts';
import { parseHostPort, formatHostPort } from '../../util/hostport.ts';
import { RelayLink } from '../../link/relay-link.ts';
import { startSocksServer } from '../../socks/server.ts';
import { diodeConnector } from '../../client/socks-connector.ts';
import { resolveRelays } from '../relays.ts';

export async function run(args: ParsedArgs, ctx: CommandContext): Promise<number> {
  const listen = parseHostPort(args.flags.listen as string, '--listen', '127.0.0.1', true);
  const relays = resolveRelays(args.flags.relay as string[] | undefined, ctx.home);
  const { identity } = loadOrCreateIdentity(ctx.home);
  const log = createLogger('socksd');
  const link = new RelayLink({ relays, identity, log });
  link.start();
  const socks = await startSocksServer(listen, { connector: diodeConnector(link, identity), log });
  process.stdout.write(`socksd ${identity.address} listening on ${formatHostPort({ host: listen.host, port: socks.port })}\n`);
  const signal = await ctx.stopSignal;
  log.info(`${signal}: shutting down`);
  await socks.close();
  await link.stop();
  return 0;
}
