import { basename } from 'node:path';
import type { ParsedArgs } from '../args.ts';
import type { CommandContext } from '../commands.ts';
import { DiodeError, UsageError, errorMessage } from '../../util/errors.ts';
import { writeFileAtomic } from '../../util/atomic-file.ts';
import { createReleaseKey, readReleaseKey } from '../../release/key.ts';
import { RELEASE_ARCHES, elfArch, readHead, type ReleaseArch } from '../../release/arch.ts';
import { hashFile, readVersionMarks } from '../../release/file.ts';
import { MANIFEST_SUFFIX, MAX_RELEASE_BYTES, signManifest } from '../../release/manifest.ts';
import { isVersion } from '../../release/version.ts';

const USAGE = [
  'diode release keygen --key-file FILE      make a release key (mode 0600); prints its address for update-keys',
  'diode release sign --key-file FILE EXECUTABLE [--out MANIFEST] [--arch ARCH] [--release-version V]',
].join('\n       ');

export async function run(args: ParsedArgs, _ctx: CommandContext): Promise<number> {
  const [sub, ...rest] = args.positionals;
  const keyFile = args.flags['key-file'] as string | undefined;
  if (sub !== 'keygen' && sub !== 'sign') throw new UsageError(`release: ${sub ? `unknown subcommand "${sub}"` : 'name a subcommand'}\nusage: ${USAGE}`);
  if (!keyFile) throw new UsageError(`release ${sub}: --key-file FILE is required (the release key${sub === 'keygen' ? ' to create' : ''})`);
  if (sub === 'keygen') {
    if (rest.length > 0) throw new UsageError(`release keygen: unexpected "${rest[0]}"`);
    const key = createReleaseKey(keyFile);
    process.stdout.write(`${key.address}\n`);
    process.stderr.write(`wrote the release key ${keyFile} (mode 0600); devices take its releases with update-keys=${key.address}\n`);
    return 0;
  }
  if (rest.length !== 1) throw new UsageError(`release sign: name one executable (e.g. dist/bin/diode-linux-arm64)\nusage: ${USAGE}`);
  const file = rest[0];
  const key = readReleaseKey(keyFile);
  const arch = releaseArch(file, args.flags.arch as string | undefined);
  const version = releaseVersionOf(file, args.flags['release-version'] as string | undefined);
  let hashed: { size: number; sha256: string };
  try {
    hashed = await hashFile(file);
  } catch (err) {
    throw new DiodeError('ERELEASE', `cannot read ${file}: ${errorMessage(err)}`);
  }
  if (hashed.size > MAX_RELEASE_BYTES) throw new DiodeError('ERELEASE', `${file} has ${hashed.size} bytes; a release holds at most ${MAX_RELEASE_BYTES}`);
  const manifest = signManifest(key, { version, arch, size: hashed.size, sha256: hashed.sha256, file: basename(file) });
  const out = (args.flags.out as string | undefined) ?? `${file}${MANIFEST_SUFFIX}`;
  writeFileAtomic(out, JSON.stringify(manifest, null, 1) + '\n', 0o644);
  process.stdout.write(`signed diode ${version} for ${arch} (${hashed.size} bytes, sha256 ${hashed.sha256}) with release key ${key.address}: wrote ${out}\n`);
  return 0;
}

/** The executable's architecture from its ELF header; --arch only for a file that is not ELF (a bundle), or to confirm. */
function releaseArch(file: string, flag: string | undefined): ReleaseArch {
  if (flag !== undefined && !RELEASE_ARCHES.includes(flag as ReleaseArch)) throw new UsageError(`release sign: --arch "${flag}" is not one of ${RELEASE_ARCHES.join(', ')}`);
  let built: ReturnType<typeof elfArch>;
  try {
    built = elfArch(readHead(file));
  } catch (err) {
    throw new DiodeError('ERELEASE', `cannot read ${file}: ${errorMessage(err)}`);
  }
  if (built === 'other') throw new DiodeError('ERELEASE', `${file} is an executable for another machine than ${RELEASE_ARCHES.join(', ')}`);
  if (built === 'not-elf') {
    if (!flag) throw new UsageError(`release sign: ${file} is not an ELF executable; say which architecture it is for with --arch (${RELEASE_ARCHES.join(', ')})`);
    return flag as ReleaseArch;
  }
  if (flag && flag !== built) throw new DiodeError('ERELEASE', `${file} is built for ${built}, not --arch ${flag}`);
  return built;
}

/** The version the build carries (its diode-version= mark); --release-version must agree with it, or name it when there is none. */
function releaseVersionOf(file: string, flag: string | undefined): string {
  if (flag !== undefined && !isVersion(flag)) throw new UsageError(`release sign: --release-version "${flag}" is not MAJOR.MINOR.PATCH[-prerelease]`);
  const marks = readVersionMarks(file);
  if (marks.length > 1) throw new DiodeError('ERELEASE', `${file} carries several versions (${marks.join(', ')}); is it a diode build?`);
  if (marks.length === 0) {
    if (!flag) throw new DiodeError('ERELEASE', `${file} carries no diode version mark (not a diode build, or one older than 0.2); give its version with --release-version`);
    return flag;
  }
  if (flag && flag !== marks[0]) throw new DiodeError('ERELEASE', `${file} is version ${marks[0]}, not --release-version ${flag}`);
  return marks[0];
}
