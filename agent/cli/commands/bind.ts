import { createServer, type AddressInfo, type Server, type Socket } from 'node:net';
import type { ParsedArgs } from '../args.ts';
import type { CommandContext } from '../commands.ts';
import { loadOrCreateIdentity } from '../../identity/index.ts';
import { createLogger, type Logger } from '../../util/log.ts';
import { errorMessage } from '../../util/errors.ts';
import { listenError } from '../../util/listen.ts';
import { splice } from '../../util/pump.ts';
import { parseBindSpecs, type BindSpec } from '../../client/target.ts';
import { ClientSession } from '../../client/session.ts';
import { LearnedRelays } from '../../link/learned-relays.ts';
import { resolveRelays } from '../relays.ts';
import { clientStreamService } from '../../client/stream-service.ts';
import { StreamStats } from '../../ops/stream-stats.ts';
import { baseStatus, startOps } from '../../ops/run.ts';
import { DialError } from '../../client/dial.ts';
import { hostLabel } from '../../names/host.ts';
import { NameError } from '../../names/name.ts';

/** Only loopback: a bind is this machine's shortcut to a device port, never a service for the LAN. */
const BIND_HOST = '127.0.0.1';

export async function run(args: ParsedArgs, ctx: CommandContext): Promise<number> {
  const specs = parseBindSpecs([...args.positionals, ...((args.flags.bind as string[] | undefined) ?? [])]);
  const relays = resolveRelays(args.flags.relay as string[] | undefined, ctx.home);
  const { identity } = loadOrCreateIdentity(ctx.home);
  const log = createLogger('bind');
  const client = new ClientSession({ relays, identity, log, home: ctx.home, learned: new LearnedRelays(ctx.home, log) });
  const sockets = new Set<Socket>();
  const servers: Server[] = [];
  const stats = new StreamStats();
  const listening: string[] = [];
  let ops;
  try {
    for (const spec of specs) {
      const server = await listen(spec, client, log, sockets, stats);
      servers.push(server);
      const address = server.address();
      const port = typeof address === 'object' && address ? address.port : spec.localPort;
      listening.push(`${BIND_HOST}:${port} → ${hostLabel(spec.target)}:${spec.target.port}`);
      process.stdout.write(`bind ${BIND_HOST}:${port} → ${hostLabel(spec.target)}:${spec.target.port}\n`);
    }
    ops = await startOps({
      home: ctx.home,
      role: 'bind',
      log,
      streams: clientStreamService({ home: ctx.home, identity, relays, links: client.links, stats }),
      status: () => {
        const linkStatus = client.link.status();
        return {
          ...baseStatus('bind', identity.address),
          connected: linkStatus.connected,
          link: linkStatus,
          listening,
          streams: stats.snapshot(),
          ...(stats.lastError ? { lastError: stats.lastError } : {}),
        };
      },
    });
    const signal = await ctx.stopSignal;
    log.info(`${signal}: shutting down`);
  } finally {
    await ops?.close();
    for (const s of sockets) s.destroy();
    await Promise.all(servers.map((s) => new Promise((resolve) => s.close(resolve))));
    await client.stop();
  }
  return 0;
}

function listen(spec: BindSpec, client: ClientSession, log: Logger, sockets: Set<Socket>, stats: StreamStats): Promise<Server> {
  // What the lines say: the port actually listened on (a spec's 0 picks one).
  const route = () => `${BIND_HOST}:${(server.address() as AddressInfo | null)?.port ?? spec.localPort} → ${hostLabel(spec.target)}:${spec.target.port}`;
  const server = createServer({ allowHalfOpen: true, noDelay: true, pauseOnConnect: true }, (socket) => {
    sockets.add(socket);
    socket.once('close', () => sockets.delete(socket));
    socket.on('error', () => {});
    client.dial(spec.target).then(
      (tunnel) => {
        if (socket.destroyed) return void tunnel.destroy();
        stats.track(socket);
        splice(socket, tunnel, (err) => {
          if (err) log.debug(`${route()}: tunnel ended by an error: ${errorMessage(err)}`);
        });
        socket.resume();
      },
      (err) => {
        const text = `${route()}: ${errorMessage(err)}`;
        stats.fail(err instanceof DialError ? err.reply : err instanceof NameError ? `name-${err.reason}` : 'error', text);
        log.warn(text);
        socket.destroy();
      },
    );
  });
  return new Promise((resolve, reject) => {
    server.once('error', (err) => reject(listenError({ host: BIND_HOST, port: spec.localPort }, err, `bind "${spec.text}"`)));
    server.listen(spec.localPort, BIND_HOST, () => resolve(server));
  });
}
