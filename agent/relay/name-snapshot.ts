import { readFileSync, renameSync, statSync, writeFileSync } from 'node:fs';
import { rename, writeFile } from 'node:fs/promises';
import type { Logger } from '../util/log.ts';
import { errorMessage } from '../util/errors.ts';
import { nameProblem } from '../names/name.ts';
import { PUBLIC_KEY_HEX, SIGNATURE_HEX } from '../identity/identity.ts';
import { toChecksumAddress } from '../identity/checksum.ts';
import type { NameRecord } from './names.ts';

/** ms: a changed name table is written at most this often (a claim flood writes the file a few times a second at most). */
export const NAME_SAVE_INTERVAL_MS = 2_000;
/** bytes: the largest snapshot read back (MAX_RELAY_NAMES entries of ≈ 330 bytes, with room). */
export const MAX_NAME_SNAPSHOT_BYTES = 64 * 1024 * 1024;

/** One saved name: its claim, and when its hold ends (null: its device was online when saved). */
export type SavedName = [name: string, address: string, pub: string, sig: string, expiresAt: number | null];

/**
 * A relay's names on disk (`relay-names.json` in its state directory), so
 * that a restart of a relay on its own (an upgrade) frees no name: written
 * whole (temporary file, then rename) at most every NAME_SAVE_INTERVAL_MS
 * while something changed, and once more on close. A device that was online
 * when the relay stopped starts its hold when the relay starts again. The
 * file is the relay's own; a snapshot that does not parse is logged and
 * ignored, never half-read.
 */
export class NameSnapshot {
  readonly #path: string;
  readonly #log: Logger;
  #timer: NodeJS.Timeout | undefined;
  #writing: Promise<void> | undefined;

  constructor(path: string, log: Logger) {
    this.#path = path;
    this.#log = log;
  }

  load(): SavedName[] {
    let text: string;
    try {
      const size = statSync(this.#path).size;
      if (size > MAX_NAME_SNAPSHOT_BYTES) throw new Error(`${size} bytes, more than the ${MAX_NAME_SNAPSHOT_BYTES} a snapshot may have`);
      text = readFileSync(this.#path, 'utf8');
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code !== 'ENOENT') this.#log.warn(`names: cannot read ${this.#path}: ${errorMessage(err)}; starting with no names`);
      return [];
    }
    try {
      const rows: unknown = JSON.parse(text);
      if (!Array.isArray(rows)) throw new Error('not a list');
      return rows.map((row, i) => checked(row, i));
    } catch (err) {
      this.#log.warn(`names: ${this.#path} does not parse (${errorMessage(err)}); starting with no names`);
      return [];
    }
  }

  /** Something changed: write `rows()` within NAME_SAVE_INTERVAL_MS. */
  changed(rows: () => SavedName[]): void {
    if (this.#timer) return;
    this.#timer = setTimeout(() => {
      this.#timer = undefined;
      const text = JSON.stringify(rows());
      const tmp = `${this.#path}.tmp`;
      this.#writing = (this.#writing ?? Promise.resolve())
        .then(() => writeFile(tmp, text, { mode: 0o600 }))
        .then(() => rename(tmp, this.#path))
        .catch((err) => this.#log.warn(`names: cannot write ${this.#path}: ${errorMessage(err)}`));
    }, NAME_SAVE_INTERVAL_MS);
    this.#timer.unref();
  }

  /** Writes `rows` now (the relay is closing). */
  async close(rows: SavedName[]): Promise<void> {
    clearTimeout(this.#timer);
    this.#timer = undefined;
    await this.#writing;
    try {
      writeFileSync(`${this.#path}.tmp`, JSON.stringify(rows), { mode: 0o600 });
      renameSync(`${this.#path}.tmp`, this.#path);
    } catch (err) {
      this.#log.warn(`names: cannot write ${this.#path}: ${errorMessage(err)}`);
    }
  }
}

function checked(row: unknown, i: number): SavedName {
  const bad = () => new Error(`entry ${i} is malformed`);
  if (!Array.isArray(row) || row.length !== 5) throw bad();
  const [name, address, pub, sig, expiresAt] = row as unknown[];
  if (typeof name !== 'string' || nameProblem(name) !== undefined) throw bad();
  if (typeof address !== 'string' || !/^0x[0-9a-fA-F]{40}$/.test(address)) throw bad();
  if (typeof pub !== 'string' || !PUBLIC_KEY_HEX.test(pub) || typeof sig !== 'string' || !SIGNATURE_HEX.test(sig)) throw bad();
  if (expiresAt !== null && (typeof expiresAt !== 'number' || !Number.isFinite(expiresAt))) throw bad();
  return [name, toChecksumAddress(address.toLowerCase()), pub, sig, expiresAt as number | null];
}

/** A NameRecord and its expiry as a saved row (Infinity, online, saved as null). */
export function savedName(record: NameRecord, expiresAt: number): SavedName {
  return [record.name, record.address, record.pub, record.sig, Number.isFinite(expiresAt) ? expiresAt : null];
}
