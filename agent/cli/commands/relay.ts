import type { ParsedArgs } from '../args.ts';
import type { CommandContext } from '../commands.ts';
import { loadOrCreateIdentity } from '../../identity/index.ts';
import { parseHostPort, formatHostPort } from '../../util/hostport.ts';
import { createLogger } from '../../util/log.ts';
import { startRelay } from '../../relay/listen.ts';

export async function run(args: ParsedArgs, ctx: CommandContext): Promise<number> {
  const listen = parseHostPort(args.flags.listen as string, '--listen', '0.0.0.0', true);
  const { identity } = loadOrCreateIdentity(ctx.home);
  const log = createLogger('relay');
  const relay = await startRelay({ listen, home: ctx.home, identity, log });
  process.stdout.write(`relay ${identity.address} listening on ${formatHostPort({ host: listen.host, port: relay.port })}\n`);
  const signal = await ctx.stopSignal;
  log.info(`${signal}: shutting down`);
  await relay.close();
  return 0;
}
