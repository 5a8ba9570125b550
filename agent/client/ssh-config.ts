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

/**
 * Puts the block into an ssh config file once: appended when absent,
 * replaced in place when an older one differs, left alone when equal. Other
 * contents stay as they were; the previous file is copied to
 * <file>.diode-backup first; the result has mode 0600.
 */
export function installSshConfig(path: string, block: string): InstallResult {
  let old: string | undefined;
  try {
    old = readFileSync(path, 'utf8');
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code !== 'ENOENT') throw err;
  }
  let next: string;
  let result: InstallResult;
  const begin = old?.indexOf(BLOCK_BEGIN) ?? -1;
  const end = begin >= 0 ? old!.indexOf(BLOCK_END, begin) : -1;
  if (old !== undefined && begin >= 0 && end >= 0) {
    let after = end + BLOCK_END.length;
    if (old[after] === '\n') after++;
    if (old.slice(begin, after) === block) return 'unchanged';
    next = old.slice(0, begin) + block + old.slice(after);
    result = 'updated';
  } else {
    const base = old ?? '';
    next = base + (base === '' ? '' : base.endsWith('\n\n') ? '' : base.endsWith('\n') ? '\n' : '\n\n') + block;
    result = 'added';
  }
  mkdirSync(dirname(path), { recursive: true, mode: 0o700 });
  if (old !== undefined) {
    copyFileSync(path, path + BACKUP_SUFFIX);
    chmodSync(path + BACKUP_SUFFIX, 0o600);
  }
  const tmp = `${path}.${process.pid}.tmp`;
  writeFileSync(tmp, next, { mode: 0o600 });
  chmodSync(tmp, 0o600);
  renameSync(tmp, path);
  return result;
}
