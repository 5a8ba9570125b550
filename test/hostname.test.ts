import test from 'ava';
import { classifyHost, parseDiodeHost } from '../agent/names/host.ts';
import { nameProblem, parseName } from '../agent/names/name.ts';
import { UsageError } from '../agent/util/errors.ts';

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

test('kitchen.diode is a name in any case, with a port after it like an address, under every diode suffix', (t) => {
  t.deepEqual(parseDiodeHost('kitchen.diode', 22), { name: 'kitchen', port: 22 });
  t.deepEqual(parseDiodeHost('Kitchen.DIODE.', 22), { name: 'kitchen', port: 22 });
  t.deepEqual(parseDiodeHost('kitchen-8080.diode.link', 22), { name: 'kitchen', port: 8080 });
  t.deepEqual(parseDiodeHost('pi4.diode', 22), { name: 'pi4', port: 22 });
  t.deepEqual(parseDiodeHost('my-pi.gw.example.org', 80, ['gw.example.org']), { name: 'my-pi', port: 80 });
  t.deepEqual(parseDiodeHost(`${'a'.repeat(63)}.diode`, 22), { name: 'a'.repeat(63), port: 22 });
});

test('malformed names are refused by the parser with the rule they break, never taken for something else', (t) => {
  const cases: Array<[string, RegExp]> = [
    ['ab', /3-63 characters/],
    ['a'.repeat(64), /3-63 characters/],
    ['kit_chen', /only the letters a-z, digits and -/],
    ['-kitchen', /begin or end with -/],
    ['kitchen-', /begin or end with -/],
    ['0xkitchen', /look like an address/],
    ['0x1234', /look like an address/],
    ['63115a27c3d1b549011198c69f4120ca4ea12ee9', /look like an address/],
    ['pi-4', /may not end in -<digits>/],
    ['xn--kitchen', /IDNA/],
    ['kit.chen', /only the letters/],
    ['kïtchen', /only the letters/],
    ['kitchen\u001b[2J', /only the letters/],
  ];
  for (const [text, why] of cases) {
    t.regex(nameProblem(text.toLowerCase()) ?? '', why, text);
    t.throws(() => parseName(text, 'name'), { instanceOf: UsageError, message: why }, text);
  }
  // As a host: never a device, always "malformed" with the reason (so never a DNS lookup either).
  t.deepEqual(classifyHost('ab.diode', 22), { kind: 'malformed', reason: 'a name has 3-63 characters' });
  t.is(classifyHost('kit_chen.diode', 22).kind, 'malformed');
  t.is(classifyHost('0x1234.diode', 22).kind, 'malformed');
  t.is(classifyHost(`${lower.slice(2)}.diode`, 22).kind, 'malformed');
  t.is(classifyHost('a.kitchen.diode', 22).kind, 'malformed');
  t.is(classifyHost('kitchen-0.diode', 22).kind, 'malformed');
  t.is(classifyHost('kitchen.example.org', 22).kind, 'other');
  // The escape never reaches the message raw.
  const err = t.throws(() => parseName('kit\u001b]0;owned\u0007chen', 'name'));
  t.false(/[\u0000-\u001f]/.test(err!.message));
});
