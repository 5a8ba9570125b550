import { closeSync, openSync, readSync, renameSync, writeFileSync, writeSync, constants, fstatSync, chmodSync } from 'node:fs';
import { DiodeError, errorMessage } from '../util/errors.ts';
import { makeHome } from '../identity/home.ts';
import { dirname } from 'node:path';
import { tryParseAddress } from '../identity/address.ts';
import { nameProblem } from './name.ts';

/** bytes: the largest names file read (≈ 10,000 entries); a bigger one is refused by name, never read half. */
export const MAX_NAMES_FILE_BYTES = 1024 * 1024;

/** One line of a names file: `<name> <address>`, optionally followed by `# comment`. */
export interface NameEntry {
  name: string;
  /** Checksummed. */
  address: string;
  /** What follows `#` on the line (where a pin was learned, and when). */
  comment?: string;
}

interface Line {
  raw: string;
  entry?: NameEntry;
}

/**
 * A text file of names in the state directory, one `<name> <address>` per
 * line (`#` starts a comment; blank lines are kept), as ssh's known_hosts:
 * a person may read and edit it. Every lookup reads it again, so an edit or
 * a `diode name` command takes effect in running agents at once. Reads are
 * bounded; a line that does not parse is an error naming the file and the
 * line, never skipped in silence. Whole-file changes are written to a
 * temporary file and renamed into place; a new entry is appended with one
 * write (O_APPEND), so agents learning names at once never lose a line.
 */
export class NameFile {
  readonly path: string;
  /** What the file holds, for messages ("local names", "known names"). */
  readonly what: string;

  constructor(path: string, what: string) {
    this.path = path;
    this.what = what;
  }

  entries(): NameEntry[] {
    return this.#lines().flatMap((l) => (l.entry ? [l.entry] : []));
  }

  /** The first entry for `name` (lower case). */
  get(name: string): NameEntry | undefined {
    return this.entries().find((e) => e.name === name);
  }

  /** Adds a line for `name` without reading the file (a pin learned while others may be learning theirs). */
  append(entry: NameEntry): void {
    makeHome(dirname(this.path));
    const fd = openSync(this.path, constants.O_WRONLY | constants.O_APPEND | constants.O_CREAT, 0o600);
    try {
      // A hand-edited file may lack its last newline: start on a line of our own.
      const size = fstatSync(fd).size;
      const line = `${format(entry)}\n`;
      writeSync(fd, size > 0 && !this.#endsWithNewline(size) ? `\n${line}` : line);
    } finally {
      closeSync(fd);
    }
  }

  /** Makes `name` map to `address` (replacing every earlier line of it); returns the address it had. */
  set(entry: NameEntry): string | undefined {
    const lines = this.#lines();
    const previous = lines.find((l) => l.entry?.name === entry.name)?.entry?.address;
    const kept = lines.filter((l) => l.entry?.name !== entry.name);
    this.#rewrite([...kept, { raw: format(entry), entry }]);
    return previous;
  }

  /** Drops every line of `name`; returns the first entry it had, or undefined (nothing written then). */
  remove(name: string): NameEntry | undefined {
    const lines = this.#lines();
    const found = lines.find((l) => l.entry?.name === name)?.entry;
    if (found) this.#rewrite(lines.filter((l) => l.entry?.name !== name));
    return found;
  }

  #endsWithNewline(size: number): boolean {
    const fd = openSync(this.path, 'r');
    try {
      const last = Buffer.alloc(1);
      readSync(fd, last, 0, 1, size - 1);
      return last[0] === 0x0a;
    } finally {
      closeSync(fd);
    }
  }

  #lines(): Line[] {
    let text: string;
    try {
      text = readBounded(this.path);
    } catch (err) {
      const code = (err as NodeJS.ErrnoException).code;
      if (code === 'ENOENT' || code === 'ENOTDIR') return [];
      if (err instanceof DiodeError) throw err;
      throw new DiodeError('ENAMEFILE', `cannot read the ${this.what} ${this.path}: ${errorMessage(err)}`);
    }
    const lines = text.split('\n');
    if (lines.at(-1) === '') lines.pop();
    return lines.map((raw, i) => ({ raw, entry: this.#parse(raw, i + 1) }));
  }

  #parse(raw: string, lineNo: number): NameEntry | undefined {
    const hash = raw.indexOf('#');
    const body = (hash >= 0 ? raw.slice(0, hash) : raw).trim();
    if (body === '') return undefined;
    const fields = body.split(/\s+/);
    const bad = (why: string) => new DiodeError('ENAMEFILE', `${this.path}:${lineNo}: ${why}; fix or delete that line (the ${this.what} file holds lines of <name> <address>)`);
    if (fields.length !== 2) throw bad(`expected <name> <address>, found ${fields.length} field${fields.length === 1 ? '' : 's'}`);
    const name = fields[0].toLowerCase();
    const problem = nameProblem(name);
    if (problem) throw bad(`${JSON.stringify(fields[0].slice(0, 80))} is not a name (${problem})`);
    const address = tryParseAddress(fields[1]);
    if (!address) throw bad(`${JSON.stringify(fields[1].slice(0, 80))} is not an address (0x and 40 hex digits)`);
    const comment = hash >= 0 ? raw.slice(hash + 1).trim() : '';
    return { name, address, ...(comment ? { comment } : {}) };
  }

  #rewrite(lines: Line[]): void {
    makeHome(dirname(this.path));
    const tmp = `${this.path}.${process.pid}.tmp`;
    try {
      writeFileSync(tmp, lines.map((l) => `${l.raw}\n`).join(''), { mode: 0o600 });
      chmodSync(tmp, 0o600);
      renameSync(tmp, this.path);
    } catch (err) {
      throw new DiodeError('ENAMEFILE', `cannot write the ${this.what} ${this.path}: ${errorMessage(err)}`);
    }
  }
}

function format(entry: NameEntry): string {
  return `${entry.name} ${entry.address}${entry.comment ? ` # ${entry.comment.replace(/[\r\n]/g, ' ')}` : ''}`;
}

/** The file's text; throws ENOENT as fs does, and a DiodeError past MAX_NAMES_FILE_BYTES. */
function readBounded(path: string): string {
  const fd = openSync(path, 'r');
  try {
    const size = fstatSync(fd).size;
    if (size > MAX_NAMES_FILE_BYTES) {
      throw new DiodeError('ENAMEFILE', `${path} is ${size} bytes, more than the ${MAX_NAMES_FILE_BYTES} a names file may have; remove lines you do not need`);
    }
    const buffer = Buffer.alloc(size);
    let read = 0;
    while (read < size) {
      const n = readSync(fd, buffer, read, size - read, read);
      if (n === 0) break;
      read += n;
    }
    return buffer.subarray(0, read).toString('utf8');
  } finally {
    closeSync(fd);
  }
}
