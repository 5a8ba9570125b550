import test from 'ava';
import { once } from 'node:events';
import { createServer, connect, type Socket, type AddressInfo } from 'node:net';
import { abort, FORWARD_BUFFER, splice, SpliceBudgetError, type SpliceMeter } from '../agent/util/pump.ts';
import { setFlagsFromString } from 'node:v8';
import { runInNewContext } from 'node:vm';
import { tcpPair, writeUntilPushedBack } from './helpers/tcp-pair.ts';

// Serial: the backpressure test reads timing (the writer staying stopped), which a concurrent test would disturb.

/** left ⇄ [a splice b] ⇄ right: what a tunnel hop looks like from both ends. */
async function splicedPair(onDone?: (err?: Error) => void, meter?: SpliceMeter): Promise<{ left: Socket; right: Socket; a: Socket; b: Socket }> {
  const [left, a] = await tcpPair();
  const [b, right] = await tcpPair();
  splice(a, b, onDone, meter);
  return { left, right, a, b };
}

function readAll(socket: Socket): Promise<Buffer> {
  const chunks: Buffer[] = [];
  socket.on('data', (c: Buffer) => chunks.push(c));
  return once(socket, 'end').then(() => Buffer.concat(chunks));
}

test.serial('bytes pass both ways, and an end in one direction is passed on while the other still flows', async (t) => {
  let done: ((err?: Error) => void) | undefined;
  const finished = new Promise<Error | undefined>((resolve) => (done = resolve));
  const { left, right } = await splicedPair((err) => done!(err));
  const atRight = readAll(right);
  const atLeft = readAll(left);
  const payload = Buffer.alloc(3 * 1024 * 1024, 'x');
  left.end(payload);
  t.deepEqual(await atRight, payload, 'left → right arrives whole, then ends');
  right.end('after your end'); // half-close: this side still talks
  t.is((await atLeft).toString(), 'after your end');
  t.is(await finished, undefined, 'both directions ended cleanly');
});

test.serial('a destination that stops reading pauses the source: the writer is stopped, nothing piles up in the hop', async (t) => {
  const { left, right, a, b } = await splicedPair();
  right.pause(); // the far end reads nothing
  const written = await writeUntilPushedBack(left, Buffer.alloc(256 * 1024), 512 * 1024 * 1024);
  t.true(written < 512 * 1024 * 1024, `the writer was never stopped (${written} bytes accepted)`);
  t.true(a.isPaused(), 'the hop stopped reading its source');
  t.true(b.writableLength <= 1024 * 1024, `the hop holds ${b.writableLength} bytes queued`);
  t.log(`writer stopped after ${(written / 1048576).toFixed(1)} MiB (kernel buffers of two loopback connections + the hop's bound)`);
  // And it resumes: the far end reads everything that was accepted.
  let got = 0;
  right.on('data', (c: Buffer) => (got += c.length));
  right.resume();
  left.end();
  await once(right, 'end');
  t.is(got, written);
  left.destroy();
  right.destroy();
});

test.serial('a side that dies takes the other down and reports the error once', async (t) => {
  const errors: Array<Error | undefined> = [];
  const { left, right, a, b } = await splicedPair((err) => errors.push(err));
  left.on('error', () => {});
  right.resetAndDestroy(); // a TCP reset, not an end: b fails with ECONNRESET
  // (not once(): it rejects on the 'error' that comes first)
  await Promise.all([a, b].map((s) => (s.closed ? undefined : new Promise((r) => s.once('close', r)))));
  await new Promise((r) => setTimeout(r, 50));
  t.true(a.destroyed && b.destroyed);
  t.is(errors.length, 1);
  t.true(errors[0] instanceof Error);
  left.destroy();
});

/** left → a 20 Mbit/s delay line → [a splice b] → right. */
async function trickleSplice(): Promise<{ left: Socket; right: Socket; a: Socket; close: () => Promise<void> }> {
  const { DelayLink } = await import('../bench/lib/delay-line.ts');
  const server = createServer({ allowHalfOpen: true });
  server.listen(0, '127.0.0.1');
  await once(server, 'listening');
  const link = new DelayLink({ oneWayMs: 5, upBitsPerSec: 20e6 });
  const line = await link.forward({ port: (server.address() as AddressInfo).port });
  const accepted = once(server, 'connection') as Promise<[Socket]>;
  const left = connect({ port: line.port, host: '127.0.0.1', allowHalfOpen: true });
  await once(left, 'connect');
  const [a] = await accepted;
  server.close();
  const [b, right] = await tcpPair();
  splice(a, b);
  return { left, right, a, close: () => link.close() };
}

