import test, { type ExecutionContext } from 'ava';
import { createHash, randomBytes } from 'node:crypto';
import { once } from 'node:events';
import net from 'node:net';
import tls from 'node:tls';
import { Duplex } from 'node:stream';
import selfsigned from 'selfsigned';
import {
  Flag,
  FrameDecoder,
  FrameType,
  GoAwayCode,
  HEADER_LENGTH,
  INITIAL_STREAM_WINDOW,
  MuxError,
  MuxSession,
  MuxStream,
  encodeHeader,
  type FrameHeader,
  type MuxConfig,
} from '../agent/mux/index.ts';

// ---- transports: the same test bodies run over each, with roles swapped -----------

type Transport = 'memory' | 'tcp' | 'tls';

/** In-memory connection end: what one side writes, the other reads (copied, asynchronously, like a socket). */
class MemoryEnd extends Duplex {
  peer!: MemoryEnd;
  constructor() {
    super({ allowHalfOpen: false });
  }
  override _read(): void {}
  override _write(chunk: Buffer, _enc: BufferEncoding, cb: (err?: Error | null) => void): void {
    this._writev([{ chunk }], cb);
  }
  override _writev(chunks: Array<{ chunk: Buffer }>, cb: (err?: Error | null) => void): void {
    // One chunk per writev, as a socket would coalesce: exercises both decoder paths.
    const data = Buffer.concat(chunks.map((c) => c.chunk));
    setImmediate(() => {
      if (!this.peer.destroyed) this.peer.push(data);
      cb();
    });
  }
  override _final(cb: (err?: Error | null) => void): void {
    setImmediate(() => {
      if (!this.peer.destroyed) this.peer.push(null);
      cb();
    });
  }
  override _destroy(err: Error | null, cb: (err?: Error | null) => void): void {
    setImmediate(() => this.peer.destroy());
    cb(err);
  }
}

let certPromise: Promise<{ key: string; cert: string }> | undefined;
function cert() {
  certPromise ??= selfsigned.generate(undefined, { keyType: 'ec' }).then((p) => ({ key: p.private, cert: p.cert }));
  return certPromise;
}

/** Two connected ends: [dialer, listener]. Closed in teardown. */
async function connPair(t: ExecutionContext, transport: Transport): Promise<[Duplex, Duplex]> {
  if (transport === 'memory') {
    const a = new MemoryEnd();
    const b = new MemoryEnd();
    a.peer = b;
    b.peer = a;
    t.teardown(() => void (a.destroy(), b.destroy()));
    return [a, b];
  }
  if (transport === 'tcp') {
    const server = net.createServer();
    server.listen(0, '127.0.0.1');
    await once(server, 'listening');
    const { port } = server.address() as net.AddressInfo;
    const accepted = once(server, 'connection');
    const dialer = net.connect(port, '127.0.0.1');
    const [[listener]] = (await Promise.all([accepted, once(dialer, 'connect')])) as [[net.Socket], unknown];
    t.teardown(() => void (dialer.destroy(), listener.destroy(), server.close()));
    return [dialer, listener];
  }
  const { key, cert: crt } = await cert();
  const server = tls.createServer({ key, cert: crt });
  server.listen(0, '127.0.0.1');
  await once(server, 'listening');
  const { port } = server.address() as net.AddressInfo;
  const accepted = once(server, 'secureConnection');
  const dialer = tls.connect({ port, host: '127.0.0.1', ca: crt, checkServerIdentity: () => undefined });
  // Both at once: with TLS 1.3 the client is connected before the server is.
  const [[listener]] = (await Promise.all([accepted, once(dialer, 'secureConnect')])) as [[tls.TLSSocket], unknown];
  t.teardown(() => void (dialer.destroy(), listener.destroy(), server.close()));
  return [dialer, listener];
}

interface Setup {
  /** The dialing side's session; it has the client role unless roles are swapped. */
  a: MuxSession;
  /** The listening side's session. */
  b: MuxSession;
  aConn: Duplex;
  bConn: Duplex;
}

