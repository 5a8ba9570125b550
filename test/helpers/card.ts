// A fake card for the image's scripts: a boot partition and a root file
// system laid out like the image's, the diode bundle as its binary, and the
// scripts run on it as the image runs them (boot-config, diode-issue).
import { spawnSync } from 'node:child_process';
import { existsSync, mkdirSync, readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { DIODE_BUNDLE, tempDir } from './diode.ts';

const REPO = fileURLToPath(new URL('../..', import.meta.url));
export const FILES = join(REPO, 'image/files');
export const BOOT_CONFIG = join(FILES, 'usr/lib/diode/boot-config');
export const UNIT_DIR = join(FILES, 'usr/lib/systemd/system');

export interface Card {
  boot: string;
  root: string;
  state: string;
  run: string;
  diode: string;
}

/** A fake boot partition and root file system, laid out like the image's. */
export function card(t: Parameters<typeof tempDir>[0], files: Record<string, string>): Card {
  const dir = tempDir(t, 'diode-card-');
  const c: Card = { boot: join(dir, 'boot'), root: join(dir, 'root'), state: join(dir, 'state'), run: join(dir, 'run'), diode: join(dir, 'diode') };
  for (const d of [c.boot, join(c.root, 'etc'), join(c.root, 'usr/share/zoneinfo/Europe')]) mkdirSync(d, { recursive: true });
  writeFileSync(join(c.root, 'usr/share/zoneinfo/Europe/London'), 'TZif');
  writeFileSync(join(c.root, 'etc/passwd'), 'root:x:0:0:root:/root:/bin/bash\n');
  writeFileSync(join(c.root, 'etc/group'), 'root:x:0:\nadm:x:4:\nsudo:x:27:\nusers:x:100:\nvideo:x:44:\nnetdev:x:108:\n');
  writeFileSync(join(c.root, 'etc/hosts'), '127.0.0.1\tlocalhost\n127.0.1.1\tdiode\n');
  writeFileSync(join(c.root, 'etc/hostname'), 'diode\n');
  writeFileSync(c.diode, `#!/bin/sh\nexec "${process.execPath}" "${DIODE_BUNDLE}" "$@"\n`, { mode: 0o755 });
  for (const [name, content] of Object.entries(files)) writeFileSync(join(c.boot, name), content);
  return c;
}

/** Runs boot-config on a card; `sh` is dash here, as on the image (its echo expands backslashes). */
export function bootConfig(c: Card) {
  const consoleLog = join(c.run, 'console.log');
  const r = spawnSync('sh', [BOOT_CONFIG, '--boot', c.boot, '--root', c.root, '--state', c.state, '--run', c.run, '--diode', c.diode, '--console', consoleLog, '--dry-run'], { encoding: 'utf8' });
  const read = (p: string) => (existsSync(p) ? readFileSync(p, 'utf8') : '');
  return {
    status: r.status,
    stderr: r.stderr,
    /** What went to the kernel log (every console=). */
    console: read(consoleLog),
    notices: read(join(c.run, 'boot-config.notices')),
    /** Reported problems, apart from "no user configured" (tests that feed no user source expect that one). */
    errors: read(join(c.run, 'boot-config.errors')).split('\n').filter((l) => !l.includes('user pi has no password and no key')).join('\n'),
    allErrors: read(join(c.run, 'boot-config.errors')),
    commands: read(join(c.run, 'commands.log')),
    file: (p: string) => read(join(c.root, p)),
  };
}

/** Runs diode-issue on a card (no agetty --reload); `text` is the issue file it wrote. */
export function issue(c: Card, env: Record<string, string> = {}) {
  const out = join(c.root, 'etc/issue.d/diode.issue');
  const started = Date.now();
  const r = spawnSync('sh', [join(FILES, 'usr/lib/diode/issue')], {
    encoding: 'utf8',
    env: { ...process.env, DIODE: c.diode, DIODE_HOME: c.state, OUT: out, ERRORS: join(c.run, 'boot-config.errors'), NOTICES: join(c.run, 'boot-config.notices'), LINK: join(c.run, 'link.status'), RELOAD: '0', ...env },
  });
  return { status: r.status, stderr: r.stderr, ms: Date.now() - started, text: existsSync(out) ? readFileSync(out, 'utf8') : '' };
}

/** The VC's start of a login screen: agetty clears it (termio_clear: ESC[r ESC[H ESC[J), then starts a new line. */
const AGETTY_VC_START = '\x1b[r\x1b[H\x1b[J\r\n';

/**
 * What the login screen sends to the console: the issue files as the real
 * agetty (util-linux, as on the image) evaluates them, escapes and all
 * (`agetty --show-issue` needs a terminal: `script` gives it one), between
 * the screen clear and the login prompt.
 */
export function agettyScreen(c: Card, hostname = 'diode'): string {
  const files = [join(FILES, 'etc/issue'), join(c.root, 'etc/issue.d')].join(':');
  const r = spawnSync('script', ['-qec', `agetty --show-issue --issue-file '${files}'`, '/dev/null'], { encoding: 'utf8', stdio: ['ignore', 'pipe', 'pipe'] });
  if (r.status !== 0) throw new Error(`agetty --show-issue exited ${r.status}: ${r.stdout}${r.stderr}`);
  return `${AGETTY_VC_START}${r.stdout}${hostname} login: `;
}
