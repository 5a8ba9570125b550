// The fleet admin key: from the DIODE_ADMIN_KEY environment variable or from
// a file (`--admin-key-file FILE`). Never from the command line, where every
// user of the machine can read it in the process list and shell history.
import { readFile } from 'node:fs/promises';
import { FleetError } from './errors.ts';

export const ADMIN_KEY_ENV = 'DIODE_ADMIN_KEY';
const PRIVATE_KEY_HEX = /^(0x)?([0-9a-fA-F]{64})$/;

export interface AdminKeySource {
  /** Path given with `--admin-key-file`; wins over the environment. */
  file?: string;
  /** Defaults to `process.env`. */
  env?: NodeJS.ProcessEnv;
}

/** Normalizes `text` (trimmed, with or without 0x) to a 0x-prefixed key, or undefined if malformed. */
export function parsePrivateKey(text: string): string | undefined {
  const match = PRIVATE_KEY_HEX.exec(text.trim());
  if (!match) return undefined;
  const hex = match[2]!.toLowerCase();
  if (/^0+$/.test(hex)) return undefined;
  return `0x${hex}`;
}

/**
 * Reads the admin key from `source.file` or $DIODE_ADMIN_KEY. Returns
 * undefined when neither is set (read-only commands need no key); throws
 * FleetError ENOKEY naming the file or variable when it is unreadable or
 * malformed.
 */
export async function readAdminKey(source: AdminKeySource = {}): Promise<string | undefined> {
  if (source.file !== undefined) {
    let text: string;
    try {
      text = await readFile(source.file, 'utf8');
    } catch (error) {
      const code = (error as NodeJS.ErrnoException).code ?? 'read error';
      throw new FleetError('ENOKEY', `cannot read admin key file ${source.file} (${code}): check the path and its permissions`, { cause: error });
    }
    const key = parsePrivateKey(text);
    if (!key) throw new FleetError('ENOKEY', `admin key file ${source.file} does not hold a private key: it must contain 64 hex digits, with or without 0x`);
    return key;
  }
  const value = (source.env ?? process.env)[ADMIN_KEY_ENV];
  if (value === undefined || value.trim() === '') return undefined;
  const key = parsePrivateKey(value);
  if (!key) throw new FleetError('ENOKEY', `$${ADMIN_KEY_ENV} does not hold a private key: it must be 64 hex digits, with or without 0x`);
  return key;
}
