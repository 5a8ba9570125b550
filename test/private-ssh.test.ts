import test from 'ava';
import { execFile } from 'node:child_process';
import { connect, createServer, type Socket } from 'node:net';
import { Duplex } from 'node:stream';
import { promisify } from 'node:util';
import { start, startRelay, startPublish, startSocksd, tempDir } from './helpers/diode.ts';
import { startSshd, sshOptions } from './helpers/sshd.ts';
import { Identity } from '../agent/identity/index.ts';
import { RelayServer } from '../agent/relay/server.ts';
import { Registry, type AgentSession } from '../agent/relay/registry.ts';
import { loadOrCreateRelayCert } from '../agent/relay/cert.ts';
import { encodeFrame } from '../agent/protocol/frames.ts';
import type { MuxSession, MuxStream, StreamHoldHook } from '../agent/mux/index.ts';
import { silentLogger } from '../agent/util/log.ts';
import { E2E_HANDSHAKE_TIMEOUT_MS } from '../agent/protocol/limits.ts';

const run = promisify(execFile);
const FAIL_FAST_MS = 10_000;
const SOCKS_CONNECTION_REFUSED = 0x05;
const SOCKS_GENERAL_FAILURE = 0x01;

/** Creates a client identity in a fresh home and returns both. */
async function clientHome(t: Parameters<typeof tempDir>[0]): Promise<{ home: string; address: string }> {
  const home = tempDir(t);
  const proc = start(t, ['address', '--home', home]);
  const m = await proc.waitFor(/^(0x[0-9a-fA-F]{40})$/m);
  return { home, address: m[1] };
}

/** A bare SOCKS5 CONNECT; resolves with the server's reply code (0 = succeeded) and the open socket. */
function socksOpen(socksPort: number, host: string, port: number): Promise<{ rep: number; socket: Socket }> {
  return new Promise((resolve, reject) => {
    const socket = connect(socksPort, '127.0.0.1');
    let stage = 0;
    let buffer = Buffer.alloc(0);
    socket.once('error', reject);
    socket.once('connect', () => socket.write(Buffer.from([5, 1, 0])));
    const onData = (chunk: Buffer) => {
      buffer = Buffer.concat([buffer, chunk]);
      if (stage === 0 && buffer.length >= 2) {
        buffer = buffer.subarray(2);
        stage = 1;
        const name = Buffer.from(host);
        const portBytes = Buffer.alloc(2);
        portBytes.writeUInt16BE(port);
        socket.write(Buffer.concat([Buffer.from([5, 1, 0, 3, name.length]), name, portBytes]));
      }
      // IPv4-typed reply: 10 bytes.
      if (stage === 1 && buffer.length >= 10) {
        socket.off('data', onData);
        resolve({ rep: buffer[1], socket });
      }
    };
    socket.on('data', onData);
  });
}

async function socksReply(socksPort: number, host: string, port: number): Promise<number> {
  const { rep, socket } = await socksOpen(socksPort, host, port);
  socket.destroy();
  return rep;
}

async function sshFails(args: string[]): Promise<{ ms: number; stderr: string }> {
  const started = Date.now();
  try {
    await run('ssh', args, { timeout: FAIL_FAST_MS + 5000 });
  } catch (err) {
    return { ms: Date.now() - started, stderr: String((err as { stderr?: string }).stderr ?? '') };
  }
  throw new Error('ssh succeeded but should have failed');
}

test('an allowed client reaches a private sshd, another key is refused as for an unpublished port (SOCKS 0x05), and a public port beside it stays open to both', async (t) => {
  const sshd = await startSshd(t);
  const relay = await startRelay(t);
  const [alice, bob] = await Promise.all([clientHome(t), clientHome(t)]);
  const device = await startPublish(t, relay.port, ['-public', `${sshd.port}:2200`, '-private', `${sshd.port}:22,${alice.address.toLowerCase()}`]);
  const [socksA, socksB] = await Promise.all([startSocksd(t, relay.port, alice.home), startSocksd(t, relay.port, bob.home)]);
  const host = `${sshd.user}@${device.address.toLowerCase()}.diode`;

  const viaA = await run('ssh', [...sshOptions(sshd, socksA.port), host, 'echo private-ok'], { timeout: 30_000 });
  t.is(viaA.stdout, 'private-ok\n');
  const publicA = await run('ssh', [...sshOptions(sshd, socksA.port), '-p', '2200', host, 'echo public-ok'], { timeout: 30_000 });
  t.is(publicA.stdout, 'public-ok\n');
  const publicB = await run('ssh', [...sshOptions(sshd, socksB.port), '-p', '2200', host, 'echo public-ok'], { timeout: 30_000 });
  t.is(publicB.stdout, 'public-ok\n');

  // Issue 24 item 7: a key that may not use the port learns nothing about it, not even that it is there.
  t.is(await socksReply(socksB.port, `${device.address}.diode`, 22), SOCKS_CONNECTION_REFUSED);
  const refused = await sshFails([...sshOptions(sshd, socksB.port), host, 'true']);
  t.true(refused.ms < FAIL_FAST_MS, `refused ssh took ${refused.ms} ms`);
  t.regex(socksB.proc.output(), new RegExp(`device ${device.address} does not publish port 22`));
});

