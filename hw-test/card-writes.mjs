#!/usr/bin/env node
// Card writes of an image, idle and connected (issue 29 item 6), for a
// before/after comparison of two images: unlike run.mjs it needs nothing of
// the image but a relay in diode.conf, so an image from an older recipe
// (b149bbf's) is measured the same way as today's.
//
//   node hw-test/card-writes.mjs --image FILE [--bundle FILE] [--minutes N] [--arch arm64|armhf] [--keep]
//
// Boots the card once (first boot: the partition grows, host keys, the
// identity) until ssh through diode works, powers it off, boots it again and,
// connected and idle, counts the sectors written to every disk of the guest
// (/sys/block/*/stat field 7, after a sync at both ends) over N minutes with
// two ssh logins through diode on the way, as the issue measured. Prints one
// JSON line; the agent's own write_bytes (/proc/<pid>/io) besides.
import { spawn, spawnSync } from 'node:child_process';
import { createServer } from 'node:net';
import { appendFileSync, mkdirSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { dirname, join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import { MACHINES, imagerFiles, qemuAppend } from './run.mjs';

const ROOT = join(dirname(fileURLToPath(import.meta.url)), '..');
const HOST_FROM_GUEST = '10.0.2.2';
/** After ssh works on the second boot: the boot's own jobs (timers, the login screen) are over. */
const SETTLE_MS = 60_000;
const sleep = (ms) => new Promise((r) => setTimeout(r, ms));

function parseArgs(argv) {
  const opts = { arch: 'arm64', image: '', bundle: join(ROOT, 'dist/diode.cjs'), minutes: 10, keep: false, timeoutMin: 45 };
  for (let i = 0; i < argv.length; i++) {
    const a = argv[i];
    const value = () => argv[++i] ?? (() => { throw new Error(`${a} needs a value`); })();
    if (a === '--image') opts.image = resolve(value());
    else if (a === '--bundle') opts.bundle = resolve(value());
    else if (a === '--minutes') opts.minutes = Number(value());
    else if (a === '--arch') opts.arch = value();
    else if (a === '--timeout-min') opts.timeoutMin = Number(value());
    else if (a === '--keep') opts.keep = true;
    else throw new Error(`unknown option ${a}`);
  }
  if (!opts.image || !MACHINES[opts.arch] || !(opts.minutes > 0)) throw new Error('usage: node hw-test/card-writes.mjs --image FILE [--bundle FILE] [--minutes N] [--arch arm64|armhf] [--keep]');
  return opts;
}

function run(cmd, args) {
  const r = spawnSync(cmd, args, { encoding: 'utf8', maxBuffer: 64 << 20 });
  if (r.status !== 0) throw new Error(`${cmd} ${args.join(' ')} exited ${r.status}: ${r.stderr?.trim()}`);
  return r.stdout;
}

const children = [];
process.on('exit', () => { for (const c of children) if (c.exitCode === null) c.kill('SIGKILL'); });

/** A child whose output goes to a log; waitFor resolves on the first match of re. */
function daemon(cmd, args, logFile) {
  const child = spawn(cmd, args, { stdio: ['ignore', 'pipe', 'pipe'] });
  children.push(child);
  let out = '';
  const onData = (d) => { out += d; appendFileSync(logFile, d); };
  child.stdout.on('data', onData);
  child.stderr.on('data', onData);
  return {
    child,
    async waitFor(re, ms) {
      const deadline = Date.now() + ms;
      for (;;) {
        const m = re.exec(out);
        if (m) return m;
        if (child.exitCode !== null || Date.now() > deadline) throw new Error(`${cmd}: no ${re} (log ${logFile})`);
        await sleep(200);
      }
    },
  };
}

function freePort() {
  return new Promise((res) => {
    const srv = createServer();
    srv.listen(0, '127.0.0.1', () => { const { port } = srv.address(); srv.close(() => res(port)); });
  });
}

async function main() {
  const opts = parseArgs(process.argv.slice(2));
  const m = MACHINES[opts.arch];
  mkdirSync(join(ROOT, '.cache/hw-test'), { recursive: true });
  const work = mkdtempSync(join(ROOT, '.cache/hw-test', `card-writes-${opts.arch}-`));
  const say = (s) => console.error(`card-writes ${new Date().toISOString().slice(11, 19)}: ${s}`);
  say(`work dir ${work}, image ${opts.image}`);

  const card = join(work, 'card.img');
  run('cp', ['--sparse=always', opts.image, card]);
  run('truncate', ['-s', '+1G', card]);
  const table = JSON.parse(run('sfdisk', ['-J', card])).partitiontable;
  const bootAt = `${card}@@${table.partitions[0].start * 512}`;
  const names = run('mdir', ['-b', '-i', bootAt, '::']).split('\n').map((l) => l.replace(/^::\//, '').trim());
  const kernel = names.find((n) => n.startsWith('vmlinuz'));
  const initrd = names.find((n) => n.startsWith('initrd.img'));
  for (const f of [kernel, initrd]) run('mcopy', ['-n', '-i', bootAt, `::${f}`, join(work, f)]);
  const key = join(work, 'id_ed25519');
  run('ssh-keygen', ['-q', '-t', 'ed25519', '-N', '', '-f', key]);

  const relay = daemon(process.execPath, [opts.bundle, 'relay', '--listen', '127.0.0.1:0', '--home', join(work, 'relay')], join(work, 'relay.log'));
  const relayPort = Number((await relay.waitFor(/listening on [\d.]+:(\d+)/, 60_000))[1]);
  const socksd = daemon(process.execPath, [opts.bundle, 'socksd', '--listen', '127.0.0.1:0', '--relay', `127.0.0.1:${relayPort}`, '--home', join(work, 'client')], join(work, 'socksd.log'));
  const socksPort = Number((await socksd.waitFor(/listening on [\d.]+:(\d+)/, 60_000))[1]);
  const lanPort = await freePort();

  const files = imagerFiles({ hostname: 'writes-pi', user: 'pi', pubkey: readFileSync(`${key}.pub`, 'utf8').trim(), ssid: 'diode test net', psk: 'f'.repeat(64), country: 'DE', relay: `${HOST_FROM_GUEST}:${relayPort}` });
  const cmdlineTxt = run('mtype', ['-i', bootAt, '::cmdline.txt']).trim();
  for (const [name, content] of Object.entries(files)) {
    writeFileSync(join(work, name), content);
    run('mcopy', ['-o', '-i', bootAt, join(work, name), `::${name}`]);
  }
  const qemuArgs = [
    '-M', m.machine, '-cpu', m.cpu, '-smp', '2', '-m', '1024',
    '-kernel', join(work, kernel), '-initrd', join(work, initrd), '-append', qemuAppend(cmdlineTxt, m),
    '-drive', `file=${card},format=raw,if=none,id=hd0,cache=unsafe`, '-device', 'virtio-blk-device,drive=hd0',
    '-netdev', `user,id=n0,hostfwd=tcp:127.0.0.1:${lanPort}-:22`, '-device', 'virtio-net-device,netdev=n0',
    '-device', 'virtio-rng-device', '-display', 'none', '-monitor', 'none', '-serial', 'stdio',
  ];

  let address = '';
  const ssh = (cmd, via = 'diode') => new Promise((res) => {
    const target = via === 'lan' ? ['-o', 'HostKeyAlias=writes-lan', '-p', String(lanPort), 'pi@127.0.0.1'] : ['-o', `ProxyCommand=nc -X 5 -x 127.0.0.1:${socksPort} %h %p`, `pi@${address}.diode`];
    const child = spawn('ssh', ['-o', `UserKnownHostsFile=${join(work, 'known_hosts')}`, '-o', 'StrictHostKeyChecking=accept-new', '-o', 'BatchMode=yes', '-o', 'ConnectTimeout=60', '-o', 'LogLevel=ERROR', '-i', key, ...target, cmd], { stdio: ['ignore', 'pipe', 'pipe'] });
    let stdout = '';
    child.stdout.on('data', (d) => { stdout += d; });
    const timer = setTimeout(() => child.kill('SIGKILL'), 5 * 60_000);
    child.once('close', (status) => { clearTimeout(timer); res({ status, stdout }); });
  });
  const untilSsh = async (deadline) => {
    while (Date.now() < deadline) {
      if ((await ssh('true')).status === 0) return;
      await sleep(5000);
    }
    throw new Error(`ssh pi@${address}.diode did not work in time (logs in ${work})`);
  };
  const boot = async (label) => {
    const t0 = Date.now();
    const qemu = daemon('nice', ['-n', '5', m.qemu, ...qemuArgs], join(work, 'serial.log'));
    say(`power on (${label})`);
    if (!address) address = (await qemu.waitFor(/diode address: (0x[0-9a-fA-F]{40})/, opts.timeoutMin * 60_000))[1];
    await untilSsh(t0 + opts.timeoutMin * 60_000);
    say(`${label}: ssh pi@${address}.diode works after ${Math.round((Date.now() - t0) / 1000)} s`);
    return qemu;
  };
  const powerOff = async (qemu) => {
    await ssh('sudo -n systemctl poweroff', 'lan');
    const deadline = Date.now() + 10 * 60_000;
    while (qemu.child.exitCode === null && Date.now() < deadline) await sleep(1000);
  };

  const first = await boot('first boot');
  await powerOff(first);
  const second = await boot('second boot');
  await sleep(SETTLE_MS);
  const probe = async () => {
    const r = await ssh([
      'sudo -n sync',
      'echo "sectors=$(cat /sys/block/*/stat | awk "{ s += \\$7 } END { print s }")"',
      'echo "agent=$(sudo -n awk "/^write_bytes/ { print \\$2 }" /proc/$(systemctl show -p MainPID --value diode)/io)"',
      'echo "uptime=$(cut -d " " -f 1 /proc/uptime)"',
      'echo "lazyinit=$(grep -l ext4lazyinit /proc/[0-9]*/comm 2>/dev/null | wc -l)"',
      'echo "journal=$(journalctl --header -q 2>/dev/null | sed -n "s/^File path: //p" | head -n 1)"',
    ].join('; '), 'lan');
    if (r.status !== 0) throw new Error('probe over ssh failed');
    return Object.fromEntries(r.stdout.trim().split('\n').map((l) => [l.slice(0, l.indexOf('=')), l.slice(l.indexOf('=') + 1)]));
  };
  const a = await probe();
  const third = (opts.minutes * 60_000) / 3;
  let logins = 0;
  for (let i = 0; i < 2; i++) {
    await sleep(third);
    if ((await ssh('true')).status === 0) logins++;
  }
  await sleep(third);
  const b = await probe();
  const hours = (Number(b.uptime) - Number(a.uptime)) / 3600;
  const mib = ((Number(b.sectors) - Number(a.sectors)) * 512) / 1048576;
  const result = {
    image: opts.image, minutes: +(hours * 60).toFixed(1), mib: +mib.toFixed(3), mibPerHour: +(mib / hours).toFixed(3),
    agentBytes: Number(b.agent) - Number(a.agent), sshLoginsThroughDiode: logins, ext4lazyinit: `${a.lazyinit}/${b.lazyinit}`, journal: b.journal || 'none',
  };
  console.log(JSON.stringify(result));
  await powerOff(second);
  if (!opts.keep) rmSync(work, { recursive: true, force: true });
}

main().then(() => process.exit(0), (err) => { console.error(`card-writes: FAIL: ${err.message}`); process.exit(1); });
