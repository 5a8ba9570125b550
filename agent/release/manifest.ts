import { verifyText, type AuthProof, type Identity } from '../identity/index.ts';
import { PUBLIC_KEY_HEX, SIGNATURE_HEX } from '../identity/identity.ts';
import { addressOfPublicKey } from '../identity/checksum.ts';
import { DiodeError, errorMessage } from '../util/errors.ts';
import { RELEASE_ARCHES, type ReleaseArch } from './arch.ts';
import { compareVersions, isVersion } from './version.ts';

/**
 * A release: one single executable for one architecture, and this manifest
 * beside it (`<executable>.release.json`), signed with a release key:
 *
 *     {"format":"diode-release/1","version":"0.2.0","arch":"linux-arm64",
 *      "size":91234567,"sha256":"<64 hex>","file":"diode-linux-arm64",
 *      "pub":"0x04<128 hex>","sig":"0x<128 hex>"}
 *
 * `sig` is ECDSA (SHA-256, r ‖ s) by the key `pub` over the ASCII text
 *
 *     diode-release/1 <version> <arch> <size> <sha256>
 *
 * and the signer is the Ethereum-style address of `pub` (what `update-keys`
 * lists). `file` is where the executable lies beside the manifest; it is not
 * signed (a renamed file is the same release). Shared by `diode release
 * sign`, the relay that serves releases and the agent that applies them.
 */
export const MANIFEST_FORMAT = 'diode-release/1';
/** bytes: the largest manifest read (from a file or the wire). */
export const MAX_MANIFEST_BYTES = 4096;
/** bytes: the largest executable a release may hold (today's are under 100 MB). */
export const MAX_RELEASE_BYTES = 512 * 1024 * 1024;
/** The suffix of a manifest beside its executable. */
export const MANIFEST_SUFFIX = '.release.json';

export interface ReleaseManifest extends AuthProof {
  format: typeof MANIFEST_FORMAT;
  version: string;
  arch: ReleaseArch;
  size: number;
  sha256: string;
  file: string;
}

/** Why a release is refused; each code is one log line's reason. */
export type ReleaseRefusal =
  | 'EFORMAT' // not a manifest
  | 'EUNKNOWNKEY' // signed by a key update-keys does not list
  | 'EBADSIG' // the signature does not verify
  | 'EARCH' // built for another architecture
  | 'EDOWNGRADE' // not newer than the running version
  | 'EROLLEDBACK' // this version was rolled back here before
  | 'ESIZE' // the file is not the signed size
  | 'EHASH' // the file is not the signed hash
  | 'EELF' // the file is an executable for another machine than the signed arch
  | 'ERUN'; // the new executable does not run or says another version

export class ReleaseError extends DiodeError {
  readonly refusal: ReleaseRefusal;
  constructor(refusal: ReleaseRefusal, message: string) {
    super(refusal, message);
    this.name = 'ReleaseError';
    this.refusal = refusal;
  }
}

/** Short words for each refusal (metrics labels, status). */
export const REFUSAL_WORDS: Readonly<Record<ReleaseRefusal, string>> = Object.freeze({
  EFORMAT: 'malformed',
  EUNKNOWNKEY: 'unknown_key',
  EBADSIG: 'bad_signature',
  EARCH: 'wrong_arch',
  EDOWNGRADE: 'not_newer',
  EROLLEDBACK: 'rolled_back',
  ESIZE: 'size_mismatch',
  EHASH: 'hash_mismatch',
  EELF: 'wrong_machine',
  ERUN: 'does_not_run',
});

export function signedText(m: Pick<ReleaseManifest, 'version' | 'arch' | 'size' | 'sha256'>): string {
  return `${MANIFEST_FORMAT} ${m.version} ${m.arch} ${m.size} ${m.sha256}`;
}

const FILE_NAME = /^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$/;

function bad(what: string): never {
  throw new ReleaseError('EFORMAT', `not a release manifest: ${what}`);
}

