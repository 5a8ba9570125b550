import test from 'ava';
import { start, tempDir } from './helpers/diode.ts';
import { stalledServer } from './helpers/agents.ts';

// SIGTERM (what `kill`, a service manager or a test harness sends) ends a
// one-shot command at once, and a long-running one cleanly. Before, every
// command installed SIGINT/SIGTERM handlers that only the long-running ones
// awaited: a `diode proxy` waiting on a relay ignored `kill` until its own timeout.

test('diode proxy stuck on a silent relay ends at SIGTERM', async (t) => {
  const { port } = await stalledServer(t); // a relay that accepts and never answers
  const proxy = start(t, ['proxy', '0x0000000000000000000000000000000000000bad.diode', '22', '--relay', `127.0.0.1:${port}`, '--home', tempDir(t)]);
  // Let it reach the relay and wait for its TLS answer.
  await new Promise((r) => setTimeout(r, 1500));
  t.is(proxy.child.exitCode, null, `the proxy should still be waiting; it said: ${proxy.output()}`);
  const sent = Date.now();
  proxy.child.kill('SIGTERM');
  const ended = await Promise.race([proxy.exited().then(() => Date.now() - sent), new Promise<undefined>((r) => setTimeout(r, 5000))]);
  t.not(ended, undefined, 'diode proxy did not end within 5 s of SIGTERM');
  t.true(ended! < 2000, `ended ${ended} ms after SIGTERM`);
});

test('diode socksd whose relay hangs mid-handshake stops at once at SIGTERM, without a retry line', async (t) => {
  const { port } = await stalledServer(t); // a relay that accepts and never answers
  const socksd = start(t, ['socksd', '--listen', '127.0.0.1:0', '--relay', `127.0.0.1:${port}`, '--home', tempDir(t)]);
  await socksd.waitFor(/listening on 127\.0\.0\.1:\d+/);
  await new Promise((r) => setTimeout(r, 500)); // its dial is out, waiting for the TLS answer
  const sent = Date.now();
  socksd.child.kill('SIGTERM');
  t.is(await socksd.exited(), 0, socksd.output());
  // Before, the stop waited for the dial's 10 s handshake deadline.
  t.true(Date.now() - sent < 3000, `stopped ${Date.now() - sent} ms after SIGTERM`);
  t.notRegex(socksd.output(), /retrying/);
});
