// Issue 24 item 1: one free key cannot fill the relay's memory. The probes of
// the issue, from a source of their own (127.0.0.2), against the relay as a
// process of its own, while honest ssh runs through it from 127.0.0.1.
import test, { type ExecutionContext } from 'ava';
import { execFile } from 'node:child_process';
import { promisify } from 'node:util';
import { Identity } from '../agent/identity/index.ts';
import type { MuxSession, MuxStream } from '../agent/mux/index.ts';
import { readFrame, writeFrame } from '../agent/protocol/frames.ts';
import { createServer, type AddressInfo, type Socket } from 'node:net';
import { startPublish, startRelay, startSocksd } from './helpers/diode.ts';
import { socks5Connect } from './helpers/http.ts';
import { startSshd, sshOptions } from './helpers/sshd.ts';
import { attackerSession, dataTokens as tokens, presentData, rssOf } from './helpers/attacker.ts';
import { encodeOpening } from '../agent/data/wire.ts';
import { encodeHeader, FrameType, HEADER_LENGTH } from '../agent/mux/frame.ts';
import { once } from 'node:events';
import type { Duplex } from 'node:stream';

const run = promisify(execFile);
const tick = (ms: number) => new Promise((r) => setTimeout(r, ms));
const MIB = 1024 * 1024;
/** Bytes: what a probe may add to the relay's resting RSS (the figure). */
const RSS_ALLOWANCE = 64 * MIB;
/** ms the probe's connections stay open after its last byte before what the relay holds is read. */
const SETTLE_MS = 12_000;

/** Bytes of honest traffic the relay carries before its resting RSS is taken (about what a probe moves). */
const WARM_UP_BYTES = 512 * MIB;
/** Streams the warm-up runs at once (as many as one caller may have unanswered, --max-pending-per-caller). */
const WARM_UP_STREAMS = 32;

/** A TCP port that reads and discards everything: the honest bulk traffic's far end. */
async function discardSink(t: ExecutionContext): Promise<number> {
  const server = createServer((s) => s.on('error', () => {}).resume());
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  t.teardown(() => new Promise<void>((resolve) => server.close(() => resolve())));
  return (server.address() as AddressInfo).port;
}

/** Writes `bytes` through an open SOCKS connection as fast as it takes them, then ends it. */
function pumpThrough(socket: Socket, bytes: number): Promise<void> {
  const chunk = Buffer.alloc(256 * 1024, 7);
  return new Promise((resolve, reject) => {
    let left = bytes;
    socket.on('error', reject);
    socket.resume();
    const write = () => {
      while (left > 0) {
        left -= chunk.length;
        if (!socket.write(chunk)) return void socket.once('drain', write);
      }
      socket.end(() => resolve());
    };
    write();
  });
}

/**
 * A relay, an honest device publishing a real sshd and a discard port, an honest socksd; ssh through
 * them works. The relay's resting RSS is the highest it reached while carrying WARM_UP_BYTES of honest
 * bulk traffic on WARM_UP_STREAMS streams at once, and in the 3 s after: any burst of that size
 * leaves glibc's arena and V8's young generation at high-water marks tens of MiB up (measured, and
 * they vary from run to run with the collector's timing), which the relay keeps. What a probe must
 * not add to that is what the attacker makes the relay hold.
 */
async function honestPath(t: ExecutionContext) {
  const sshd = await startSshd(t);
  const sink = await discardSink(t);
  const relay = await startRelay(t);
  const device = await startPublish(t, relay.port, ['-public', `${sshd.port}:22,${sink}:9`]);
  const socksd = await startSocksd(t, relay.port);
  const ssh = async () => (await run('ssh', [...sshOptions(sshd, socksd.port), `${sshd.user}@${device.address}.diode`, 'echo honest'], { timeout: 30_000 })).stdout;
  t.is(await ssh(), 'honest\n');
  // Many streams at once, as the probes open them: the high-water marks of concurrent traffic.
  const pid = relay.proc.child.pid!;
  const warmUp = Promise.all(
    Array.from({ length: WARM_UP_STREAMS }, async () => {
      const bulk = await socks5Connect(socksd.port, `${device.address}.diode`, 9);
      if (bulk.rep !== 0) throw new Error(`warm-up stream refused: SOCKS ${bulk.rep}`);
      await pumpThrough(bulk.socket, WARM_UP_BYTES / WARM_UP_STREAMS);
    }),
  );
  const { peak } = await measureRss(pid, warmUp, 3_000);
  t.is(relay.proc.output().match(/reset: its/g), null, 'no honest stream was reset');
  return { relay, ssh, pid, rest: peak };
}

