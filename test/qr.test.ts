// Issue 17 item 8: the printed QR code scans on light and dark themes and on the Linux console.
// The terminal is simulated: each character cell is drawn to pixels with the colours its escape
// codes and the theme give it, and jsQR (a real decoder) reads the picture.
import test from 'ava';
import { execFile } from 'node:child_process';
import { promisify } from 'node:util';
import jsQRModule from 'jsqr';
import qrcodeTerminal from 'qrcode-terminal';
import { DIODE_BUNDLE, tempDir } from './helpers/diode.ts';
import { QR_QUIET_ZONE_MODULES } from '../agent/cli/qr.ts';

const exec = promisify(execFile);
// jsqr is CommonJS with a default export in its types: under NodeNext the default import is the module object.
const jsQR = (jsQRModule as unknown as { default: typeof jsQRModule.default }).default;

type Rgb = [number, number, number];
interface Terminal {
  name: string;
  fg: Rgb;
  bg: Rgb;
  /** The 8 ANSI colours (30-37 / 40-47). */
  palette: Rgb[];
}
const XTERM: Rgb[] = [[0, 0, 0], [205, 0, 0], [0, 205, 0], [205, 205, 0], [0, 0, 238], [205, 0, 205], [0, 205, 205], [229, 229, 229]];
const LINUX_CONSOLE: Rgb[] = [[0, 0, 0], [170, 0, 0], [0, 170, 0], [170, 85, 0], [0, 0, 170], [170, 0, 170], [0, 170, 170], [170, 170, 170]];
const LIGHT: Terminal = { name: 'light theme', fg: [0, 0, 0], bg: [255, 255, 255], palette: XTERM };
const DARK: Terminal = { name: 'dark theme', fg: [220, 220, 220], bg: [30, 30, 30], palette: XTERM };
const CONSOLE: Terminal = { name: 'Linux console (the image)', fg: [170, 170, 170], bg: [0, 0, 0], palette: LINUX_CONSOLE };

/** Pixels per module; a character cell is one module wide and two tall. */
const PX = 4;
/** Terminal background drawn around the text (modules), as a screen shows it. */
const MARGIN = 6;

/** Draws terminal text (SGR colours, half and full blocks) as RGBA pixels on the given theme. */
function paint(text: string, term: Terminal): { data: Uint8ClampedArray; width: number; height: number; modules: boolean[][] } {
  const rows: Rgb[][] = [];
  for (const line of text.replace(/\n$/, '').split('\n')) {
    const top: Rgb[] = [];
    const bottom: Rgb[] = [];
    let fg = term.fg;
    let bg = term.bg;
    for (let i = 0; i < line.length; i++) {
      if (line[i] === '\x1b') {
        const m = /^\x1b\[([\d;]*)m/.exec(line.slice(i));
        if (!m) throw new Error('unexpected escape');
        for (const code of (m[1] || '0').split(';').map(Number)) {
          if (code === 0) [fg, bg] = [term.fg, term.bg];
          else if (code >= 30 && code <= 37) fg = term.palette[code - 30];
          else if (code >= 40 && code <= 47) bg = term.palette[code - 40];
          else if (code === 39) fg = term.fg;
          else if (code === 49) bg = term.bg;
        }
        i += m[0].length - 1;
        continue;
      }
      const ch = line[i];
      top.push(ch === '\u2580' || ch === '\u2588' ? fg : bg);
      bottom.push(ch === '\u2584' || ch === '\u2588' ? fg : bg);
    }
    rows.push(top, bottom);
  }
  const cols = Math.max(...rows.map((r) => r.length));
  const width = (cols + 2 * MARGIN) * PX;
  const height = (rows.length + 2 * MARGIN) * PX;
  const data = new Uint8ClampedArray(width * height * 4);
  const modules: boolean[][] = rows.map((r) => Array.from({ length: cols }, (_, c) => luminance(r[c] ?? term.bg) < 128));
  for (let y = 0; y < height; y++) {
    for (let x = 0; x < width; x++) {
      const r = Math.floor(y / PX) - MARGIN;
      const c = Math.floor(x / PX) - MARGIN;
      const rgb = rows[r]?.[c] ?? term.bg;
      data.set([...rgb, 255], (y * width + x) * 4);
    }
  }
  return { data, width, height, modules };
}

function luminance([r, g, b]: Rgb): number {
  return 0.299 * r + 0.587 * g + 0.114 * b;
}

function decode(text: string, term: Terminal): string | undefined {
  const { data, width, height } = paint(text, term);
  // No inverted attempt: most phone scanners read dark modules on a light ground only.
  return jsQR(data, width, height, { inversionAttempts: 'dontInvert' })?.data;
}

async function printedQr(args: string[]): Promise<{ address: string; qr: string }> {
  const { stdout } = await exec(process.execPath, [DIODE_BUNDLE, 'address', '--qr', ...args]);
  const [address, ...rest] = stdout.split('\n');
  return { address, qr: rest.join('\n') };
}

test('17.8 diode address --qr scans on a light theme, a dark theme and the Linux console, with a 4-module quiet zone', async (t) => {
  const { address, qr } = await printedQr(['--home', tempDir(t)]);
  t.regex(address, /^0x[0-9a-fA-F]{40}$/);
  for (const term of [LIGHT, DARK, CONSOLE]) {
    t.is(decode(qr, term), address, term.name);
    // The quiet zone: the outer 4 modules on every side are light, whatever the theme behind them.
    const { modules } = paint(qr, term);
    const n = modules[0].length;
    for (let i = 0; i < QR_QUIET_ZONE_MODULES; i++) {
      t.false(modules[i].some(Boolean), `${term.name}: top quiet row ${i}`);
      t.false(modules.some((row) => row[i] || row[n - 1 - i]), `${term.name}: side quiet column ${i}`);
      t.false(modules[modules.length - 1 - i].some(Boolean), `${term.name}: bottom quiet row ${i}`);
    }
    t.true(modules[QR_QUIET_ZONE_MODULES].slice(QR_QUIET_ZONE_MODULES, QR_QUIET_ZONE_MODULES + 7).every(Boolean), `${term.name}: the finder pattern starts right after the quiet zone`);
  }
  // Fits an 80x25 console with the address line above it.
  const lines = qr.trimEnd().split('\n');
  t.true(lines.length + 1 <= 25);
  t.true(Math.max(...lines.map((l) => l.replace(/\x1b\[[\d;]*m/g, '').length)) <= 80);
});

test('17.8 --qr-theme light and dark print plain characters that scan on that theme', async (t) => {
  const home = tempDir(t);
  const light = await printedQr(['--qr-theme', 'light', '--home', home]);
  const dark = await printedQr(['--qr-theme', 'dark', '--home', home]);
  t.notRegex(light.qr + dark.qr, /\x1b/);
  t.is(decode(light.qr, LIGHT), light.address);
  t.is(decode(dark.qr, DARK), dark.address);
  t.is(decode(dark.qr, CONSOLE), dark.address);
});

test('17.8 the old rendering (qrcode-terminal small, one-module border) does not scan on a light theme', (t) => {
  // Regression guard: the check above must be able to fail.
  const address = '0x9f8B043D1CaeE0C61c92a5394DA08D428BF16Fbe';
  let old = '';
  qrcodeTerminal.generate(address, { small: true }, (q) => (old = q));
  t.is(decode(old, LIGHT), undefined);
});
