import { closeSync, openSync, readFileSync, statSync, writeSync } from 'node:fs';
import { Identity } from '../identity/index.ts';
import { DiodeError, errorMessage } from '../util/errors.ts';

/**
 * A release key file: one secp256k1 private key as `0x` + 64 hex digits and
 * a newline (the form ethers and `private.key` use), mode 0600, made by
 * `diode release keygen` with O_EXCL. Signing refuses a file that group or
 * others may read (as ssh refuses such a private key): whoever holds it can
 * put code on every device that lists its address in update-keys.
 */
const KEY_TEXT = /^(0x)?[0-9a-fA-F]{64}$/;

export function readReleaseKey(path: string): Identity {
  let text: string;
  let mode: number;
  try {
    mode = statSync(path).mode & 0o777;
    text = readFileSync(path, 'utf8');
  } catch (err) {
    throw new DiodeError('EKEYFILE', `cannot read the release key ${path}: ${errorMessage(err)}`);
  }
  if (mode & 0o077) {
    throw new DiodeError('EKEYFILE', `the release key ${path} may be read by others (mode ${mode.toString(8).padStart(4, '0')}); run chmod 600 ${path} (and keep it off the relays and devices)`);
  }
  const trimmed = text.trim();
  if (!KEY_TEXT.test(trimmed)) throw new DiodeError('EKEYFILE', `the release key ${path} is not 0x followed by 64 hex digits`);
  try {
    return new Identity(trimmed.startsWith('0x') ? trimmed : `0x${trimmed}`);
  } catch (err) {
    throw new DiodeError('EKEYFILE', `the release key ${path} is not a secp256k1 key: ${errorMessage(err)}`);
  }
}

/** Makes a new release key at `path` (never over an existing file); returns it. */
export function createReleaseKey(path: string): Identity {
  const key = Identity.random();
  let fd: number;
  try {
    fd = openSync(path, 'wx', 0o600);
  } catch (err) {
    const exists = (err as NodeJS.ErrnoException).code === 'EEXIST';
    throw new DiodeError('EKEYFILE', exists ? `${path} exists; a release key is never overwritten (pick another path)` : `cannot create ${path}: ${errorMessage(err)}`);
  }
  try {
    writeSync(fd, `${key.privateKey}\n`);
  } finally {
    closeSync(fd);
  }
  return key;
}
