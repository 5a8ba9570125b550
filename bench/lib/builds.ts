import { execFileSync } from 'node:child_process';
import { existsSync, mkdirSync, readdirSync, statSync, symlinkSync } from 'node:fs';
import { join, relative } from 'node:path';
import { fileURLToPath } from 'node:url';

// Builds of the program to compare in one run: the working tree ("after")
// and an older commit ("before", e.g. main at b149bbf), each as the npm
// bundle and as single executables, with the build scripts of its own
// commit. Both use this clone's node_modules and cached node runtimes (no
// second `npm ci`, no second download): the before build's dependencies are
// today's, so what differs is the project's own code and build.

const REPO = fileURLToPath(new URL('../../', import.meta.url));
/** ms a cross-build may take (the arm64 check runs under qemu; a loaded host is slow). */
const CROSS_BUILD_TIMEOUT_MS = 15 * 60_000;

export type ExeTarget = 'x64' | 'arm64';

export interface Build {
  /** "before" / "after". */
  name: string;
  /** The commit it was built from (or the working tree's HEAD, with "+" when dirty). */
  commit: string;
  /** The file `node` runs. */
  bundle: string;
  /** Every file of the bundle (a single file before the chunks; the loader and its chunks after). */
  bundleFiles: string[];
  /** Single executables by target. */
  exe: Partial<Record<ExeTarget, string>>;
}

function git(args: string[], cwd = REPO): string {
  return execFileSync('git', args, { cwd, stdio: ['ignore', 'pipe', 'pipe'] }).toString().trim();
}

/** The bundle's files: the loader and, when it has them, the chunks beside it (not their inputs.json). */
export function bundleFiles(bundle: string): string[] {
  const chunks = join(bundle, '..', 'chunks');
  const extra = existsSync(chunks) ? readdirSync(chunks).filter((f) => f.endsWith('.js')).map((f) => join(chunks, f)) : [];
  return [bundle, ...extra];
}

export function totalBytes(files: string[]): number {
  return files.reduce((sum, f) => sum + statSync(f).size, 0);
}

/** The source tree to build from: this clone for the working tree, else `ref` unpacked into dir/src. */
function sourceTree(ref: string | undefined, dir: string): { root: string; commit: string } {
  if (ref === undefined) {
    const dirty = git(['status', '--porcelain', '--untracked-files=no']) !== '';
    return { root: REPO, commit: `${git(['rev-parse', '--short=12', 'HEAD'])}${dirty ? '+' : ''}` };
  }
  const root = join(dir, 'src');
  mkdirSync(root, { recursive: true });
  execFileSync('sh', ['-c', `git -C "${REPO}" archive "${ref}" | tar -x -C "${root}"`], { stdio: ['ignore', 'ignore', 'pipe'] });
  symlinkSync(join(REPO, 'node_modules'), join(root, 'node_modules'));
  mkdirSync(join(REPO, '.cache/node-runtimes'), { recursive: true });
  mkdirSync(join(root, '.cache'), { recursive: true });
  symlinkSync(join(REPO, '.cache/node-runtimes'), join(root, '.cache/node-runtimes'));
  return { root, commit: git(['rev-parse', '--short=12', ref]) };
}

/** Builds made in this run, by ref ('' for the working tree): scenarios that compare the same two share them. */
const built = new Map<string, Build>();

/**
 * Builds `ref` (undefined: the working tree) into dir: dir/bundle/diode.cjs
 * (and its chunks), and with `targets` the single executables in dir/bin.
 * A build of the same ref made earlier in the run, with those targets, is reused.
 */
export function buildProgram(name: string, ref: string | undefined, dir: string, targets: ExeTarget[], log: (line: string) => void): Build {
  const earlier = built.get(ref ?? '');
  if (earlier && targets.every((t) => earlier.exe[t])) return earlier;
  const build = buildAnew(name, ref, dir, targets, log);
  built.set(ref ?? '', build);
  return build;
}

function buildAnew(name: string, ref: string | undefined, dir: string, targets: ExeTarget[], log: (line: string) => void): Build {
  const { root, commit } = sourceTree(ref, dir);
  const env = { ...process.env, DIODE_COMMIT: commit, DIODE_BUNDLE_READABLE: '0' };
  const bundle = join(dir, 'bundle', 'diode.cjs');
  mkdirSync(join(dir, 'bundle'), { recursive: true });
  log(`${name}: bundling ${commit}`);
  execFileSync(process.execPath, [join(root, 'scripts/build.mjs'), bundle], { cwd: root, env, stdio: ['ignore', 'ignore', 'inherit'] });
  const exe: Build['exe'] = {};
  if (targets.length > 0) {
    log(`${name}: cross-building ${targets.join(', ')}`);
    const out = join(dir, 'bin');
    // cross-build takes --out relative to its working directory.
    execFileSync(process.execPath, [join(root, 'cross-build/build.mjs'), '--target', targets.join(','), '--out', relative(root, out), '--force'], {
      cwd: root, env, stdio: ['ignore', 'ignore', 'inherit'], timeout: CROSS_BUILD_TIMEOUT_MS,
    });
    for (const t of targets) exe[t] = join(out, `diode-linux-${t}`);
  }
  return { name, commit, bundle, bundleFiles: bundleFiles(bundle), exe };
}
