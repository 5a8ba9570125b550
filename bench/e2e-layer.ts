// Cost of the end-to-end layer: the same device port published -public and
// -private, reached through relay + socksd on loopback, measured side by side.
//
//   node scripts/build.mjs && npx tsx bench/e2e-layer.ts [--mib 256] [--rounds 2000] [--connects 30]
//
// Throughput: one stream sends N MiB to a sink that answers one byte at the
// end. Latency: 64-byte ping-pong on one open stream. Setup: SOCKS CONNECT
// until the success reply (relay routing + device ok, plus for private the
// inner TLS handshake, both hellos and the verdict).
import { spawn, type ChildProcess } from 'node:child_process';
import { mkdtempSync, rmSync } from 'node:fs';
import { connect, createServer, type Server, type Socket } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { parseArgs } from 'node:util';

const BUNDLE = fileURLToPath(new URL('../dist/diode.cjs', import.meta.url));
/** bytes per write while streaming. */
const CHUNK_BYTES = 64 * 1024;
/** bytes per ping. */
const PING_BYTES = 64;

const { values } = parseArgs({ options: { mib: { type: 'string', default: '256' }, rounds: { type: 'string', default: '2000' }, connects: { type: 'string', default: '30' } } });
const MIB = Number(values.mib);
const ROUNDS = Number(values.rounds);
const CONNECTS = Number(values.connects);

const children: ChildProcess[] = [];
const dirs: string[] = [];
const servers: Server[] = [];

function home(): string {
  const dir = mkdtempSync(join(tmpdir(), 'diode-bench-'));
  dirs.push(dir);
  return dir;
}

function diode(args: string[], pattern: RegExp): Promise<RegExpMatchArray> {
  const child = spawn(process.execPath, [BUNDLE, ...args], { stdio: ['ignore', 'pipe', 'pipe'] });
  children.push(child);
  let out = '';
  return new Promise((resolve, reject) => {
    const timer = setTimeout(() => reject(new Error(`timeout waiting for ${pattern}:\n${out}`)), 20_000);
    const on = (c: Buffer) => {
      out += c.toString();
      const m = out.match(pattern);
      if (m) {
        clearTimeout(timer);
        resolve(m);
      }
    };
    child.stdout!.on('data', on);
    child.stderr!.on('data', on);
  });
}

function listen(handler: (s: Socket) => void): Promise<number> {
  const server = createServer({ allowHalfOpen: true, noDelay: true }, handler);
  servers.push(server);
  return new Promise((resolve) => server.listen(0, '127.0.0.1', () => resolve((server.address() as { port: number }).port)));
}

/** SOCKS5 CONNECT to name:port; resolves with the open socket once the reply said succeeded. */
function socks(socksPort: number, name: string, port: number): Promise<Socket> {
  return new Promise((resolve, reject) => {
    const s = connect({ port: socksPort, host: '127.0.0.1', noDelay: true });
    let buf = Buffer.alloc(0);
    let stage = 0;
    s.once('error', reject);
    s.once('connect', () => {
      const host = Buffer.from(name);
      const p = Buffer.alloc(2);
      p.writeUInt16BE(port);
      s.write(Buffer.concat([Buffer.from([5, 1, 0]), Buffer.from([5, 1, 0, 3, host.length]), host, p]));
    });
    const onData = (c: Buffer) => {
      buf = Buffer.concat([buf, c]);
      if (stage === 0 && buf.length >= 2) {
        buf = buf.subarray(2);
        stage = 1;
      }
      if (stage === 1 && buf.length >= 10) {
        s.off('data', onData);
        if (buf[1] !== 0) return reject(new Error(`SOCKS reply ${buf[1]}`));
        if (buf.length > 10) s.unshift(buf.subarray(10));
        resolve(s);
      }
    };
    s.on('data', onData);
  });
}

async function throughput(socksPort: number, name: string, port: number): Promise<number> {
  const s = await socks(socksPort, name, port);
  const chunk = Buffer.alloc(CHUNK_BYTES, 7);
  const total = MIB * 1024 * 1024;
  const started = process.hrtime.bigint();
  const done = new Promise<void>((resolve) => s.once('data', () => resolve()));
  let sent = 0;
  while (sent < total) {
    sent += chunk.length;
    if (!s.write(chunk)) await new Promise((r) => s.once('drain', r));
  }
  s.end();
  await done;
  const seconds = Number(process.hrtime.bigint() - started) / 1e9;
  s.destroy();
  return total / 1e6 / seconds;
}

