// What a person (or a phone's camera) sees on a text console: a small
// terminal emulator for the output of agetty and `diode address --qr`, a
// rasteriser that draws its screen as pixels, and zbarimg (Debian's
// zbar-tools) to read QR codes off the picture. Plain JS so that hw-test runs
// on bare node; the tests use it through screen.d.mts.
//
// The emulator follows the Linux console (drivers/tty/vt): autowrap at the
// last column with the deferred wrap, scrolling at the bottom row, SGR colours
// 30-37/40-47 (90-97/100-107), bold as the bright foreground, reverse video.
// A "\n" moves to the start of the next line, as the tty's ONLCR makes it.
// Every escape sequence it does not draw is listed in `unsupported`, every
// character outside printable ASCII in `glyphs`, so a test can assert that a
// screen needs nothing the Pi's console lacks.
import { spawnSync } from 'node:child_process';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';

/** The VGA palette the Linux console starts with (drivers/tty/vt/vt.c default_red/grn/blu). */
const VGA = Object.freeze([
  [0, 0, 0], [170, 0, 0], [0, 170, 0], [170, 85, 0], [0, 0, 170], [170, 0, 170], [0, 170, 170], [170, 170, 170],
  [85, 85, 85], [255, 85, 85], [85, 255, 85], [255, 255, 85], [85, 85, 255], [255, 85, 255], [85, 255, 255], [255, 255, 255],
]);
/** xterm's palette (what most desktop terminals start from). */
const XTERM = Object.freeze([
  [0, 0, 0], [205, 0, 0], [0, 205, 0], [205, 205, 0], [0, 0, 238], [205, 0, 205], [0, 205, 205], [229, 229, 229],
  [127, 127, 127], [255, 0, 0], [0, 255, 0], [255, 255, 0], [92, 92, 255], [255, 0, 255], [0, 255, 255], [255, 255, 255],
]);

/** The Pi's HDMI console and the serial console as Linux draws them: light grey on black. */
export const LINUX_CONSOLE = Object.freeze({ name: 'Linux console', palette: VGA, fg: VGA[7], bg: VGA[0], boldBright: true });
/** A desktop terminal with a light theme. */
export const LIGHT_TERMINAL = Object.freeze({ name: 'light terminal', palette: XTERM, fg: [0, 0, 0], bg: [255, 255, 255], boldBright: false });
/** A desktop terminal with a dark theme. */
export const DARK_TERMINAL = Object.freeze({ name: 'dark terminal', palette: XTERM, fg: [220, 220, 220], bg: [30, 30, 30], boldBright: false });

/** The console size the login screen must fit (VGA text mode; a Pi's HDMI console is larger). */
export const SMALL_CONSOLE = Object.freeze({ cols: 80, rows: 25 });
/** Pixels of one character cell: the Linux console's 8x16 font. */
const CELL_W = 8;
const CELL_H = 16;
/** Cells of screen background drawn around the screen, as a camera sees the bezel-side margin. */
const MARGIN_CELLS = 2;
/** The block elements the console font has: which half of the cell (top, bottom) is foreground. */
const BLOCKS = Object.freeze({ ' ': [false, false], '\u2580': [true, false], '\u2584': [false, true], '\u2588': [true, true] });
/** SGR codes the Linux console draws (the ones that change what a cell looks like). */
const SGR_SUPPORTED = new Set([0, 1, 2, 4, 5, 7, 21, 22, 24, 25, 27, 39, 49]);
/** ms zbarimg may take for one picture. */
const ZBAR_TIMEOUT_MS = 30_000;

/**
 * Runs `text` (terminal output) through a console of `cols` x `rows` with the
 * given theme and returns what is on the screen at the end.
 */
