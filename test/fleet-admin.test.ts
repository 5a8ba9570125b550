// Serial: ganache 7 with eager instamine can leave a request unanswered when several
// transactions arrive at once (seen as 30 s request timeouts in removeMembers).
// The fleet admin library (agent/fleet/admin.ts) against a real ganache node.
import test from 'ava';
import { Contract, JsonRpcProvider, Wallet } from 'ethers';
import { createServer } from 'node:net';
import {
  FleetError,
  FLEET_ABI,
  MEMBERS_PER_TX,
  addMembers,
  deployFleet,
  isMember,
  listMembers,
  removeMembers,
  type FleetAdminOptions,
} from '../agent/fleet/index.ts';
import { startEvm, type Evm } from './helpers/evm.ts';

let evm: Evm;

test.before(async () => {
  evm = await startEvm();
});

test.after.always(async () => {
  await evm?.stop();
});

const randomAddresses = (n: number) => Array.from({ length: n }, () => Wallet.createRandom().address);

/** Each test deploys from its own ganache account so tests may run side by side. */
async function fleetOf(account: number): Promise<FleetAdminOptions & { fleet: string }> {
  const { fleet } = await deployFleet({ rpc: evm.url, adminKey: evm.privateKeys[account] });
  return { rpc: evm.url, fleet, adminKey: evm.privateKeys[account] };
}

async function closedPortUrl(): Promise<string> {
  const server = createServer();
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  const { port } = server.address() as { port: number };
  await new Promise<void>((resolve) => server.close(() => resolve()));
  return `http://127.0.0.1:${port}`;
}

test.serial('deployFleet reports the transaction and returns a fleet owned by the admin', async (t) => {
  const lines: string[] = [];
  const result = await deployFleet({ rpc: evm.url, adminKey: evm.privateKeys[0], onProgress: (line) => lines.push(line) });
  t.regex(result.fleet, /^0x[0-9a-fA-F]{40}$/);
  t.is(result.owner, evm.accounts[0]);
  t.regex(result.hash, /^0x[0-9a-f]{64}$/);
  t.true(lines.some((line) => line.includes(result.hash) && /waiting for 1 confirmation/.test(line)));
  t.true(lines.some((line) => /confirmed in block \d+/.test(line)));
  t.true(lines.some((line) => line.includes(result.fleet)));
  t.deepEqual(await listMembers({ rpc: evm.url, fleet: result.fleet }), []);
});

test.serial('addMembers and removeMembers change the list and report only real changes', async (t) => {
  const options = await fleetOf(1);
  const [a, b, c] = randomAddresses(3) as [string, string, string];
  const added = await addMembers(options, [a, b.toLowerCase(), a]);
  t.is(added.txs.length, 1);
  t.deepEqual(added.changed, [a, b]);
  t.deepEqual((await addMembers(options, [a, c])).changed, [c]);
  t.deepEqual((await listMembers(options)).sort(), [a, b, c].sort());
  t.true(await isMember(options, a));

  const removed = await removeMembers(options, [b, randomAddresses(1)[0]!]);
  t.deepEqual(removed.changed, [b]);
  t.false(await isMember({ rpc: evm.url, fleet: options.fleet }, b));
  t.deepEqual((await listMembers(options)).sort(), [a, c].sort());
});

test.serial('a long list is sent in batches, each confirmed', async (t) => {
  const options = await fleetOf(2);
  const list = randomAddresses(7);
  const lines: string[] = [];
  const result = await addMembers({ ...options, membersPerTx: 3, onProgress: (line) => lines.push(line) }, list);
  t.is(result.txs.length, 3);
  t.is(new Set(result.txs.map((tx) => tx.hash)).size, 3);
  t.deepEqual(result.changed, list);
  t.is(lines.filter((line) => /batch \d\/3 .*confirmed/.test(line)).length, 3);
  t.deepEqual((await listMembers(options)).sort(), [...list].sort());
});

test.serial('a full default batch stays well under small block gas limits', async (t) => {
  // Extrapolated from a tenth of a batch: executing 100 adds on ganache takes seconds.
  const options = await fleetOf(8);
  const sample = MEMBERS_PER_TX / 10;
  const result = await addMembers(options, randomAddresses(sample));
  const perBatch = (result.txs[0]!.gasUsed * BigInt(MEMBERS_PER_TX)) / BigInt(sample);
  t.true(perBatch < 6_000_000n, `≈ ${perBatch} gas per ${MEMBERS_PER_TX}-member transaction`);
});

test.serial('a key that does not own the fleet fails with EREVERT naming NotOwner', async (t) => {
  const options = await fleetOf(3);
  const error = await t.throwsAsync(addMembers({ ...options, adminKey: evm.privateKeys[4] }, randomAddresses(1)), { instanceOf: FleetError });
  t.is(error?.code, 'EREVERT');
  t.is(error?.revertName, 'NotOwner');
  t.regex(error!.message, /NotOwner\(\)/);
});

