import test from 'ava';
import { existsSync, readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import type { MuxSession } from '../agent/mux/index.ts';
import { Identity } from '../agent/identity/index.ts';
import { Registry, type AgentSession } from '../agent/relay/registry.ts';
import { MemoryNameTable } from '../agent/relay/names.ts';
import { NameSnapshot, NAME_SAVE_INTERVAL_MS } from '../agent/relay/name-snapshot.ts';
import { silentLogger } from '../agent/util/log.ts';
import { ClaimRate, NAME_CLAIM_BURST } from '../agent/relay/claim-rate.ts';
import { claimant, signName } from '../agent/names/claim.ts';
import { NameFile, MAX_NAMES_FILE_BYTES } from '../agent/names/file.ts';
import { NameResolver, type NameSource } from '../agent/names/resolver.ts';
import { filePins, knownNamesFile, localNameSource, localNamesFile } from '../agent/names/local.ts';
import { NameError, parseNameList } from '../agent/names/name.ts';
import { parseClaim, parseLookup, parseNameInfo } from '../agent/protocol/names.ts';
import { DiodeError, UsageError } from '../agent/util/errors.ts';
import { tempDir } from './helpers/diode.ts';

const DAY = 86_400_000;

function device(registry: Registry, identity: Identity): AgentSession {
  const session: AgentSession = { address: identity.address, remote: '127.0.0.1:1', mux: {} as MuxSession, ports: new Map(), connectedAt: 0 };
  registry.add(session);
  registry.publish(session, [{ port: 22, mode: 'public' }]);
  return session;
}

test('a relay\'s names: first claim wins, a name stays its device\'s while online and for the hold after, then anyone may claim it', async (t) => {
  let now = 1_000_000;
  const registry = new Registry();
  const names = new MemoryNameTable({ sessions: registry, holdMs: 30 * DAY, now: () => now });
  await names.start();
  const [a, b] = [Identity.random(), Identity.random()];
  const sa = device(registry, a);
  device(registry, b);
  t.deepEqual(await names.claim(a.address, [signName(a, 'kitchen')], 1), [{ name: 'kitchen', ok: true }]);
  t.deepEqual(await names.claim(b.address, [signName(b, 'kitchen')], 1), [{ name: 'kitchen', ok: false, code: 'held', holder: a.address, message: `kitchen is held by ${a.address}` }]);
  now += 365 * DAY; // online: no hold runs
  t.is((await names.lookup('kitchen'))?.address, a.address);
  registry.remove(sa); // a reboot, an outage
  now += 30 * DAY - 1;
  t.is((await names.claim(b.address, [signName(b, 'kitchen')], 1))[0].ok, false, 'still held one ms before the hold ends');
  now += 1;
  t.is(await names.lookup('kitchen'), undefined);
  t.deepEqual(await names.claim(b.address, [signName(b, 'kitchen')], 1), [{ name: 'kitchen', ok: true }]);
  await names.close();
});

test('a claim is the complete set: a name left out is freed at once; beyond --max-names-per-address and beyond the table, names are refused by reason', async (t) => {
  const registry = new Registry();
  const names = new MemoryNameTable({ sessions: registry, holdMs: DAY, maxNames: 2 });
  await names.start();
  const [a, b, c] = [Identity.random(), Identity.random(), Identity.random()];
  for (const id of [a, b, c]) device(registry, id);
  await names.claim(a.address, [signName(a, 'kitchen')], 1);
  t.deepEqual(await names.claim(a.address, [signName(a, 'pantry'), signName(a, 'cellar')], 1), [
    { name: 'pantry', ok: true },
    { name: 'cellar', ok: false, code: 'limit', message: 'at most 1 name per address on this relay (--max-names-per-address)' },
  ]);
  t.is(await names.lookup('kitchen'), undefined, 'renamed: kitchen is free');
  t.is((await names.claim(b.address, [signName(b, 'kitchen')], 1))[0].ok, true);
  t.like((await names.claim(c.address, [signName(c, 'garage')], 1))[0], { ok: false, code: 'full' });
  t.is(names.size, 2);
});

test('a claim signature proves the name for that key only', (t) => {
  const a = Identity.random();
  const claim = signName(a, 'kitchen');
  t.is(claimant(claim), a.address);
  t.throws(() => claimant({ ...claim, name: 'pantry' }));
  t.throws(() => claimant({ ...claim, pub: `0x${Identity.random().publicKey.toString('hex')}` }));
});

test('name claims per source: a burst, then the rate; sources are counted apart', (t) => {
  let now = 0;
  const rate = new ClaimRate(1, () => now);
  for (let i = 0; i < NAME_CLAIM_BURST; i++) t.true(rate.take('10.0.0.1', 1));
  t.false(rate.take('10.0.0.1', 1));
  t.true(rate.take('10.0.0.2', 1));
  now += 999;
  t.false(rate.take('10.0.0.1', 1));
  now += 1;
  t.true(rate.take('10.0.0.1', 1));
  t.false(rate.take('10.0.0.1', 1));
});

test('claim, lookup and name frames: every field checked, malformed names refused', (t) => {
  const a = Identity.random();
  const { pub, sig } = signName(a, 'kitchen');
  t.deepEqual(parseClaim({ t: 'claim', pub, names: [{ name: 'kitchen', sig }] }).names, [{ name: 'kitchen', sig }]);
  for (const bad of [
    { t: 'claim', pub, names: [] },
    { t: 'claim', pub, names: [{ name: 'Kitchen', sig }] },
    { t: 'claim', pub, names: [{ name: 'kitchen', sig }, { name: 'kitchen', sig }] },
    { t: 'claim', pub: '0x1234', names: [{ name: 'kitchen', sig }] },
    { t: 'claim', pub, names: Array.from({ length: 9 }, (_, i) => ({ name: `name${i}x`, sig })) },
    { t: 'claim', pub, names: [{ name: '0xabc', sig }] },
  ]) t.throws(() => parseClaim(bad), { instanceOf: DiodeError }, JSON.stringify(bad).slice(0, 80));
  t.throws(() => parseLookup({ t: 'lookup', name: 'kit\u001bchen' }), { instanceOf: DiodeError });
  t.deepEqual(parseNameInfo({ t: 'name', name: 'kitchen' }), { t: 'name', name: 'kitchen' });
  t.throws(() => parseNameInfo({ t: 'name', name: 'kitchen', address: a.address }), { instanceOf: DiodeError });
  t.deepEqual(parseNameList('Kitchen, pantry', 'name'), ['kitchen', 'pantry']);
  t.throws(() => parseNameList('kitchen,kitchen', 'name'), { instanceOf: UsageError, message: 'name: kitchen is given twice' });
});

test('names files: lines of <name> <address>, appended and rewritten without losing comments, a bad line named by file and line, a huge file refused', (t) => {
  const home = tempDir(t);
  const a = Identity.random().address;
  const b = Identity.random().address;
  const file = localNamesFile(home);
  writeFileSync(file.path, `# mine\nkitchen ${a.toLowerCase()} # the Pi\n`);
  t.deepEqual(file.get('kitchen'), { name: 'kitchen', address: a, comment: 'the Pi' });
  file.append({ name: 'pantry', address: b });
  t.is(file.set({ name: 'kitchen', address: b }), a);
  t.deepEqual(file.entries().map((e) => [e.name, e.address]), [['pantry', b], ['kitchen', b]]);
  t.regex(readFileSync(file.path, 'utf8'), /^# mine\n/);
  t.is(file.remove('pantry')?.address, b);
  t.is(file.remove('pantry'), undefined);
  writeFileSync(file.path, `kitchen ${a}\nab ${a}\n`);
  t.throws(() => file.entries(), { message: `${file.path}:2: "ab" is not a name (a name has 3-63 characters); fix or delete that line (the local names file holds lines of <name> <address>)` });
  const huge = new NameFile(join(home, 'huge'), 'known names');
  writeFileSync(huge.path, 'x'.repeat(MAX_NAMES_FILE_BYTES + 1));
  t.throws(() => huge.entries(), { message: /more than the 1048576 a names file may have/ });
});

test('the lookup chain: local names first (the relay never asked), a relay\'s answer pinned once, a moved name refused, a name nobody knows falls back to its pin', async (t) => {
  const home = tempDir(t);
  const [a, b, c] = [Identity.random().address, Identity.random().address, Identity.random().address];
  let relaySays: string | undefined = a;
  let asked = 0;
  const relay: NameSource = {
    label: 'the relay',
    pinned: true,
    lookup: async () => {
      asked++;
      return relaySays ? { address: relaySays, from: 'relay 0xR' } : undefined;
    },
  };
  const notices: string[] = [];
  const resolver = new NameResolver({ sources: [localNameSource(localNamesFile(home)), relay], pins: filePins(knownNamesFile(home)), notice: (l) => notices.push(l) });
  t.deepEqual(await resolver.target({ name: 'kitchen', port: 22 }), { address: a, port: 22, name: 'kitchen' });
  await resolver.resolve('kitchen');
  t.is(notices.length, 1);
  relaySays = b;
  const moved = await t.throwsAsync(resolver.resolve('kitchen'), { instanceOf: NameError });
  t.is(moved!.reason, 'moved');
  t.regex(moved!.message, new RegExp(`relay 0xR now names ${b}, but this machine pinned kitchen to ${a}`));
  relaySays = undefined;
  t.is((await resolver.resolve('kitchen')).address, a, 'the pin, when no relay knows the name');
  t.is((await t.throwsAsync(resolver.resolve('pantry'), { instanceOf: NameError }))!.reason, 'unknown');
  localNamesFile(home).set({ name: 'kitchen', address: c });
  const before = asked;
  t.is((await resolver.resolve('kitchen')).address, c);
  t.is(asked, before, 'a local name never asks the relay');
});

test('a relay\'s names on disk: written within the save interval and on close, read back with holds (online ones start theirs at load), a snapshot that does not parse ignored with a line', async (t) => {
  const dir = tempDir(t);
  const path = join(dir, 'relay-names.json');
  const lines: string[] = [];
  const log = { ...silentLogger, warn: (l: string) => lines.push(l) };
  let now = 1_000_000;
  const [a, b] = [Identity.random(), Identity.random()];
  const registry = new Registry();
  const names = new MemoryNameTable({ sessions: registry, holdMs: DAY, now: () => now, snapshot: new NameSnapshot(path, log) });
  await names.start();
  const sa = device(registry, a);
  await names.claim(a.address, [signName(a, 'kitchen')], 1);
  const started = Date.now();
  while (!existsSync(path) && Date.now() - started < NAME_SAVE_INTERVAL_MS + 3_000) await new Promise((r) => setTimeout(r, 50));
  t.regex(readFileSync(path, 'utf8'), /"kitchen"/, 'written without a close (a relay killed later keeps it)');
  await names.close();
  t.deepEqual(JSON.parse(readFileSync(path, 'utf8'))[0].slice(0, 2), ['kitchen', a.address]);
  t.is(JSON.parse(readFileSync(path, 'utf8'))[0][4], null, 'online when saved');
  registry.remove(sa);

  now += 10 * DAY;
  const restarted = new MemoryNameTable({ sessions: new Registry(), holdMs: DAY, now: () => now, snapshot: new NameSnapshot(path, log) });
  await restarted.start();
  t.is((await restarted.lookup('kitchen'))?.address, a.address);
  now += DAY;
  t.is(await restarted.lookup('kitchen'), undefined, 'the hold began at the restart');

  writeFileSync(path, '[["kitchen","0x12"]]');
  const broken = new MemoryNameTable({ sessions: new Registry(), holdMs: DAY, snapshot: new NameSnapshot(path, log) });
  await broken.start();
  t.is(broken.size, 0);
  t.regex(lines.at(-1)!, /relay-names\.json does not parse \(entry 0 is malformed\); starting with no names/);
  t.is((await broken.claim(b.address, [signName(b, 'kitchen')], 1))[0].ok, true);
});
