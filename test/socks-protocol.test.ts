import test from 'ava';
import { parseSocks4Request, parseSocks5Greeting, parseSocks5Request, Rep } from '../agent/socks/protocol.ts';

function socks5Domain(host: string, port: number): Buffer {
  const name = Buffer.from(host);
  const b = Buffer.alloc(7 + name.length);
  b.set([5, 1, 0, 3, name.length]);
  name.copy(b, 5);
  b.writeUInt16BE(port, 5 + name.length);
  return b;
}

test('a SOCKS5 domain CONNECT parses at every split point', (t) => {
  const whole = socks5Domain('0xabc.diode', 22);
  for (let i = 0; i < whole.length; i++) t.is(parseSocks5Request(whole.subarray(0, i)).kind, 'more');
  const r = parseSocks5Request(whole);
  t.deepEqual(r, { kind: 'ok', used: whole.length, value: { version: 5, command: 1, addressType: 'domain', host: '0xabc.diode', port: 22 } });
});

test('SOCKS5 IPv4 and IPv6 requests parse, unknown address types are refused with code 8', (t) => {
  const v4 = parseSocks5Request(Buffer.from([5, 1, 0, 1, 127, 0, 0, 1, 0, 80]));
  t.like(v4, { kind: 'ok', value: { addressType: 'ipv4', host: '127.0.0.1', port: 80 } });
  const v6buf = Buffer.alloc(22);
  v6buf.set([5, 1, 0, 4]);
  v6buf[19] = 1;
  v6buf.writeUInt16BE(443, 20);
  t.like(parseSocks5Request(v6buf), { kind: 'ok', value: { addressType: 'ipv6', host: '0:0:0:0:0:0:0:1', port: 443 } });
  t.like(parseSocks5Request(Buffer.from([5, 1, 0, 9, 0, 0])), { kind: 'bad', rep: Rep.addressTypeNotSupported });
});

test('a SOCKS5 greeting lists its methods; a wrong version is malformed', (t) => {
  t.like(parseSocks5Greeting(Buffer.from([5, 2, 0, 2])), { kind: 'ok', value: { methods: [0, 2] }, used: 4 });
  t.is(parseSocks5Greeting(Buffer.from([5, 2, 0])).kind, 'more');
  t.is(parseSocks5Greeting(Buffer.from([4, 1, 0])).kind, 'bad');
});

test('SOCKS4a carries a domain after the user id; plain SOCKS4 an IPv4 address', (t) => {
  const a = Buffer.concat([Buffer.from([4, 1, 0, 22, 0, 0, 0, 1]), Buffer.from('user\0'), Buffer.from('0xabc.diode\0')]);
  for (let i = 0; i < a.length; i++) t.is(parseSocks4Request(a.subarray(0, i)).kind, 'more');
  t.like(parseSocks4Request(a), { kind: 'ok', value: { version: 4, addressType: 'domain', host: '0xabc.diode', port: 22 }, used: a.length });
  t.like(parseSocks4Request(Buffer.from([4, 1, 0, 80, 10, 0, 0, 1, 0])), { kind: 'ok', value: { addressType: 'ipv4', host: '10.0.0.1' } });
});