test.serial('the zero address as member fails with EREVERT naming ZeroAddress', async (t) => {
  const options = await fleetOf(5);
  const error = await t.throwsAsync(addMembers(options, ['0x0000000000000000000000000000000000000000']), { instanceOf: FleetError });
  t.is(error?.code, 'EREVERT');
  t.is(error?.revertName, 'ZeroAddress');
});

test.serial('an unfunded admin key fails with EFUNDS before sending anything', async (t) => {
  const poor = Wallet.createRandom();
  const deploying = await t.throwsAsync(deployFleet({ rpc: evm.url, adminKey: poor.privateKey }), { instanceOf: FleetError });
  t.is(deploying?.code, 'EFUNDS');
  t.true(deploying!.message.includes(poor.address));

  // An unfunded owner: hand a fleet to the empty account.
  const options = await fleetOf(6);
  const provider = new JsonRpcProvider(evm.url, 1337, { staticNetwork: true, cacheTimeout: -1 });
  try {
    const fleet = new Contract(options.fleet, FLEET_ABI, new Wallet(evm.privateKeys[6]!, provider));
    await (await fleet.getFunction('transferOwnership')(poor.address)).wait();
  } finally {
    provider.destroy();
  }
  const adding = await t.throwsAsync(addMembers({ ...options, adminKey: poor.privateKey.slice(2) }, randomAddresses(1)), { instanceOf: FleetError });
  t.is(adding?.code, 'EFUNDS');
});

test.serial('an unreachable RPC fails with ERPC naming the URL', async (t) => {
  const rpc = await closedPortUrl();
  for (const attempt of [
    () => deployFleet({ rpc, adminKey: evm.privateKeys[0] }),
    () => listMembers({ rpc, fleet: evm.accounts[0] }),
  ]) {
    const error = await t.throwsAsync(attempt(), { instanceOf: FleetError });
    t.is(error?.code, 'ERPC');
    t.true(error!.message.includes(rpc));
  }
  const notUrl = await t.throwsAsync(listMembers({ rpc: 'localhost:8545', fleet: evm.accounts[0] }), { instanceOf: FleetError });
  t.is(notUrl?.code, 'ERPC');
});

test.serial('an address without code fails with ENOTCONTRACT', async (t) => {
  const notFleet = evm.accounts[9]!;
  for (const attempt of [
    () => listMembers({ rpc: evm.url, fleet: notFleet }),
    () => isMember({ rpc: evm.url, fleet: notFleet }, evm.accounts[1]!),
    () => addMembers({ rpc: evm.url, fleet: notFleet, adminKey: evm.privateKeys[7] }, randomAddresses(1)),
  ]) {
    const error = await t.throwsAsync(attempt(), { instanceOf: FleetError });
    t.is(error?.code, 'ENOTCONTRACT');
    t.true(error!.message.includes(notFleet));
  }
});

test.serial('malformed addresses fail with EBADADDR and a missing key with ENOKEY, before any RPC', async (t) => {
  const rpc = await closedPortUrl(); // nothing may be asked of it
  const fleet = evm.accounts[0]!;
  const badMember = await t.throwsAsync(addMembers({ rpc, fleet, adminKey: evm.privateKeys[0] }, [evm.accounts[1]!, '0x1234']), { instanceOf: FleetError });
  t.is(badMember?.code, 'EBADADDR');
  t.regex(badMember!.message, /member #2 "0x1234"/);
  const letter = fleet.slice(2).search(/[a-fA-F]/) + 2;
  const flipped = fleet[letter] === fleet[letter]!.toUpperCase() ? fleet[letter]!.toLowerCase() : fleet[letter]!.toUpperCase();
  const badChecksum = fleet.slice(0, letter) + flipped + fleet.slice(letter + 1);
  const badFleet = await t.throwsAsync(listMembers({ rpc, fleet: badChecksum }), { instanceOf: FleetError });
  t.is(badFleet?.code, 'EBADADDR');
  const noFleet = await t.throwsAsync(listMembers({ rpc }), { instanceOf: FleetError });
  t.is(noFleet?.code, 'EBADADDR');
  const noKey = await t.throwsAsync(removeMembers({ rpc, fleet }, [evm.accounts[1]!]), { instanceOf: FleetError });
  t.is(noKey?.code, 'ENOKEY');
  t.regex(noKey!.message, /DIODE_ADMIN_KEY|--admin-key-file/);
  const badKey = await t.throwsAsync(deployFleet({ rpc, adminKey: '0x1234' }), { instanceOf: FleetError });
  t.is(badKey?.code, 'ENOKEY');
});
