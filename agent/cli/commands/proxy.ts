import { finished } from 'node:stream';
import type { Duplex } from 'node:stream';
import type { ParsedArgs } from '../args.ts';
import type { CommandContext } from '../commands.ts';
import { loadOrCreateIdentity } from '../../identity/index.ts';
import { createLogger, logLevelChosen, silentLogger } from '../../util/log.ts';
import { parsePort } from '../../util/hostport.ts';
import { DiodeError, UsageError, errorMessage } from '../../util/errors.ts';
import { parseTargetHost } from '../../client/target.ts';
import { ClientSession } from '../../client/session.ts';
import { LearnedRelays } from '../../link/learned-relays.ts';
import { resolveRelays } from '../relays.ts';
import { NameError } from '../../names/name.ts';

/**
 * Data connections `diode proxy` keeps: none. It makes one stream and exits, so a data connection
 * would be opened for that stream alone (a token round trip, a TCP connect and its answer after
 * the link is up), where the link is there already. (bench/README.md, "diode proxy".)
 */
const PROXY_DATA_POOL = 0;

/**
 * stdin/stdout ↔ a device port (ssh's ProxyCommand). Quiet unless it fails:
 * ssh shows whatever we print on stderr, so a failure is one line and a
 * non-zero exit (set --log-level info or DIODE_LOG=info to see the relay link's log).
 */
export async function run(args: ParsedArgs, ctx: CommandContext): Promise<number> {
  const [host, portText, ...extra] = args.positionals;
  if (!host || !portText || extra.length > 0) throw new UsageError('proxy: write diode proxy <name or address>.diode <port> (as ssh\'s ProxyCommand: diode proxy %h %p)');
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
      if (err instanceof NameError) throw new DiodeError(err.code, `proxy: ${err.message}`);
      throw new DiodeError(err instanceof DiodeError ? err.code : 'EDIAL', `proxy: cannot reach ${host} port ${target.port}: ${errorMessage(err)}`);
    }
    await pipeStdio(tunnel);
    return 0;
  } finally {
    await client.stop();
  }
}

/** stdin → tunnel (its end is a half-close), tunnel → stdout; done when the tunnel's reading side ends. */
function pipeStdio(tunnel: Duplex): Promise<void> {
  return new Promise((resolve, reject) => {
    process.stdin.on('error', () => tunnel.end());
    process.stdin.pipe(tunnel);
    tunnel.pipe(process.stdout);
    finished(tunnel, { writable: false }, (err) => {
      process.stdin.unpipe(tunnel);
      process.stdin.pause();
      if (err) reject(new DiodeError('ECONNRESET', `proxy: the connection broke: ${errorMessage(err)}`));
      else resolve();
    });
  });
}