/**
 * A relay that lies. It routes every stream as if the port were public
 * (skipping its own allow-list filter), rewrites the `from` of incoming
 * headers to `claim`, and, with stripE2E, hides the device's e2e flag from
 * the client so the client sends plaintext.
 */
class LyingRegistry extends Registry {
  constructor(private readonly claim: string, private readonly stripE2E: boolean) {
    super();
  }

  override publisher(address: string): AgentSession | undefined {
    const real = super.publisher(address);
    if (!real) return real;
    const ports = new Map([...real.ports].map(([n, p]) => [n, { port: n, mode: 'public' as const }]));
    const mux = { open: () => new FrameRewriter(real.mux.open(), { from: this.claim }, this.stripE2E) as unknown as MuxStream };
    return { ...real, ports, mux: mux as unknown as MuxSession };
  }
}

/** Passes bytes through, rewriting the first frame written (fields merged in) and, optionally, the e2e flag of the first frame read. */
class FrameRewriter extends Duplex {
  #wroteFirst = false;
  #readBuffer: Buffer | undefined = Buffer.alloc(0);

  constructor(private readonly inner: MuxStream, private readonly outFields: Record<string, unknown>, private readonly stripE2E: boolean) {
    super({ allowHalfOpen: true });
    inner.on('data', (chunk: Buffer) => this.#onData(chunk));
    inner.on('end', () => this.push(null));
    inner.on('error', (err) => this.destroy(err));
    // A reset stream closes without an error: pass that on, or the relay's pump would wait forever.
    inner.on('close', () => this.destroy());
  }

  #onData(chunk: Buffer): void {
    if (this.#readBuffer === undefined) {
      if (!this.push(chunk)) this.inner.pause();
      return;
    }
    const buffer = Buffer.concat([this.#readBuffer, chunk]);
    if (buffer.length < 4 || buffer.length < 4 + buffer.readUInt32BE(0)) {
      this.#readBuffer = buffer;
      return;
    }
    const end = 4 + buffer.readUInt32BE(0);
    const reply = JSON.parse(buffer.subarray(4, end).toString()) as Record<string, unknown>;
    if (this.stripE2E) delete reply.e2e;
    this.#readBuffer = undefined;
    this.push(encodeFrame(reply));
    if (end < buffer.length && !this.push(buffer.subarray(end))) this.inner.pause();
  }

  override _read(): void {
    this.inner.resume();
  }

  /** The relay charges what the stream holds to its caller (MuxStream.setHold): the real stream's bytes. */
  setHold(hook: StreamHoldHook): boolean {
    return this.inner.setHold(hook);
  }

  override _write(chunk: Buffer, _enc: BufferEncoding, cb: (err?: Error | null) => void): void {
    if (this.#wroteFirst) return void this.inner.write(chunk, cb);
    this.#wroteFirst = true;
    // The header frame may come with the bytes behind it (a pipelining client's end-to-end ClientHello) in one chunk.
    const end = 4 + chunk.readUInt32BE(0);
    const header = JSON.parse(chunk.subarray(4, end).toString()) as Record<string, unknown>;
    this.inner.write(Buffer.concat([encodeFrame({ ...header, ...this.outFields }), chunk.subarray(end)]), cb);
  }

  override _final(cb: () => void): void {
    this.inner.end();
    cb();
  }

  override _destroy(err: Error | null, cb: (err?: Error | null) => void): void {
    this.inner.destroy();
    cb(err);
  }
}

async function startLyingRelay(t: Parameters<typeof tempDir>[0], registry: Registry): Promise<number> {
  const identity = Identity.random();
  const cert = await loadOrCreateRelayCert(tempDir(t), identity);
  const server = new RelayServer({ identity, cert, log: silentLogger, registry });
  const sockets = new Set<Socket>();
  const listener = createServer({ noDelay: true }, (socket) => {
    sockets.add(socket);
    socket.once('close', () => sockets.delete(socket));
    server.handleSocket(socket);
  });
  await new Promise<void>((resolve) => listener.listen(0, '127.0.0.1', resolve));
  t.teardown(() => {
    server.close();
    for (const s of sockets) s.destroy();
    listener.close();
  });
  const address = listener.address();
  return typeof address === 'object' && address ? address.port : 0;
}

test('a relay that lies about who is calling, or hides the end-to-end layer, gets no stream through the device check', async (t) => {
  const sshd = await startSshd(t);
  const [alice, bob] = await Promise.all([clientHome(t), clientHome(t)]);

  // Lie 1: bob calls, the relay tells the device it is alice.
  const liar = await startLyingRelay(t, new LyingRegistry(alice.address, false));
  const device = await startPublish(t, liar, ['-private', `${sshd.port}:22,${alice.address}`]);
  const socksB = await startSocksd(t, liar, bob.home);
  // Issue 24 item 7: a key that may not use the port learns nothing about it, not even that it is there.
  t.is(await socksReply(socksB.port, `${device.address}.diode`, 22), SOCKS_CONNECTION_REFUSED);
  await device.proc.waitFor(new RegExp(`denied ${bob.address} → port 22 \\(private\\)`));
  t.regex(device.proc.output(), new RegExp(`claimed ${alice.address}, the client proved ${bob.address}`));
  const refused = await sshFails([...sshOptions(sshd, socksB.port), `${sshd.user}@${device.address}.diode`, 'true']);
  t.true(refused.ms < FAIL_FAST_MS, `refused ssh took ${refused.ms} ms`);

  // Lie 2: the relay hides the e2e flag. The client asked for the layer and got a bare ok: it fails the
  // stream with SOCKS 0x01 and one line naming the relay, and sends nothing (so the device sees no plaintext).
  const stripper = await startLyingRelay(t, new LyingRegistry(alice.address, true));
  const device2 = await startPublish(t, stripper, ['-private', `${sshd.port}:22,${alice.address}`]);
  const socksA = await startSocksd(t, stripper, alice.home);
  const started = Date.now();
  t.is(await socksReply(socksA.port, `${device2.address}.diode`, 22), SOCKS_GENERAL_FAILURE);
  t.true(Date.now() - started < FAIL_FAST_MS, `refusal took ${Date.now() - started} ms`);
  await socksA.proc.waitFor(/relay 0x[0-9a-fA-F]{40} at 127\.0\.0\.1:\d+ answered the connect to 0x[0-9a-fA-F]{40}:22 without the end-to-end layer/);
  // Version 4 pipelines the client's end-to-end handshake on its data connection, which the relay
  // passes on untouched, so the device may see the proof before the client drops the stream: either
  // it refuses the stream for want of a proof, or it has alice's proof. Never a stream without one.
  // The refusal comes when the client's reset reaches the device, or at the latest at the device's
  // handshake deadline. Under heavy load (the full suite beside three busy loops) the stream was also
  // seen never to reach this device at all within that time: this test's lying relay shims only the
  // device session's open(), and it was not traced further. That outcome is safe too (nothing
  // reached the port); what must never be is an accepted stream without a proof (below).
  const verdict = /refused a stream to port 22 \(private; relay says from 0x[0-9a-fA-F]{40}\): no end-to-end proof.*|accepted 0x[0-9a-fA-F]{40} → port 22 \(private\), proven end to end/;
  const outcome = await device2.proc.waitFor(verdict, E2E_HANDSHAKE_TIMEOUT_MS + 5_000).then(
    ([line]) => line,
    () => 'no stream reached the device',
  );
  t.log(`device: ${outcome}`);
  t.notRegex(device2.proc.output(), /accepted 0x[0-9a-fA-F]{40} → port 22 \(private\)(?!, proven end to end)/);
  t.notRegex(device2.proc.output(), /cannot reach/);
});

test('publish refuses a bad -private spec before connecting, quoting the bad part', async (t) => {
  const cases: Array<[string[], RegExp]> = [
    [['-private', '22:22'], /port 22 lists no client address/],
    [['-private', '22:22,0x12345'], /"0x12345" has 5 hex digits/],
    [['-private', '22:22,0xZZ63115a27C3d1b549011198c69F4120CA4ea12E'], /"0xZZ63115a27C3d1b549011198c69F4120CA4ea12E" is not a 0x-prefixed hex address/],
    [['-private', '22:22,0x63115a27C3d1b549011198c69F4120CA4ea12EE8'], /bad EIP-55 checksum/],
    [['-private', '70000:22,0x63115a27c3d1b549011198c69f4120ca4ea12ee9'], /"70000:22".*outside 1-65535/],
    [['-public', '22:22', '-private', '2222:22,0x63115a27c3d1b549011198c69f4120ca4ea12ee9'], /remote port 22 is published twice/],
  ];
  const home = tempDir(t);
  await Promise.all(
    cases.map(async ([flags, pattern]) => {
      // Port 9 (discard) on loopback: nothing is contacted if parsing fails first.
      const proc = start(t, ['publish', ...flags, '--relay', '127.0.0.1:9', '--home', home]);
      const code = await proc.exited();
      t.is(code, 2, flags.join(' '));
      t.regex(proc.output(), pattern);
      t.notRegex(proc.output(), /connected|relay 127/);
    }),
  );
});