async function pingPong(socksPort: number, name: string, port: number): Promise<number[]> {
  const s = await socks(socksPort, name, port);
  const ping = Buffer.alloc(PING_BYTES, 1);
  const times: number[] = [];
  for (let i = 0; i < ROUNDS; i++) {
    const t0 = process.hrtime.bigint();
    let got = 0;
    await new Promise<void>((resolve) => {
      const on = (c: Buffer) => {
        got += c.length;
        if (got >= PING_BYTES) {
          s.off('data', on);
          resolve();
        }
      };
      s.on('data', on);
      s.write(ping);
    });
    times.push(Number(process.hrtime.bigint() - t0) / 1e3);
  }
  s.destroy();
  return times;
}

async function setup(socksPort: number, name: string, port: number): Promise<number[]> {
  const times: number[] = [];
  for (let i = 0; i < CONNECTS; i++) {
    const t0 = process.hrtime.bigint();
    const s = await socks(socksPort, name, port);
    times.push(Number(process.hrtime.bigint() - t0) / 1e6);
    s.destroy();
  }
  return times;
}

const pct = (xs: number[], p: number) => [...xs].sort((a, b) => a - b)[Math.min(xs.length - 1, Math.floor((p / 100) * xs.length))];

async function main(): Promise<void> {
  const sinkPort = await listen((s) => {
    s.resume();
    s.on('end', () => s.end(Buffer.from([1])));
  });
  const echoPort = await listen((s) => {
    s.pipe(s);
  });
  const relay = await diode(['relay', '--listen', '127.0.0.1:0', '--home', home()], /listening on 127\.0\.0\.1:(\d+)/);
  const relayAt = `127.0.0.1:${relay[1]}`;
  const clientHome = home();
  const client = await diode(['address', '--home', clientHome], /(0x[0-9a-fA-F]{40})/);
  const device = await diode(
    ['publish', '-public', `${sinkPort}:1001,${echoPort}:1002`, '-private', `${sinkPort}:2001,${client[1]},${echoPort}:2002,${client[1]}`, '--relay', relayAt, '--home', home()],
    /as (0x[0-9a-fA-F]{40})[\s\S]*connected to relay/,
  );
  const socksd = await diode(['socksd', '--listen', '127.0.0.1:0', '--relay', relayAt, '--home', clientHome], /listening on 127\.0\.0\.1:(\d+)[\s\S]*connected to relay/);
  const socksPort = Number(socksd[1]);
  const name = `${device[1]}.diode`;

  console.log(`node ${process.version}, ${MIB} MiB per stream, ${ROUNDS} pings of ${PING_BYTES} B, ${CONNECTS} connects; socksd → relay → device on loopback`);
  const rows: string[][] = [];
  for (const [label, sink, echo] of [['public (plain)', 1001, 1002], ['private (E2E)', 2001, 2002]] as const) {
    const mbps = [await throughput(socksPort, name, sink), await throughput(socksPort, name, sink)];
    const rtt = await pingPong(socksPort, name, echo);
    const conn = await setup(socksPort, name, echo);
    rows.push([label, mbps.map((x) => x.toFixed(0)).join(' / '), pct(rtt, 50).toFixed(0), pct(rtt, 99).toFixed(0), pct(conn, 50).toFixed(1), pct(conn, 90).toFixed(1)]);
  }
  const head = ['port', 'MB/s (2 runs)', 'RTT p50 µs', 'RTT p99 µs', 'connect p50 ms', 'connect p90 ms'];
  const widths = head.map((h, i) => Math.max(h.length, ...rows.map((r) => r[i].length)));
  for (const r of [head, ...rows]) console.log(r.map((c, i) => c.padEnd(widths[i])).join('  '));
}

main()
  .catch((err) => {
    console.error(err);
    process.exitCode = 1;
  })
  .finally(() => {
    for (const c of children) c.kill('SIGTERM');
    for (const s of servers) s.close();
    for (const d of dirs) rmSync(d, { recursive: true, force: true });
  });
