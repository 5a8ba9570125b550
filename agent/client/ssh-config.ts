import { chmodSync, copyFileSync, mkdirSync, readFileSync, renameSync, writeFileSync } from 'node:fs';
import { dirname } from 'node:path';

/** Marks the block `diode ssh-config --install` owns in ~/.ssh/config, so a second install finds it. */
export const BLOCK_BEGIN = '# >>> diode (added by `diode ssh-config --install`; delete this block to undo) >>>';
export const BLOCK_END = '# <<< diode <<<';
/** The copy of the previous file written before each change. */
export const BACKUP_SUFFIX = '.diode-backup';

/** Quotes one word for the shell that ssh runs ProxyCommand with, and escapes ssh's own % tokens. */
export function quoteWord(word: string): string {
  const escaped = word.replace(/%/g, '%%');
  return /^[A-Za-z0-9_./:@%+=,-]+$/.test(escaped) ? escaped : `'${escaped.replace(/'/g, `'\\''`)}'`;
}

/** The block for ~/.ssh/config: every `<address>.diode` host goes through `diode proxy` (flags after the command name). */
export function sshConfigBlock(command: string[], flags: string[] = []): string {
  const words = [...command.map(quoteWord), 'proxy', '%h', '%p', ...flags.map(quoteWord)];
  return [BLOCK_BEGIN, 'Host *.diode', `  ProxyCommand ${words.join(' ')}`, BLOCK_END, ''].join('\n');
}

export type InstallResult = 'added' | 'updated' | 'unchanged';

export interface InstallOutcome {
  result: InstallResult;
  /** The copy of the previous file, when there was one to copy. */
  backup?: string;
  /** Lines of the file that would still take precedence over the block, in words. */
  warnings: string[];
}

/** A line that opens a Host or Match section: everything before the first one applies to every host. */
const SECTION_START = /^[ \t]*(Host|Match)[ \t=]/im;
/** Options that, set for every host, ssh would take before the block's ProxyCommand. */
const GLOBAL_PROXY = /^[ \t]*(ProxyCommand|ProxyJump)[ \t=].*$/im;

/**
 * Puts the block into an ssh config file once, where ssh will use it: ssh
 * takes the first value it finds for an option, so the block goes before the
 * first Host/Match section (an earlier `Host *` with its own ProxyCommand
 * would otherwise win), after the options that apply to every host. An older
 * block is moved or replaced; an equal one in place is left alone. Other
 * contents stay as they were; the previous file, if any, is copied to
 * <file>.diode-backup first; the result has mode 0600.
 */
export function installSshConfig(path: string, block: string): InstallOutcome {
  let old: string | undefined;
  try {
    old = readFileSync(path, 'utf8');
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code !== 'ENOENT') throw err;
  }
  let rest = old ?? '';
  let had = false;
  const begin = rest.indexOf(BLOCK_BEGIN);
  const end = begin >= 0 ? rest.indexOf(BLOCK_END, begin) : -1;
  if (begin >= 0 && end >= 0) {
    let after = end + BLOCK_END.length;
    if (rest[after] === '\n') after++;
    if (rest[after] === '\n') after++;
    rest = rest.slice(0, begin) + rest.slice(after);
    had = true;
  }
  const section = SECTION_START.exec(rest);
  const at = section ? section.index : rest.length;
  const head = rest.slice(0, at);
  const separator = head === '' || head.endsWith('\n\n') ? '' : head.endsWith('\n') ? '\n' : '\n\n';
  const next = head + separator + block + (section ? '\n' : '') + rest.slice(at);
  const warnings: string[] = [];
  const global = GLOBAL_PROXY.exec(head);
  if (global) {
    warnings.push(`${path}: "${global[0].trim()}" before any Host line applies to every host and wins over the diode block; move it under a Host line`);
  }
  if (next === old) return { result: 'unchanged', warnings };
  mkdirSync(dirname(path), { recursive: true, mode: 0o700 });
  let backup: string | undefined;
  if (old !== undefined) {
    backup = path + BACKUP_SUFFIX;
    copyFileSync(path, backup);
    chmodSync(backup, 0o600);
  }
  const tmp = `${path}.${process.pid}.tmp`;
  writeFileSync(tmp, next, { mode: 0o600 });
  chmodSync(tmp, 0o600);
  renameSync(tmp, path);
  return { result: had ? 'updated' : 'added', backup, warnings };
}
