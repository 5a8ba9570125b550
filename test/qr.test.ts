// Issue 17 item 8 and issue 29 item 2: the printed QR code scans on light and dark terminals and
// on the Linux console. The terminal is emulated (hw-test/screen.mjs): the output is drawn to a
// screen with the colours its escape codes and the theme give each cell, rasterised, and read by
// zbarimg (Debian's zbar-tools), which, as most phone scanners, reads dark modules on light only.
import test from 'ava';
import { execFile } from 'node:child_process';
import { promisify } from 'node:util';
import qrcodeTerminal from 'qrcode-terminal';
import { DIODE_BUNDLE, tempDir } from './helpers/diode.ts';
import { QR_QUIET_ZONE_MODULES } from '../agent/cli/qr.ts';
import { decodeQr, halfCells, renderScreen, DARK_TERMINAL, LIGHT_TERMINAL, LINUX_CONSOLE, type Theme } from '../hw-test/screen.mjs';

const exec = promisify(execFile);
/** Rows of the emulated terminal: the code and its quiet zone (≈ 19 rows) with room to spare. */
const ROWS = 40;

function decode(text: string, theme: Theme): string | undefined {
  const found = decodeQr(renderScreen(text, { theme, rows: ROWS }));
  return found.length === 1 ? found[0] : undefined;
}

/** The code's modules as the terminal shows them (dark = true), cut to the rows and columns the text used. */
function modules(text: string, theme: Theme): boolean[][] {
  const lines = text.replace(/\n$/, '').split('\n');
  const width = Math.max(...lines.map((l) => l.replace(/\x1b\[[\d;]*m/g, '').length));
  return halfCells(renderScreen(text, { theme, rows: ROWS }))
    .slice(0, 2 * lines.length)
    .map((row) => row.slice(0, width));
}

async function printedQr(args: string[]): Promise<{ address: string; qr: string }> {
  const { stdout } = await exec(process.execPath, [DIODE_BUNDLE, 'address', '--qr', ...args]);
  const [address, ...rest] = stdout.split('\n');
  return { address, qr: rest.join('\n') };
}

test('17.8, 29.2 diode address --qr scans (zbarimg) on a light terminal, a dark terminal and the Linux console, with a 4-module quiet zone', async (t) => {
  const { address, qr } = await printedQr(['--home', tempDir(t)]);
  t.regex(address, /^0x[0-9a-fA-F]{40}$/);
  for (const term of [LIGHT_TERMINAL, DARK_TERMINAL, LINUX_CONSOLE]) {
    t.is(decode(qr, term), address, term.name);
    // The quiet zone: the outer 4 modules on every side are light, whatever the theme behind them.
    const drawn = modules(qr, term);
    const n = drawn[0].length;
    for (let i = 0; i < QR_QUIET_ZONE_MODULES; i++) {
      t.false(drawn[i].some(Boolean), `${term.name}: top quiet row ${i}`);
      t.false(drawn.some((row) => row[i] || row[n - 1 - i]), `${term.name}: side quiet column ${i}`);
      t.false(drawn[drawn.length - 1 - i].some(Boolean), `${term.name}: bottom quiet row ${i}`);
    }
    t.true(drawn[QR_QUIET_ZONE_MODULES].slice(QR_QUIET_ZONE_MODULES, QR_QUIET_ZONE_MODULES + 7).every(Boolean), `${term.name}: the finder pattern starts right after the quiet zone`);
  }
  // Fits an 80x25 console with the address line above it.
  const lines = qr.trimEnd().split('\n');
  t.true(lines.length + 1 <= 25);
  t.true(Math.max(...lines.map((l) => l.replace(/\x1b\[[\d;]*m/g, '').length)) <= 80);
});

test('17.8, 29.2 --qr-theme light and dark print plain characters that scan (zbarimg) on that theme only', async (t) => {
  const home = tempDir(t);
  const light = await printedQr(['--qr-theme', 'light', '--home', home]);
  const dark = await printedQr(['--qr-theme', 'dark', '--home', home]);
  t.notRegex(light.qr + dark.qr, /\x1b/);
  t.is(decode(light.qr, LIGHT_TERMINAL), light.address);
  t.is(decode(dark.qr, DARK_TERMINAL), dark.address);
  t.is(decode(dark.qr, LINUX_CONSOLE), dark.address);
  // Drawn for one theme, a plain code is a negative on the other: a scanner does not read it.
  t.is(decode(light.qr, DARK_TERMINAL), undefined);
  t.is(decode(dark.qr, LIGHT_TERMINAL), undefined);
});

test('17.8 the old rendering (qrcode-terminal small, one-module border) does not scan on a light theme', (t) => {
  // Regression guard: the check above must be able to fail.
  const address = '0x9f8B043D1CaeE0C61c92a5394DA08D428BF16Fbe';
  let old = '';
  qrcodeTerminal.generate(address, { small: true }, (q) => (old = q));
  t.is(decode(old, LIGHT_TERMINAL), undefined);
});
