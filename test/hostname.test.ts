import test from 'ava';
import { parseDiodeHost } from '../agent/client/hostname.ts';

const lower = '0x63115a27c3d1b549011198c69f4120ca4ea12ee9';
const checksummed = '0x63115A27c3d1B549011198C69F4120ca4Ea12EE9';

test('address.diode resolves in any case to the checksummed address', (t) => {
  t.deepEqual(parseDiodeHost(`${lower}.diode`, 22), { address: checksummed, port: 22 });
  t.deepEqual(parseDiodeHost(`${lower.toUpperCase().replace('0X', '0x')}.DIODE`, 22), { address: checksummed, port: 22 });
  t.deepEqual(parseDiodeHost(`${checksummed}.diode.link`, 80), { address: checksummed, port: 80 });
});

test('a port in the name wins over the requested port', (t) => {
  t.deepEqual(parseDiodeHost(`${lower}-8080.diode`, 22), { address: checksummed, port: 8080 });
  t.is(parseDiodeHost(`${lower}-70000.diode`, 22), undefined);
});

test('other names are not diode names', (t) => {
  t.is(parseDiodeHost('example.com', 22), undefined);
  t.is(parseDiodeHost('0x1234.diode', 22), undefined);
  t.is(parseDiodeHost(`${lower}.diode.evil.com`, 22), undefined);
  t.is(parseDiodeHost(`sub.${lower}.diode`, 22), undefined);
});

test('an extra gateway domain is accepted when configured', (t) => {
  t.deepEqual(parseDiodeHost(`${lower}.example.org`, 80, ['example.org']), { address: checksummed, port: 80 });
  t.is(parseDiodeHost(`${lower}.example.org`, 80), undefined);
});
