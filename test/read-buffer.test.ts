import test, { type ExecutionContext } from 'ava';
import fc from 'fast-check';
import { once } from 'node:events';
import { createHash, randomBytes } from 'node:crypto';
import type { Socket } from 'node:net';
import { connect as tlsConnect, TLSSocket } from 'node:tls';
import { splice } from '../agent/util/pump.ts';
import { e2eCredentials } from '../agent/e2e/cert.ts';
import { tcpPair, writeUntilPushedBack } from './helpers/tcp-pair.ts';
import { gatherReads, reuseReads, type GatheredReads } from '../agent/util/read-buffer.ts';

// The splice reads a bulk TCP source into a buffer it reuses (agent/util/read-buffer.ts): a chunk still
// queued at the destination must never be overwritten by the next read. These tests push bytes through
// splices whose far side reads in fits and starts (so that writes queue), and compare what arrives.
// Serial: each run moves megabytes through loopback and a slow reader's timing.

/** The source switched to reads into a reused buffer or gathered slabs (Node's onread mode: its kBuffer field is set). */
function reusesReads(s: Socket): boolean {
  const field = Object.getOwnPropertySymbols(s).find((sym) => sym.description === 'kBuffer');
  return field !== undefined && (s as unknown as Record<symbol, unknown>)[field] != null;
}

/** Writes `pieces` (sizes) of `data` in turn, with backpressure; ends after the last. */
async function writeAll(s: Socket | TLSSocket, data: Buffer, pieces: number[]): Promise<void> {
  let at = 0;
  for (let i = 0; at < data.length; i++) {
    const n = Math.min(pieces[i % pieces.length], data.length - at);
    const ok = s.write(data.subarray(at, at + n));
    at += n;
    if (!ok) await once(s, 'drain');
  }
  s.end();
}

/** Reads everything, pausing for `stalls[i]` ms after every `every` chunks: a reader that falls behind. */
function slowRead(s: Socket | TLSSocket, stalls: number[], every: number): Promise<Buffer> {
  const chunks: Buffer[] = [];
  let n = 0;
  let stall = 0;
  s.on('data', (c: Buffer) => {
    chunks.push(c);
    if (++n % every !== 0) return;
    const ms = stalls[stall++ % stalls.length];
    if (ms === 0) return;
    s.pause();
    setTimeout(() => s.resume(), ms);
  });
  return once(s, 'end').then(() => Buffer.concat(chunks));
}

const sha = (b: Buffer) => createHash('sha256').update(b).digest('hex');

const runs = {
  size: fc.integer({ min: 2 * 1024 * 1024, max: 6 * 1024 * 1024 }),
  pieces: fc.array(fc.integer({ min: 1, max: 300 * 1024 }), { minLength: 1, maxLength: 8 }),
  stalls: fc.array(fc.integer({ min: 0, max: 15 }), { minLength: 1, maxLength: 6 }),
  every: fc.integer({ min: 1, max: 12 }),
};

/** A path under test: bytes written at `writer` arrive at `reader`; `source` is the splice's source that should switch. */
interface Path {
  writer: Socket;
  reader: Socket;
  source: Socket;
  close(): void;
}

/** TLS 1.3 with the end-to-end layer's credentials over a fresh TCP pair: [client, server], both secure. */
async function tlsPair(): Promise<[TLSSocket, TLSSocket]> {
  const [c, s] = await tcpPair();
  const server = new TLSSocket(s, { isServer: true, secureContext: e2eCredentials().server, requestCert: true, rejectUnauthorized: false });
  const client = tlsConnect({ socket: c, secureContext: e2eCredentials().client, rejectUnauthorized: false });
  await Promise.all([once(client, 'secureConnect'), once(server, 'secure')]);
  return [client, server];
}

/** Random sizes, writes and stalls through `build`'s path: every byte arrives, in order; the source switched in some runs. */
async function intact(t: ExecutionContext, build: () => Promise<Path>): Promise<void> {
  let switched = 0;
  await fc.assert(
    fc.asyncProperty(runs.size, runs.pieces, runs.stalls, runs.every, async (size, pieces, stalls, every) => {
      const path = await build();
      const data = randomBytes(size);
      const got = slowRead(path.reader, stalls, every);
      await writeAll(path.writer, data, pieces);
      const arrived = await got;
      if (reusesReads(path.source)) switched++;
      path.close();
      return arrived.length === data.length && sha(arrived) === sha(data);
    }),
    { numRuns: 12 },
  );
  t.true(switched > 0, 'no run switched its source to reused buffers: the property was not exercised');
  t.log(`${switched} of 12 runs read into reused buffers`);
}

test.serial('TCP to TCP (the relay): bytes arrive intact and in order through a slow reader while the source reads into a reused buffer', (t) =>
  intact(t, async () => {
    const [left, a] = await tcpPair();
    const [b, right] = await tcpPair();
    splice(a, b);
    return { writer: left, reader: right, source: a, close: () => (left.destroy(), right.destroy()) };
  }));

test.serial('TCP to TLS (an end: the local socket into the end-to-end session): bytes arrive intact through a slow reader', (t) =>
  intact(t, async () => {
    const [left, a] = await tcpPair();
    const [client, server] = await tlsPair();
    splice(a, client);
    return { writer: left, reader: server, source: a, close: () => (left.destroy(), server.destroy()) };
  }));

test.serial('TLS to TCP (an end: the end-to-end session into the local socket): records gathered into slabs arrive intact through a slow reader', (t) =>
  intact(t, async () => {
    const [client, server] = await tlsPair();
    const [b, right] = await tcpPair();
    splice(server, b);
    return { writer: client, reader: right, source: server, close: () => (client.destroy(), right.destroy()) };
  }));

