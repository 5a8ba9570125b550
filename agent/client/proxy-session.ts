import type { Duplex } from 'node:stream';
import type { ParsedArgs } from '../cli/args.ts';
import type { CommandContext } from '../cli/commands.ts';
import { loadOrCreateIdentity } from '../identity/index.ts';
import { createLogger, logLevelChosen, silentLogger } from '../util/log.ts';
import { parsePort } from '../util/hostport.ts';
import { parseTargetHost } from './target.ts';
import { ClientSession } from './session.ts';
import { LearnedRelays } from '../link/learned-relays.ts';
import { resolveRelays } from '../cli/relays.ts';
import { pipeStdio } from './stdio-pipe.ts';
import { proxyDialError } from './proxy-errors.ts';

/**
 * Data connections `diode proxy` keeps: none. It makes one stream and exits, so a data connection
 * would be opened for that stream alone (a token round trip, a TCP connect and its answer after
 * the link is up), where the link is there already. (bench/README.md, "diode proxy".)
 */
const PROXY_DATA_POOL = 0;

/**
 * `diode proxy` with a relay session of its own (no running agent took the
 * stream): stdin/stdout ↔ the device port. Quiet unless it fails (set
 * --log-level info or DIODE_LOG=info to see the relay link's log).
 */
export async function proxyOwnSession(args: ParsedArgs, ctx: CommandContext, host: string, portText: string): Promise<number> {
  const target = parseTargetHost(host, parsePort(portText, 'proxy: port'), 'proxy');
  const relays = resolveRelays(args.flags.relay as string[] | undefined, ctx.home);
  const { identity } = loadOrCreateIdentity(ctx.home);
  const log = logLevelChosen() ? createLogger('proxy') : silentLogger;
  // Learns and follows as the long-running agents do: a laptop that only ever runs ssh (through proxy) still finds a relay that moved.
  // The line about a newly pinned name goes to stderr even when quiet: ssh shows it, as its own "Permanently added".
  // One-shot: no warm pool of data connections (see PROXY_DATA_POOL).
  const client = new ClientSession({ relays, identity, log, home: ctx.home, learned: new LearnedRelays(ctx.home, log), dataPool: PROXY_DATA_POOL, notice: (line) => process.stderr.write(`diode: ${line}\n`) });
  try {
    let tunnel: Duplex;
    try {
      tunnel = await client.dial(target);
    } catch (err) {
      throw proxyDialError(err, host, target.port);
    }
    await pipeStdio(tunnel);
    return 0;
  } finally {
    await client.stop();
  }
}