type Options = Partial<MuxConfig>;

async function sessions(t: ExecutionContext, transport: Transport, swapped: boolean, aOpts: Options = {}, bOpts: Options = {}): Promise<Setup> {
  const [aConn, bConn] = await connPair(t, transport);
  const a = new MuxSession(aConn, { role: swapped ? 'server' : 'client', ...aOpts });
  const b = new MuxSession(bConn, { role: swapped ? 'client' : 'server', ...bOpts });
  t.teardown(() => (a.close(), b.close()));
  return { a, b, aConn, bConn };
}

/** One session against a raw connection that the test drives frame by frame. */
async function rawPeer(t: ExecutionContext, transport: Transport, swapped: boolean, opts: Options = {}) {
  const [conn, raw] = await connPair(t, transport);
  const role = swapped ? 'server' : 'client';
  const session = new MuxSession(conn, { role, ...opts });
  t.teardown(() => (session.close(), raw.destroy()));
  const frames: Array<FrameHeader & { payload: Buffer }> = [];
  const waiters: Array<() => void> = [];
  const decoder = new FrameDecoder(1 << 24, (h, p) => {
    frames.push({ ...h, payload: Buffer.from(p) });
    for (const w of waiters.splice(0)) w();
  });
  raw.on('data', (c: Buffer) => decoder.push(c));
  raw.on('error', () => {});
  const send = (type: number, flags: number, id: number, length: number, payload?: Buffer) => {
    const h = Buffer.alloc(HEADER_LENGTH);
    encodeHeader(h, 0, type, flags, id, length);
    raw.write(payload ? Buffer.concat([h, payload]) : h);
  };
  /** Resolves with the first received frame matching `pred`. */
  const expectFrame = async (pred: (f: FrameHeader) => boolean) => {
    for (;;) {
      const f = frames.find(pred);
      if (f) return f;
      await new Promise<void>((r) => waiters.push(r));
    }
  };
  // The raw side plays the other role: its stream ids have the other parity.
  const rawId = role === 'client' ? 2 : 1;
  return { session, raw, send, expectFrame, rawId };
}

// ---- helpers ---------------------------------------------------------------------

const sha256 = (b: Buffer) => createHash('sha256').update(b).digest('hex');

/** Reads to the end without destroying the stream (a `for await` loop would destroy it, sending RST). */
function readAll(s: MuxStream): Promise<Buffer> {
  return new Promise((resolve, reject) => {
    const parts: Buffer[] = [];
    s.on('data', (c: Buffer) => parts.push(c));
    s.once('end', () => resolve(Buffer.concat(parts)));
    s.once('error', reject);
  });
}

/** Writes `data` in chunks of mixed sizes (some small, to exercise writev batching), then ends. */
async function writeAll(s: MuxStream, data: Buffer): Promise<void> {
  let off = 0;
  let i = 0;
  while (off < data.length) {
    const n = i++ % 3 === 0 ? 1000 + (i % 7) * 313 : 64 * 1024 + (i % 5) * 4099;
    if (!s.write(data.subarray(off, off + n))) await once(s, 'drain');
    off += n;
  }
  s.end();
  await once(s, 'finish');
}

function nextStream(session: MuxSession): Promise<MuxStream> {
  return once(session, 'stream').then(([s]) => s as MuxStream);
}

function errorOf(s: MuxStream): Promise<Error> {
  return once(s, 'error').then(([e]) => e as Error, (e: Error) => e);
}

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

