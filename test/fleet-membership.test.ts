// Serial: ganache 7 with eager instamine can leave a request unanswered when several
// transactions arrive at once (seen as 30 s request timeouts in removeMembers).
// FleetMembership (the device agent's cached, fail-closed view of a fleet)
// against a real ganache node, over http (polling) and ws (subscription).
import test from 'ava';
import { Wallet } from 'ethers';
import { createServer } from 'node:net';
import { FleetMembership, addMembers, deployFleet, removeMembers, type FleetAdminOptions } from '../agent/fleet/index.ts';
import { startEvm, type Evm } from './helpers/evm.ts';

let evm: Evm;

test.before(async () => {
  evm = await startEvm();
});

test.after.always(async () => {
  await evm?.stop();
});

const randomAddress = () => Wallet.createRandom().address;
const sleep = (ms: number) => new Promise((resolve) => setTimeout(resolve, ms));

async function fleetOf(node: Evm, account: number): Promise<FleetAdminOptions & { fleet: string }> {
  const { fleet } = await deployFleet({ rpc: node.url, adminKey: node.privateKeys[account] });
  return { rpc: node.url, fleet, adminKey: node.privateKeys[account] };
}

/** Polls `check` until it returns `want`; returns how long that took, in ms. */
async function until(check: () => Promise<boolean>, want: boolean, withinMs: number): Promise<number> {
  const started = Date.now();
  while (Date.now() - started < withinMs) {
    if ((await check()) === want) return Date.now() - started;
    await sleep(50);
  }
  throw new Error(`still ${!want} after ${withinMs} ms`);
}

test.serial('answers are cached for the TTL, then asked again', async (t) => {
  const admin = await fleetOf(evm, 0);
  const member = randomAddress();
  await addMembers(admin, [member]);
  const lines: string[] = [];
  const log = (l: string) => lines.push(l);
  const long = new FleetMembership({ rpc: evm.url, fleet: admin.fleet, ttlSeconds: 60, pollSeconds: 0, log });
  const short = new FleetMembership({ rpc: evm.url, fleet: admin.fleet, ttlSeconds: 1, pollSeconds: 0, log });
  t.teardown(() => long.close());
  t.teardown(() => short.close());
  t.true(await long.isMember(member));
  t.true(await long.isMember(member.toLowerCase()));
  t.true(await short.isMember(member));
  t.false(await long.isMember(randomAddress()));
  await removeMembers(admin, [member]);
  t.true(await long.isMember(member), 'the cached answer, no events asked for');
  await sleep(1_100);
  t.false(await short.isMember(member), 'asked again after the TTL');
  t.deepEqual(lines, []);
});

test.serial('over http a removal or addition is seen by polling eth_getLogs, well before the TTL', async (t) => {
  const admin = await fleetOf(evm, 1);
  const [member, newcomer] = [randomAddress(), randomAddress()];
  await addMembers(admin, [member]);
  const fleet = new FleetMembership({ rpc: evm.url, fleet: admin.fleet, ttlSeconds: 60, pollSeconds: 1 });
  t.teardown(() => fleet.close());
  t.true(await fleet.isMember(member));
  t.false(await fleet.isMember(newcomer));
  await removeMembers(admin, [member]);
  await addMembers(admin, [newcomer]);
  await until(() => fleet.isMember(member), false, 3_000);
  await until(() => fleet.isMember(newcomer), true, 3_000);
  t.pass();
});

test.serial('over ws a removal is seen through the event subscription', async (t) => {
  const admin = await fleetOf(evm, 2);
  const member = randomAddress();
  await addMembers(admin, [member]);
  const fleet = new FleetMembership({ rpc: evm.wsUrl, fleet: admin.fleet, ttlSeconds: 60 });
  t.teardown(() => fleet.close());
  t.true(await fleet.isMember(member));
  await removeMembers(admin, [member]);
  const ms = await until(() => fleet.isMember(member), false, 3_000);
  t.log(`removal seen after ${ms} ms`);
  t.pass();
});