test.serial('a source reading into a reused buffer still passes its end on (half-close) and pauses for a stalled reader', async (t) => {
  const [left, a] = await tcpPair();
  const [b, right] = await tcpPair();
  let done: ((err?: Error) => void) | undefined;
  const finished = new Promise<Error | undefined>((resolve) => (done = resolve));
  splice(a, b, (err) => done!(err));
  right.pause();
  const written = await writeUntilPushedBack(left, randomBytes(256 * 1024), 256 * 1024 * 1024);
  t.true(written < 256 * 1024 * 1024, 'the writer was never stopped');
  t.true(reusesReads(a), 'the bulk source reads into a reused buffer');
  t.true(b.writableLength <= 512 * 1024, `the hop holds ${b.writableLength} bytes queued`);
  let got = 0;
  right.on('data', (c: Buffer) => (got += c.length));
  right.resume();
  left.end();
  await once(right, 'end');
  t.is(got, written);
  right.end('back');
  const back: Buffer[] = [];
  left.on('data', (c: Buffer) => back.push(c));
  await once(left, 'end');
  t.is(Buffer.concat(back).toString(), 'back', 'the other direction still flowed after the end');
  t.is(await finished, undefined);
});

// The buffer contracts themselves, with a reader that keeps what it is handed for a while (a write
// that completes later): a lent chunk, or a slab region not yet done, must read the same at the end.

test.serial('reuseReads: a lent chunk is never read over, however long it is kept', async (t) => {
  const [left, right] = await tcpPair();
  const kept: Array<{ view: Buffer; copy: Buffer }> = [];
  let lends = 0;
  const reads = reuseReads(
    right,
    64 * 1024,
    (chunk) => {
      // Every third chunk is kept (lent), as a queued write keeps it; the others are done with at once.
      if (kept.length % 3 === 0 || chunk.length % 3 === 0) {
        kept.push({ view: chunk, copy: Buffer.from(chunk) });
        lends++;
        reads!.lend();
      } else kept.push({ view: Buffer.from(chunk), copy: Buffer.from(chunk) });
    },
    // Reads of every size: the small buffer's (≤ 16 KiB) and views of the full one.
    () => 4 * 1024 + Math.floor(Math.random() * 60 * 1024),
  );
  t.truthy(reads, 'a plain TCP socket switches');
  const data = randomBytes(2 * 1024 * 1024);
  const ended = once(right, 'end');
  right.resume();
  await writeAll(left, data, [1000, 7000, 30_000]);
  await ended;
  t.true(lends > 10);
  t.true(kept.every(({ view, copy }) => view.equals(copy)), 'a lent chunk was read over');
  t.true(Buffer.concat(kept.map((k) => k.copy)).equals(data), 'bytes arrive whole and in order');
  left.destroy();
});

test.serial('gatherReads: a slab region is never read into again before its write is done', async (t) => {
  const [client, server] = await tlsPair();
  const regions: Array<{ view: Buffer; copy: Buffer }> = [];
  let slabs: GatheredReads | undefined;
  const pending: Array<() => void> = [];
  slabs = gatherReads(
    server,
    40 * 1024,
    () => setImmediate(() => slabs!.flush()),
    (region, done) => {
      regions.push({ view: region, copy: Buffer.from(region) });
      // Done only a few regions later: the slab alternation must wait for it.
      pending.push(done);
      if (pending.length > 3) pending.shift()!();
    },
  );
  t.truthy(slabs, 'a TLS socket switches');
  const data = randomBytes(2 * 1024 * 1024);
  const ended = once(server, 'end');
  server.resume();
  await writeAll(client, data, [5000, 64 * 1024, 100]);
  await ended;
  slabs!.flush();
  for (const done of pending) done();
  t.true(regions.length > 10);
  t.true(regions.every(({ view, copy }) => view.equals(copy)), 'a region was read into before its write was done');
  t.true(Buffer.concat(regions.map((r) => r.copy)).equals(data), 'bytes arrive whole and in order');
  client.destroy();
});

test.serial('a bulk flow from a switched source into a TLS socket (socksd\'s shape) is never held as a trickle', async (t) => {
  // After a lend a paused source reads once into a small buffer; filled, that read once looked like a
  // piece of a trickle to the splice, which then held its reading for ms at a time: 1,241 holds in
  // 256 MiB, a single stream at half speed. A hold is a setTimeout of 1-16 ms (pump.ts, holdReading).
  const [left, a] = await tcpPair();
  const [client, server] = await tlsPair();
  let holds = 0;
  const original = globalThis.setTimeout;
  const counting = ((fn: () => void, ms?: number, ...rest: unknown[]) => {
    if (ms !== undefined && ms >= 1 && ms <= 16) holds++;
    return original(fn, ms, ...rest);
  }) as typeof setTimeout;
  globalThis.setTimeout = counting;
  try {
    splice(a, client);
    let got = 0;
    server.on('data', (d: Buffer) => (got += d.length));
    const ended = once(server, 'end');
    await writeAll(left, Buffer.alloc(64 * 1024 * 1024, 1), [256 * 1024]);
    await ended;
    t.is(got, 64 * 1024 * 1024);
  } finally {
    globalThis.setTimeout = original;
  }
  t.true(reusesReads(a));
  t.is(holds, 0, 'the bulk flow was taken for a trickle');
  left.destroy();
  server.destroy();
});
