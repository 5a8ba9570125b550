// The chunk archive a single executable carries (agent/boot/archive.ts):
// what cross-build appends (scripts/chunk-archive.mjs) is what the loader
// reads back, and a file without one, or with a damaged one, is refused.
import test from 'ava';
import { appendFileSync, mkdirSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { executableSource } from '../agent/boot/executable.ts';
import { chunkArchive } from '../scripts/chunk-archive.mjs';
import { tempDir } from './helpers/diode.ts';

function chunksDir(t: Parameters<typeof tempDir>[0]): string {
  const dir = join(tempDir(t), 'chunks');
  mkdirSync(dir);
  writeFileSync(join(dir, 'main.js'), '"use strict";module.exports=1;');
  writeFileSync(join(dir, 'publish-ABC.js'), 'x'.repeat(70_000));
  writeFileSync(join(dir, 'inputs.json'), '{}'); // not a chunk
  return dir;
}

test('chunks appended after an executable are read back, with their code caches', (t) => {
  const dir = chunksDir(t);
  const exe = join(tempDir(t), 'exe');
  writeFileSync(exe, Buffer.alloc(12_345, 0x7f));
  const cache = Buffer.from('cached code');
  appendFileSync(exe, chunkArchive(dir, 12_345, { 'main.js': cache }));
  const from = executableSource(exe)!;
  t.truthy(from);
  t.is(from.source('main.js'), '"use strict";module.exports=1;');
  t.is(from.source('publish-ABC.js'), 'x'.repeat(70_000));
  t.deepEqual(from.codeCache!('main.js'), cache);
  t.is(from.codeCache!('publish-ABC.js'), undefined);
  t.throws(() => from.source('inputs.json'), { message: /not in .*damaged or mixed-up/ });
});

test('a file without an archive has no chunk source; a footer that points outside the file is not taken for one', (t) => {
  const plain = join(tempDir(t), 'node');
  writeFileSync(plain, Buffer.alloc(4096, 1));
  t.is(executableSource(plain), undefined);
  const lying = join(tempDir(t), 'lying');
  const archive = chunkArchive(chunksDir(t), 10_000_000); // claims to start far past the file's end
  writeFileSync(lying, archive);
  t.is(executableSource(lying), undefined);
});
