import test from 'ava';
import { execFile } from 'node:child_process';
import { existsSync, rmSync } from 'node:fs';
import { join } from 'node:path';
import { promisify } from 'node:util';
import { runDiode, start, startRelay, tempDir } from './helpers/diode.ts';
import { bannerThrough, startSshd, sshOptions, type Sshd } from './helpers/sshd.ts';
import { RETIRED_EXIT_CODE } from '../agent/relay/retire.ts';
import { within } from './helpers/cluster.ts';

// Issue 26, item 2: a relay retires and hands its devices over.

const run = promisify(execFile);
/** ms: the figure: ssh works again within 5 s of the move. */
const MOVE_TARGET_MS = 5_000;

const ssh = (sshd: Sshd, socksPort: number, device: string, command: string, timeout = 20_000) =>
  run('ssh', [...sshOptions(sshd, socksPort), `${sshd.user}@${device.toLowerCase()}.diode`, command], { timeout });
const esc = (s: string) => s.replace(/[.[\]]/g, '\\$&');


test('relay A retires to B: the device and the client move, ssh works through B within 5 s, an open ssh session finishes, A exits when none is left, and the device never comes back to A', async (t) => {
  const sshd = await startSshd(t);
  const a = await startRelay(t);
  const b = await startRelay(t);
  const aPinned = `${a.address}@127.0.0.1:${a.port}`;
  const bPinned = `${b.address}@127.0.0.1:${b.port}`;
  const device = start(t, ['publish', '-public', `${sshd.port}:22`, '--relay', aPinned, '--home', tempDir(t)]);
  const address = (await device.waitFor(/ as (0x[0-9a-fA-F]{40})/))[1];
  await device.waitFor(/connected to relay/);
  const socks = start(t, ['socksd', '--listen', '127.0.0.1:0', '--relay', aPinned, '--home', tempDir(t)]);
  const socksPort = Number((await socks.waitFor(/listening on 127\.0\.0\.1:(\d+)/))[1]);
  await socks.waitFor(/connected to relay/);
  const sshStarted = Date.now();
  t.regex((await ssh(sshd, socksPort, address, 'echo on-a')).stdout, /^on-a$/m);
  const sshTook = Date.now() - sshStarted;

  // A session that is open when A retires goes on to its end.
  const long = ssh(sshd, socksPort, address, 'sleep 4; echo survived', 30_000);
  await new Promise((r) => setTimeout(r, 1_000));

  const onB = new RegExp(`connected to relay 127\\.0\\.0\\.1:${b.port} `);
  const order = await runDiode(['relay', '--retire-to', bPinned, '--home', a.home]);
  t.is(order.code, 0, order.stderr);
  t.regex(order.stdout, new RegExp(`relay ${a.address} \\(pid \\d+\\) retires to ${esc(bPinned)}`));
  // The move starts when A tells its agents (its log line's time); the device's sshd must answer through B
  // within 5 s of it (its SSH banner through socksd: the ssh handshake's own CPU time under load is not the
  // path's), and then a real ssh command runs through B.
  const told = Date.parse((await a.proc.waitFor(/(\S+Z) warn +\[relay\] retiring: telling 2 agents to move/))[1]);
  await device.waitFor(onB, MOVE_TARGET_MS);
  await socks.waitFor(onB, MOVE_TARGET_MS);
  await within('the sshd banner through relay B', MOVE_TARGET_MS, () => bannerThrough(socksPort, address));
  const took = Date.now() - told;
  const at = (p: string) => Date.parse((p === 'publish' ? device : socks).output().match(new RegExp(`(\\S+Z) info +\\[${p}\\] connected to relay 127\\.0\\.0\\.1:${b.port} `))?.[1] ?? '') - told;
  t.log(`sshd reachable through relay B ${took} ms after A told its agents to move (device on B after ${at('publish')} ms, client after ${at('socksd')} ms; one ssh command takes ${sshTook} ms here)`);
  t.true(took < MOVE_TARGET_MS, `sshd answered again ${took} ms after the move`);
  t.regex((await ssh(sshd, socksPort, address, 'echo on-b')).stdout, /^on-b$/m);
  t.regex(device.output(), new RegExp(`relay 127\\.0\\.0\\.1:${a.port} \\(${a.address}\\) retires; moving to ${esc(bPinned)}`));

  t.regex((await long).stdout, /^survived$/m);
  // A exits once its last session (the ones that kept open streams) is gone, with the status that keeps its service stopped.
  t.is(await a.proc.exited(), RETIRED_EXIT_CODE);
  t.regex(a.proc.output(), /retired: 2 agents moved, none left/);
  t.true(existsSync(join(a.home, 'retired.json')));

  // A serves again at the same address and port (its retirement undone by hand): the device stays on B.
  rmSync(join(a.home, 'retired.json'));
  const again = start(t, ['relay', '--listen', `127.0.0.1:${a.port}`, '--home', a.home]);
  await again.waitFor(/listening/);
  const connectionsToA = () => (device.output().match(new RegExp(`connected to relay 127\\.0\\.0\\.1:${a.port} `, 'g')) ?? []).length;
  const before = connectionsToA();
  await new Promise((r) => setTimeout(r, 12_000)); // more than two of the link's probes of better relays
  t.is(connectionsToA(), before, 'the device never came back to the retired relay');
  t.regex((await ssh(sshd, socksPort, address, 'echo still-on-b')).stdout, /^still-on-b$/m);
});

