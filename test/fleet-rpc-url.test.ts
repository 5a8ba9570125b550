// Issue 14, item 8: a lying RPC admits anyone, so the fleet RPC must be on this machine or behind TLS.
import test from 'ava';
import { checkRpcUrl } from '../agent/fleet/rpc.ts';
import { isLoopbackHost } from '../agent/fleet/rpc-url.ts';
import { FleetMembership } from '../agent/fleet/membership.ts';
import { FleetError } from '../agent/fleet/errors.ts';
import { start, tempDir } from './helpers/diode.ts';

const FLEET = '0x5FbDB2315678afecb367f032d93F642f64180aa3';

test('a fleet RPC over plain http or ws to another machine is refused with one line naming the setting (anyone on the path could admit anyone)', (t) => {
  for (const rpc of ['http://rpc.example.org', 'http://10.0.0.5:8545', 'ws://rpc.example.org/ws', 'http://[2001:db8::1]:8545', 'http://127.0.0.1.nip.io:8545']) {
    const err = t.throws(() => checkRpcUrl(rpc), { instanceOf: FleetError }, rpc);
    t.regex(err!.message, /rpc/);
    t.regex(err!.message, /https:\/\/|wss:\/\//);
    t.throws(() => new FleetMembership({ rpc, fleet: FLEET }), { instanceOf: FleetError }, rpc);
  }
  for (const rpc of ['https://rpc.example.org', 'wss://rpc.example.org/ws', 'http://127.0.0.1:8545', 'http://localhost:8545', 'ws://[::1]:8546', 'http://node.localhost:8545']) {
    t.notThrows(() => checkRpcUrl(rpc), rpc);
  }
});

test('loopback hosts are 127/8, ::1 and localhost names, nothing that merely looks like them', (t) => {
  t.true(isLoopbackHost('127.0.0.1'));
  t.true(isLoopbackHost('127.8.9.10'));
  t.true(isLoopbackHost('[::1]'));
  t.true(isLoopbackHost('LOCALHOST'));
  t.false(isLoopbackHost('localhost.example.org'));
  t.false(isLoopbackHost('127.0.0.1.nip.io'));
  t.false(isLoopbackHost('10.0.0.1'));
  t.false(isLoopbackHost('::2'));
});

test('diode config refuses a plain-http remote rpc at once, naming the key', async (t) => {
  const home = tempDir(t);
  const bad = start(t, ['config', '--home', home, '-set', 'rpc=http://rpc.example.org:8545']);
  await bad.exited();
  t.is(bad.child.exitCode, 2);
  t.regex(bad.output(), /rpc: RPC URL "http:\/\/rpc\.example\.org:8545" is plain http to another machine.*use https:\/\//);
  const good = start(t, ['config', '--home', home, '-set', 'rpc=https://rpc.example.org']);
  await good.exited();
  t.is(good.child.exitCode, 0, good.output());
});
