import { spawnSync } from 'node:child_process';
import { startProcess, type BenchProcess } from './procs.ts';
import { tcpConnect, type Connector } from './client.ts';
import { freePorts, scratch, untilOpen } from './paths.ts';
import { join } from 'node:path';

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
 *   Node implementation does per hop;
 * - `node-tls×3`: the same with TLS 1.3 between the first and the last (the
 *   middle pipes ciphertext): the least a Node implementation of diode's
 *   data path does (its end-to-end session without identities, pools or
 *   splice logic).
 */
export interface FloorPath {
  name: 'socat×3' | 'node×3' | 'node-tls×3';
  connector: Connector;
  processes: BenchProcess[];
}

/**
 * A forwarder: argv mode, from, to (and key, cert files for tls-server). `pipe`: TCP in, TCP
 * out; `tls-client`: TCP in, TLS 1.3 out (socksd's shape); `tls-server`: TLS 1.3 in, TCP out
 * (publish's). Each accepted connection gets a connection of its own onward, piped both ways,
 * a half-close passed on as one (the bench's uploads end their side and wait for the count).
 */
const NODE_FORWARDER = `const net = require('node:net');
const tls = require('node:tls');
const fs = require('node:fs');
const [mode, fromText, toText, keyFile, certFile] = process.argv.slice(1);
const from = Number(fromText);
const to = Number(toText);
const join = (c, u) => {
  c.pipe(u); u.pipe(c);
  c.on('error', () => u.destroy()); u.on('error', () => c.destroy());
};
const onward = () => mode === 'tls-client'
  ? tls.connect({ host: '127.0.0.1', port: to, rejectUnauthorized: false, minVersion: 'TLSv1.3', allowHalfOpen: true }).setNoDelay(true)
  : net.connect({ host: '127.0.0.1', port: to, noDelay: true, allowHalfOpen: true });
const server = mode === 'tls-server'
  ? tls.createServer({ key: fs.readFileSync(keyFile), cert: fs.readFileSync(certFile), minVersion: 'TLSv1.3', allowHalfOpen: true }, (c) => { c.setNoDelay(true); join(c, onward()); })
  : net.createServer({ noDelay: true, allowHalfOpen: true }, (c) => join(c, onward()));
server.listen(from, '127.0.0.1');`;

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
  out.push(await chain('node×3', sinkPort, (role, from, to) => startProcess(role, process.execPath, ['-e', NODE_FORWARDER, 'pipe', String(from), String(to)])));
  const dir = scratch('floor-tls');
  const [key, cert] = [join(dir, 'key.pem'), join(dir, 'cert.pem')];
  const made = spawnSync('openssl', ['req', '-x509', '-newkey', 'ed25519', '-nodes', '-subj', '/CN=floor', '-days', '1', '-keyout', key, '-out', cert]);
  if (made.status !== 0) {
    log(`floor: openssl could not make a certificate (${String(made.stderr).trim()}), node-tls×3 skipped`);
    return out;
  }
  const modes = ['tls-client', 'pipe', 'tls-server'];
  let hop = 0;
  out.push(await chain('node-tls×3', sinkPort, (role, from, to) => startProcess(role, process.execPath, ['-e', NODE_FORWARDER, modes[hop++], String(from), String(to), key, cert])));
  return out;
}
