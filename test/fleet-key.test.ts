// The fleet admin key: from $DIODE_ADMIN_KEY or a key file, never argv.
import test from 'ava';
import { chmod, mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { FleetError, parsePrivateKey, readAdminKey } from '../agent/fleet/index.ts';

const KEY = '4f3edf983ac636a65a842ce7c78d9aa706d3b113bce9c46f30d7d21715b23b1d';

let dir: string;
test.before(async () => {
  dir = await mkdtemp(join(tmpdir(), 'diode-fleet-key-'));
});
test.after.always(async () => {
  await rm(dir, { recursive: true, force: true });
});

test('a key is accepted with or without 0x, any case, surrounded by whitespace', (t) => {
  t.is(parsePrivateKey(KEY), `0x${KEY}`);
  t.is(parsePrivateKey(`  0x${KEY.toUpperCase()}\n`), `0x${KEY}`);
  t.is(parsePrivateKey(KEY.slice(1)), undefined);
  t.is(parsePrivateKey(`0x${'0'.repeat(64)}`), undefined);
  t.is(parsePrivateKey(`${KEY} extra`), undefined);
});

test('the key comes from DIODE_ADMIN_KEY when no file is given', async (t) => {
  t.is(await readAdminKey({ env: { DIODE_ADMIN_KEY: `${KEY}\n` } }), `0x${KEY}`);
  t.is(await readAdminKey({ env: {} }), undefined);
  const error = await t.throwsAsync(readAdminKey({ env: { DIODE_ADMIN_KEY: 'hunter2' } }), { instanceOf: FleetError });
  t.is(error?.code, 'ENOKEY');
  t.regex(error!.message, /DIODE_ADMIN_KEY/);
  t.false(error!.message.includes('hunter2'), 'the bad value is not echoed');
});

test('a key file wins over the environment and is trimmed', async (t) => {
  const file = join(dir, 'admin.key');
  await writeFile(file, `\n  0x${KEY}  \n`, { mode: 0o600 });
  t.is(await readAdminKey({ file, env: { DIODE_ADMIN_KEY: '11'.repeat(32) } }), `0x${KEY}`);
});

test('an unreadable or malformed key file is an ENOKEY error naming the file', async (t) => {
  const missing = join(dir, 'missing.key');
  const absent = await t.throwsAsync(readAdminKey({ file: missing }), { instanceOf: FleetError });
  t.is(absent?.code, 'ENOKEY');
  t.true(absent!.message.includes(missing));
  t.regex(absent!.message, /ENOENT/);

  const garbage = join(dir, 'garbage.key');
  await writeFile(garbage, 'not a key\n');
  const malformed = await t.throwsAsync(readAdminKey({ file: garbage }), { instanceOf: FleetError });
  t.is(malformed?.code, 'ENOKEY');
  t.true(malformed!.message.includes(garbage));

  if (process.getuid?.() !== 0) {
    const locked = join(dir, 'locked.key');
    await writeFile(locked, KEY);
    await chmod(locked, 0o000);
    const denied = await t.throwsAsync(readAdminKey({ file: locked }), { instanceOf: FleetError });
    t.regex(denied!.message, /EACCES/);
  }
});
