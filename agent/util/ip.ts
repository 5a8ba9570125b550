import { isIPv4, isIPv6 } from 'node:net';

// IP addresses as the relay's per-source caps and socksd's direct fallback
// see them: IPv4-mapped IPv6 is IPv4, an IPv6 address is its eight groups.

/** `::ffff:1.2.3.4` (how a dual-stack socket shows an IPv4 peer) as `1.2.3.4`; anything else as it is. */
export function unmapped(ip: string): string {
  const m = /^::ffff:(\d+\.\d+\.\d+\.\d+)$/i.exec(ip);
  return m ? m[1] : ip;
}

/** The eight 16-bit groups of an IPv6 address (a trailing dotted IPv4 part becomes the last two). */
export function ipv6Groups(address: string): number[] {
  let text = address.replace(/%.*$/, '');
  const v4 = /(\d+\.\d+\.\d+\.\d+)$/.exec(text);
  if (v4) {
    const [a, b, c, d] = v4[1].split('.').map(Number);
    text = `${text.slice(0, v4.index)}${((a << 8) | b).toString(16)}:${((c << 8) | d).toString(16)}`;
  }
  const [head, tail] = text.split('::');
  const left = head ? head.split(':') : [];
  const right = tail !== undefined && tail !== '' ? tail.split(':') : [];
  const fill = tail === undefined ? [] : new Array<string>(8 - left.length - right.length).fill('0');
  return [...left, ...fill, ...right].map((h) => parseInt(h, 16));
}

function ipv4Octets(ip: string): number[] {
  return ip.split('.').map(Number);
}

/** 127.0.0.0/8 or ::1. */
export function isLoopbackIp(address: string): boolean {
  const ip = unmapped(address);
  if (isIPv4(ip)) return ipv4Octets(ip)[0] === 127;
  return isIPv6(ip) && ipv6Groups(ip).every((g, i) => g === (i === 7 ? 1 : 0));
}

/** 0.0.0.0/8 or :: (a connect to them reaches this machine). */
export function isUnspecifiedIp(address: string): boolean {
  const ip = unmapped(address);
  if (isIPv4(ip)) return ipv4Octets(ip)[0] === 0;
  return isIPv6(ip) && ipv6Groups(ip).every((g) => g === 0);
}

/** 169.254.0.0/16 or fe80::/10 (cloud metadata services live there too). */
export function isLinkLocalIp(address: string): boolean {
  const ip = unmapped(address);
  if (isIPv4(ip)) {
    const [a, b] = ipv4Octets(ip);
    return a === 169 && b === 254;
  }
  return isIPv6(ip) && (ipv6Groups(ip)[0] & 0xffc0) === 0xfe80;
}

/** The same address, written the one way (unmapped, IPv6 groups expanded), for comparing. */
export function canonicalIp(address: string): string {
  const ip = unmapped(address);
  return isIPv6(ip) ? ipv6Groups(ip).map((g) => g.toString(16)).join(':') : ip;
}
