import type { ParsedArgs } from '../args.ts';
import type { CommandContext } from '../commands.ts';
import { UsageError } from '../../util/errors.ts';
import { escapeText } from '../../util/escape.ts';
import { createLogger, logLevelChosen } from '../../util/log.ts';
import { streamFromAgent } from '../../client/agent-stream.ts';
import { pipeStdio } from '../../client/stdio-pipe.ts';

/**
 * stdin/stdout ↔ a device port (ssh's ProxyCommand). Quiet unless it fails:
 * ssh shows whatever we print on stderr, so a failure is one line and a
 * non-zero exit.
 *
 * Started once per ssh connection, so it starts light: when a socksd or bind
 * of this user runs with this state directory (same key; same relays), it
 * asks that agent for the stream through the agent's stream socket
 * (ops/stream-protocol.ts) and its relay session, which is up already: no
 * TCP, TLS and hello to the relay, and none of that code loaded here. Else
 * (none runs, a stale socket, the agent refuses) it opens a relay session
 * of its own, as it always did (client/proxy-session.ts).
 */
export async function run(args: ParsedArgs, ctx: CommandContext): Promise<number> {
  const [host, portText, ...extra] = args.positionals;
  if (!host || !portText || extra.length > 0) throw new UsageError('proxy: write diode proxy <name or address>.diode <port> (as ssh\'s ProxyCommand: diode proxy %h %p)');
  const relay = args.flags.relay as string[] | undefined;
  const viaAgent = await streamFromAgent(ctx.home, { host, port: portText, ...(relay ? { relay } : {}) }, (line) => process.stderr.write(`diode: ${escapeText(line)}\n`));
  if (viaAgent) {
    if (logLevelChosen()) createLogger('proxy').info(`through the running ${viaAgent.role} (pid ${viaAgent.pid}) and its relay session`);
    await pipeStdio(viaAgent.socket, viaAgent.broke);
    return 0;
  }
  const { proxyOwnSession } = await import('../../client/proxy-session.ts');
  return proxyOwnSession(args, ctx, host, portText);
}