export function renderScreen(text, { theme = LINUX_CONSOLE, cols = SMALL_CONSOLE.cols, rows = SMALL_CONSOLE.rows } = {}) {
  const blank = () => ({ ch: ' ', fg: theme.fg, bg: theme.bg });
  const grid = Array.from({ length: rows }, () => Array.from({ length: cols }, blank));
  const unsupported = [];
  const glyphs = new Set();
  let row = 0;
  let col = 0;
  let wrapNext = false; // the cursor sits past the last column until the next character
  let sgr = { fg: -1, bg: -1, bold: false, reverse: false }; // -1: the theme's default
  let scrolled = 0;

  const colours = () => {
    let fg = sgr.fg < 0 ? theme.fg : theme.palette[sgr.fg];
    if (sgr.bold && theme.boldBright) fg = sgr.fg < 0 ? VGA[15] : theme.palette[(sgr.fg % 8) + 8];
    const bg = sgr.bg < 0 ? theme.bg : theme.palette[sgr.bg];
    return sgr.reverse ? { fg: bg, bg: fg } : { fg, bg };
  };
  const lineFeed = () => {
    if (row === rows - 1) {
      grid.shift();
      grid.push(Array.from({ length: cols }, blank));
      scrolled++;
    } else row++;
  };
  const erase = (r, from, to) => {
    for (let c = from; c < to; c++) grid[r][c] = { ch: ' ', ...colours() };
  };
  const applySgr = (params) => {
    for (const p of params.length ? params : [0]) {
      if (p === 0) sgr = { fg: -1, bg: -1, bold: false, reverse: false };
      else if (p === 1) sgr.bold = true;
      else if (p === 22) sgr.bold = false;
      else if (p === 7) sgr.reverse = true;
      else if (p === 27) sgr.reverse = false;
      else if (p >= 30 && p <= 37) sgr.fg = p - 30;
      else if (p >= 90 && p <= 97) sgr.fg = p - 90 + 8;
      else if (p === 39) sgr.fg = -1;
      else if (p >= 40 && p <= 47) sgr.bg = p - 40;
      else if (p >= 100 && p <= 107) sgr.bg = p - 100 + 8;
      else if (p === 49) sgr.bg = -1;
      else if (!SGR_SUPPORTED.has(p)) unsupported.push(`SGR ${p}`);
    }
  };

  const chars = Array.from(text);
  for (let i = 0; i < chars.length; i++) {
    const ch = chars[i];
    if (ch === '\x1b') {
      const rest = chars.slice(i + 1, i + 40).join('');
      const csi = /^\[([?]?)([\d;]*)([@-~])/.exec(rest);
      if (csi) {
        i += Array.from(csi[0]).length;
        const params = csi[2] === '' ? [] : csi[2].split(';').map((p) => (p === '' ? 0 : Number(p)));
        const n = Math.max(1, params[0] ?? 1);
        if (csi[1] === '?') unsupported.push(`ESC [?${csi[2]}${csi[3]}`);
        else if (csi[3] === 'm') applySgr(params);
        else if (csi[3] === 'H' || csi[3] === 'f') {
          row = Math.min(rows, Math.max(1, params[0] || 1)) - 1;
          col = Math.min(cols, Math.max(1, params[1] || 1)) - 1;
          wrapNext = false;
        } else if (csi[3] === 'J') {
          const mode = params[0] ?? 0;
          if (mode === 0) {
            erase(row, col, cols);
            for (let r = row + 1; r < rows; r++) erase(r, 0, cols);
          } else if (mode === 1) {
            for (let r = 0; r < row; r++) erase(r, 0, cols);
            erase(row, 0, col + 1);
          } else for (let r = 0; r < rows; r++) erase(r, 0, cols);
        } else if (csi[3] === 'K') {
          const mode = params[0] ?? 0;
          erase(row, mode === 0 ? col : 0, mode === 1 ? col + 1 : cols);
        } else if (csi[3] === 'r') {
          if (params.length > 0 && !(params[0] <= 1 && (params[1] ?? rows) >= rows)) unsupported.push(`ESC [${csi[2]}r (a scroll region)`);
        } else if (csi[3] === 'A') row = Math.max(0, row - n);
        else if (csi[3] === 'B') row = Math.min(rows - 1, row + n);
        else if (csi[3] === 'C') col = Math.min(cols - 1, col + n);
        else if (csi[3] === 'D') col = Math.max(0, col - n);
        else unsupported.push(`ESC [${csi[2]}${csi[3]}`);
        continue;
      }
      if (rest[0] === 'c') {
        i++;
        for (let r = 0; r < rows; r++) erase(r, 0, cols);
        row = col = 0;
        sgr = { fg: -1, bg: -1, bold: false, reverse: false };
        continue;
      }
      unsupported.push(`ESC ${JSON.stringify(rest.slice(0, 1))}`);
      if (rest.length > 0) i++;
      continue;
    }
    if (ch === '\r') {
      col = 0;
      wrapNext = false;
    } else if (ch === '\n') {
      col = 0;
      wrapNext = false;
      lineFeed();
    } else if (ch === '\b') {
      col = Math.max(0, col - 1);
      wrapNext = false;
    } else if (ch === '\t') col = Math.min(cols - 1, (Math.floor(col / 8) + 1) * 8);
    else if (ch === '\x07') continue;
    else if (ch < ' ' || ch === '\x7f' || (ch >= '\x80' && ch <= '\x9f')) unsupported.push(`control ${JSON.stringify(ch)}`);
    else {
      if (wrapNext) {
        col = 0;
        lineFeed();
        wrapNext = false;
      }
      if (ch > '\x7e') glyphs.add(ch);
      grid[row][col] = { ch, ...colours() };
      if (col === cols - 1) wrapNext = true;
      else col++;
    }
  }
  return {
    cols,
    rows,
    theme,
    cells: grid,
    /** Lines scrolled off the top. */
    scrolled,
    unsupported,
    /** Characters outside printable ASCII that were drawn. */
    glyphs: [...glyphs],
    /** The screen's text, one string per row, trailing blanks removed. */
    lines: grid.map((r) => r.map((c) => c.ch).join('').trimEnd()),
  };
}

const luminance = ([r, g, b]) => Math.round(0.299 * r + 0.587 * g + 0.114 * b);

/**
 * The screen as an 8-bit greyscale picture (binary PGM): each cell 8x16
 * pixels, block elements drawn exactly, any other character as a box
 * outline of its foreground colour (ink where a glyph would be).
 */
export function screenPgm(screen) {
  const width = (screen.cols + 2 * MARGIN_CELLS) * CELL_W;
  const height = (screen.rows + 2 * MARGIN_CELLS) * CELL_H;
  const header = Buffer.from(`P5\n${width} ${height}\n255\n`, 'ascii');
  const pixels = Buffer.alloc(width * height, luminance(screen.theme.bg));
  for (let r = 0; r < screen.rows; r++) {
    for (let c = 0; c < screen.cols; c++) {
      const cell = screen.cells[r][c];
      const fg = luminance(cell.fg);
      const bg = luminance(cell.bg);
      const block = BLOCKS[cell.ch];
      for (let y = 0; y < CELL_H; y++) {
        for (let x = 0; x < CELL_W; x++) {
          let ink;
          if (block) ink = y < CELL_H / 2 ? block[0] : block[1];
          else ink = y >= 3 && y <= 12 && x >= 1 && x <= 6 && (y === 3 || y === 12 || x === 1 || x === 6);
          pixels[((r + MARGIN_CELLS) * CELL_H + y) * width + (c + MARGIN_CELLS) * CELL_W + x] = ink ? fg : bg;
        }
      }
    }
  }
  return Buffer.concat([header, pixels]);
}

/**
 * The screen at the resolution of a half-height block: two rows per text row,
 * true where that half looks dark (a QR module, when the screen shows one).
 */
export function halfCells(screen) {
  const out = [];
  for (const row of screen.cells) {
    const top = [];
    const bottom = [];
    for (const cell of row) {
      const [inkTop, inkBottom] = BLOCKS[cell.ch] ?? [false, false];
      top.push(luminance(inkTop ? cell.fg : cell.bg) < 128);
      bottom.push(luminance(inkBottom ? cell.fg : cell.bg) < 128);
    }
    out.push(top, bottom);
  }
  return out;
}

export class ZbarUnavailableError extends Error {
  code = 'ZBAR_UNAVAILABLE';
}

/**
 * The QR codes zbarimg reads off the screen's picture (dark modules on a
 * light ground only, as most phone scanners: zbar does not try the inverse
 * unless told to). Throws ZbarUnavailableError without zbarimg.
 */
export function decodeQr(screen) {
  const dir = mkdtempSync(join(tmpdir(), 'diode-screen-'));
  try {
    const file = join(dir, 'screen.pgm');
    writeFileSync(file, screenPgm(screen));
    const r = spawnSync('zbarimg', ['--quiet', '--raw', '--nodbus', '-Sdisable', '-Sqrcode.enable', file], { encoding: 'utf8', timeout: ZBAR_TIMEOUT_MS });
    if (r.error) throw new ZbarUnavailableError(`zbarimg: ${r.error.message} (apt-get install zbar-tools)`);
    // 0: found; 4: no symbol in the picture.
    if (r.status === 4) return [];
    if (r.status !== 0) throw new Error(`zbarimg exited ${r.status}: ${r.stderr.trim()}`);
    return r.stdout.split('\n').filter((l) => l !== '');
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
}
