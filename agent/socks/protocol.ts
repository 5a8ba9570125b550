// SOCKS5 (RFC 1928, no-auth only) and SOCKS4/4a request parsing and replies.
// The parsers read from an untrusted buffer and only say "need more bytes",
// "here is the request" or "malformed"; the caller bounds the buffer size.

export const SOCKS5 = 0x05;
export const SOCKS4 = 0x04;
export const CMD_CONNECT = 0x01;
export const METHOD_NO_AUTH = 0x00;
export const METHOD_NONE_ACCEPTABLE = 0xff;
export const ATYP_IPV4 = 0x01;
export const ATYP_DOMAIN = 0x03;
export const ATYP_IPV6 = 0x04;

/** SOCKS5 reply codes (RFC 1928 §6). */
export const Rep = Object.freeze({
  succeeded: 0x00,
  generalFailure: 0x01,
  notAllowed: 0x02,
  networkUnreachable: 0x03,
  hostUnreachable: 0x04,
  connectionRefused: 0x05,
  ttlExpired: 0x06,
  commandNotSupported: 0x07,
  addressTypeNotSupported: 0x08,
});
export type RepCode = (typeof Rep)[keyof typeof Rep];

/** SOCKS4 reply codes. */
export const SOCKS4_GRANTED = 0x5a;
export const SOCKS4_REJECTED = 0x5b;

/** Bytes a complete handshake may take: SOCKS4a with a 255-byte user id and a 255-byte domain fits. */
export const MAX_SOCKS_HANDSHAKE_BYTES = 1024;

export type Parse<T> = { kind: 'more' } | { kind: 'bad'; reason: string; rep?: RepCode } | { kind: 'ok'; value: T; used: number };

export interface Socks5Greeting {
  methods: number[];
}

export interface SocksRequest {
  version: 4 | 5;
  command: number;
  /** 'domain' for names (SOCKS5 ATYP 3, SOCKS4a), else an IP literal. */
  addressType: 'domain' | 'ipv4' | 'ipv6';
  host: string;
  port: number;
}

const MORE = { kind: 'more' } as const;

export function parseSocks5Greeting(buf: Buffer): Parse<Socks5Greeting> {
  if (buf.length < 2) return MORE;
  if (buf[0] !== SOCKS5) return { kind: 'bad', reason: `not SOCKS5 (version byte ${buf[0]})` };
  const n = buf[1];
  if (n === 0) return { kind: 'bad', reason: 'greeting offers no auth method' };
  if (buf.length < 2 + n) return MORE;
  return { kind: 'ok', value: { methods: [...buf.subarray(2, 2 + n)] }, used: 2 + n };
}

export function parseSocks5Request(buf: Buffer): Parse<SocksRequest> {
  if (buf.length < 4) return MORE;
  if (buf[0] !== SOCKS5) return { kind: 'bad', reason: `request version byte ${buf[0]}`, rep: Rep.generalFailure };
  const command = buf[1];
  const atyp = buf[3];
  let host: string;
  let offset: number;
  let addressType: SocksRequest['addressType'];
  if (atyp === ATYP_IPV4) {
    if (buf.length < 4 + 4 + 2) return MORE;
    host = [...buf.subarray(4, 8)].join('.');
    offset = 8;
    addressType = 'ipv4';
  } else if (atyp === ATYP_DOMAIN) {
    if (buf.length < 5) return MORE;
    const len = buf[4];
    if (len === 0) return { kind: 'bad', reason: 'empty domain name', rep: Rep.hostUnreachable };
    if (buf.length < 5 + len + 2) return MORE;
    host = buf.subarray(5, 5 + len).toString('latin1');
    offset = 5 + len;
    addressType = 'domain';
  } else if (atyp === ATYP_IPV6) {
    if (buf.length < 4 + 16 + 2) return MORE;
    const parts: string[] = [];
    for (let i = 0; i < 16; i += 2) parts.push(buf.readUInt16BE(4 + i).toString(16));
    host = parts.join(':');
    offset = 20;
    addressType = 'ipv6';
  } else {
    return { kind: 'bad', reason: `address type ${atyp}`, rep: Rep.addressTypeNotSupported };
  }
  const port = buf.readUInt16BE(offset);
  return { kind: 'ok', value: { version: 5, command, addressType, host, port }, used: offset + 2 };
}

/** SOCKS4 / SOCKS4a: VER CMD PORT(2) IP(4) USERID\0 [DOMAIN\0 when IP is 0.0.0.x, x != 0]. */
export function parseSocks4Request(buf: Buffer): Parse<SocksRequest> {
  if (buf.length < 9) return MORE;
  if (buf[0] !== SOCKS4) return { kind: 'bad', reason: `not SOCKS4 (version byte ${buf[0]})` };
  const command = buf[1];
  const port = buf.readUInt16BE(2);
  const userEnd = buf.indexOf(0, 8);
  if (userEnd < 0) return MORE;
  const is4a = buf[4] === 0 && buf[5] === 0 && buf[6] === 0 && buf[7] !== 0;
  if (!is4a) {
    return { kind: 'ok', value: { version: 4, command, addressType: 'ipv4', host: [...buf.subarray(4, 8)].join('.'), port }, used: userEnd + 1 };
  }
  const domainEnd = buf.indexOf(0, userEnd + 1);
  if (domainEnd < 0) return MORE;
  const host = buf.subarray(userEnd + 1, domainEnd).toString('latin1');
  if (!host) return { kind: 'bad', reason: 'empty SOCKS4a domain' };
  return { kind: 'ok', value: { version: 4, command, addressType: 'domain', host, port }, used: domainEnd + 1 };
}

export function socks5MethodReply(method: number): Buffer {
  return Buffer.from([SOCKS5, method]);
}

/** Reply with BND.ADDR 0.0.0.0:0 (the tunnel has no meaningful local address). */
export function socks5Reply(rep: RepCode): Buffer {
  return Buffer.from([SOCKS5, rep, 0x00, ATYP_IPV4, 0, 0, 0, 0, 0, 0]);
}

export function socks4Reply(granted: boolean): Buffer {
  return Buffer.from([0x00, granted ? SOCKS4_GRANTED : SOCKS4_REJECTED, 0, 0, 0, 0, 0, 0]);
}