/**
 * Samples `pid`'s RSS every 100 ms while `during` runs and for `afterMs` more (the probe's connections
 * still open); resolves with the peak and with what is held at the end.
 */
async function measureRss(pid: number, during: Promise<unknown>, afterMs: number): Promise<{ peak: number; held: number; trace: string }> {
  let peak = rssOf(pid);
  const trace: number[] = [];
  const timer = setInterval(() => {
    const rss = rssOf(pid);
    peak = Math.max(peak, rss);
    trace.push(Math.round(rss / MIB));
  }, 100);
  try {
    await during;
    await tick(afterMs);
  } finally {
    clearInterval(timer);
  }
  const held = rssOf(pid);
  return { peak: Math.max(peak, held), held, trace: trace.filter((_, i) => i % 5 === 0).join(' ') };
}

/** An attacker's device: publishes port 22 on a link of its own, answers every stream ok, writes `back` on it (if given) and never reads. */
async function stallingDevice(t: ExecutionContext, relayPort: number, back?: Buffer): Promise<Identity> {
  const deviceId = Identity.random();
  const device = await attackerSession(t, relayPort, deviceId);
  device.on('stream', (s: MuxStream) => {
    s.on('error', () => {});
    readFrame(s, 4096, 10_000).then(() => {
      writeFrame(s, { t: 'ok' });
      if (back) s.write(back);
      s.pause();
    }, () => s.destroy());
  });
  const control = device.open();
  writeFrame(control, { t: 'publish', ports: [{ port: 22, mode: 'public' }] });
  if ((await readFrame(control, 4096, 10_000)).t !== 'ok') throw new Error('the attacker device could not publish');
  return deviceId;
}

/** Opens a stream and writes `bytes` on it without waiting for anything; the stream is left as it is. */
function openAndWrite(session: MuxSession, bytes: Buffer): MuxStream {
  const s = session.open();
  s.on('error', () => {});
  s.write(bytes);
  return s;
}

test.serial('publish frames left unfinished on 2 × 1,000 streams keep the relay within 64 MiB of its resting RSS; honest ssh works', async (t) => {
  const { relay, ssh, pid, rest } = await honestPath(t);
  // The probe: a publish frame of 256 KiB of which 255 KiB are sent, on 1,000 streams of each of two sessions.
  const declared = 256 * 1024;
  const frame = Buffer.alloc(4 + 255 * 1024, 0x20);
  frame.writeUInt32BE(declared, 0);
  frame.write('{"t":"publish","ports":[', 4, 'latin1');
  const sessions = await Promise.all([0, 1].map(() => attackerSession(t, relay.port, Identity.random())));
  const streams: MuxStream[] = [];
  const attack = (async () => {
    for (let i = 0; i < 1000; i++) {
      for (const session of sessions) streams.push(openAndWrite(session, frame));
      if (i % 50 === 49) await tick(20);
    }
  })();
  const { peak, held, trace } = await measureRss(pid, attack, SETTLE_MS);
  t.log(`relay RSS: rest ${(rest / MIB).toFixed(1)} MiB, peak ${(peak / MIB).toFixed(1)} (+${((peak - rest) / MIB).toFixed(1)}), held with the probe's streams open ${(held / MIB).toFixed(1)} (+${((held - rest) / MIB).toFixed(1)}); every 0.5 s: ${trace}`);
  t.is(await ssh(), 'honest\n', 'honest ssh works under the probe');
  t.true(held - rest <= RSS_ALLOWANCE, `the relay holds ${((held - rest) / MIB).toFixed(1)} MiB more`);
  // The relay told them why: one control stream per session, 4 KiB for every other first frame.
  t.regex(relay.proc.output(), /exceeds the 4096-byte limit \(only a publish.*and only on one stream at a time\)/);
});

