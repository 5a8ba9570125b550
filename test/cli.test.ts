import test from 'ava';
import { statSync, writeFileSync, readFileSync, chmodSync } from 'node:fs';
import { join } from 'node:path';
import { runDiode as diode, tempDir } from './helpers/diode.ts';

test('--help lists the subcommands and <cmd> --help their flags', async (t) => {
  const top = await diode(['--help']);
  t.is(top.code, 0);
  for (const name of ['publish', 'socksd', 'relay', 'address', 'config']) t.regex(top.stdout, new RegExp(`\\n  ${name} `));
  const pub = await diode(['publish', '--help']);
  t.regex(pub.stdout, /--public/);
  t.regex(pub.stdout, /--relay HOST:PORT/);
});

test('--version prints the version and the commit it was built from', async (t) => {
  const { stdout } = await diode(['--version']);
  t.regex(stdout, /^diode \d+\.\d+\.\d+ \(commit [0-9a-f]{7,}|unknown\)/);
});

test('address creates a 0600 key once and prints the same EIP-55 address every time', async (t) => {
  const home = tempDir(t);
  const first = await diode(['address', '--home', home]);
  t.regex(first.stdout, /^0x[0-9a-fA-F]{40}\n$/);
  t.regex(first.stderr, /created a new identity/);
  t.is(statSync(join(home, 'private.key')).mode & 0o777, 0o600);
  const again = await diode(['address'], { DIODE_HOME: home });
  t.is(again.stdout, first.stdout);
  t.is(again.stderr, '');
  const qr = await diode(['address', '--qr', '--home', home]);
  t.true(qr.stdout.startsWith(first.stdout));
  t.true(qr.stdout.split('\n').length > 10);
});

test('a corrupt or unreadable key file is an error naming it, never a new identity', async (t) => {
  const home = tempDir(t);
  const key = join(home, 'private.key');
  writeFileSync(key, 'not a key\n', { mode: 0o600 });
  const bad = await diode(['address', '--home', home]);
  t.is(bad.code, 1);
  t.regex(bad.stderr, new RegExp(`key file ${key} is corrupt`));
  t.is(readFileSync(key, 'utf8'), 'not a key\n');
  if (process.getuid?.() !== 0) {
    writeFileSync(key, '0x' + '11'.repeat(32));
    chmodSync(key, 0);
    const unreadable = await diode(['address', '--home', home]);
    t.regex(unreadable.stderr, /cannot read the key file/);
  }
});

test('config sets, lists and deletes validated keys and names bad input', async (t) => {
  const home = tempDir(t);
  const set = await diode(['config', '--home', home, '-set', 'relays=relay.example.org,10.0.0.1:5000', '-set', 'rpc=http://127.0.0.1:8545']);
  t.is(set.code, 0);
  const list = await diode(['config', '--home', home, '-list']);
  t.is(list.stdout, `relays=relay.example.org:41046,10.0.0.1:5000\nrpc=http://127.0.0.1:8545\nrelays in effect: relay.example.org:41046,10.0.0.1:5000 (from the "relays" key in ${join(home, 'config.json')}; --relay overrides it)\n`);
  const unknown = await diode(['config', '--home', home, '-set', 'relay=x:1']);
  t.is(unknown.code, 2);
  t.regex(unknown.stderr, /unknown config key "relay"; known keys: relays/);
  const bad = await diode(['config', '--home', home, '-set', 'fleet=0x12', '-set', 'fleet-ttl=30']);
  t.regex(bad.stderr, /fleet: "0x12"/);
  t.notRegex((await diode(['config', '--home', home, '-list'])).stdout, /fleet-ttl/, 'a bad -set changes nothing');
  const badPort = await diode(['config', '--home', home, '-set', 'relays=host:99999']);
  t.regex(badPort.stderr, /99999/);
  const del = await diode(['config', '--home', home, '-delete', 'rpc']);
  t.is(del.stdout, 'deleted rpc\n');
  t.regex((await diode(['config', '--home', home, '-list'])).stdout, /^relays=relay.example.org:41046,10.0.0.1:5000\nrelays in effect: /);
});

test('bad flags and commands are one clear line with exit status 2', async (t) => {
  const unknownCmd = await diode(['pubish']);
  t.is(unknownCmd.code, 2);
  t.regex(unknownCmd.stderr, /unknown command "pubish"/);
  const unknownFlag = await diode(['publish', '-publik', '22']);
  t.is(unknownFlag.code, 2);
  t.regex(unknownFlag.stderr, /unknown flag "-publik"/);
  const noRelay = await diode(['publish', '-public', '22', '--home', tempDir(t)]);
  t.is(noRelay.code, 2);
  t.regex(noRelay.stderr, /no relay configured; pass --relay host:port or run: diode config -set relays=host:port/);
  const badSpec = await diode(['publish', '-public', '22:0', '--relay', '127.0.0.1:1', '--home', tempDir(t)]);
  t.regex(badSpec.stderr, /-public "22:0": port 0 is outside 1-65535/);
});
