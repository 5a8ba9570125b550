// Text a peer chose (a relay's or device's error message, a SOCKS name, a
// frame's kind, later a device's name) must never reach a log or a terminal
// raw: a newline forges a whole log line (journald makes it its own entry),
// an escape sequence retitles the window, writes the clipboard (OSC 52),
// clears the screen or paints a fake password prompt. Shared by the logger
// and every command that prints a peer's text, so it lives below both.

/** chars: the longest peer text a reply message or a printed name keeps; the rest is cut, marked with an ellipsis. */
export const MAX_PEER_TEXT_CHARS = 200;

/**
 * What a terminal or a log reader would act on: C0 controls (newline, ESC,
 * BEL, backspace, carriage return), DEL, C1 controls (U+0080–U+009F: CSI and
 * OSC as single characters), the Unicode line and paragraph separators, and
 * the bidirectional overrides and isolates that reorder what is shown.
 */
const UNSAFE = /[\u0000-\u001f\u007f-\u009f\u061c\u200e\u200f\u2028\u2029\u202a-\u202e\u2066-\u2069]/g;
const UNSAFE_TEST = new RegExp(UNSAFE.source);

function escapeChar(c: string): string {
  const code = c.charCodeAt(0);
  if (c === '\n') return '\\n';
  if (c === '\r') return '\\r';
  if (c === '\t') return '\\t';
  return code <= 0xff ? `\\x${code.toString(16).padStart(2, '0')}` : `\\u${code.toString(16).padStart(4, '0')}`;
}

/** `text` with every control character written as a visible escape (`\n`, `\x1b`, `\u202e`); everything else unchanged. */
export function escapeText(text: string): string {
  return UNSAFE_TEST.test(text) ? text.replace(UNSAFE, escapeChar) : text;
}

/**
 * A peer's text made safe to print: anything (not only a string) turned into
 * text, escaped, and cut to `maxChars` (an ellipsis says it was cut).
 */
export function peerText(value: unknown, maxChars = MAX_PEER_TEXT_CHARS): string {
  const escaped = escapeText(typeof value === 'string' ? value : String(value));
  if (escaped.length <= maxChars) return escaped;
  // Cut between code points, never inside a surrogate pair.
  return `${Array.from(escaped).slice(0, maxChars).join('')}…`;
}
