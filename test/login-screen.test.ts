// Issue 29: the image's login screen looked at as a person (and a phone) would.
// The issue files diode-issue writes are evaluated by the real agetty, drawn by
// a Linux console emulator (light grey on black, 80x25), rasterised, and read
// by zbarimg (hw-test/screen.mjs); hw-test does the same with the serial
// console of a booted card.
import test from 'ava';
import { execFileSync } from 'node:child_process';
import { mkdirSync, readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { DIODE_BUNDLE } from './helpers/diode.ts';
import { agettyScreen, card, issue, type Card } from './helpers/card.ts';
import { decodeQr, renderScreen, LINUX_CONSOLE, SMALL_CONSOLE } from '../hw-test/screen.mjs';

/** The characters the console font must have for the screen: printable ASCII and three block elements. */
const CONSOLE_GLYPHS = new Set(['\u2580', '\u2584', '\u2588']);
/** The only escape sequences the screen may send (black on light grey, reset): SGR every console has. */
const QR_ESCAPES = /\x1b\[30;47m|\x1b\[0m/g;

function addressOf(c: Card): string {
  return execFileSync(process.execPath, [DIODE_BUNDLE, 'address', '--home', c.state], { encoding: 'utf8' }).trim();
}

/** A card whose agent has its key and a relay: the everyday login screen. */
function configuredCard(t: Parameters<typeof card>[0]): Card {
  const c = card(t, {});
  execFileSync(process.execPath, [DIODE_BUNDLE, 'config', '--home', c.state, '-set', 'relays=relay.example.org:41046']);
  return c;
}

/** The agent's status file (publish --status-file) as diode-issue reads it. */
function linkStatus(c: Card, state: string, text: string): void {
  mkdirSync(c.run, { recursive: true });
  writeFileSync(join(c.run, 'link.status'), `state=${state}\ntext=${text}\n`);
}

const MISTYPED = 'relay relay.exmaple.org:41046: its name could not be resolved (no DNS answer)';

test('item 1: the login screen QR code scans on an 80x25 Linux console (agetty, light on dark), with the address above it', (t) => {
  const c = configuredCard(t);
  linkStatus(c, 'failing', MISTYPED);
  const r = issue(c);
  t.is(r.status, 0, r.stderr);
  const address = addressOf(c);
  const screen = renderScreen(agettyScreen(c), { theme: LINUX_CONSOLE, ...SMALL_CONSOLE });
  t.deepEqual(decodeQr(screen), [address], screen.lines.join('\n'));
  // Everything fits: nothing scrolled away, the address line is on the screen, above the code.
  t.is(screen.scrolled, 0, screen.lines.join('\n'));
  const addressRow = screen.lines.indexOf(`diode address: ${address}`);
  const qrRow = screen.cells.findIndex((row) => row.some((cell) => cell.ch === '\u2588' || cell.ch === '\u2580' || cell.ch === '\u2584'));
  t.true(addressRow >= 0 && addressRow < qrRow, `address at row ${addressRow}, QR from row ${qrRow}`);
  t.true(screen.lines.includes('diode login:'), 'the login prompt is on the screen');
  // Item 3: the relay line, next to the prompt.
  t.is(screen.lines[screen.lines.indexOf('diode login:') - 1], MISTYPED);
});

test('item 3: the agent\'s relay line is on the login screen, cut to 80 columns, sanitised, and absent without a relay setting', (t) => {
  const c = configuredCard(t);
  linkStatus(c, 'connected', 'relay relay.example.org:41046: connected');
  t.regex(issue(c).text, /^relay relay\.example\.org:41046: connected$/m);
  linkStatus(c, 'failing', `relay ${'r'.repeat(60)}.example.org:41046: \x1b[2Jits name does not resolve`);
  const line = issue(c).text.split('\n').find((l) => l.startsWith('relay '))!;
  t.is(line.length, 80);
  t.notRegex(line, /\x1b/);
  const bare = card(t, {});
  linkStatus(bare, 'failing', MISTYPED);
  const text = issue(bare).text;
  t.notRegex(text, /exmaple/, 'a stale line is not shown while no relay is configured');
  t.regex(text, /^no relay configured/m);
});

test('item 7: the login screen fits 80 columns and needs nothing the Pi console lacks', (t) => {
  const c = configuredCard(t);
  issue(c);
  const shown = agettyScreen(c);
  const screen = renderScreen(shown, { theme: LINUX_CONSOLE, cols: 200, rows: 60 });
  t.deepEqual(screen.unsupported, []);
  t.deepEqual(screen.glyphs.filter((g) => !CONSOLE_GLYPHS.has(g)), []);
  for (const line of screen.lines) t.true(line.length <= SMALL_CONSOLE.cols, `${line.length} columns: ${line}`);
  // The same without a relay and with a note (more lines; each still fits).
  const bare = card(t, {});
  mkdirSync(bare.run, { recursive: true });
  writeFileSync(join(bare.run, 'boot-config.notices'), 'SSH password login is on\n');
  issue(bare);
  for (const line of renderScreen(agettyScreen(bare), { cols: 200, rows: 60 }).lines) t.true(line.length <= SMALL_CONSOLE.cols, `${line.length} columns: ${line}`);
  // A device name (issue 25) beside the address and in the ssh line: short or as long as a name may be.
  for (const name of ['kitchen', 'k'.repeat(63)]) {
    execFileSync(process.execPath, [DIODE_BUNDLE, 'config', '--home', c.state, '-set', `name=${name}`]);
    issue(c);
    const named = renderScreen(agettyScreen(c), { cols: 200, rows: 60 });
    for (const line of named.lines) t.true(line.length <= SMALL_CONSOLE.cols, `${name}: ${line.length} columns: ${line}`);
    t.true(named.lines.some((l) => l.includes(`ssh <user>@${name}.diode`)), named.lines.join('\n'));
    t.deepEqual(decodeQr(renderScreen(agettyScreen(c))), [addressOf(c)], `${name}: the QR code still scans on 80x25`);
  }
});

test('item 1: a boot-partition file cannot put an escape sequence on the login screen; the QR rows are the only colour', (t) => {
  const c = configuredCard(t);
  mkdirSync(c.run, { recursive: true });
  // What a hostile diode.conf or user-data could try: agetty's own escapes, raw ESC, a fake QR row.
  writeFileSync(join(c.run, 'boot-config.errors'), 'diode.conf:1: \\e[2J\\e{red}wiped\\e{reset} \x1b]0;owned\x07 \\e[30;47m\u2588\u2588\\e[0m\n');
  const r = issue(c);
  t.is(r.status, 0, r.stderr);
  const shown = agettyScreen(c);
  const escapes = shown.replace(/^\x1b\[r\x1b\[H\x1b\[J/, '').match(/\x1b[^\x1b]{0,8}/g) ?? [];
  const qrRows = r.text.split('\n').filter((l) => l.startsWith('\\e[30;47m')).length;
  t.true(qrRows >= 17, `${qrRows} QR rows`);
  t.is(escapes.length, 2 * qrRows, 'one colour and one reset per QR row, nothing else');
  t.true(escapes.every((e) => new RegExp(QR_ESCAPES.source).test(e)), escapes.join(' '));
  const screen = renderScreen(shown, { cols: 200, rows: 60 });
  t.true(screen.lines.some((l) => l.includes('diode.conf:1: \\e[2J\\e{red}wiped\\e{reset} ]0;owned \\e[30;47m')), screen.lines.join('\n'));
  t.deepEqual(decodeQr(screen), [addressOf(c)]);
});

test('item 1: a card upgraded from an image whose cache held colour-coded rows gets a scanning screen', (t) => {
  const c = configuredCard(t);
  const address = addressOf(c);
  const sum = execFileSync('sha256sum', [join(c.state, 'private.key')], { encoding: 'utf8' }).split(' ')[0];
  const colour = execFileSync(process.execPath, [DIODE_BUNDLE, 'address', '--qr', '--home', c.state], { encoding: 'utf8' });
  writeFileSync(join(c.state, 'issue.cache'), `${sum}\n${colour}`);
  issue(c);
  t.deepEqual(decodeQr(renderScreen(agettyScreen(c))), [address]);
  t.regex(readFileSync(join(c.state, 'issue.cache'), 'utf8'), new RegExp(`^${sum} qr-light\\n${address}\\n`));
});

test('item 2: hw-test reads the QR code off a serial console transcript (kernel lines around the login screen)', async (t) => {
  const hw = (await import(new URL('../hw-test/run.mjs', import.meta.url).href)) as { loginScreenQr(output: string, at: number): string[] };
  const c = configuredCard(t);
  issue(c);
  const address = addressOf(c);
  const transcript = `[   12.345678] systemd[1]: Started getty@tty1.service.\r\n${agettyScreen(c).replace(/\r?\n/g, '\r\n')}\r\n[  200.1] random: crng init done\r\n`;
  const at = transcript.indexOf(`diode address: ${address}`) + `diode address: ${address}`.length;
  t.deepEqual(hw.loginScreenQr(transcript, at), [address]);
  // The same screen with its escapes lost (the bug of b149bbf) reads nothing.
  t.deepEqual(hw.loginScreenQr(transcript.replace(/\x1b\[(30;47|0)m/g, (_, code: string) => `[${code}m`), at), []);
});

test('item 2: hw-test keeps the QR code whole when the serial port splits its characters between chunks', async (t) => {
  const hw = (await import(new URL('../hw-test/run.mjs', import.meta.url).href)) as {
    loginScreenQr(output: string, at: number): string[];
    consoleText(): { push(chunk: Buffer): string; text(): string };
  };
  const c = configuredCard(t);
  issue(c);
  const address = addressOf(c);
  const bytes = Buffer.from(`${agettyScreen(c).replace(/\r?\n/g, '\r\n')}\r\n`);
  const at = bytes.toString().indexOf(`diode address: ${address}`) + `diode address: ${address}`.length;
  // 7-byte chunks, as a serial port delivers them: most block characters (3 bytes) are split.
  const chunks = Array.from({ length: Math.ceil(bytes.length / 7) }, (_, i) => bytes.subarray(i * 7, i * 7 + 7));
  const text = hw.consoleText();
  t.is(chunks.map((chunk) => text.push(chunk)).join(''), bytes.toString());
  t.deepEqual(hw.loginScreenQr(text.text(), at), [address]);
  // Each chunk decoded alone (what hw-test did): the QR code is lost.
  t.deepEqual(hw.loginScreenQr(chunks.map((chunk) => chunk.toString('utf8')).join(''), at), []);
});
