// Serial: ganache 7 with eager instamine can leave a request unanswered when several
// transactions arrive at once (seen as 30 s request timeouts in removeMembers).
// The DiodeFleet contract itself, driven with plain ethers against ganache.
import test from 'ava';
import { execFile } from 'node:child_process';
import { promisify } from 'node:util';
import { Contract, ContractFactory, JsonRpcProvider, Wallet, type Log } from 'ethers';
import { FLEET_ABI, FLEET_BYTECODE, FLEET_INTERFACE } from '../agent/fleet/artifact.ts';
import { revertName } from '../agent/fleet/mapError.ts';
import { startEvm, type Evm } from './helpers/evm.ts';

let evm: Evm;
let provider: JsonRpcProvider;

test.before(async () => {
  evm = await startEvm();
  provider = new JsonRpcProvider(evm.url, 1337, { staticNetwork: true, pollingInterval: 50, cacheTimeout: -1 });
});

test.after.always(async () => {
  provider?.destroy();
  await evm?.stop();
});

/** Each test deploys its own fleet from its own account, so tests can run side by side. */
async function deploy(ownerIndex: number): Promise<{ fleet: Contract; owner: Wallet; as: (i: number) => Contract }> {
  const owner = new Wallet(evm.privateKeys[ownerIndex]!, provider);
  const factory = new ContractFactory(FLEET_ABI, FLEET_BYTECODE, owner);
  const deployed = await factory.deploy();
  await deployed.waitForDeployment();
  const address = await deployed.getAddress();
  const as = (i: number) => new Contract(address, FLEET_ABI, new Wallet(evm.privateKeys[i]!, provider));
  return { fleet: new Contract(address, FLEET_ABI, owner), owner, as };
}

async function call<T>(fleet: Contract, name: string, ...args: unknown[]): Promise<T> {
  return (await fleet.getFunction(name).staticCall(...args)) as T;
}

async function send(fleet: Contract, name: string, ...args: unknown[]): Promise<{ name: string; member: string }[]> {
  const tx = await fleet.getFunction(name)(...args);
  const receipt = await tx.wait();
  return (receipt.logs as Log[]).map((log) => {
    const parsed = FLEET_INTERFACE.parseLog(log)!;
    return { name: parsed.name, member: String(parsed.args[0]) };
  });
}

async function revertOf(promise: Promise<unknown>): Promise<string | undefined> {
  try {
    await promise;
  } catch (error) {
    // ganache tucks estimateGas revert data where ethers does not look; revertName finds it.
    return revertName(error);
  }
  return 'no revert';
}

const randomAddresses = (n: number) => Array.from({ length: n }, () => Wallet.createRandom().address);

test.serial('the deployer owns a new fleet and it starts empty', async (t) => {
  const { fleet, owner } = await deploy(0);
  t.is(await call(fleet, 'owner'), owner.address);
  t.deepEqual([...(await call<string[]>(fleet, 'members'))], []);
  t.is(await call(fleet, 'memberCount'), 0n);
  t.false(await call(fleet, 'deviceWhitelist', evm.accounts[1]));
});

test.serial('addMember lists the address once and emits MemberAdded only when it changes something', async (t) => {
  const { fleet } = await deploy(1);
  const [member] = randomAddresses(1) as [string];
  t.deepEqual(await send(fleet, 'addMember', member), [{ name: 'MemberAdded', member }]);
  t.deepEqual(await send(fleet, 'addMember', member), []);
  t.true(await call(fleet, 'deviceWhitelist', member));
  t.true(await call(fleet, 'isMember', member));
  t.deepEqual([...(await call<string[]>(fleet, 'members'))], [member]);
});

