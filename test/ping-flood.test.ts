import test from 'ava';
import { readFileSync } from 'node:fs';
import { performance } from 'node:perf_hooks';
import { Identity } from '../agent/identity/index.ts';
import { dialRelay } from '../agent/link/dial-relay.ts';
import { Flag, FrameType, HEADER_LENGTH, MuxSession, encodeHeader } from '../agent/mux/index.ts';
import { startRelay } from './helpers/diode.ts';

// Issue 14, item 1. On the old code the relay answered every ping whatever the
// backpressure and kept reading: 77 MiB of pings grew it by 1.2 GiB and an honest
// handshake took 4.8 s. Now control frames wait in a bounded queue, reading stops at
// the bound, and a peer that keeps it there is closed with go-away.

/** Bytes of ping SYNs the attacker tries to send (the old code grew the relay by 415 MB here). */
const FLOOD_BYTES = 24 * 1024 * 1024;
/** MB the relay's RSS may grow over the attack. */
const MAX_RSS_GROWTH_MB = 100;
/** ms an honest agent's TCP + TLS + hello + first mux round trip may take during the attack. */
const MAX_HONEST_HANDSHAKE_MS = 2_000;
/** ms within which the relay must close the flooding session (control stall 10 s, with margin). */
const MAX_CLOSE_MS = 25_000;

function rssMB(pid: number): number {
  const m = readFileSync(`/proc/${pid}/status`, 'utf8').match(/VmRSS:\s+(\d+) kB/);
  return m ? Number(m[1]) / 1024 : 0;
}

async function honestHandshakeMs(port: number): Promise<number> {
  const start = performance.now();
  const { socket } = await dialRelay({ host: '127.0.0.1', port }, Identity.random());
  const session = new MuxSession(socket, { role: 'client' });
  await session.ping();
  const ms = performance.now() - start;
  session.close();
  return ms;
}

test('ping flood: a key that sends pings and never reads is stopped and closed, relay RSS stays flat, honest handshakes stay fast', async (t) => {
  const relay = await startRelay(t);
  const pid = relay.proc.child.pid!;
  const rssBefore = rssMB(pid);
  let rssPeak = rssBefore;
  const sampler = setInterval(() => (rssPeak = Math.max(rssPeak, rssMB(pid))), 100);
  t.teardown(() => clearInterval(sampler));

  const { socket } = await dialRelay({ host: '127.0.0.1', port: relay.port }, Identity.random());
  t.teardown(() => socket.destroy());
  socket.on('error', () => {});
  socket.pause(); // never read
  const closedAt = new Promise<number>((resolve) => socket.once('close', () => resolve(performance.now())));
  let closed = false;
  void closedAt.then(() => (closed = true));

  const frames = Math.floor((64 * 1024) / HEADER_LENGTH);
  const chunk = Buffer.alloc(frames * HEADER_LENGTH);
  for (let i = 0; i < frames; i++) encodeHeader(chunk, i * HEADER_LENGTH, FrameType.Ping, Flag.SYN, 0, i);

  const started = performance.now();
  let sent = 0;
  let honestMs = -1;
  while (!closed && sent < FLOOD_BYTES && performance.now() - started < MAX_CLOSE_MS) {
    if (!socket.write(chunk)) {
      await waitDrain(socket, 500);
    }
    sent += chunk.length;
    if (honestMs < 0 && sent >= FLOOD_BYTES / 2) honestMs = await honestHandshakeMs(relay.port);
  }
  if (honestMs < 0) honestMs = await honestHandshakeMs(relay.port); // the relay stopped reading before half was sent
  const closeMs = (await Promise.race([closedAt, new Promise<number>((r) => setTimeout(() => r(Infinity), MAX_CLOSE_MS))])) - started;
  await new Promise((r) => setTimeout(r, 500));
  const after = await honestHandshakeMs(relay.port);
  t.log(`sent ${(sent / 2 ** 20).toFixed(1)} MiB of pings; relay RSS ${rssBefore.toFixed(0)} → peak ${rssPeak.toFixed(0)} MB; honest handshake during ${honestMs.toFixed(0)} ms, after ${after.toFixed(0)} ms; flooder closed after ${(closeMs / 1000).toFixed(1)} s`);
  t.true(rssPeak - rssBefore < MAX_RSS_GROWTH_MB, `relay RSS grew ${(rssPeak - rssBefore).toFixed(0)} MB (bound ${MAX_RSS_GROWTH_MB})`);
  t.true(honestMs < MAX_HONEST_HANDSHAKE_MS, `honest handshake took ${honestMs.toFixed(0)} ms during the flood`);
  t.true(closeMs < MAX_CLOSE_MS, 'the relay closes a peer that keeps its control queue full');
  await relay.proc.waitFor(/closed the session of 0x[0-9a-fA-F]{40} .*control frames unread/, 5_000);
});

function waitDrain(socket: import('node:tls').TLSSocket, ms: number): Promise<void> {
  return new Promise((resolve) => {
    const done = () => {
      clearTimeout(timer);
      socket.off('drain', done);
      socket.off('close', done);
      resolve();
    };
    const timer = setTimeout(done, ms);
    socket.once('drain', done);
    socket.once('close', done);
  });
}
