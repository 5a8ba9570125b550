// Issue 24 item 3: one relay that refuses the publish set must not keep a Pi off its other relays.
import test from 'ava';
import { startRelay, start, tempDir } from './helpers/diode.ts';
import { startHostileRelay } from './helpers/hostile-relay.ts';

const tick = (ms: number) => new Promise((r) => setTimeout(r, ms));

test('a first relay that refuses every publish set cannot keep diode publish off the second relay', async (t) => {
  const hostile = await startHostileRelay(t, () => ({ t: 'error', code: 'bad-request', message: 'publish set refused: go away' }));
  const honest = await startRelay(t);
  const home = tempDir(t);
  const publish = start(t, ['publish', '-public', '22:22', '--relay', `127.0.0.1:${hostile.port},127.0.0.1:${honest.port}`, '--home', home]);
  await publish.waitFor(new RegExp(`connected to relay 127\\.0\\.0\\.1:${honest.port}`), 20_000);
  t.regex(publish.output(), /relay refused the publish set: publish set refused: go away; passed over for 15 s, trying the other relays/);
  // It stays on the honest relay: not an exit, and the hostile one is not asked again within its hold.
  await tick(3_000);
  t.is(publish.child.exitCode, null, 'diode publish still runs');
  t.is(hostile.frames.filter((f) => f.t === 'publish').length, 1, 'the refusing relay was asked once within its hold');
});

test('diode publish whose only relay refuses the set keeps running and asks again only after the hold', async (t) => {
  const hostile = await startHostileRelay(t, () => ({ t: 'error', code: 'bad-request', message: 'publish set refused: no' }));
  const publish = start(t, ['publish', '-public', '22:22', '--relay', `127.0.0.1:${hostile.port}`, '--home', tempDir(t)]);
  await publish.waitFor(/passed over for 15 s, retrying/, 20_000);
  await tick(5_000);
  t.is(publish.child.exitCode, null, 'not an exit: a refusal is the relay failing');
  t.is(hostile.frames.length, 1, 'no retry within the hold');
});
