import test from 'ava';
import { randomBytes } from 'node:crypto';
import { RedisStore, type MapEntry } from '../agent/relay/cluster/redis-store.ts';
import { parseRedisTarget } from '../agent/relay/cluster/config.ts';
import { toChecksumAddress } from '../agent/identity/checksum.ts';
import { silentLogger } from '../agent/util/log.ts';
import { startRedis, startRedisCluster } from './helpers/redis.ts';
import type { ExecutionContext } from 'ava';

const randomAddress = () => toChecksumAddress(`0x${randomBytes(20).toString('hex')}`);

/** The relays of the stores a test makes: each one believes the others' claims (their --cluster-allow). */
const cluster = new Set<string>();

function store(t: ExecutionContext, url: string, options: { ttl?: number; refresh?: number } = {}): RedisStore {
  const relay = randomAddress();
  cluster.add(relay);
  const s = new RedisStore({
    target: parseRedisTarget(url),
    relay,
    allow: cluster,
    advertise: { host: '127.0.0.1', port: 40000 + Math.floor(Math.random() * 1000) },
    keyPrefix: 'test:',
    entryTtlMs: options.ttl ?? 90_000,
    refreshIntervalMs: options.refresh ?? 30_000,
    log: silentLogger,
  });
  t.teardown(() => s.close());
  return s;
}

async function eventually<T>(what: string, probe: () => Promise<T | undefined> | T | undefined, timeoutMs = 5000): Promise<T> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    try {
      const value = await probe();
      if (value !== undefined && value !== false) return value;
    } catch {
      // Redis may be coming back.
    }
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 50));
  }
}

function moves(s: RedisStore): Array<[string, MapEntry | undefined]> {
  const seen: Array<[string, MapEntry | undefined]> = [];
  s.on('move', (address, entry) => seen.push([address, entry]));
  return seen;
}

test('a claim is seen by the other relays, the newest claim wins, and only the holder releases its entry', async (t) => {
  const redis = await startRedis(t);
  const x = store(t, redis.url);
  const y = store(t, redis.url);
  await Promise.all([x.start(), y.start()]);
  const seenByX = moves(x);
  const seenByY = moves(y);
  const device = randomAddress();

  x.hold(device, 1000);
  const entry = await eventually('x entry', () => y.lookup(device));
  t.is(entry.since, 1000);
  t.is(entry.endpoint.host, '127.0.0.1');
  await eventually('y hears the move', () => seenByY.find(([a, e]) => a === device && e?.since === 1000));
  const pttl = Number(await redis.cli('pttl', `test:dev:${device.toLowerCase()}`));
  t.true(pttl > 80_000 && pttl <= 90_000, `pttl ${pttl}`);

  // The device moved to y (a later session): y's claim replaces x's, and x learns it lost.
  const superseded: MapEntry[] = [];
  x.on('superseded', (_a, e) => superseded.push(e));
  y.hold(device, 2000);
  await eventually('x hears the move', () => seenByX.find(([a, e]) => a === device && e?.since === 2000));
  // x's refresh (its old session is not known dead yet) must not take the entry back.
  x.hold(device, 1000);
  await eventually('x superseded', () => superseded.length > 0);
  t.is((await y.lookup(device))?.since, 2000);

  // x's old session closes: the entry is y's, so it stays.
  x.drop(device);
  await new Promise((r) => setTimeout(r, 200));
  t.is((await x.lookup(device))?.since, 2000);
  y.drop(device);
  await eventually('deleted', async () => ((await x.lookup(device)) === undefined ? true : undefined));
  await eventually('x hears the delete', () => seenByX.find(([a, e]) => a === device && e === undefined));
});

test('a stale entry is deleted only while it is still the stale one', async (t) => {
  const redis = await startRedis(t);
  const x = store(t, redis.url);
  const y = store(t, redis.url);
  await Promise.all([x.start(), y.start()]);
  const device = randomAddress();
  x.hold(device, 1000);
  const stale = await eventually('entry', () => y.lookup(device));
  x.hold(device, 1500); // x's device reconnected in between
  await eventually('new claim', async () => ((await y.lookup(device))?.since === 1500 ? true : undefined));
  await y.forget(device, stale);
  t.is((await y.lookup(device))?.since, 1500);
  // Asked for a device it does not hold, a relay deletes whatever entry names it.
  t.true(await x.forget(device, 'mine'));
  t.is(await y.lookup(device), undefined);
});

test('entries come back after a Redis restart, and releases made while Redis was down are replayed', async (t) => {
  const redis = await startRedis(t);
  const x = store(t, redis.url);
  const y = store(t, redis.url);
  await Promise.all([x.start(), y.start()]);
  const kept = randomAddress();
  const leaving = randomAddress();
  x.hold(kept, 1000);
  x.hold(leaving, 1000);
  await eventually('entries', async () => ((await y.lookup(kept)) && (await y.lookup(leaving)) ? true : undefined));
  let resyncs = 0;
  y.on('resync', () => resyncs++);

  await redis.stop();
  await eventually('x notices', () => (!x.up ? true : undefined));
  await t.throwsAsync(() => y.lookup(kept)); // fails fast, no queueing
  x.drop(leaving);
  await redis.restart();
  // The restarted server starts empty (no persistence); the relays may already be writing again.
  await eventually('re-registered', () => y.lookup(kept), 10_000);
  t.is(await y.lookup(leaving), undefined);
  await eventually('y resynced', () => (resyncs > 0 ? true : undefined));

  // The subscription came back too.
  const seen = moves(y);
  const later = randomAddress();
  x.hold(later, 3000);
  await eventually('announcement after restart', () => seen.find(([a]) => a === later));
});

test('the map works on a three-node Redis Cluster made by the test', async (t) => {
  const cluster = await startRedisCluster(t);
  const x = store(t, cluster.url);
  const y = store(t, `redis+cluster://127.0.0.1:${cluster.nodes[1].port}`);
  await Promise.all([x.start(), y.start()]);
  await eventually('connected', () => (x.up && y.up ? true : undefined), 10_000);
  const seen = moves(y);
  const devices = Array.from({ length: 60 }, randomAddress);
  devices.forEach((d, i) => x.hold(d, 1000 + i));
  for (const d of devices) t.truthy(await eventually(`entry ${d}`, () => y.lookup(d)));
  // The keys really spread over the nodes.
  const counts = await Promise.all(cluster.nodes.map(async (n) => Number(await n.cli('dbsize'))));
  t.true(counts.every((c) => c > 0), `keys per node ${counts.join(',')}`);
  await eventually('every announcement', () => (devices.every((d) => seen.some(([a]) => a === d)) ? true : undefined));
  x.drop(devices[0]);
  await eventually('deleted', async () => ((await y.lookup(devices[0])) === undefined ? true : undefined));
});
