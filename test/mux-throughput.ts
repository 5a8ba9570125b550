// Throughput check (not an ava test): 1 GiB over one mux stream on loopback
// TCP versus a raw TCP pump, in the same run and process.
//   npx tsx test/mux-throughput.ts [MiB=1024] [rounds=2]
import { once } from 'node:events';
import net from 'node:net';
import type { Writable, Readable } from 'node:stream';
import { MuxSession, type MuxStream } from '../agent/mux/index.ts';

const MiB = 1024 * 1024;
const total = Number(process.argv[2] ?? 1024) * MiB;
const rounds = Number(process.argv[3] ?? 2);
const CHUNK = 64 * 1024; // what a typical pipe() of a socket writes
const chunk = Buffer.alloc(CHUNK, 0x5a);

async function tcpPair(): Promise<[net.Socket, net.Socket, net.Server]> {
  const server = net.createServer();
  server.listen(0, '127.0.0.1');
  await once(server, 'listening');
  const accepted = once(server, 'connection');
  const dialer = net.connect((server.address() as net.AddressInfo).port, '127.0.0.1');
  const [[listener]] = (await Promise.all([accepted, once(dialer, 'connect')])) as [[net.Socket], unknown];
  return [dialer, listener, server];
}

async function pump(w: Writable): Promise<void> {
  for (let sent = 0; sent < total; sent += CHUNK) {
    if (!w.write(chunk)) await once(w, 'drain');
  }
  w.end();
}

function count(r: Readable): Promise<number> {
  return new Promise((resolve) => {
    let n = 0;
    r.on('data', (c: Buffer) => (n += c.length));
    r.once('end', () => resolve(n));
  });
}

/** CPU seconds (user + system) of this process per GiB moved, per kind: robust when the machine is busy. */
const cpuPerGiB: Record<string, number[]> = { raw: [], mux: [] };

async function timed(kind: string, run: () => Promise<number>): Promise<number> {
  const cpu = process.cpuUsage();
  const start = process.hrtime.bigint();
  const bytes = await run();
  const secs = Number(process.hrtime.bigint() - start) / 1e9;
  const used = process.cpuUsage(cpu);
  if (bytes !== total) throw new Error(`moved ${bytes} bytes, expected ${total}`);
  cpuPerGiB[kind].push((used.user + used.system) / 1e6 / (bytes / 1024 / MiB));
  return bytes / MiB / secs;
}

async function raw(): Promise<number> {
  const [a, b, server] = await tcpPair();
  const mbps = await timed('raw', () => Promise.all([count(b), pump(a)]).then(([n]) => n));
  a.destroy();
  b.destroy();
  server.close();
  return mbps;
}

async function mux(): Promise<number> {
  const [a, b, server] = await tcpPair();
  const client = new MuxSession(a, { role: 'client' });
  const srv = new MuxSession(b, { role: 'server' });
  const mbps = await timed('mux', async () => {
    const received = once(srv, 'stream').then(([s]) => count(s as MuxStream));
    await pump(client.open());
    return received;
  });
  client.close();
  srv.close();
  server.close();
  return mbps;
}

const results: Record<string, number[]> = { raw: [], mux: [] };
for (let i = 0; i < rounds; i++) {
  results.raw.push(await raw());
  results.mux.push(await mux());
}
const best = (xs: number[]) => Math.max(...xs);
for (const [k, xs] of Object.entries(results)) {
  console.log(`${k.padEnd(4)} ${xs.map((x) => x.toFixed(0).padStart(5)).join(' ')} MB/s (best ${best(xs).toFixed(0)})`);
}
for (const [k, xs] of Object.entries(cpuPerGiB)) {
  console.log(`${k.padEnd(4)} ${xs.map((x) => x.toFixed(2).padStart(5)).join(' ')} CPU s/GiB (best ${Math.min(...xs).toFixed(2)})`);
}
console.log(`mux/raw: ${((100 * best(results.mux)) / best(results.raw)).toFixed(0)}% (${total / MiB} MiB per run, ${CHUNK / 1024} KiB writes, node ${process.version})`);
