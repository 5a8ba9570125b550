import { createServer, type Server, type Socket } from 'node:net';
import type { ParsedArgs } from '../args.ts';
import type { CommandContext } from '../commands.ts';
import { loadOrCreateIdentity } from '../../identity/index.ts';
import { createLogger, type Logger } from '../../util/log.ts';
import { errorMessage } from '../../util/errors.ts';
import { listenError } from '../../util/listen.ts';
import { splice } from '../../util/pump.ts';
import { parseBindSpecs, type BindSpec } from '../../client/target.ts';
import { ClientSession } from '../../client/session.ts';
import { resolveRelays } from '../relays.ts';

/** Only loopback: a bind is this machine's shortcut to a device port, never a service for the LAN. */
const BIND_HOST = '127.0.0.1';

export async function run(args: ParsedArgs, ctx: CommandContext): Promise<number> {
  const specs = parseBindSpecs([...args.positionals, ...((args.flags.bind as string[] | undefined) ?? [])]);
  const relays = resolveRelays(args.flags.relay as string[] | undefined, ctx.home);
  const { identity } = loadOrCreateIdentity(ctx.home);
  const log = createLogger('bind');
  const client = new ClientSession(relays, identity, log);
  const sockets = new Set<Socket>();
  const servers: Server[] = [];
  try {
    for (const spec of specs) {
      const server = await listen(spec, client, log, sockets);
      servers.push(server);
      const address = server.address();
      const port = typeof address === 'object' && address ? address.port : spec.localPort;
      process.stdout.write(`bind ${BIND_HOST}:${port} → ${spec.target.address}.diode:${spec.target.port}\n`);
    }
    const signal = await ctx.stopSignal;
    log.info(`${signal}: shutting down`);
  } finally {
    for (const s of sockets) s.destroy();
    await Promise.all(servers.map((s) => new Promise((resolve) => s.close(resolve))));
    await client.stop();
  }
  return 0;
}

function listen(spec: BindSpec, client: ClientSession, log: Logger, sockets: Set<Socket>): Promise<Server> {
  const server = createServer({ allowHalfOpen: true, noDelay: true, pauseOnConnect: true }, (socket) => {
    sockets.add(socket);
    socket.once('close', () => sockets.delete(socket));
    socket.on('error', () => {});
    client.dial(spec.target).then(
      (tunnel) => {
        if (socket.destroyed) return void tunnel.destroy();
        splice(socket, tunnel);
        socket.resume();
      },
      (err) => {
        log.warn(`${BIND_HOST}:${spec.localPort} → ${spec.target.address}.diode:${spec.target.port}: ${errorMessage(err)}`);
        socket.destroy();
      },
    );
  });
  return new Promise((resolve, reject) => {
    server.once('error', (err) => reject(listenError({ host: BIND_HOST, port: spec.localPort }, err, `bind "${spec.text}"`)));
    server.listen(spec.localPort, BIND_HOST, () => resolve(server));
  });
}
