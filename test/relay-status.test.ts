// Issue 29 item 3: a relay that cannot be reached is visible. The agent
// writes its link's state for the login screen (publish --status-file),
// `diode status` finds the system agent for any user, and a diode.conf relay
// line that fails its check says which relays stay in effect.
import test from 'ava';
import { execFile } from 'node:child_process';
import { existsSync, mkdirSync, readFileSync, writeFileSync } from 'node:fs';
import { createServer, type AddressInfo } from 'node:net';
import { join } from 'node:path';
import { promisify } from 'node:util';
import { DIODE_BUNDLE, runDiode, start, startPublish, startRelay, tempDir } from './helpers/diode.ts';
import { bootConfig, card } from './helpers/card.ts';

const exec = promisify(execFile);
const ROOT = process.getuid?.() === 0;

async function freePort(): Promise<number> {
  const server = createServer();
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  const { port } = server.address() as AddressInfo;
  await new Promise((resolve) => server.close(resolve));
  return port;
}

/** The status file's text= line once it matches `re` (polled: it is rewritten on each change). */
async function statusLine(path: string, re: RegExp, timeoutMs = 30_000): Promise<string> {
  const end = Date.now() + timeoutMs;
  let last = '';
  while (Date.now() < end) {
    last = existsSync(path) ? readFileSync(path, 'utf8') : '';
    const text = /^text=(.*)$/m.exec(last)?.[1] ?? '';
    if (re.test(text)) return text;
    await new Promise((r) => setTimeout(r, 100));
  }
  throw new Error(`status file never matched ${re}; last: ${JSON.stringify(last)}`);
}

test('item 3: publish --status-file names the relay and why it is not reached, and says so when it is', async (t) => {
  const dir = tempDir(t);
  const file = join(dir, 'link.status');
  const port = await freePort();
  start(t, ['publish', '-public', '22:22', '--relay', `127.0.0.1:${port}`, '--home', join(dir, 'device'), '--status-file', file]);
  t.is(await statusLine(file, /refused/), `relay 127.0.0.1:${port}: connection refused`);
  t.regex(readFileSync(file, 'utf8'), /^state=failing$/m);
  // The relay comes up on that port: the file says so (a changed file refreshes the login screen).
  start(t, ['relay', '--listen', `127.0.0.1:${port}`, '--home', join(dir, 'relay')]);
  t.is(await statusLine(file, /connected/), `relay 127.0.0.1:${port}: connected`);
  t.regex(readFileSync(file, 'utf8'), /^state=connected$/m);
});

test('item 3: a mistyped relay name is named on its line (the name does not resolve)', async (t) => {
  const dir = tempDir(t);
  const file = join(dir, 'link.status');
  start(t, ['publish', '-public', '22:22', '--relay', 'relay.exmaple.invalid:41046', '--home', join(dir, 'device'), '--status-file', file]);
  const line = await statusLine(file, /resolve/);
  t.regex(line, /^relay relay\.exmaple\.invalid:41046: its name (does not resolve|could not be resolved \(no DNS answer\))$/);
  t.true(line.length <= 80);
});

test('item 3: --status-file with an empty path is refused before anything starts', async (t) => {
  const r = await runDiode(['publish', '-public', '22:22', '--relay', '127.0.0.1:1', '--home', tempDir(t), '--status-file', '']);
  t.is(r.code, 2);
  t.regex(r.stderr, /--status-file is empty/);
});

(ROOT ? test : test.skip)('item 3: diode status finds the system agent for any user, and says to use sudo when it may not read it', async (t) => {
  const relay = await startRelay(t);
  const system = await startPublish(t, relay.port, ['-public', '22:22']);
  const env = { ...process.env, DIODE_SYSTEM_HOME: system.home, DIODE_HOME: '' };
  // root (sudo diode status): its own state directory has no agent; the system one has.
  const ownHome = tempDir(t);
  mkdirSync(join(ownHome, '.config'), { recursive: true });
  const status = (options: { env: NodeJS.ProcessEnv; uid?: number; gid?: number }) =>
    exec(process.execPath, [DIODE_BUNDLE, 'status'], options).then(
      ({ stdout, stderr }) => ({ code: 0, stdout, stderr }),
      (err: { code: number; stderr: string; stdout: string }) => err,
    );
  const asRoot = await status({ env: { ...env, HOME: ownHome } });
  t.regex(asRoot.stdout, new RegExp(`publish ${system.address}`), asRoot.stderr);
  // Another user (pi on the image): the system agent's directory is 0700.
  const other = await status({ env: { ...env, HOME: '/nonexistent' }, uid: 65534, gid: 65534 });
  t.is(other.code, 1);
  t.regex(other.stderr, new RegExp(`may not read the system agent's ${system.home.replace(/[/.]/g, '\\$&')}/run \\(permission denied\\): run as the agent's user or root \\(sudo diode status\\)`));
  t.notRegex(other.stdout, /no diode agent runs/);
});

test('item 3: a diode.conf relay line that fails its check says which relays stay in effect', (t) => {
  const c = card(t, { 'diode.conf': 'relays=relay.example.org:41046\n' });
  t.is(bootConfig(c).errors, '');
  // The card moved to another relay, with a typo.
  writeFileSync(join(c.boot, 'diode.conf'), 'relays=relay2.example.org:410466\n');
  const r = bootConfig(c);
  t.regex(r.errors, /^diode\.conf:1: .*410466.*; the agent keeps using the relays set before \(relay\.example\.org:41046\) until the line is fixed$/m);
  // A first setting with a typo: nothing in effect, and it says so.
  const fresh = card(t, { 'diode.conf': 'relays=relay.example.org:410466\n' });
  t.regex(bootConfig(fresh).allErrors, /^diode\.conf:1: .*; no relay is configured until the line is fixed$/m);
});
