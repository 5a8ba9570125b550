// hw-test's update phase (issue 26 item 6): the image updates itself from a
// relay on the host (a signed release of the single executable, one version
// newer than the image's) and keeps the new version across a reboot.
import { spawnSync } from 'node:child_process';
import { copyFileSync, existsSync, mkdirSync, readFileSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';

const ROOT = join(dirname(fileURLToPath(import.meta.url)), '..');
const BUNDLE = join(ROOT, 'dist/diode.cjs');
/** cross-build's target for each image architecture. */
const TARGETS = { arm64: 'arm64', armhf: 'armv7' };
/** KiB/s the guest downloads at (the default 512 would take ≈ 3 minutes for 87 MB; the link here is loopback). */
export const HW_UPDATE_RATE_KIB = 8192;
/** ms the update may take from the order to the new agent staying (download, checks and the trial, all emulated). */
export const UPDATE_TIMEOUT_MS = 20 * 60_000;
const POLL_MS = 10_000;

function run(cmd, args, opts = {}) {
  const r = spawnSync(cmd, args, { encoding: 'utf8', maxBuffer: 64 << 20, ...opts });
  if (r.error || r.status !== 0) throw new Error(`${cmd} ${args.join(' ')}: ${r.error?.message ?? `exit ${r.status}`}\n${(r.stderr || r.stdout || '').trim().slice(-2000)}`);
  return r.stdout;
}

/** The version the hw-test's release carries: the image's (package.json's) next patch, as a prerelease. */
export function nextVersion() {
  const { version } = JSON.parse(readFileSync(join(ROOT, 'package.json'), 'utf8'));
  const [major, minor, patch] = version.split('-')[0].split('.').map(Number);
  return `${major}.${minor}.${patch + 1}-hwtest.1`;
}

/**
 * The release the relay will serve: the image's architecture's single
 * executable built with the next version (cached in .cache/hw-test/release-<arch>
 * by cross-build), signed with a fresh release key, in `dir`.
 */
export function prepareRelease({ arch, work, log }) {
  const version = nextVersion();
  const target = TARGETS[arch];
  const out = join(ROOT, '.cache/hw-test', `release-${arch}`);
  mkdirSync(out, { recursive: true });
  log(`  building the release ${version} for linux-${target} (cross-build, DIODE_VERSION=${version})`);
  run(process.execPath, [join(ROOT, 'cross-build/build.mjs'), '--target', target, '--out', out], { env: { ...process.env, DIODE_VERSION: version }, stdio: ['ignore', 'ignore', 'pipe'] });
  const dir = join(work, 'releases');
  mkdirSync(dir);
  const file = join(dir, `diode-linux-${target}`);
  copyFileSync(join(out, `diode-linux-${target}`), file);
  const keyFile = join(work, 'release.key');
  const key = run(process.execPath, [BUNDLE, 'release', 'keygen', '--key-file', keyFile]).trim();
  log(`  ${run(process.execPath, [BUNDLE, 'release', 'sign', '--key-file', keyFile, file]).trim()}`);
  if (!existsSync(`${file}.release.json`)) throw new Error('no manifest written');
  return { dir, key, version };
}

/**
 * On a guest whose agent is up: sets update-keys (as diode.conf's
 * update-keys= does), restarts the agent (it checks at its first
 * connection), and waits until the new version runs and stayed (committed,
 * no trial left). Returns what it saw; `facts` runs probes over ssh on the LAN.
 */
export async function updateGuest({ release, facts, lanSsh, log, since }) {
  const set = await lanSsh(`sudo -n diode config -set update-keys=${release.key} -set update-rate=${HW_UPDATE_RATE_KIB} && sudo -n systemctl restart diode`);
  if (set.status !== 0) throw new Error(`setting update-keys over the LAN failed: ${set.stderr}`);
  const started = Date.now();
  log(`  ${since()}: update-keys set, agent restarted; waiting for ${release.version}`);
  let last = {};
  while (Date.now() - started < UPDATE_TIMEOUT_MS) {
    await new Promise((r) => setTimeout(r, POLL_MS));
    last = await facts([
      // /var/lib/diode is root's, mode 0700: read as pi, these were always empty (a rollback unseen, the wait never ended early).
      'echo "current=$(sudo -n cat /var/lib/diode/update/current 2>/dev/null)"',
      'echo "trial=$(sudo -n test -e /var/lib/diode/update/trial && echo yes)"',
      'echo "rollback=$(sudo -n cat /var/lib/diode/update/rollback 2>/dev/null)"',
      `echo "version=$(sudo -n diode status --json --home /var/lib/diode 2>/dev/null | tr -d '\\n' | sed -n 's/.*"role": *"publish"[^}]*"version": *"\\([^"]*\\)".*/\\1/p')"`,
    ], { via: 'lan' }).catch(() => last);
    if (last.rollback) throw new Error(`the update was rolled back: ${last.rollback}`);
    if (last.current?.startsWith(`${release.version} `) && last.trial === '' && last.version?.startsWith(`${release.version} `)) break;
  }
  const took = Date.now() - started;
  if (!last.version?.startsWith(`${release.version} `)) throw new Error(`the agent did not update to ${release.version} within ${UPDATE_TIMEOUT_MS / 60_000} min: ${JSON.stringify(last)}`);
  const journal = await facts([
    'echo "installed=$(journalctl -b -q --no-pager -u diode | grep -c "verified and installed")"',
    'echo "stays=$(journalctl -b -q --no-pager -u diode | grep -c "reached a relay: it stays")"',
    'echo "timing=$(journalctl -b -q --no-pager -u diode -o short-unix | grep -E "offered by relay|verified and installed|starting update|reached relay" | cut -c1-160 | tr "\\n" "|")"',
  ], { via: 'lan' });
  log(`  ${since()}: the agent runs ${last.version} (${Math.round(took / 1000)} s after update-keys was set)`);
  return { took, journal, version: last.version };
}