test('a relay started with --retire-to (or restarted after retiring) tells each agent that connects to move, and exits when none is left', async (t) => {
  const a = await startRelay(t);
  const b = await startRelay(t);
  const bPinned = `${b.address}@127.0.0.1:${b.port}`;
  await a.proc.stop();
  const retiring = start(t, ['relay', '--listen', `127.0.0.1:${a.port}`, '--home', a.home, '--retire-to', bPinned]);
  await retiring.waitFor(/retiring: telling 0 agents to move/);
  const device = start(t, ['publish', '-public', '22:22', '--relay', `${a.address}@127.0.0.1:${a.port}`, '--home', tempDir(t)]);
  await device.waitFor(new RegExp(`connected to relay 127\\.0\\.0\\.1:${b.port} `), 10_000);
  // It waited RETIRE_GRACE_MS for its agents to come back before "none left" could end it.
  t.is(await retiring.exited(), RETIRED_EXIT_CODE);
  t.regex(retiring.output(), /retired: 1 agent moved, none left/);
  // Restarted (a service manager, a reboot): still retired.
  const restarted = start(t, ['relay', '--listen', `127.0.0.1:${a.port}`, '--home', a.home]);
  await restarted.waitFor(/this relay retired \(.*retired\.json\): it tells its agents to move/);
  await restarted.waitFor(/retiring: telling 0 agents to move/);
});

test('--retire-to takes pinned relays only, never the relay itself', async (t) => {
  const a = await startRelay(t);
  const unpinned = await runDiode(['relay', '--retire-to', '127.0.0.1:1', '--home', a.home]);
  t.is(unpinned.code, 2);
  t.regex(unpinned.stderr, /--retire-to: "127\.0\.0\.1:1" is not pinned; write 0x<relay address>@127\.0\.0\.1:1/);
  const self = await runDiode(['relay', '--retire-to', `${a.address}@127.0.0.1:1`, '--home', a.home]);
  t.is(self.code, 2);
  t.regex(self.stderr, /is this relay itself/);
  const deadline = await runDiode(['relay', '--retire-deadline', '5', '--home', a.home]);
  t.is(deadline.code, 2);
  t.regex(deadline.stderr, /--retire-deadline needs --retire-to/);
});

test('agents that cannot reach the relay named stay on the retiring relay until --retire-deadline, which then exits closing them', async (t) => {
  const a = await startRelay(t);
  const b = await startRelay(t);
  const bPinned = `${b.address}@127.0.0.1:${b.port}`;
  await b.proc.stop(); // named, but gone: an agent leaves A only for a relay it reached
  const device = start(t, ['publish', '-public', '22:22', '--relay', `${a.address}@127.0.0.1:${a.port}`, '--home', tempDir(t)]);
  await device.waitFor(/connected to relay/);
  const deadlineS = 10;
  const order = await runDiode(['relay', '--retire-to', bPinned, '--retire-deadline', String(deadlineS), '--home', a.home]);
  t.is(order.code, 0, order.stderr);
  const told = Date.parse((await a.proc.waitFor(/(\S+Z) warn +\[relay\] retiring: telling 1 agent to move/))[1]);
  await device.waitFor(new RegExp(`retires; moving to ${esc(bPinned)}`));
  // Half-way to the deadline the device is still A's: what the relay's status says, and a client on A finds it.
  await new Promise((r) => setTimeout(r, (deadlineS * 1000) / 2));
  t.regex((await runDiode(['status', '--home', a.home])).stdout.replace(/\s+/g, ' '), new RegExp(`retiring to ${esc(bPinned)}, 0 moved, 1 connected, exits by `));
  const address = (device.output().match(/ as (0x[0-9a-fA-F]{40})/) ?? [])[1];
  const found = await runDiode(['query', address!, '--relay', `127.0.0.1:${a.port}`, '--home', tempDir(t)]);
  t.is(found.code, 0, found.stdout + found.stderr);
  t.is(await a.proc.exited(), RETIRED_EXIT_CODE);
  const exitedAfter = (Date.now() - told) / 1000;
  t.log(`A exited ${exitedAfter.toFixed(1)} s after it told its agent to move (--retire-deadline ${deadlineS})`);
  t.true(exitedAfter >= deadlineS - 1 && exitedAfter <= deadlineS + 15, `exited ${exitedAfter} s after the order`);
  t.regex(a.proc.output(), /retired: deadline reached; 0 agents moved, 1 session still connected are closed/);
});