test.serial('a one-way trickle (a 20 Mbit/s link delivering one segment at a time) is read in gathered reads, not a read per segment', async (t) => {
  const { left, right, a, close } = await trickleSplice();
  for (const s of [left, right]) s.on('error', () => {});
  t.teardown(async () => {
    left.destroy();
    right.destroy();
    await close();
  });
  let reads = 0;
  a.on('data', () => reads++);
  const bytes = 2 * 1024 * 1024;
  const got = readAll(right);
  left.end(Buffer.alloc(bytes, 7));
  t.is((await got).length, bytes);
  const perRead = bytes / reads;
  t.log(`${reads} reads, ${Math.round(perRead)} bytes each on average (a segment is 1,448)`);
  // A hold gathers ≈ 32 KiB at this rate; before a gathered read kept the flow a trickle, every other
  // read was a single segment again (≈ 16 KB per read on average).
  t.true(perRead >= 22 * 1024, `${Math.round(perRead)} bytes per read`);
});

test.serial('a handshake\'s flights (small pieces one way in quick succession) are not held: the bytes right behind them pass at once', async (t) => {
  // What the end-to-end layer does on a data connection: the device writes its identity hello and its
  // verdict as two records, then the stream's first bytes follow. A splice that took the two records
  // for a trickle held its reading for up to 16 ms, and the first bytes waited behind the hold.
  const { left, right, a, b } = await splicedPair();
  // As every diode socket is (no Nagle: a small write behind an unacknowledged one would wait for a delayed ACK).
  for (const s of [left, right, a, b]) s.setNoDelay(true);
  const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));
  const delays: number[] = [];
  for (let i = 0; i < 20; i++) {
    const got = new Promise<void>((resolve) => {
      let n = 0;
      const onData = (c: Buffer) => {
        n += c.length;
        if (n >= 2 * 900 + 64) {
          right.off('data', onData);
          resolve();
        }
      };
      right.on('data', onData);
    });
    left.write(Buffer.alloc(900, 1));
    await sleep(0.3);
    left.write(Buffer.alloc(900, 2));
    await sleep(1);
    const started = performance.now();
    left.write(Buffer.alloc(64, 3));
    await got;
    delays.push(performance.now() - started);
    // The other way, as the client's next flight would: the next round starts afresh.
    right.write(Buffer.alloc(64, 4));
    await once(left, 'data');
  }
  delays.sort((x, y) => x - y);
  const p50 = delays[Math.floor(delays.length / 2)];
  t.log(`the bytes after two small pieces: p50 ${p50.toFixed(3)} ms, max ${delays[delays.length - 1].toFixed(3)} ms`);
  t.true(p50 < 6, `p50 ${p50} ms (a hold is up to 16 ms)`);
  left.destroy();
  right.destroy();
});

test.serial('a ping-pong through a splice is not held: 64-byte round trips stay well under a millisecond each', async (t) => {
  const { left, right } = await splicedPair();
  right.on('data', (c: Buffer) => right.write(c));
  const times: number[] = [];
  for (let i = 0; i < 300; i++) {
    const started = performance.now();
    left.write(Buffer.alloc(64, i));
    await once(left, 'data');
    times.push(performance.now() - started);
  }
  times.sort((x, y) => x - y);
  const p50 = times[Math.floor(times.length / 2)];
  t.log(`round trip p50 ${p50.toFixed(3)} ms, p90 ${times[Math.floor(times.length * 0.9)].toFixed(3)} ms`);
  t.true(p50 < 1, `p50 ${p50} ms`);
  left.destroy();
  right.destroy();
});

/** A meter as the relay's (SpliceHold) over a cap of `cap` bytes: what it holds now, its peak, refusals. */
function testMeter(cap: number) {
  const m = { held: 0, peak: 0, refused: 0 };
  const meter: SpliceMeter = {
    take: (n) => {
      if (m.held + n > cap) {
        m.refused++;
        return false;
      }
      m.held += n;
      m.peak = Math.max(m.peak, m.held);
      return true;
    },
    give: (n) => void (m.held -= n),
    pressed: () => false,
  };
  return { m, meter };
}

/** Writes `chunk` into `left` again and again until it stays pushed back for half a second (or 256 MiB). */
async function writeUntilStalled(left: Socket, chunk = Buffer.alloc(256 * 1024)): Promise<number> {
  let written = 0;
  while (written < 256 * 1024 * 1024) {
    written += chunk.length;
    if (!left.write(chunk)) {
      const drained = await Promise.race([once(left, 'drain').then(() => true), new Promise((r) => setTimeout(r, 500, false))]);
      if (!drained) break;
    }
  }
  return written;
}

