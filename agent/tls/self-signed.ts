import { randomBytes, sign, type KeyObject } from 'node:crypto';

// A minimal DER encoder, just enough for one self-signed X.509 v3
// certificate of an Ed25519 key: the end-to-end layer's per-process
// certificate and the relay's TLS certificate. No x509 library is loaded
// (the one the relay used cost ≈ 15 MB of RSS at its first start).

/** ms of backdating of notBefore, for a peer whose clock is a little behind. */
const CLOCK_SKEW_MS = 86_400_000;
const DAY_MS = 86_400_000;

function der(tag: number, ...parts: Buffer[]): Buffer {
  const body = Buffer.concat(parts);
  const n = body.length;
  const length = n < 0x80 ? Buffer.from([n]) : n < 0x100 ? Buffer.from([0x81, n]) : Buffer.from([0x82, n >> 8, n & 0xff]);
  return Buffer.concat([Buffer.from([tag]), length, body]);
}

const SEQUENCE = 0x30;
const SET = 0x31;
/** 1.3.101.112, id-Ed25519 (RFC 8410): the algorithm identifier has no parameters. */
const ED25519 = der(SEQUENCE, Buffer.from([0x06, 0x03, 0x2b, 0x65, 0x70]));
/** 2.5.4.3, commonName. */
const CN_OID = Buffer.from([0x06, 0x03, 0x55, 0x04, 0x03]);
/** 2.5.29.17, subjectAltName. */
const SAN_OID = Buffer.from([0x06, 0x03, 0x55, 0x1d, 0x11]);
/** GeneralName uniformResourceIdentifier: [6] IA5String, implicit. */
const SAN_URI_TAG = 0x86;

function utcTime(ms: number): Buffer {
  // UTCTime YYMMDDHHMMSSZ (valid through 2049; callers' lifetimes stay inside).
  const text = new Date(ms).toISOString().replace(/[-:T]/g, '').slice(2, 14) + 'Z';
  return der(0x17, Buffer.from(text, 'ascii'));
}

/**
 * A certificate serial as DER wants it: positive (top bit clear) and minimal
 * (no leading zero byte). Clearing only the top bit left 1 process in 256
 * with a serial starting 00 0x, which OpenSSL refuses as "illegal padding":
 * every end-to-end stream of that process failed.
 */
export function certSerial(random: Buffer = randomBytes(8)): Buffer {
  const serial = Buffer.from(random);
  serial[0] = (serial[0] & 0x7f) | 0x40;
  return serial;
}

export interface SelfSignedOptions {
  commonName: string;
  validDays: number;
  /** A subjectAltName URI (ASCII), e.g. a proof that binds the certificate's key to an identity. */
  uri?: string;
  serial?: Buffer;
}

/** The DER of a self-signed certificate for an Ed25519 key. */
export function selfSignedEd25519(publicKey: KeyObject, privateKey: KeyObject, options: SelfSignedOptions): Buffer {
  const name = der(SEQUENCE, der(SET, der(SEQUENCE, CN_OID, der(0x0c, Buffer.from(options.commonName, 'utf8')))));
  const now = Date.now();
  const extensions = options.uri === undefined
    ? []
    : [der(0xa3, der(SEQUENCE, der(SEQUENCE, SAN_OID, der(0x04, der(SEQUENCE, der(SAN_URI_TAG, Buffer.from(options.uri, 'ascii')))))))];
  const tbs = der(
    SEQUENCE,
    der(0xa0, der(0x02, Buffer.from([2]))), // version v3
    der(0x02, options.serial ?? certSerial()),
    ED25519,
    name,
    der(SEQUENCE, utcTime(now - CLOCK_SKEW_MS), utcTime(now + options.validDays * DAY_MS)),
    name,
    publicKey.export({ type: 'spki', format: 'der' }),
    ...extensions,
  );
  const signature = sign(null, tbs, privateKey);
  return der(SEQUENCE, tbs, ED25519, der(0x03, Buffer.from([0]), signature));
}

export function pemOf(body: Buffer, label: string): string {
  const b64 = body.toString('base64').replace(/.{64}/g, '$&\n');
  return `-----BEGIN ${label}-----\n${b64}${b64.endsWith('\n') ? '' : '\n'}-----END ${label}-----\n`;
}
