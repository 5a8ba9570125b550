import test from 'ava';
import { parsePortFlag, parsePublishFlags, toPublished } from '../agent/device/port-spec.ts';
import { UsageError } from '../agent/util/errors.ts';

const A = '0x63115A27c3d1B549011198C69F4120ca4Ea12EE9';
const B = '0x0000000000000000000000000000000000000001';

test('a single port means local equals remote', (t) => {
  t.like(parsePortFlag('public', '22')[0], { host: '127.0.0.1', localPort: 22, remotePort: 22, mode: 'public' });
});

test('local:remote and host:local:remote forms parse', (t) => {
  t.like(parsePortFlag('public', '2222:22')[0], { localPort: 2222, remotePort: 22 });
  t.like(parsePortFlag('public', '192.168.1.20:80:8080')[0], { host: '192.168.1.20', localPort: 80, remotePort: 8080 });
});

test('comma lists give several ports and private addresses attach to the preceding port', (t) => {
  t.is(parsePortFlag('public', '22:22,80:80').length, 2);
  const priv = parsePortFlag('private', `22:22,${A},${B.toUpperCase().replace('0X', '0x')},2222:2222,${B}`);
  t.deepEqual(priv.map((m) => m.allow.length), [2, 1]);
  t.is(priv[0].allow[0], A);
});

test('bad specs are refused with a message quoting the bad part', (t) => {
  t.throws(() => parsePortFlag('public', '0:22'), { instanceOf: UsageError, message: /"0:22".*outside 1-65535/ });
  t.throws(() => parsePortFlag('public', '70000'), { message: /70000/ });
  t.throws(() => parsePortFlag('public', 'ssh'), { message: /"ssh" is not a port/ });
  t.throws(() => parsePortFlag('public', '1:2:3:4'), { message: /\[host:\]<local>\[:<remote>\]/ });
  t.throws(() => parsePortFlag('private', '22:22'), { message: /lists no client address/ });
  t.throws(() => parsePortFlag('private', '22:22,0x1234'), { message: /"0x1234" has 4 hex digits/ });
  t.throws(() => parsePortFlag('private', '22:22,0x63115a27C3d1b549011198c69F4120CA4ea12EE9'), { message: /checksum/ });
  t.throws(() => parsePortFlag('public', `22,${A}`), { message: /belong to -private/ });
  t.throws(() => parsePortFlag('public', '22,,80'), { message: /empty item/ });
});

test('the same remote port twice across flags is refused', (t) => {
  t.throws(() => parsePublishFlags({ public: ['22:22'], private: [`2222:22,${A}`] }), { message: /remote port 22 is published twice/ });
  t.throws(() => parsePublishFlags({}), { message: /nothing to publish/ });
});

test('the relay is told remote ports and modes, never the LAN target', (t) => {
  const published = toPublished(parsePublishFlags({ public: ['192.168.1.20:80:8080'], private: [`22,${A}`] }));
  t.deepEqual(published, [
    { port: 8080, mode: 'public' },
    { port: 22, mode: 'private', allow: [A] },
  ]);
});
