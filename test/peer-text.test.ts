// Issue 24 item 5: nothing a peer sends reaches a log or a terminal raw.
import test from 'ava';
import { Identity } from '../agent/identity/index.ts';
import { RelayLink } from '../agent/link/relay-link.ts';
import { encodeFrame, readFrame } from '../agent/protocol/frames.ts';
import { parseReply } from '../agent/protocol/messages.ts';
import { createLogger, silentLogger } from '../agent/util/log.ts';
import { escapeText, peerText } from '../agent/util/escape.ts';
import { runDiode, startRelay, tempDir } from './helpers/diode.ts';
import { socks5Connect } from './helpers/http.ts';
import { startHostileRelay } from './helpers/hostile-relay.ts';

/** A whole log line, as a peer would forge it behind a newline. */
const FORGED = '2099-01-01T00:00:00.000Z error [relay] FORGED by a peer';
/** Window title (OSC 0), clipboard write (OSC 52), clear screen, and a fake prompt on a fresh line. */
const TERMINAL_ATTACK = '\x1b]0;owned\x07\x1b]52;c;cm0gLXJmIH4K\x07\x1b[2J\x1b[H\r\npi@device\'s password: ';
/** Bytes a terminal acts on: C0 controls but newline, DEL, and the C1 range (as UTF-8: C2 80 – C2 9F). */
const CONTROL = /[\u0000-\u0009\u000b-\u001f\u007f-\u009f]/;

const forgedLines = (output: string) => output.split('\n').filter((l) => l.startsWith('2099-01-01'));

test('escapeText writes every control character as a visible escape and leaves the rest', (t) => {
  t.is(escapeText('plain text, ünïcödé, 0x63115a27'), 'plain text, ünïcödé, 0x63115a27');
  t.is(escapeText('a\nb\rc\td'), 'a\\nb\\rc\\td');
  t.is(escapeText('\x1b[2J\x07\x7f\u009b\u202e\u2028'), '\\x1b[2J\\x07\\x7f\\x9b\\u202e\\u2028');
  t.is(peerText('x'.repeat(500), 10), `${'x'.repeat(10)}…`);
  t.is(peerText(undefined), 'undefined');
});

test('a log line quoting a peer stays one line in both formats', (t) => {
  const lines: string[] = [];
  const log = createLogger('relay', (l) => lines.push(l));
  log.warn(`stream refused: "x\n${FORGED}"`, { name: `y\n${FORGED}` });
  t.is(lines.length, 1);
  t.false(lines[0].includes('\n'));
  t.true(lines[0].includes(`x\\n${FORGED}`));
});

test('a reply message keeps printable text of bounded length', (t) => {
  const reply = parseReply({ t: 'error', code: 'refused', message: `${TERMINAL_ATTACK}${'z'.repeat(1000)}` });
  t.is(reply.t, 'error');
  const message = (reply as { message: string }).message;
  t.false(CONTROL.test(message), message);
  t.false(message.includes('\n'));
  t.true(message.length <= 301, `${message.length} characters`);
});

test('a SOCKS name with a newline at the gateway cannot forge a line in the relay log', async (t) => {
  const relay = await startRelay(t, ['--gateway-socks', '127.0.0.1:0']);
  const gateway = Number((await relay.proc.waitFor(/gateway socks listening on 127\.0\.0\.1:(\d+)/))[1]);
  const reply = await socks5Connect(gateway, `x\n${FORGED}`, 22);
  reply.socket.destroy();
  t.not(reply.rep, 0);
  await relay.proc.waitFor(/FORGED/);
  t.deepEqual(forgedLines(relay.proc.output()), [], 'no line of the log is the forged one');
  t.regex(relay.proc.output(), /x\\n2099-01-01/);
});

test("a frame's kind with a newline cannot forge a line in the relay log", async (t) => {
  const relay = await startRelay(t);
  const link = new RelayLink({ relays: [{ host: '127.0.0.1', port: relay.port }], identity: Identity.random(), log: silentLogger });
  t.teardown(() => link.stop());
  link.start();
  const session = await link.waitForSession(10_000);
  const stream = session.open();
  stream.on('error', () => {});
  stream.write(encodeFrame({ t: `x\n${FORGED}` }));
  const answer = await readFrame(stream, 4096, 10_000);
  t.is(answer.t, 'error');
  await relay.proc.waitFor(/FORGED/);
  t.deepEqual(forgedLines(relay.proc.output()), []);
});

test("a relay's error message with escape sequences never reaches ssh's terminal through diode proxy", async (t) => {
  const relay = await startHostileRelay(t, () => ({ t: 'error', code: 'refused', message: TERMINAL_ATTACK }));
  const device = Identity.random().address;
  const ran = await runDiode(['proxy', `${device}.diode`, '22', '--relay', `127.0.0.1:${relay.port}`, '--home', tempDir(t)], {}, 30_000);
  t.is(ran.code, 1);
  t.regex(ran.stderr, /\\x1b\]0;owned\\x07/, 'the message is shown, escaped');
  t.false(CONTROL.test(ran.stderr), JSON.stringify(ran.stderr));
  t.is(ran.stderr.trimEnd().split('\n').length, 1, 'one line');
});