test.serial('removals keep the member list and the lookups consistent (swap and pop)', async (t) => {
  const { fleet } = await deploy(2);
  const list = randomAddresses(5);
  await send(fleet, 'addMembers', list);
  t.deepEqual(await send(fleet, 'removeMember', list[1]), [{ name: 'MemberRemoved', member: list[1]! }]);
  t.deepEqual(await send(fleet, 'removeMember', list[1]), []);
  await send(fleet, 'removeMember', list[0]); // the first
  await send(fleet, 'removeMember', list[4]); // whatever is now last or not
  const remaining = [list[2]!, list[3]!];
  t.deepEqual([...(await call<string[]>(fleet, 'members'))].sort(), [...remaining].sort());
  t.is(await call(fleet, 'memberCount'), 2n);
  for (const address of list) t.is(await call(fleet, 'deviceWhitelist', address), remaining.includes(address), address);
  // Re-adding a removed member works and removing everything leaves an empty list.
  await send(fleet, 'addMember', list[1]);
  await send(fleet, 'removeMembers', [...remaining, list[1]]);
  t.deepEqual([...(await call<string[]>(fleet, 'members'))], []);
});

test.serial('batch calls are idempotent and emit one event per actual change', async (t) => {
  const { fleet } = await deploy(3);
  const [a, b, c] = randomAddresses(3) as [string, string, string];
  t.deepEqual((await send(fleet, 'addMembers', [a, b, a])).map((e) => e.member), [a, b]);
  t.deepEqual((await send(fleet, 'addMembers', [a, b, c])).map((e) => e.member), [c]);
  t.deepEqual(await send(fleet, 'removeMembers', [c, c]), [{ name: 'MemberRemoved', member: c }]);
  t.deepEqual(await send(fleet, 'removeMembers', [c]), []);
  t.is(await call(fleet, 'memberCount'), 2n);
});

test.serial('only the owner may change the fleet (NotOwner)', async (t) => {
  const { as } = await deploy(4);
  const stranger = as(5);
  const [a] = randomAddresses(1);
  t.is(await revertOf(stranger.getFunction('addMember')(a)), 'NotOwner');
  t.is(await revertOf(stranger.getFunction('removeMember')(a)), 'NotOwner');
  t.is(await revertOf(stranger.getFunction('addMembers')([a])), 'NotOwner');
  t.is(await revertOf(stranger.getFunction('removeMembers')([a])), 'NotOwner');
  t.is(await revertOf(stranger.getFunction('transferOwnership')(a)), 'NotOwner');
});

test.serial('transferOwnership hands the fleet to the new admin and emits OwnershipTransferred', async (t) => {
  const { fleet, owner, as } = await deploy(6);
  const next = evm.accounts[7]!;
  const receipt = await (await fleet.getFunction('transferOwnership')(next)).wait();
  const event = FLEET_INTERFACE.parseLog(receipt.logs[0])!;
  t.is(event.name, 'OwnershipTransferred');
  t.deepEqual([event.args[0], event.args[1]], [owner.address, next]);
  t.is(await call(fleet, 'owner'), next);
  t.is(await revertOf(fleet.getFunction('addMember')(next)), 'NotOwner');
  const [member] = randomAddresses(1);
  await send(as(7), 'addMember', member);
  t.true(await call(fleet, 'deviceWhitelist', member));
});

test.serial('the zero address is refused as member or owner (ZeroAddress)', async (t) => {
  const { fleet } = await deploy(8);
  const zero = '0x0000000000000000000000000000000000000000';
  t.is(await revertOf(fleet.getFunction('addMember')(zero)), 'ZeroAddress');
  t.is(await revertOf(fleet.getFunction('addMembers')([evm.accounts[1], zero])), 'ZeroAddress');
  t.is(await revertOf(fleet.getFunction('transferOwnership')(zero)), 'ZeroAddress');
  t.is(await call(fleet, 'memberCount'), 0n);
});

test.serial('the committed artifact matches what the compile script produces', async (t) => {
  const run = promisify(execFile);
  const { stdout } = await run(process.execPath, ['scripts/compile-contract.mjs', '--check']);
  t.regex(stdout, /up to date/);
});