/** Checks every field of a manifest that came from a file or the network; it proves nothing yet. */
export function parseManifest(value: unknown): ReleaseManifest {
  if (value === null || typeof value !== 'object' || Array.isArray(value)) bad('not a JSON object');
  const m = value as Record<string, unknown>;
  if (m.format !== MANIFEST_FORMAT) bad(`format is not "${MANIFEST_FORMAT}"`);
  if (typeof m.version !== 'string' || !isVersion(m.version)) bad('version is not MAJOR.MINOR.PATCH[-prerelease]');
  if (!RELEASE_ARCHES.includes(m.arch as ReleaseArch)) bad(`arch is not one of ${RELEASE_ARCHES.join(', ')}`);
  if (typeof m.size !== 'number' || !Number.isSafeInteger(m.size) || m.size < 1 || m.size > MAX_RELEASE_BYTES) bad(`size is not 1 to ${MAX_RELEASE_BYTES} bytes`);
  if (typeof m.sha256 !== 'string' || !/^[0-9a-f]{64}$/.test(m.sha256)) bad('sha256 is not 64 lower-case hex digits');
  if (typeof m.file !== 'string' || !FILE_NAME.test(m.file)) bad('file is not a plain file name');
  if (typeof m.pub !== 'string' || !PUBLIC_KEY_HEX.test(m.pub)) bad('pub is not an uncompressed secp256k1 key');
  if (typeof m.sig !== 'string' || !SIGNATURE_HEX.test(m.sig)) bad('sig is not 64 bytes of hex');
  return { format: MANIFEST_FORMAT, version: m.version, arch: m.arch as ReleaseArch, size: m.size, sha256: m.sha256, file: m.file, pub: m.pub, sig: m.sig };
}

/** Parses a manifest's bytes (JSON, at most MAX_MANIFEST_BYTES). */
export function parseManifestText(text: string | Buffer): ReleaseManifest {
  if (text.length > MAX_MANIFEST_BYTES) bad(`larger than ${MAX_MANIFEST_BYTES} bytes`);
  let parsed: unknown;
  try {
    parsed = JSON.parse(text.toString());
  } catch {
    return bad('not JSON');
  }
  return parseManifest(parsed);
}

export function signManifest(key: Identity, release: Pick<ReleaseManifest, 'version' | 'arch' | 'size' | 'sha256' | 'file'>): ReleaseManifest {
  const proof = key.signText(signedText(release));
  return { format: MANIFEST_FORMAT, ...release, ...proof };
}

/** The address of the key that signed it; throws EBADSIG when the signature does not verify. */
export function signerOf(m: ReleaseManifest): string {
  try {
    return verifyText(signedText(m), m);
  } catch (err) {
    throw new ReleaseError('EBADSIG', `release ${m.version} for ${m.arch}: bad signature (${errorMessage(err)})`);
  }
}

export interface OfferPolicy {
  /** update-keys: the release keys whose releases this agent takes (checksummed addresses). */
  keys: readonly string[];
  /** This agent's architecture. */
  arch: ReleaseArch | undefined;
  /** The running version. */
  running: string;
  /** Versions rolled back here before: never tried again. */
  rolledBack: readonly string[];
}

/**
 * Whether this agent may take the release a manifest describes, before a
 * byte of it is downloaded: signed by a listed key (the signature checked),
 * for this architecture, newer than the running version, never rolled back
 * here. Returns the signer; throws a ReleaseError naming the reason.
 */
export function checkOffer(m: ReleaseManifest, policy: OfferPolicy): string {
  const what = `release ${m.version} for ${m.arch}`;
  // The key first (no curve work for a stranger's key), then whether it really signed this.
  const claimed = addressOfPublicKey(Buffer.from(m.pub.slice(2), 'hex'));
  if (!policy.keys.some((k) => k.toLowerCase() === claimed.toLowerCase())) {
    throw new ReleaseError('EUNKNOWNKEY', `${what}: signed by ${claimed}, a key update-keys does not list`);
  }
  const signer = signerOf(m);
  if (m.arch !== policy.arch) throw new ReleaseError('EARCH', `${what}: another architecture (this agent is ${policy.arch ?? `${process.platform}-${process.arch}`})`);
  if (!isVersion(policy.running) || compareVersions(m.version, policy.running) <= 0) {
    throw new ReleaseError('EDOWNGRADE', `${what}: not newer than the running ${policy.running}`);
  }
  if (policy.rolledBack.includes(m.version)) throw new ReleaseError('EROLLEDBACK', `${what}: rolled back here before; not tried again`);
  return signer;
}