test.serial('256 stalled streams from one caller keep the relay within 64 MiB of its resting RSS; honest ssh works', async (t) => {
  const { relay, ssh, pid, rest } = await honestPath(t);
  // The attacker's device: publishes port 22, answers ok, writes 256 KiB back and never reads.
  const deviceId = await stallingDevice(t, relay.port, Buffer.alloc(256 * 1024, 1));
  // The attacker's client: 256 streams to it, 1 MiB written into each, nothing read.
  const client = await attackerSession(t, relay.port, Identity.random());
  const out = Buffer.alloc(1024 * 1024, 2);
  const connect = Buffer.concat([Buffer.alloc(4), Buffer.from(JSON.stringify({ t: 'connect', to: deviceId.address, port: 22 }))]);
  connect.writeUInt32BE(connect.length - 4, 0);
  const streams: MuxStream[] = [];
  const attack = (async () => {
    for (let i = 0; i < 256; i++) {
      const s = openAndWrite(client, connect);
      s.pause();
      s.write(out);
      streams.push(s);
      // Within --max-pending-per-caller (32): a batch at a time, each answered before the next.
      if (i % 16 === 15) await tick(150);
    }
  })();
  const { peak, held, trace } = await measureRss(pid, attack, SETTLE_MS);
  t.log(`relay RSS: rest ${(rest / MIB).toFixed(1)} MiB, peak ${(peak / MIB).toFixed(1)} (+${((peak - rest) / MIB).toFixed(1)}), held with the probe's streams open ${(held / MIB).toFixed(1)} (+${((held - rest) / MIB).toFixed(1)}); every 0.5 s: ${trace}`);
  t.is(await ssh(), 'honest\n', 'honest ssh works under the probe');
  t.true(held - rest <= RSS_ALLOWANCE, `the relay holds ${((held - rest) / MIB).toFixed(1)} MiB more`);
  t.regex(relay.proc.output(), /reset: its (session|source) hold \d+ bytes the far side has not taken/);
});

// The same probes against the data path (protocol version 4, issue 27): each leg a data connection of
// its own, which the relay splices socket to socket, and the connections it holds before they pair.

/** A data connection presenting `token` from the attacker's source; resolves once the relay accepted it (rejects on a refusal). */
async function present(t: ExecutionContext, port: number, token: string): Promise<Socket> {
  const { socket, answer } = await presentData(t, port, encodeOpening(token), '127.0.0.2');
  if (answer && 'accepted' in answer) return socket;
  throw new Error(`data connection refused: ${answer && 'reason' in answer ? answer.reason : 'no answer'}`);
}

/**
 * Writes into `socket` for as long as it takes bytes, never reading: resolves once nothing drained for
 * `quietMs` (the relay stopped reading it, the kernel's buffers full) or after `max` bytes. One
 * buffer written again and again: the attacker's own memory stays flat.
 */
const STUFF = Buffer.alloc(64 * 1024, 3);
function writeUntilStalled(socket: Socket, quietMs: number, max = 64 * MIB): Promise<number> {
  return new Promise((resolve) => {
    let sent = 0;
    let timer: NodeJS.Timeout | undefined;
    const stop = () => {
      socket.off('drain', write);
      resolve(sent);
    };
    socket.once('close', () => {
      clearTimeout(timer);
      stop();
    });
    const write = () => {
      clearTimeout(timer);
      while (sent < max && !socket.destroyed) {
        sent += STUFF.length;
        if (!socket.write(STUFF)) {
          timer = setTimeout(stop, quietMs);
          return;
        }
      }
      stop();
    };
    socket.on('drain', write);
    write();
  });
}

/**
 * An attacker's device: publishes port 22 and keeps its pool of 8 data connections full; every stream
 * paired to one is answered ok and then stuffed with bytes from the device's side, never read.
 */
