// Interop with an independent yamux implementation, @chainsafe/libp2p-yamux
// 7.0.4, over real loopback TCP, in both roles.
import test, { type ExecutionContext } from 'ava';
import { createHash, randomBytes } from 'node:crypto';
import { once } from 'node:events';
import net from 'node:net';
import { yamux } from '@chainsafe/libp2p-yamux';
import type { Uint8ArrayList } from 'uint8arraylist';
import { MuxSession, MuxStream } from '../agent/mux/index.ts';

type TheirMuxer = ReturnType<ReturnType<ReturnType<typeof yamux>>['createStreamMuxer']>;
type TheirStream = Awaited<ReturnType<TheirMuxer['newStream']>>;

const MiB = 1024 * 1024;

/** chainsafe wants a libp2p ComponentLogger; a silent one will do. */
const silentLogger = {
  forComponent() {
    const log = Object.assign(() => {}, { error: () => {}, trace: () => {}, enabled: false });
    return log;
  },
} as unknown as Parameters<ReturnType<typeof yamux>>[0]['logger'];

async function tcpPair(t: ExecutionContext): Promise<[net.Socket, net.Socket]> {
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

const flat = (c: Uint8Array | Uint8ArrayList): Uint8Array => (c instanceof Uint8Array ? c : c.subarray());

/** Runs their muxer on a socket: socket bytes into its sink, its source onto the socket (with backpressure). */
function theirMuxer(t: ExecutionContext, sock: net.Socket, role: 'client' | 'server', onIncomingStream: (s: TheirStream) => void): TheirMuxer {
  const muxer = yamux({ enableKeepAlive: false })({ logger: silentLogger }).createStreamMuxer({
    direction: role === 'client' ? 'outbound' : 'inbound',
    onIncomingStream,
  });
  sock.on('error', () => {});
  // A socket is an async iterable of Buffers, which is all their sink reads.
  Promise.resolve(muxer.sink(sock as unknown as AsyncGenerator<Uint8Array>)).catch(() => {});
  void (async () => {
    for await (const chunk of muxer.source) {
      if (!sock.write(flat(chunk))) await once(sock, 'drain');
    }
    sock.end();
  })().catch(() => {});
  t.teardown(() => muxer.abort(new Error('test over')));
  return muxer;
}

const sha256 = (b: Uint8Array) => createHash('sha256').update(b).digest('hex');

/** Their side of one stream: send `data` (then close write), read everything. */
async function theirTransfer(s: TheirStream, data: Buffer, sendAfterRemoteEnd = false): Promise<Buffer> {
  const received: Uint8Array[] = [];
  let remoteEnded!: () => void;
  const ended = new Promise<void>((r) => (remoteEnded = r));
  const reading = (async () => {
    for await (const c of s.source) received.push(flat(c));
    remoteEnded();
  })();
  async function* chunks() {
    if (sendAfterRemoteEnd) await ended;
    for (let off = 0; off < data.length; off += 100_000) yield data.subarray(off, off + 100_000);
  }
  await Promise.all([s.sink(chunks()), reading]);
  return Buffer.concat(received);
}

/** Our side of one stream: send `data` (then FIN), read everything. */
async function ourTransfer(s: MuxStream, data: Buffer, sendAfterRemoteEnd = false): Promise<Buffer> {
  const received: Buffer[] = [];
  const ended = new Promise<void>((resolve, reject) => {
    s.on('data', (c: Buffer) => received.push(c));
    s.once('end', resolve);
    s.once('error', reject);
  });
  if (sendAfterRemoteEnd) await ended;
  for (let off = 0; off < data.length; off += 64 * 1024) {
    if (!s.write(data.subarray(off, off + 64 * 1024))) await once(s, 'drain');
  }
  s.end();
  await Promise.all([ended, once(s, 'finish')]);
  return Buffer.concat(received);
}

type Who = 'we' | 'they';

/**
 * `streams` concurrent streams, opened by `opener`, each moving `size` bytes
 * both ways. `firstToEnd` (if set) finishes sending before the other side
 * starts, so the other side keeps sending after the remote FIN.
 */
async function transfer(t: ExecutionContext, ourRole: 'client' | 'server', opener: Who, streams: number, size: number, firstToEnd?: Who) {
  const [ourSock, theirSock] = await tcpPair(t);
  const ours = new MuxSession(ourSock, { role: ourRole });
  t.teardown(() => ours.close());
  const pairs: Array<{ ourData: Buffer; theirData: Buffer }> = Array.from({ length: streams }, () => ({
    ourData: randomBytes(size),
    theirData: randomBytes(size),
  }));
  const theirDone: Array<Promise<Buffer>> = [];
  const ourDone: Array<Promise<Buffer>> = [];
  let theirIncoming = 0;
  const theirs = theirMuxer(t, theirSock, ourRole === 'client' ? 'server' : 'client', (s) => {
    const p = pairs[theirIncoming++];
    theirDone.push(theirTransfer(s, p.theirData, firstToEnd === 'we'));
  });
  let ourIncoming = 0;
  ours.on('stream', (s: MuxStream) => {
    const p = pairs[ourIncoming++];
    ourDone.push(ourTransfer(s, p.ourData, firstToEnd === 'they'));
  });
  for (const p of opener === 'we' ? pairs : []) ourDone.push(ourTransfer(ours.open(), p.ourData, firstToEnd === 'they'));
  for (const p of opener === 'they' ? pairs : []) {
    theirDone.push(theirTransfer(await theirs.newStream(), p.theirData, firstToEnd === 'we'));
  }
  const deadline = Date.now() + 20_000;
  while ((ourDone.length < streams || theirDone.length < streams) && Date.now() < deadline) await new Promise((r) => setTimeout(r, 5));
  const [ourGot, theirGot] = await Promise.all([Promise.all(ourDone), Promise.all(theirDone)]);
  // Streams are matched by order of opening on both sides.
  for (let i = 0; i < streams; i++) {
    t.is(sha256(ourGot[i]), sha256(pairs[i].theirData), `stream ${i}: what they sent arrived intact`);
    t.is(sha256(theirGot[i]), sha256(pairs[i].ourData), `stream ${i}: what we sent arrived intact`);
  }
  const rtt = await ours.ping();
  t.true(rtt >= 0, 'their side answers our ping');
  t.false(ours.closed);
}

for (const ourRole of ['client', 'server'] as const) {
  const roles = `we are ${ourRole}, chainsafe is ${ourRole === 'client' ? 'server' : 'client'}`;
  test(`4 MiB each way on a stream we open arrives intact (${roles})`, (t) => transfer(t, ourRole, 'we', 1, 4 * MiB));
  test(`4 MiB each way on a stream chainsafe opens arrives intact (${roles})`, (t) => transfer(t, ourRole, 'they', 1, 4 * MiB));
  test(`four concurrent streams each move 2 MiB both ways (${roles})`, (t) => transfer(t, ourRole, 'we', 4, 2 * MiB));
  test(`chainsafe keeps sending after our FIN and then ends (${roles})`, (t) => transfer(t, ourRole, 'we', 2, 1 * MiB, 'we'));
  test(`we keep sending after chainsafe's FIN and then end (${roles})`, (t) => transfer(t, ourRole, 'they', 2, 1 * MiB, 'they'));
}