async function until(cond: () => boolean, what: string, ms = 5000): Promise<void> {
  const deadline = Date.now() + ms;
  while (!cond()) {
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`);
    await sleep(5);
  }
}

// ---- the test bodies ---------------------------------------------------------------

type Body = (t: ExecutionContext, transport: Transport, swapped: boolean) => Promise<void>;

const bodies: Array<[string, Body]> = [
  ['a stream opened on one side is accepted on the other and echoes', async (t, tr, sw) => {
    const { a, b } = await sessions(t, tr, sw);
    b.on('stream', (s: MuxStream) => s.pipe(s));
    const s = a.open();
    t.is(s.id % 2, sw ? 0 : 1, 'client ids are odd, server ids even');
    s.end('hello, mux');
    t.is((await readAll(s)).toString(), 'hello, mux');
    // And the other direction.
    a.on('stream', (r: MuxStream) => r.pipe(r));
    const r = b.open();
    r.end('back');
    t.is((await readAll(r)).toString(), 'back');
  }],

  ['8 MiB each way on one stream arrive intact (SHA-256)', async (t, tr, sw) => {
    const { a, b } = await sessions(t, tr, sw);
    const up = randomBytes(8 * 1024 * 1024);
    const down = randomBytes(8 * 1024 * 1024);
    const serverSide = nextStream(b).then(async (s) => {
      const [got] = await Promise.all([readAll(s), writeAll(s, down)]);
      return got;
    });
    const s = a.open();
    const [gotDown] = await Promise.all([readAll(s), writeAll(s, up)]);
    t.is(sha256(await serverSide), sha256(up));
    t.is(sha256(gotDown), sha256(down));
    await until(() => a.streamCount === 0 && b.streamCount === 0, 'both sides to forget the finished stream');
  }],

  ['64 concurrent streams each echo their own data', async (t, tr, sw) => {
    const { a, b } = await sessions(t, tr, sw);
    b.on('stream', (s: MuxStream) => s.pipe(s));
    const results = await Promise.all(
      Array.from({ length: 64 }, async () => {
        const data = randomBytes(48 * 1024 + Math.floor(Math.random() * 32 * 1024));
        const s = a.open();
        const [got] = await Promise.all([readAll(s), writeAll(s, data)]);
        return sha256(got) === sha256(data);
      }),
    );
    t.true(results.every(Boolean));
    await until(() => a.streamCount === 0 && b.streamCount === 0, 'all streams to be forgotten');
  }],

  ['after one side half-closes, the other can still send and then end', async (t, tr, sw) => {
    const { a, b } = await sessions(t, tr, sw);
    const done = nextStream(b).then(async (s) => {
      const got = await readAll(s); // ends at a's FIN
      t.true(s.writable, 'our write side stays open after the remote FIN');
      await sleep(20);
      s.write('still ');
      s.end('talking');
      return got.toString();
    });
    const s = a.open();
    s.end('bye');
    await once(s, 'finish');
    t.is((await readAll(s)).toString(), 'still talking');
    t.is(await done, 'bye');
    await until(() => a.streamCount === 0 && b.streamCount === 0, 'both FINs to remove the stream');
  }],

  ['a reset stream errors on the other side with ECONNRESET, either way', async (t, tr, sw) => {
    const { a, b } = await sessions(t, tr, sw);
    const inbound = nextStream(b);
    const s = a.open();
    s.write('x');
    const r = await inbound;
    const err = errorOf(s);
    r.reset();
    t.is(((await err) as MuxError).code, 'ECONNRESET');
    t.true((await err) instanceof MuxError);
    // destroy() without end() also sends RST.
    const inbound2 = nextStream(b);
    const s2 = a.open();
    s2.write('y');
    const r2 = await inbound2;
    const err2 = errorOf(r2);
    s2.destroy();
    t.is(((await err2) as MuxError).code, 'ECONNRESET');
    await until(() => a.streamCount === 0 && b.streamCount === 0, 'reset streams to be forgotten');
  }],

  ['destroy() after end() is a close, not an abort: the peer reads all, sees our FIN, gets no RST, and the stream goes once it ends too', async (t, tr, sw) => {
    // What TLS over a stream does (the end-to-end layer): its socket closes, and destroys the
    // stream under it, once it has read the peer's close_notify and sent its own, which can
    // be before the peer's FIN frame arrives. A RST then threw away the peer's unread reply.
    const { a, b } = await sessions(t, tr, sw);
    const inbound = nextStream(b);
    const s = a.open();
    s.write('question');
    const r = await inbound;
    r.once('data', () => {
      r.end('answer');
      r.once('finish', () => r.destroy());
    });
    let error: Error | undefined;
    s.on('error', (e) => (error = e));
    const got = await readAll(s).catch((e: Error) => Buffer.from(`error ${e.message}`));
    await sleep(50); // a RST, if any, arrives right behind the FIN
    t.is(got.toString(), 'answer');
    t.is(error, undefined);
    t.is(b.streamCount, 1, 'the closed stream waits for the peer FIN (as TCP after close)');
    s.end();
    await until(() => a.streamCount === 0 && b.streamCount === 0, 'the peer FIN to release both ends');
  }],

  ['a closed stream whose peer never ends is reset after lingerTimeout; reset() still aborts at once', async (t, tr, sw) => {
    const { a, b } = await sessions(t, tr, sw, {}, { lingerTimeout: 300 });
    const inbound = nextStream(b);
    const s = a.open();
    s.write('x');
    const r = await inbound;
    const err = errorOf(s);
    r.end('y');
    await once(r, 'finish');
    r.destroy();
    const started = Date.now();
    t.is(((await err) as MuxError).code, 'ECONNRESET');
    t.true(Date.now() - started >= 250, 'not before the linger time');
    await until(() => a.streamCount === 0 && b.streamCount === 0, 'the reset streams to be forgotten');
    // reset() after end() is an abort, not a close: with the default 10 s linger, the RST comes at once.
    const other = await sessions(t, tr, sw);
    const inbound2 = nextStream(other.b);
    const s2 = other.a.open();
    s2.write('x');
    const r2 = await inbound2;
    const err2 = errorOf(s2);
    r2.end('y');
    await once(r2, 'finish');
    const started2 = Date.now();
    r2.reset();
    t.is(((await err2) as MuxError).code, 'ECONNRESET');
    t.true(Date.now() - started2 < 5000, 'reset() does not linger (10 s)');
  }],

  ['after a go-away neither side opens new streams but existing streams continue', async (t, tr, sw) => {
    const { a, b } = await sessions(t, tr, sw);
    b.on('stream', (s: MuxStream) => s.pipe(s));
    const s = a.open();
    s.write('before ');
    a.goAway();
    t.is(t.throws(() => a.open(), { instanceOf: MuxError })!.code, 'EGOAWAY');
    await b.ping(); // frames are ordered: the go-away has arrived once the ping is answered
    t.is(t.throws(() => b.open(), { instanceOf: MuxError })!.code, 'EGOAWAY');
    s.end('after');
    t.is((await readAll(s)).toString(), 'before after');
    t.false(a.closed);
    t.false(b.closed);
  }],

  ['ping returns a round-trip time in milliseconds from both sides', async (t, tr, sw) => {
    const { a, b } = await sessions(t, tr, sw);
    const [ra, rb] = await Promise.all([a.ping(), b.ping()]);
    // Generous bound: other tests share this event loop and can delay the answer.
    for (const rtt of [ra, rb]) t.true(rtt >= 0 && rtt < 10_000, `rtt ${rtt}`);
  }],

  ['data and window updates for an unknown stream are ignored, not fatal', async (t, tr, sw) => {
    const { session, send, expectFrame, rawId } = await rawPeer(t, tr, sw);
    send(FrameType.Data, 0, 1001, 5, Buffer.from('hello'));
    send(FrameType.WindowUpdate, 0, 1003, 1000);
    send(FrameType.Data, Flag.FIN, rawId + 1000, 3, Buffer.from('abc'));
    send(FrameType.Ping, Flag.SYN, 0, 77);
    const pong = await expectFrame((f) => f.type === FrameType.Ping && f.flags === Flag.ACK); // the session pings at start too
    t.is(pong.flags, Flag.ACK);
    t.is(pong.length, 77);
    t.false(session.closed);
    t.is(session.streamCount, 0);
  }],

  ['data beyond the granted window closes the session with a protocol-error go-away', async (t, tr, sw) => {
    const { session, send, expectFrame, rawId } = await rawPeer(t, tr, sw);
    session.on('stream', (s: MuxStream) => s.on('error', () => {}));
    const closed = once(session, 'close');
    send(FrameType.WindowUpdate, Flag.SYN, rawId, 0);
    send(FrameType.Data, 0, rawId, INITIAL_STREAM_WINDOW + 1, Buffer.alloc(INITIAL_STREAM_WINDOW + 1));
    const goAway = await expectFrame((f) => f.type === FrameType.GoAway);
    t.is(goAway.length, GoAwayCode.ProtocolError);
    const [err] = (await closed) as [MuxError];
    t.is(err.code, 'EPROTOCOL');
    t.true(session.closed);
  }],

  ['a SYN with a stream id of our own parity is a protocol error', async (t, tr, sw) => {
    const { session, send, expectFrame, rawId } = await rawPeer(t, tr, sw);
    const closed = once(session, 'close');
    send(FrameType.WindowUpdate, Flag.SYN, rawId + 1, 0);
    t.is((await expectFrame((f) => f.type === FrameType.GoAway)).length, GoAwayCode.ProtocolError);
    t.is(((await closed)[0] as MuxError).code, 'EPROTOCOL');
  }],

  ['a stream reset while still in the accept backlog goes away quietly, as do backlog streams at close', async (t, tr, sw) => {
    const { session, send, expectFrame, rawId } = await rawPeer(t, tr, sw);
    send(FrameType.WindowUpdate, Flag.SYN, rawId, 0);
    send(FrameType.WindowUpdate, Flag.RST, rawId, 0);
    send(FrameType.Data, Flag.SYN, rawId + 2, 3, Buffer.from('abc'));
    send(FrameType.Ping, Flag.SYN, 0, 5);
    await expectFrame((f) => f.type === FrameType.Ping && f.flags === Flag.ACK && f.length === 5);
    t.is(session.streamCount, 1, 'the reset one is gone, the other waits');
    const closed = once(session, 'close');
    session.close(new MuxError('EINTERNAL', 'test')); // would crash on an unheard stream error
    t.is(((await closed)[0] as MuxError).code, 'EINTERNAL');
    t.is((await expectFrame((f) => f.type === FrameType.GoAway)).length, GoAwayCode.InternalError);
  }],

  ['an error go-away from the peer closes the session and errors its streams', async (t, tr, sw) => {
    const { session, send, expectFrame } = await rawPeer(t, tr, sw);
    const s = session.open();
    await expectFrame((f) => f.flags === Flag.SYN && f.streamId === s.id);
    const err = errorOf(s);
    const closed = once(session, 'close');
    send(FrameType.GoAway, 0, 0, GoAwayCode.InternalError);
    t.is(((await closed)[0] as MuxError).code, 'EGOAWAY');
    t.is(((await err) as MuxError).code, 'EGOAWAY');
  }],

  ['a peer that does not answer keep-alive pings is disconnected', async (t, tr, sw) => {
    const { session, expectFrame } = await rawPeer(t, tr, sw, { keepAliveInterval: 30, keepAliveTimeout: 60 });
    // Keep-alive timers are unref'd (the connection keeps a process alive, not the mux);
    // an in-memory connection holds no handle, so hold the event loop here.
    const hold = setInterval(() => {}, 1000);
    t.teardown(() => clearInterval(hold));
    const closed = once(session, 'close');
    await expectFrame((f) => f.type === FrameType.Ping && f.flags === Flag.SYN);
    t.is(((await closed)[0] as MuxError).code, 'ETIMEDOUT');
  }],

  ['a paused reader stops the writer after about one window and nothing more is buffered', async (t, tr, sw) => {
    const { a, b } = await sessions(t, tr, sw);
    const inbound = nextStream(b);
    const s = a.open();
    const chunk = randomBytes(64 * 1024);
    const total = 2 * 1024 * 1024;
    let written = 0;
    const writeNext = (): void => {
      if (written >= total) return void s.end();
      s.write(chunk, () => {
        written += chunk.length;
        writeNext();
      });
    };
    writeNext();
    const r = await inbound; // never read until below
    await until(() => r.readableLength >= INITIAL_STREAM_WINDOW, 'the first window to arrive');
    await sleep(150);
    t.is(written, INITIAL_STREAM_WINDOW, 'the write callback is held once the window is used');
    t.true(r.readableLength <= INITIAL_STREAM_WINDOW, `buffered ${r.readableLength}`);
    // Resume: everything arrives.
    const got = await readAll(r);
    t.is(got.length, total);
  }],

  ['streams beyond the accept backlog are reset, the rest wait for a listener', async (t, tr, sw) => {
    const { a, b } = await sessions(t, tr, sw, {}, { acceptBacklog: 2 });
    const streams = [a.open(), a.open(), a.open()];
    for (const s of streams) s.write('x');
    const err = await errorOf(streams[2]);
    t.is((err as MuxError).code, 'ECONNRESET');
    const accepted: MuxStream[] = [];
    b.on('stream', (s: MuxStream) => accepted.push(s));
    await until(() => accepted.length === 2, 'the backlog to be delivered');
    t.deepEqual(accepted.map((s) => s.id), [streams[0].id, streams[1].id]);
    t.is((await new Promise<Buffer>((r) => accepted[0].once('data', r))).toString(), 'x');
  }],

  ['streams beyond maxStreams are reset', async (t, tr, sw) => {
    const { a, b } = await sessions(t, tr, sw, {}, { maxStreams: 2 });
    b.on('stream', (r: MuxStream) => r.on('error', () => {}));
    const streams = [a.open(), a.open(), a.open()];
    const err = await errorOf(streams[2]);
    t.is((err as MuxError).code, 'ECONNRESET');
    t.is(b.streamCount, 2);
  }],

  ['closing a session destroys its streams and emits close exactly once on each side', async (t, tr, sw) => {
    const { a, b, aConn } = await sessions(t, tr, sw);
    const remote: MuxStream[] = [];
    b.on('stream', (s: MuxStream) => remote.push(s));
    const local = [a.open(), a.open()];
    for (const s of local) s.write('hi');
    await until(() => remote.length === 2, 'streams to be accepted');
    const remoteErrors = remote.map(errorOf);
    let aCloses = 0;
    let bCloses = 0;
    a.on('close', () => aCloses++);
    b.on('close', () => bCloses++);
    const bClosed = once(b, 'close');
    a.close();
    a.close();
    t.true(a.closed);
    t.is(a.streamCount, 0);
    t.true(local.every((s) => s.destroyed));
    t.is(t.throws(() => a.open(), { instanceOf: MuxError })!.code, 'ESESSIONCLOSED');
    const [bErr] = await bClosed;
    t.is(bErr, undefined, 'the peer said go-away first, so this is a clean close');
    for (const e of await Promise.all(remoteErrors)) t.is((e as MuxError).code, 'ECONNCLOSED');
    await until(() => aConn.destroyed, 'the connection to be destroyed');
    await sleep(20);
    t.is(aCloses, 1);
    t.is(bCloses, 1);
    t.is(aConn.listenerCount('drain'), 0, 'no listeners left on the connection');
    await t.throwsAsync(a.ping(), { instanceOf: MuxError });
  }],

  ['a connection that dies destroys all streams with an error and closes the session once', async (t, tr, sw) => {
    const { a, b, bConn } = await sessions(t, tr, sw);
    b.on('stream', (r: MuxStream) => r.on('error', () => {})); // they fail too, by design
    const s = a.open();
    s.write('x');
    const err = errorOf(s);
    let closes = 0;
    a.on('close', () => closes++);
    const closed = once(a, 'close');
    await b.ping();
    bConn.destroy();
    const [sessionErr] = await closed;
    t.true(sessionErr instanceof Error);
    t.is(((await err) as MuxError).code, 'ECONNCLOSED');
    await sleep(20);
    t.is(closes, 1);
    t.true(a.closed);
  }],
];

const transports: Transport[] = ['memory', 'tcp', 'tls'];
for (const transport of transports) {
  for (const swapped of [false, true]) {
    const roles = swapped ? 'dialer is server' : 'dialer is client';
    for (const [name, body] of bodies) {
      test(`${name} (${transport}, ${roles})`, (t) => body(t, transport, swapped));
    }
  }
}

test('a slow reader that takes a whole window in pieces still gets the rest (window given back after the last buffered bytes are read)', async (t) => {
  // Read with pauses, as a rate-limited download does: the window's bytes arrive while the reader
  // sleeps, Node's _read runs once while most of them are buffered (too early to give window
  // back) and not again until a push, which never came: the stream stalled after 256 KiB.
  const { a, b } = await sessions(t, 'tcp', false);
  const total = 3 * INITIAL_STREAM_WINDOW;
  b.on('stream', (s: MuxStream) => s.end(randomBytes(total)));
  const s = a.open();
  s.end();
  let received = 0;
  const deadline = setTimeout(() => s.destroy(new Error(`stalled after ${received} bytes`)), 20_000);
  for await (const chunk of s as AsyncIterable<Buffer>) {
    received += chunk.length;
    await new Promise((r) => setTimeout(r, 50));
  }
  clearTimeout(deadline);
  t.is(received, total);
});

test('a connection paused by an earlier handshake is resumed by the session', async (t) => {
  const [aConn, bConn] = await connPair(t, 'tcp');
  aConn.pause();
  bConn.pause();
  const a = new MuxSession(aConn, { role: 'client' });
  const b = new MuxSession(bConn, { role: 'server' });
  t.teardown(() => (a.close(), b.close()));
  b.on('stream', (s: MuxStream) => s.pipe(s));
  const s = a.open();
  s.end('still flowing');
  t.is((await readAll(s)).toString(), 'still flowing');
});

test('a bad config is refused before anything starts', (t) => {
  const conn = new MemoryEnd();
  conn.peer = new MemoryEnd();
  for (const bad of [{ initialWindow: 1024 }, { maxWindow: 1 }, { maxFrameData: 0 }, { keepAliveInterval: -1 }, { acceptBacklog: 1.5 }]) {
    const err = t.throws(() => new MuxSession(conn, { role: 'client', ...bad }), { instanceOf: MuxError });
    t.is(err!.code, 'ECONFIG');
  }
});

// ---- liveness and control-frame backpressure (issue 19 item 2, issue 14 item 1) -----

test('any bytes received are proof of life: a peer that never answers pings but keeps sending stays connected, and silence then closes it', async (t) => {
  const { session, send } = await rawPeer(t, 'tcp', false, { keepAliveInterval: 300, keepAliveTimeout: 1_000 });
  const closed = once(session, 'close').then(([err]) => ({ err: err as MuxError, at: performance.now() }));
  // Window updates for a stream that does not exist: dropped by the session, but bytes on the wire.
  const chatter = setInterval(() => send(FrameType.WindowUpdate, 0, 999, 0), 100);
  t.teardown(() => clearInterval(chatter));
  await sleep(2_500);
  t.false(session.closed, 'a peer that keeps sending something is alive, answered pings or not');
  clearInterval(chatter);
  const silentFrom = performance.now();
  const { err, at } = await closed;
  t.is(err.code, 'ETIMEDOUT');
  const ms = at - silentFrom;
  t.true(ms >= 800 && ms < 3_000, `closed ${ms.toFixed(0)} ms after the peer fell silent (timeout 1000)`);
});

test('write timeout: bytes that the transport never takes (nothing acknowledged) close the session', async (t) => {
  const { session, raw } = await rawPeer(t, 'tcp', false, { keepAliveInterval: 0, writeTimeout: 300, initialWindow: INITIAL_STREAM_WINDOW });
  (raw as net.Socket).pause(); // the peer reads nothing: loopback buffers fill, then nothing leaves
  const chunk = randomBytes(64 * 1024);
  // Enough streams, each filling its window, to exceed both kernel buffers.
  for (let i = 0; i < 128; i++) {
    const s = session.open();
    s.on('error', () => {});
    for (let j = 0; j < 4; j++) s.write(chunk);
  }
  const [err] = (await once(session, 'close')) as [MuxError];
  t.is(err.code, 'ETIMEDOUT');
  t.regex(err.message, /none taken/);
});

test('ping flood (mux): a peer that sends pings and never reads is no longer read at maxControlQueue and is closed with go-away', async (t) => {
  const { session, raw } = await rawPeer(t, 'tcp', false, { maxControlQueue: 64, controlStallTimeout: 300, keepAliveInterval: 0 });
  (raw as net.Socket).pause(); // never reads our answers
  raw.on('error', () => {});
  const frames = 4096;
  const chunk = Buffer.alloc(frames * HEADER_LENGTH);
  for (let i = 0; i < frames; i++) encodeHeader(chunk, i * HEADER_LENGTH, FrameType.Ping, Flag.SYN, 0, i);
  let sent = 0;
  let closed = false;
  let code = '';
  session.once('close', (err?: MuxError) => ((closed = true), (code = err?.code ?? '')));
  const started = performance.now();
  while (!closed && performance.now() - started < 5_000) {
    if (!raw.write(chunk)) await Promise.race([once(raw, 'drain'), sleep(50)]);
    sent += chunk.length;
  }
  t.true(closed, 'the flooding peer is closed');
  t.is(code, 'ECONTROLSTALL');
  t.log(`the peer got ${(sent / 2 ** 20).toFixed(1)} MiB of pings out before it was closed`);
  // Without the bound the session read everything and queued an answer for each.
  t.true(sent < 256 * 2 ** 20);
});

test('1-byte frames behind bytes a paused reader has not taken are gathered, not queued one by one, and read intact and in order up to the FIN', async (t) => {
  // Each queued piece costs far more than its byte (a Buffer, a queue entry, its TLS record kept
  // alive), while windows and a relay's budgets count bytes: a peer's 1-byte frames to a stalled
  // reader made a relay hold hundreds of MiB. Behind queued bytes, small payloads are gathered.
  const { send, raw, rawId, session } = await rawPeer(t, 'tcp', false);
  const accepted = once(session, 'stream') as Promise<[MuxStream]>;
  send(FrameType.WindowUpdate, Flag.SYN, rawId, 0);
  const [s] = await accepted;
  s.pause();
  const frames = 20_000;
  const sent = Buffer.alloc(frames);
  const wire = Buffer.alloc(frames * (HEADER_LENGTH + 1) + 2 * HEADER_LENGTH + 3000);
  let off = 0;
  // A larger payload first (queued as it is), then the small ones behind it, then the FIN.
  const big = randomBytes(3000);
  encodeHeader(wire, off, FrameType.Data, 0, rawId, big.length);
  big.copy(wire, off + HEADER_LENGTH);
  off += HEADER_LENGTH + big.length;
  for (let i = 0; i < frames; i++) {
    sent[i] = (i * 7 + 3) & 0xff;
    encodeHeader(wire, off, FrameType.Data, 0, rawId, 1);
    wire[off + HEADER_LENGTH] = sent[i];
    off += HEADER_LENGTH + 1;
  }
  encodeHeader(wire, off, FrameType.WindowUpdate, Flag.FIN, rawId, 0);
  off += HEADER_LENGTH;
  raw.write(wire.subarray(0, off));
  await until(() => s.readableLength === big.length + frames, 'all bytes received');
  const pieces: Buffer[] = [];
  s.on('data', (c: Buffer) => pieces.push(c));
  s.resume();
  await once(s, 'end');
  t.true(Buffer.concat(pieces).equals(Buffer.concat([big, sent])), 'every byte, in order');
  t.true(pieces.length <= 1 + Math.ceil(frames / 1024) + 2, `${frames} one-byte frames were read as ${pieces.length - 1} pieces`);
});
