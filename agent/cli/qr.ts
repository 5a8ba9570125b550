import QRCode from 'qrcode-terminal/vendor/QRCode/index.js';
import QRErrorCorrectLevel from 'qrcode-terminal/vendor/QRCode/QRErrorCorrectLevel.js';
import { UsageError } from '../util/errors.ts';

/** Light modules around the code on every side: what ISO/IEC 18004 asks for. */
export const QR_QUIET_ZONE_MODULES = 4;

/**
 * How the code is drawn: `color` sets black on white explicitly (scans on a
 * light or a dark theme and on the Linux console, whose 8 colours have both);
 * `light` and `dark` draw with plain characters for a terminal of that
 * background, for output that must carry no escape codes.
 */
export type QrTheme = 'color' | 'light' | 'dark';

export function parseQrTheme(text: string | undefined): QrTheme {
  if (text === undefined) return 'color';
  if (text !== 'color' && text !== 'light' && text !== 'dark') throw new UsageError(`--qr-theme: "${text}" must be color, light or dark`);
  return text;
}

/** SGR: black foreground on white background; reset. */
const BLACK_ON_WHITE = '\x1b[30;47m';
const RESET = '\x1b[0m';

/** Cell glyphs by (top ink, bottom ink): one character is one module wide and two tall. */
const GLYPH = [
  [' ', '\u2584'], // top blank: bottom blank | bottom ink (lower half block)
  ['\u2580', '\u2588'], // top ink: bottom blank (upper half block) | both (full block)
];

/** The module matrix with its quiet zone: true = dark. */
export function qrMatrix(text: string): boolean[][] {
  const qr = new QRCode(-1, QRErrorCorrectLevel.M);
  qr.addData(text);
  qr.make();
  const n = qr.getModuleCount();
  const size = n + 2 * QR_QUIET_ZONE_MODULES;
  return Array.from({ length: size }, (_, r) =>
    Array.from({ length: size }, (_, c) => {
      const row = r - QR_QUIET_ZONE_MODULES;
      const col = c - QR_QUIET_ZONE_MODULES;
      return row >= 0 && row < n && col >= 0 && col < n && qr.isDark(row, col);
    }),
  );
}

/** The text as a terminal QR code (half-height blocks: a 42-character address fits an 80x25 console). */
export function renderQr(text: string, theme: QrTheme = 'color'): string {
  const matrix = qrMatrix(text);
  // "Ink" is what the glyphs draw in the foreground colour: dark modules, except on a dark theme.
  const ink = (row: number, col: number) => {
    const dark = matrix[row]?.[col] ?? false; // the row past an odd height is quiet zone
    return theme === 'dark' ? !dark : dark;
  };
  const lines: string[] = [];
  for (let r = 0; r < matrix.length; r += 2) {
    let line = '';
    for (let c = 0; c < matrix.length; c++) line += GLYPH[Number(ink(r, c))][Number(r + 1 < matrix.length ? ink(r + 1, c) : theme === 'dark')];
    lines.push(theme === 'color' ? BLACK_ON_WHITE + line + RESET : line);
  }
  return lines.join('\n') + '\n';
}
