import type { ParsedArgs } from '../args.ts';
import type { CommandContext } from '../commands.ts';
import { loadOrCreateIdentity } from '../../identity/index.ts';
import { createLogger, logLevelChosen, silentLogger } from '../../util/log.ts';
import { DiodeError, UsageError, errorMessage } from '../../util/errors.ts';
import { RelayLink } from '../../link/relay-link.ts';
import { queryDevice, pingDevice } from '../../client/query.ts';
import { formatHostPort } from '../../util/hostport.ts';
import { resolveRelays } from '../relays.ts';
import { parseTargetHost } from '../../client/target.ts';
import { clientResolver } from '../../client/names.ts';
import { NameError } from '../../names/name.ts';

/** Round trips --ping measures unless --count says otherwise. */
export const DEFAULT_PING_COUNT = 3;
const MAX_PING_COUNT = 100;

/**
 * Exit status when the answer is unknown: no relay answered, or the query or
 * a ping failed. Not 1, which says "offline": a script watching a device
 * must not report it down because its own relay is unreachable.
 */
export const QUERY_UNKNOWN_EXIT = 3;

/** `diode query <name or 0x<address>> [--ping]`: exit 0 online, 1 offline, 3 unknown (one line on stderr), 2 usage. */
export async function run(args: ParsedArgs, ctx: CommandContext): Promise<number> {
  const [text, ...extra] = args.positionals;
  if (!text || extra.length > 0) throw new UsageError('query: write diode query <name> or diode query 0x<address> [--ping]');
  const host = parseTargetHost(text, 1, 'query');
  const count = args.flags.count === undefined ? DEFAULT_PING_COUNT : Number(args.flags.count);
  if (!Number.isInteger(count) || count < 1 || count > MAX_PING_COUNT) throw new UsageError(`query: --count must be 1-${MAX_PING_COUNT}`);
  const relays = resolveRelays(args.flags.relay as string[] | undefined, ctx.home);
  const { identity } = loadOrCreateIdentity(ctx.home);
  const link = new RelayLink({ relays, identity, log: logLevelChosen() ? createLogger('query') : silentLogger, control: false });
  link.start();
  try {
    let address: string;
    try {
      address = (await clientResolver(ctx.home, [link], (line) => process.stderr.write(`diode: ${line}\n`)).target(host)).address;
    } catch (err) {
      // Nobody knows the name: as offline (exit 1), the device is not reachable by it; a relay that cannot answer: unknown (3).
      if (err instanceof NameError) throw new DiodeError(err.code, `query: ${err.message}`, err.reason === 'unknown' ? 1 : QUERY_UNKNOWN_EXIT);
      throw new DiodeError('EQUERY', `query: ${errorMessage(err)}`, QUERY_UNKNOWN_EXIT);
    }
    const shown = host.name ? `${host.name} (${address})` : address;
    let info;
    try {
      info = await queryDevice(link, address);
    } catch (err) {
      throw new DiodeError('EQUERY', `query: ${errorMessage(err)}`, QUERY_UNKNOWN_EXIT);
    }
    const rtts: number[] = [];
    if (args.flags.ping && info.online) {
      for (let i = 0; i < count; i++) {
        try {
          rtts.push(await pingDevice(link, address));
        } catch (err) {
          throw new DiodeError('EQUERY', `query: ping: ${errorMessage(err)}`, QUERY_UNKNOWN_EXIT);
        }
      }
    }
    const relay = link.status();
    if (args.flags.json) {
      process.stdout.write(JSON.stringify({ ...info, t: undefined, ...(host.name ? { name: host.name } : {}), relay: relay.relay, relayAddress: relay.relayAddress, ...(args.flags.ping ? { pingMs: rtts } : {}) }) + '\n');
    } else {
      const via = `via relay ${relay.relay ?? formatHostPort(relays[0])}`;
      if (!info.online) process.stdout.write(`${shown} offline (${via})\n`);
      else {
        const since = info.since !== undefined ? ` since ${new Date(info.since).toISOString().replace('T', ' ').slice(0, 19)}Z` : '';
        process.stdout.write(`${shown} online${since} (${via})\n`);
        const ports = info.ports.map((p) => `${p.port} ${p.mode}`).join(', ');
        if (info.relay) process.stdout.write(`held by relay ${info.relay} of the cluster; its ports are known there\n`);
        else process.stdout.write(`ports: ${ports || 'none you may see'}\n`);
        if (rtts.length > 0) {
          const min = Math.min(...rtts);
          const max = Math.max(...rtts);
          const avg = rtts.reduce((a, b) => a + b, 0) / rtts.length;
          process.stdout.write(`ping: ${rtts.length} round trip${rtts.length === 1 ? '' : 's'} through the relay, min/avg/max ${min.toFixed(2)}/${avg.toFixed(2)}/${max.toFixed(2)} ms\n`);
        }
      }
    }
    return info.online ? 0 : 1;
  } finally {
    await link.stop();
  }
}