test.serial('a metered splice charges every byte it holds until the far side took it, stops reading the stalled source at the socket, and gives everything back', async (t) => {
  const { m, meter } = testMeter(64 * 1024 * 1024);
  let done: ((err?: Error) => void) | undefined;
  const finished = new Promise<Error | undefined>((resolve) => (done = resolve));
  const { left, right, a, b } = await splicedPair((err) => done!(err), meter);
  right.pause();
  await writeUntilStalled(left);
  // What the hop holds is what the meter was charged: b's queue, and nothing left unread in a's buffer.
  t.is(a.readableLength, 0, 'the stalled source is not read any further (its handle stopped)');
  t.is(m.held, b.writableLength, 'the meter holds exactly what waits to be written');
  t.true(m.peak <= FORWARD_BUFFER + 64 * 1024, `peak ${m.peak}`);
  let got = 0;
  right.on('data', (c: Buffer) => (got += c.length));
  right.resume();
  left.end();
  await once(right, 'end');
  right.end();
  t.is(await finished, undefined);
  t.is(m.held, 0, 'every charged byte was given back');
  t.true(got > 0);
  t.is(m.refused, 0);
  left.destroy();
  right.destroy();
});

test.serial('a chunk the meter refuses aborts both sides of the splice', async (t) => {
  const { m, meter } = testMeter(32 * 1024);
  let done: ((err?: Error) => void) | undefined;
  const finished = new Promise<Error | undefined>((resolve) => (done = resolve));
  const { left, right, a, b } = await splicedPair((err) => done!(err), meter);
  for (const s of [left, right]) s.on('error', () => {});
  right.pause();
  void writeUntilStalled(left).catch(() => {});
  t.true((await finished) instanceof SpliceBudgetError);
  t.true(m.refused >= 1);
  await Promise.all([a, b].map((s) => (s.closed ? undefined : new Promise((r) => s.once('close', r)))));
  t.true(a.destroyed && b.destroyed);
  left.destroy();
  right.destroy();
});

test('a socket aborted many times holds one error listener (no MaxListenersExceededWarning)', async (t) => {
  const [a, b] = await tcpPair();
  const closed = new Promise((resolve) => b.once('close', resolve));
  b.on('error', () => {}); // the reset arrives as ECONNRESET
  for (let i = 0; i < 20; i++) abort(a);
  t.is(a.listenerCount('error'), 1);
  await closed;
});

/**
 * Full collections in this worker (as gc-tuning.ts makes them), then the bytes of ArrayBuffers alive.
 * V8 frees dead ArrayBuffers' memory on a background sweeper after a collection: the count settles
 * only a little later, so it is read after a second collection, a pause after the first.
 */
async function arrayBuffersAfterGc(): Promise<number> {
  setFlagsFromString('--expose-gc');
  const gc = runInNewContext('gc') as () => void;
  for (let i = 0; i < 3; i++) {
    gc();
    await new Promise((r) => setTimeout(r, 100));
  }
  return process.memoryUsage().arrayBuffers;
}

test.serial('stalled metered splices under a pressed budget keep no more than a small read buffer each beyond what their meter was charged', async (t) => {
  // The relay's shape under a stalled data-connection probe: many pairs whose bulk flow stalled while
  // the budget was pressed. What they hold in user space must be what the budget sees: a read buffer
  // kept by a closure (a 64 KiB read, for the splice's whole life) held 20 MiB of relay RSS unseen.
  const PAIRS = 32;
  const { m, meter } = testMeter(256 * 1024 * 1024);
  meter.pressed = () => true;
  const chunk = Buffer.alloc(256 * 1024);
  const before = await arrayBuffersAfterGc();
  const pairs = await Promise.all(Array.from({ length: PAIRS }, () => splicedPair(undefined, meter)));
  await Promise.all(
    pairs.map(({ left, right }) => {
      right.pause();
      return writeUntilStalled(left, chunk);
    }),
  );
  const alive = (await arrayBuffersAfterGc()) - before;
  // The test's own: the writers' one chunk, and what the paused readers took in before they stopped.
  const unread = pairs.reduce((n, p) => n + p.right.readableLength, 0);
  const unseen = alive - chunk.length - unread - m.held;
  t.log(`${PAIRS} stalled pairs: ${(alive / 1024).toFixed(0)} KiB of ArrayBuffers alive, ${(m.held / 1024).toFixed(0)} KiB charged to the meter, ${(unread / 1024).toFixed(0)} KiB unread at the far ends; ${(unseen / PAIRS / 1024).toFixed(1)} KiB a pair unseen`);
  t.true(unseen / PAIRS <= 16 * 1024, `each stalled pair keeps ${(unseen / PAIRS / 1024).toFixed(1)} KiB the meter was not charged`);
  for (const { left, right } of pairs) {
    left.destroy();
    right.destroy();
  }
});
