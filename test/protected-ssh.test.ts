import test from 'ava';
import { execFile } from 'node:child_process';
import { promisify } from 'node:util';
import { startRelay, startPublish, startSocksd, tempDir } from './helpers/diode.ts';
import { startSshd, sshOptions } from './helpers/sshd.ts';
import { startEvm, type Evm } from './helpers/evm.ts';
import { fleetAdmin, runDiode as diode } from './helpers/fleet.ts';

const run = promisify(execFile);
/** fleet-ttl of the device in this test, in seconds. */
const TTL_S = 2;
/** Slack on top of the TTL for a removal to take effect (loaded machine, ssh start-up), in ms. */
const REMOVAL_SLACK_MS = 8_000;
const FAIL_FAST_MS = 10_000;

let evm: Evm;
test.before(async () => {
  evm = await startEvm();
});
test.after.always(async () => {
  await evm?.stop();
});

/** A fresh home with its key and the fleet settings; returns the home and its address. */
async function member(t: Parameters<typeof tempDir>[0], fleet: string, extra: string[] = []): Promise<{ home: string; address: string }> {
  const home = tempDir(t);
  const address = (await diode(['address', '--home', home])).stdout.trim();
  const set = await diode(['config', '--home', home, '-set', `fleet=${fleet}`, '-set', `rpc=${evm.url}`, ...extra]);
  if (set.code !== 0) throw new Error(set.stderr);
  return { home, address };
}

async function sshFails(args: string[]): Promise<number> {
  const started = Date.now();
  try {
    await run('ssh', args, { timeout: FAIL_FAST_MS + 5_000 });
  } catch {
    return Date.now() - started;
  }
  throw new Error('ssh succeeded but should have failed');
}

test('fleet members reach a protected sshd with real ssh; a removed member is refused within the cache time; another fleet is refused', async (t) => {
  const [fleetA, fleetB] = [await fleetAdmin(evm, ['deploy']), await fleetAdmin(evm, ['deploy'])];
  const device = await member(t, fleetA, ['-set', `fleet-ttl=${TTL_S}`]);
  const [alice, bob] = await Promise.all([member(t, fleetA), member(t, fleetB)]);
  await fleetAdmin(evm, ['add', '--fleet', fleetA, alice.address]);
  await fleetAdmin(evm, ['add', '--fleet', fleetB, bob.address]);

  const sshd = await startSshd(t);
  const relay = await startRelay(t);
  const published = await startPublish(t, relay.port, ['-protected', `${sshd.port}:22`], device.home);
  t.regex(published.proc.output(), new RegExp(`protected ports admit members of fleet ${fleetA}`));
  const [socksA, socksB] = await Promise.all([startSocksd(t, relay.port, alice.home), startSocksd(t, relay.port, bob.home)]);
  const host = `${sshd.user}@${published.address.toLowerCase()}.diode`;

  const ok = await run('ssh', [...sshOptions(sshd, socksA.port), host, 'echo protected-ok'], { timeout: 30_000 });
  t.is(ok.stdout, 'protected-ok\n');

  const bobMs = await sshFails([...sshOptions(sshd, socksB.port), host, 'true']);
  t.true(bobMs < FAIL_FAST_MS, `refusing the other fleet's client took ${bobMs} ms`);
  t.regex(published.proc.output(), new RegExp(`denied ${bob.address} → port 22 \\(protected\\)`));

  await fleetAdmin(evm, ['remove', '--fleet', fleetA, alice.address]);
  const removedAt = Date.now();
  let refusedAfter = -1;
  while (Date.now() - removedAt < TTL_S * 1_000 + REMOVAL_SLACK_MS) {
    try {
      await run('ssh', [...sshOptions(sshd, socksA.port), host, 'true'], { timeout: FAIL_FAST_MS + 5_000 });
    } catch {
      refusedAfter = Date.now() - removedAt;
      break;
    }
  }
  t.log(`removed member refused ${refusedAfter} ms after the removal was confirmed`);
  t.true(refusedAfter >= 0, `alice was still admitted ${TTL_S * 1_000 + REMOVAL_SLACK_MS} ms after her removal`);
  t.regex(published.proc.output(), new RegExp(`denied ${alice.address} → port 22 \\(protected\\)`));
});

test('-protected without fleet settings is a start-up error naming the config keys', async (t) => {
  const home = tempDir(t);
  const result = await diode(['publish', '-protected', '22:22', '--relay', '127.0.0.1:9', '--home', home]);
  t.not(result.code, 0);
  t.regex(result.stderr, /diode: -protected ports need a fleet contract: run diode config -set fleet=0x<fleet contract> -set rpc=<JSON-RPC URL>/);
  t.notRegex(result.stderr, /\n\s+at /);
});
