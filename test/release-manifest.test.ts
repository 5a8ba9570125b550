import test from 'ava';
import { chmodSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { Identity } from '../agent/identity/index.ts';
import { compareVersions, isVersion } from '../agent/release/version.ts';
import { elfArch, readHead } from '../agent/release/arch.ts';
import { readVersionMarks } from '../agent/release/file.ts';
import { checkOffer, parseManifest, ReleaseError, signManifest, signedText, type OfferPolicy } from '../agent/release/manifest.ts';
import { createReleaseKey, readReleaseKey } from '../agent/release/key.ts';
import { tempDir } from './helpers/diode.ts';

// The release manifest shared by `diode release sign`, the relay and the agent (agent/release).

test('versions compare by semver precedence; anything else is not a version', (t) => {
  const order = ['0.1.0', '0.1.1', '0.2.0-alpha', '0.2.0-alpha.1', '0.2.0-alpha.beta', '0.2.0-beta.2', '0.2.0-beta.11', '0.2.0-rc.1', '0.2.0', '0.10.0', '1.0.0'];
  for (let i = 1; i < order.length; i++) t.true(compareVersions(order[i - 1], order[i]) < 0, `${order[i - 1]} < ${order[i]}`);
  t.is(compareVersions('1.2.3', '1.2.3'), 0);
  for (const bad of ['1.2', '01.2.3', '1.2.3+build', 'v1.2.3', '1.2.3-', 'dev', '1.2.3-a..b']) t.false(isVersion(bad), bad);
  t.throws(() => compareVersions('dev', '1.0.0'), { code: 'EVERSION' });
});

test('a manifest is checked field by field and signed over "diode-release/1 <version> <arch> <size> <sha256>"', (t) => {
  const key = Identity.random();
  const m = signManifest(key, { version: '0.2.0', arch: 'linux-arm64', size: 5, sha256: 'a'.repeat(64), file: 'diode-linux-arm64' });
  t.is(signedText(m), `diode-release/1 0.2.0 linux-arm64 5 ${'a'.repeat(64)}`);
  t.deepEqual(parseManifest(JSON.parse(JSON.stringify(m))), m);
  for (const [field, value] of Object.entries({ format: 'diode-release/2', version: '0.2', arch: 'linux-mips', size: 0, sha256: 'A'.repeat(64), file: '../etc/passwd', pub: '0x02', sig: 'x' })) {
    t.throws(() => parseManifest({ ...m, [field]: value }), { code: 'EFORMAT' }, field);
  }
  const policy: OfferPolicy = { keys: [key.address], arch: 'linux-arm64', running: '0.1.0', rolledBack: [] };
  t.is(checkOffer(m, policy), key.address);
  const refusal = (change: Partial<typeof policy>, manifest = m) => {
    try {
      checkOffer(manifest, { ...policy, ...change });
      return 'accepted';
    } catch (err) {
      return (err as ReleaseError).refusal;
    }
  };
  t.is(refusal({ keys: [Identity.random().address] }), 'EUNKNOWNKEY');
  t.is(refusal({}, { ...m, size: 6 }), 'EBADSIG', 'a field changed after signing');
  t.is(refusal({ arch: 'linux-x64' }), 'EARCH');
  t.is(refusal({ running: '0.2.0' }), 'EDOWNGRADE');
  t.is(refusal({ running: '0.3.0' }), 'EDOWNGRADE');
  t.is(refusal({ rolledBack: ['0.2.0'] }), 'EROLLEDBACK');
});

test('a release key is made 0600 once, never overwritten, and refused for signing when others may read it', (t) => {
  const dir = tempDir(t);
  const path = join(dir, 'k');
  const made = createReleaseKey(path);
  t.is(readReleaseKey(path).address, made.address);
  t.throws(() => createReleaseKey(path), { message: /exists; a release key is never overwritten/ });
  chmodSync(path, 0o644);
  t.throws(() => readReleaseKey(path), { message: /may be read by others \(mode 0644\); run chmod 600/ });
});

test('the architecture comes from the ELF header, the version from the build mark (also across read boundaries)', (t) => {
  t.is(elfArch(readHead(process.execPath)), 'linux-x64');
  const arm = Buffer.alloc(20);
  arm.writeUInt32BE(0x7f454c46, 0);
  arm[4] = 1; // 32-bit
  arm[5] = 1; // little-endian
  arm.writeUInt16LE(0x28, 18);
  t.is(elfArch(arm), 'linux-armv7');
  arm[4] = 2;
  t.is(elfArch(arm), 'other', 'a 64-bit ARM header with the 32-bit machine');
  t.is(elfArch(Buffer.from('#!/usr/bin/env node\n')), 'not-elf');
  const dir = tempDir(t);
  const file = join(dir, 'build');
  const mark = Buffer.from('diode-version=1.2.3-rc.1;');
  // The mark straddles the scanner's 4 MiB reads.
  const body = Buffer.alloc(4 * 1024 * 1024 + 64, 0x20);
  mark.copy(body, 4 * 1024 * 1024 - 10);
  writeFileSync(file, body);
  t.deepEqual(readVersionMarks(file), ['1.2.3-rc.1']);
  writeFileSync(file, 'no mark here; diode-version=not a version;');
  t.deepEqual(readVersionMarks(file), []);
});
