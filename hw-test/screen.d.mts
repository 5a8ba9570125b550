// Types for screen.mjs (plain JS so that hw-test runs on bare node).
export type Rgb = readonly [number, number, number];

export interface Theme {
  readonly name: string;
  readonly palette: readonly Rgb[];
  readonly fg: Rgb;
  readonly bg: Rgb;
  readonly boldBright: boolean;
}

export const LINUX_CONSOLE: Theme;
export const LIGHT_TERMINAL: Theme;
export const DARK_TERMINAL: Theme;
export const SMALL_CONSOLE: { readonly cols: number; readonly rows: number };

export interface Cell {
  ch: string;
  fg: Rgb;
  bg: Rgb;
}

export interface Screen {
  cols: number;
  rows: number;
  theme: Theme;
  cells: Cell[][];
  scrolled: number;
  unsupported: string[];
  glyphs: string[];
  lines: string[];
}

export function renderScreen(text: string, options?: { theme?: Theme; cols?: number; rows?: number }): Screen;
export function screenPgm(screen: Screen): Buffer;
export function halfCells(screen: Screen): boolean[][];

export class ZbarUnavailableError extends Error {
  readonly code: 'ZBAR_UNAVAILABLE';
}

export function decodeQr(screen: Screen): string[];