async function stuffingDevice(t: ExecutionContext, relayPort: number, stuffing: Array<Promise<number>>) {
  const id = Identity.random();
  const session = await attackerSession(t, relayPort, id);
  const pool = new Map<string, Socket>();
  let refilling: Promise<void> | undefined;
  // One refill at a time: tokens outstanding count against --max-data-per-session too.
  const refill = () =>
    (refilling ??= (async () => {
      try {
        while (pool.size < 8) {
          const got = await tokens(session, 8 - pool.size).catch(() => []);
          if (got.length === 0) return;
          for (const token of got) pool.set(token, await present(t, relayPort, token));
        }
      } finally {
        refilling = undefined;
      }
    })());
  session.on('stream', (s: MuxStream) => {
    s.on('error', () => {});
    readFrame(s, 4096, 10_000).then((incoming) => {
      const socket = pool.get(incoming.data as string);
      if (!socket) return void s.destroy();
      pool.delete(incoming.data as string);
      writeFrame(s, { t: 'ok', e2e: true });
      s.end();
      s.resume();
      stuffing.push(writeUntilStalled(socket, 2_000));
      void refill().catch(() => {});
    }, () => s.destroy());
  });
  const control = session.open();
  writeFrame(control, { t: 'publish', ports: [{ port: 22, mode: 'public' }] });
  if ((await readFrame(control, 4096, 10_000)).t !== 'ok') throw new Error('the attacker device could not publish');
  await refill();
  return { address: id.address, ready: () => pool.size >= 8 };
}

test.serial('512 stalled streams whose legs are data connections keep the relay within 64 MiB of its resting RSS; honest ssh works', async (t) => {
  const { relay, ssh, pid, rest } = await honestPath(t);
  // Two attacker devices and one client, all from 127.0.0.2: 256 streams (--max-streams-per-caller) to
  // each, every one on a data connection of its own at both ends, stuffed both ways, nothing read.
  // Without a budget on what the splice holds (≈ 150 KiB a pair) this held +75 MiB.
  const stuffing: Array<Promise<number>> = [];
  const devices = [await stuffingDevice(t, relay.port, stuffing), await stuffingDevice(t, relay.port, stuffing)];
  const client = await attackerSession(t, relay.port, Identity.random());
  let paired = 0;
  const attack = (async () => {
    for (const device of devices) {
      for (let i = 0; i < 256; i += 8) {
        await Promise.all(
          (await tokens(client, 8)).map(async (token) => {
            const socket = await present(t, relay.port, token);
            const s = client.open();
            s.on('error', () => {});
            writeFrame(s, { t: 'connect', to: device.address, port: 22, e2e: true, data: token });
            const answer = await readFrame(s, 4096, 30_000).catch((err: Error) => ({ t: err.message }));
            s.resume();
            if (answer.t !== 'ok') return void socket.destroy();
            paired++;
            stuffing.push(writeUntilStalled(socket, 2_000));
          }),
        );
        // The device's pool is refilled behind each batch.
        for (let wait = 0; wait < 100 && !device.ready(); wait++) await tick(20);
      }
    }
    await Promise.all(stuffing);
  })();
  const { peak, held, trace } = await measureRss(pid, attack, SETTLE_MS);
  const stuffed = (await Promise.all(stuffing)).reduce((a, b) => a + b, 0);
  t.log(`${paired} streams paired on data connections, ${(stuffed / MIB).toFixed(0)} MiB written into them; relay RSS: rest ${(rest / MIB).toFixed(1)} MiB, peak ${(peak / MIB).toFixed(1)} (+${((peak - rest) / MIB).toFixed(1)}), held with the probe's connections open ${(held / MIB).toFixed(1)} (+${((held - rest) / MIB).toFixed(1)}); every 0.5 s: ${trace}`);
  t.true(paired >= 400, `only ${paired} streams were paired: the probe did not reach its shape`);
  t.is(await ssh(), 'honest\n', 'honest ssh works under the probe');
  t.true(held - rest <= RSS_ALLOWANCE, `the relay holds ${((held - rest) / MIB).toFixed(1)} MiB more`);
});