test.serial('the cache is bounded and keeps the most recently used answers', async (t) => {
  const admin = await fleetOf(evm, 3);
  const fleet = new FleetMembership({ rpc: evm.url, fleet: admin.fleet, maxEntries: 2, pollSeconds: 0 });
  t.teardown(() => fleet.close());
  for (let i = 0; i < 5; i++) await fleet.isMember(randomAddress());
  t.is(fleet.cacheSize, 2);
});

test.serial('a malformed address is denied with one log line', async (t) => {
  const admin = await fleetOf(evm, 4);
  const lines: string[] = [];
  const fleet = new FleetMembership({ rpc: evm.url, fleet: admin.fleet, log: (l) => lines.push(l) });
  t.teardown(() => fleet.close());
  t.false(await fleet.isMember('0x1234'));
  t.is(lines.length, 1);
  t.regex(lines[0]!, /deny "0x1234": not an address/);
});

test.serial('a fleet address without a contract denies with a log line naming it', async (t) => {
  const lines: string[] = [];
  const fleet = new FleetMembership({ rpc: evm.url, fleet: evm.accounts[9]!, log: (l) => lines.push(l) });
  t.teardown(() => fleet.close());
  t.false(await fleet.isMember(evm.accounts[1]!));
  t.is(lines.length, 1);
  t.true(lines[0]!.includes(evm.accounts[9]!));
  t.regex(lines[0]!, /no contract/);
});

test.serial('an unreachable RPC denies every lookup with one log line each', async (t) => {
  const server = createServer();
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  const { port } = server.address() as { port: number };
  await new Promise<void>((resolve) => server.close(() => resolve()));
  const lines: string[] = [];
  const fleet = new FleetMembership({ rpc: `http://127.0.0.1:${port}`, fleet: evm.accounts[0]!, log: (l) => lines.push(l) });
  t.teardown(() => fleet.close());
  t.false(await fleet.isMember(evm.accounts[1]!));
  t.false(await fleet.isMember(evm.accounts[2]!));
  t.is(lines.length, 2);
  t.regex(lines[0]!, /deny 0x[0-9a-fA-F]{40}: cannot reach RPC/);
});

test.serial('when the node goes down, lookups are denied and logged, never allowed', async (t) => {
  const node = await startEvm();
  t.teardown(() => node.stop());
  const admin = await fleetOf(node, 0);
  const member = randomAddress();
  await addMembers(admin, [member]);
  const lines: string[] = [];
  const log = (l: string) => lines.push(l);
  const http = new FleetMembership({ rpc: node.url, fleet: admin.fleet, ttlSeconds: 0, timeoutSeconds: 2, log });
  const ws = new FleetMembership({ rpc: node.wsUrl, fleet: admin.fleet, ttlSeconds: 0, timeoutSeconds: 2, log });
  t.teardown(() => http.close());
  t.teardown(() => ws.close());
  t.true(await http.isMember(member));
  t.true(await ws.isMember(member));

  await node.stop();
  t.false(await http.isMember(member));
  t.false(await ws.isMember(member));
  t.true(lines.some((l) => l.startsWith(`fleet: deny ${member}`)), lines.join('\n'));
  t.true(lines.every((l) => !l.includes('\n')));
});

test.serial('close() drops the cache and answers false afterwards', async (t) => {
  const admin = await fleetOf(evm, 5);
  const member = randomAddress();
  await addMembers(admin, [member]);
  for (const rpc of [evm.url, evm.wsUrl]) {
    const fleet = new FleetMembership({ rpc, fleet: admin.fleet, pollSeconds: 0.1 });
    t.true(await fleet.isMember(member));
    await fleet.close();
    t.is(fleet.cacheSize, 0);
    t.false(await fleet.isMember(member));
  }
});

test.serial('a bad configuration is refused at construction', (t) => {
  t.throws(() => new FleetMembership({ rpc: 'localhost:8545', fleet: evm.accounts[0]! }), { message: /RPC URL/ });
  t.throws(() => new FleetMembership({ rpc: evm.url, fleet: '0x12' }), { message: /fleet address/ });
  t.throws(() => new FleetMembership({ rpc: evm.url, fleet: evm.accounts[0]!, ttlSeconds: -1 }), { instanceOf: RangeError });
});
