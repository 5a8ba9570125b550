import { openSync, readFileSync, writeSync, closeSync, chmodSync, statSync } from 'node:fs';
import { join } from 'node:path';
import { DiodeError, errorMessage } from '../util/errors.ts';
import { Identity } from './identity.ts';
import { makeHome } from './home.ts';

export const KEY_FILE_NAME = 'private.key';
const KEY_PATTERN = /^(0x)?[0-9a-fA-F]{64}$/;

export class IdentityError extends DiodeError {
  constructor(message: string) {
    super('EIDENTITY', message, 1);
    this.name = 'IdentityError';
  }
}

export function keyFilePath(home: string): string {
  return join(home, KEY_FILE_NAME);
}

/**
 * Loads the identity from <home>/private.key, creating it on first run.
 * Creation is exclusive (O_EXCL) so two agents starting at once cannot end up
 * with different keys. A file that exists but cannot be read or parsed is an
 * error: silently making a new key would change the device's permanent name.
 */
export function loadOrCreateIdentity(home: string): { identity: Identity; created: boolean; path: string } {
  const path = keyFilePath(home);
  const existing = readKeyFile(path);
  if (existing) return { identity: existing, created: false, path };
  makeHome(home);
  const fresh = Identity.random();
  let fd: number;
  try {
    fd = openSync(path, 'wx', 0o600);
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === 'EEXIST') {
      const raced = readKeyFile(path);
      if (raced) return { identity: raced, created: false, path };
    }
    throw new IdentityError(`cannot create the key file ${path}: ${errorMessage(err)}`);
  }
  try {
    writeSync(fd, fresh.privateKey + '\n');
  } finally {
    closeSync(fd);
  }
  chmodSync(path, 0o600);
  return { identity: fresh, created: true, path };
}

/** Returns undefined only when the file does not exist. */
function readKeyFile(path: string): Identity | undefined {
  let text: string;
  try {
    text = readFileSync(path, 'utf8');
  } catch (err) {
    // ENOTDIR: the home (or a parent) is a file; makeHome says so.
    const code = (err as NodeJS.ErrnoException).code;
    if (code === 'ENOENT' || code === 'ENOTDIR') return undefined;
    throw new IdentityError(`cannot read the key file ${path}: ${errorMessage(err)}; fix its permissions (it must stay the same file, or the device gets a new address)`);
  }
  const trimmed = text.trim();
  if (!KEY_PATTERN.test(trimmed)) {
    throw new IdentityError(`the key file ${path} is corrupt (expected 64 hex digits); restore it from a backup, or delete it to create a new identity (a new address)`);
  }
  const mode = statSync(path).mode & 0o777;
  if (mode & 0o077) chmodSync(path, 0o600);
  try {
    return new Identity(trimmed.startsWith('0x') ? trimmed : '0x' + trimmed);
  } catch (err) {
    throw new IdentityError(`the key file ${path} holds an invalid secp256k1 key: ${errorMessage(err)}`);
  }
}