test.serial('a flood of unpaired data connections from one source, each sending bytes no connect names, keeps the relay within 64 MiB of its resting RSS; honest ssh works', async (t) => {
  const { relay, ssh, pid, rest } = await honestPath(t);
  // 64 sessions from one source, each filling its 8 data connections (512: --max-data-per-ip), each
  // connection stuffed with bytes as if a ClientHello overtook a connect that never comes.
  const sessions = await Promise.all(Array.from({ length: 64 }, () => attackerSession(t, relay.port, Identity.random())));
  let accepted = 0;
  const stuffing: Array<Promise<number>> = [];
  const attack = (async () => {
    for (const session of sessions) {
      await Promise.all(
        (await tokens(session, 8)).map(async (token) => {
          const socket = await present(t, relay.port, token).catch(() => undefined);
          if (!socket) return;
          accepted++;
          stuffing.push(writeUntilStalled(socket, 2_000, 4 * MIB));
        }),
      );
    }
    await Promise.all(stuffing);
  })();
  const { peak, held, trace } = await measureRss(pid, attack, 1_000);
  const stuffed = (await Promise.all(stuffing)).reduce((a, b) => a + b, 0);
  t.log(`${accepted} unpaired data connections, ${(stuffed / MIB).toFixed(0)} MiB written into them; relay RSS: rest ${(rest / MIB).toFixed(1)} MiB, peak ${(peak / MIB).toFixed(1)} (+${((peak - rest) / MIB).toFixed(1)}), at the end ${(held / MIB).toFixed(1)} (+${((held - rest) / MIB).toFixed(1)}); every 0.5 s: ${trace}`);
  t.true(accepted >= 500, `only ${accepted} data connections were accepted`);
  t.is(await ssh(), 'honest\n', 'honest ssh works under the probe');
  t.true(peak - rest <= RSS_ALLOWANCE, `the relay held ${((peak - rest) / MIB).toFixed(1)} MiB more at its peak`);
  t.regex(relay.proc.output(), /data connection .*(early|before a connect)/);
});

test.serial('1-byte data frames to stalled streams keep the relay within 64 MiB of its resting RSS, at their peak too; honest ssh works', async (t) => {
  const { relay, ssh, pid, rest } = await honestPath(t);
  // The attacker's device: publishes port 22, answers ok and never reads.
  const deviceId = await stallingDevice(t, relay.port);
  // The attacker's client: 16 streams to it, then data frames of one byte each, interleaved across
  // the streams and written straight onto its connection (a TLS record carries about 1,260 of them),
  // each piece counted as one byte by the windows and the budgets. On the old code the relay's RSS
  // went from 56 to 591-706 MiB within 6 s.
  const client = await attackerSession(t, relay.port, Identity.random());
  const streams: MuxStream[] = [];
  for (let i = 0; i < 16; i++) {
    const s = client.open();
    s.on('error', () => {});
    writeFrame(s, { t: 'connect', to: deviceId.address, port: 22 });
    const answer = await readFrame(s, 4096, 10_000);
    s.pause();
    if (answer.t === 'ok') streams.push(s);
  }
  t.is(streams.length, 16);
  const conn = (client as unknown as { conn: Duplex }).conn;
  const frame = HEADER_LENGTH + 1;
  const round = Buffer.alloc(streams.length * frame, 9);
  streams.forEach((s, i) => encodeHeader(round, i * frame, FrameType.Data, 0, s.id, 1));
  const batch = Buffer.concat(Array.from({ length: 64 }, () => round));
  let frames = 0;
  const attack = (async () => {
    // Up to 600,000 frames a stream (past the device's window and the relay's, 256 KiB each), until
    // the relay stops reading for 2 s.
    while (frames < 600_000 * streams.length) {
      frames += 64 * streams.length;
      if (!conn.write(batch) && !(await Promise.race([once(conn, 'drain').then(() => true), tick(2_000).then(() => false)]))) break;
    }
  })();
  const { peak, held, trace } = await measureRss(pid, attack, 3_000);
  t.log(`${frames} frames of 1 byte written; relay RSS: rest ${(rest / MIB).toFixed(1)} MiB, peak ${(peak / MIB).toFixed(1)} (+${((peak - rest) / MIB).toFixed(1)}), at the end ${(held / MIB).toFixed(1)} (+${((held - rest) / MIB).toFixed(1)}); every 0.5 s: ${trace}`);
  t.true(frames >= 4 * 1024 * 1024, `only ${frames} frames went in: the probe did not reach its shape`);
  t.is(await ssh(), 'honest\n', 'honest ssh works under the probe');
  t.true(peak - rest <= RSS_ALLOWANCE, `the relay held ${((peak - rest) / MIB).toFixed(1)} MiB more at its peak`);
});
