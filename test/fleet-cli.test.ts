import test from 'ava';
import { writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { tempDir } from './helpers/diode.ts';
import { startEvm, type Evm } from './helpers/evm.ts';
import { fleetAdmin, runDiode, type Ran } from './helpers/fleet.ts';

const EXIT_FLEET_ERROR = 3;
const ADDRESS_LINE = /^0x[0-9a-fA-F]{40}\n$/;

let evm: Evm;
test.before(async () => {
  evm = await startEvm();
});
test.after.always(async () => {
  await evm?.stop();
});

/** One line on stderr, `diode: ...`, and no stack trace. */
function oneLine(t: { regex(s: string, r: RegExp): void; is(a: unknown, b: unknown): void }, result: Ran, pattern: RegExp): void {
  t.is(result.code, EXIT_FLEET_ERROR);
  t.regex(result.stderr, /^diode: [^\n]+\n$/);
  t.regex(result.stderr, pattern);
}

test('fleet --help lists the subcommands, and the admin key has no flag', async (t) => {
  const help = await runDiode(['fleet', '--help']);
  t.is(help.code, 0);
  for (const sub of ['deploy', 'add', 'remove', 'list', 'check', 'ui']) t.regex(help.stdout, new RegExp(`\\n  ${sub} `));
  t.regex(help.stdout, /--admin-key-file FILE/);
  t.is((await runDiode(['fleet', 'add', '--admin-key', '0x11'])).code, 2);
  const unknown = await runDiode(['fleet', 'grow']);
  t.is(unknown.code, 2);
  t.regex(unknown.stderr, /unknown subcommand "grow"; write diode fleet deploy\|add\|remove\|list\|check\|ui/);
});

// Serial: these tests send from the same ganache account, and two senders at once race on its nonce.
test.serial('deploy, add, list, check, remove: results on stdout, tx progress on stderr, config keys as defaults, check exits 0/1', async (t) => {
  const deploy = await runDiode(['fleet', 'deploy', '--rpc', evm.url], { DIODE_ADMIN_KEY: evm.privateKeys[0] });
  t.is(deploy.code, 0, deploy.stderr);
  t.regex(deploy.stdout, ADDRESS_LINE);
  t.regex(deploy.stderr, /deploy fleet: sent tx 0x[0-9a-f]{64}, waiting for 1 confirmation\n/);
  t.regex(deploy.stderr, /deploy fleet: confirmed in block \d+/);
  const fleet = deploy.stdout.trim();

  // The key from a file; rpc and fleet from the config.
  const home = tempDir(t);
  const keyFile = join(home, 'admin.key');
  writeFileSync(keyFile, `${evm.privateKeys[0]}\n`, { mode: 0o600 });
  t.is((await runDiode(['config', '--home', home, '-set', `rpc=${evm.url}`, '-set', `fleet=${fleet}`])).code, 0);
  const [a, b] = [evm.accounts[3]!, evm.accounts[4]!];
  const add = await runDiode(['fleet', 'add', '--home', home, '--admin-key-file', keyFile, a, b.toLowerCase(), a], { DIODE_ADMIN_KEY: '' });
  t.is(add.code, 0, add.stderr);
  t.regex(add.stderr, /addMembers \(2\): sent tx 0x[0-9a-f]{64}/);
  t.regex(add.stderr, /added 2 of 3/);

  const list = await runDiode(['fleet', 'list', '--home', home]);
  t.is(list.stdout, `${a}\n${b}\n`);
  const member = await runDiode(['fleet', 'check', '--home', home, b]);
  t.is(member.code, 0);
  t.regex(member.stdout, /is a member of fleet/);

  await fleetAdmin(evm, ['remove', '--fleet', fleet, b]);
  const gone = await runDiode(['fleet', 'check', '--home', home, b]);
  t.is(gone.code, 1);
  t.regex(gone.stdout, /is not a member of fleet/);
  t.is(await fleetAdmin(evm, ['list', '--fleet', fleet]), a);
});

test.serial('an unreachable RPC, a revert, a missing key, a bad address and a missing setting are one line each', async (t) => {
  const fleet = await fleetAdmin(evm, ['deploy']);
  const someone = evm.accounts[5]!;
  oneLine(t, await runDiode(['fleet', 'check', '--rpc', 'http://127.0.0.1:9', '--fleet', fleet, someone]), /cannot reach RPC http:\/\/127\.0\.0\.1:9: ECONNREFUSED/);
  oneLine(
    t,
    await runDiode(['fleet', 'add', '--rpc', evm.url, '--fleet', fleet, someone], { DIODE_ADMIN_KEY: evm.privateKeys[1] }),
    /reverted with NotOwner\(\): the admin key is not the fleet owner/,
  );
  oneLine(t, await runDiode(['fleet', 'remove', '--rpc', evm.url, '--fleet', fleet, someone], { DIODE_ADMIN_KEY: '' }), /needs the admin key: set \$DIODE_ADMIN_KEY or pass --admin-key-file FILE/);
  oneLine(t, await runDiode(['fleet', 'check', '--rpc', evm.url, '--fleet', fleet, '0x1234']), /member "0x1234" is not an address/);
  oneLine(t, await runDiode(['fleet', 'list', '--rpc', evm.url, '--fleet', evm.accounts[6]!]), /no contract at fleet address/);
  const noRpc = await runDiode(['fleet', 'list', '--home', tempDir(t)]);
  t.is(noRpc.code, 2);
  t.regex(noRpc.stderr, /no JSON-RPC endpoint; pass --rpc URL or run diode config -set rpc=URL/);
});
