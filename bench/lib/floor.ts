import { spawnSync } from 'node:child_process';
import { startProcess, type BenchProcess } from './procs.ts';
import { tcpConnect, type Connector } from './client.ts';
import { freePorts, untilOpen } from './paths.ts';

/**
 * The floor under every tunnel on this host: three plain TCP forwarders in a
 * row in front of the sink, where socksd, relay and publish (or ssh -L, sshd
 * and ssh -R) stand, with no protocol, encryption or splice logic. Each hop
 * is a read, a write and the wake-up of the next process (on loopback the
 * writer also runs the receiver's TCP work): what any three-process chain
 * pays per round trip and per connection. Measured with the paths, in
 * turns, so a target below it is seen as such in the same run.
 *
 * - `socat×3`: socat, a C program (a fork per connection, so its set-up
 *   includes three forks);
 * - `node×3`: three Node processes piping sockets (`a.pipe(b)`), the least a
 *   Node implementation does per hop.
 */
export interface FloorPath {
  name: 'socat×3' | 'node×3';
  connector: Connector;
  processes: BenchProcess[];
}

/** A plain TCP forwarder: argv from, to; a connection to `to` per accepted one. */
const NODE_FORWARDER = `const net = require('node:net');
const [from, to] = process.argv.slice(1).map(Number);
net.createServer({ noDelay: true }, (c) => {
  const u = net.connect({ host: '127.0.0.1', port: to, noDelay: true });
  c.pipe(u); u.pipe(c);
  c.on('error', () => u.destroy()); u.on('error', () => c.destroy());
}).listen(from, '127.0.0.1');`;

async function chain(name: FloorPath['name'], sinkPort: number, start: (role: string, from: number, to: number) => BenchProcess): Promise<FloorPath> {
  const ports = await freePorts(3);
  const processes = [0, 1, 2].map((i) => start(`${name}-${i + 1}`, ports[i], i === 2 ? sinkPort : ports[i + 1]));
  const connector = () => tcpConnect(ports[0]);
  await untilOpen(connector, name);
  return { name, connector, processes };
}

/** The floor paths this host can run (socat is skipped, with `log`, where it is not installed). */
export async function floorPaths(sinkPort: number, log: (line: string) => void): Promise<FloorPath[]> {
  const out: FloorPath[] = [];
  if (spawnSync('socat', ['-V']).status === 0) {
    out.push(await chain('socat×3', sinkPort, (role, from, to) => startProcess(role, 'socat', [`TCP-LISTEN:${from},bind=127.0.0.1,fork,reuseaddr,nodelay`, `TCP:127.0.0.1:${to},nodelay`], { tree: true })));
  } else log('floor: socat not installed (apt-get install socat), its chain skipped');
  out.push(await chain('node×3', sinkPort, (role, from, to) => startProcess(role, process.execPath, ['-e', NODE_FORWARDER, String(from), String(to)])));
  return out;
}
