// Issue 24 item 6: one key cannot make the relay write more log than it sends.
import test from 'ava';
import { Identity } from '../agent/identity/index.ts';
import { startRelay } from '../agent/relay/listen.ts';
import type { MuxStream } from '../agent/mux/index.ts';
import { encodeFrame, readFrame } from '../agent/protocol/frames.ts';
import { createLogger } from '../agent/util/log.ts';
import { tempDir } from './helpers/diode.ts';
import { attackerSession } from './helpers/attacker.ts';

const tick = (ms: number) => new Promise((r) => setTimeout(r, ms));

test('a key with 200 sessions toggling its publish set makes the relay log fewer bytes than it sends', async (t) => {
  let logged = 0;
  const log = createLogger('relay', (line) => (logged += line.length + 1));
  const relay = await startRelay({ listen: { host: '127.0.0.1', port: 0 }, home: tempDir(t), identity: Identity.random(), log });
  t.teardown(() => relay.close());
  const key = Identity.random();
  const sessions = [];
  for (let i = 0; i < 200; i++) sessions.push(await attackerSession(t, relay.port, key));
  const on = encodeFrame({ t: 'publish', ports: [{ port: 22, mode: 'public' }] });
  const off = encodeFrame({ t: 'publish', ports: [] });
  let sent = 0;
  const controls: MuxStream[] = [];
  for (const session of sessions) {
    const control = session.open();
    control.on('error', () => {});
    control.write(on);
    sent += on.length;
    t.is((await readFrame(control, 4096, 10_000)).t, 'ok');
    control.resume();
    controls.push(control);
  }
  const before = logged;
  // Each session turns its set off and on again, 20 times, as fast as it can: every turn changes who gets the streams.
  for (let round = 0; round < 20; round++) {
    for (const control of controls) {
      control.write(round % 2 === 0 ? off : on);
      sent += on.length;
    }
    await tick(10);
  }
  await tick(1_500);
  t.log(`sent ${sent} bytes of publish frames; the relay logged ${logged} bytes (${logged - before} during the toggling); ${relay.server.stats.get('refused_publish_rate')} sets refused by rate`);
  t.true(logged < sent, `log bytes per byte sent: ${(logged / sent).toFixed(2)}`);
  t.true(relay.server.stats.get('refused_publish_rate') > 0, 'publish sets beyond the rate are refused');
  // The rate refills: a set a second later is applied again.
  controls[0].write(on);
  const start = Date.now();
  while (!relay.server.registry.publisher(key.address) && Date.now() - start < 5_000) await tick(20);
  t.truthy(relay.server.registry.publisher(key.address), 'a set within the rate is applied');
});
