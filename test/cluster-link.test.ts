import test, { type ExecutionContext } from 'ava';
import { Identity } from '../agent/identity/index.ts';
import { startRelay } from '../agent/relay/listen.ts';
import { dialRelay } from '../agent/link/dial-relay.ts';
import { MuxSession } from '../agent/mux/index.ts';
import { requestStream, HeaderRefused } from '../agent/protocol/request.ts';
import { clusterConfigFromFlags, parseRedisTarget, DEFAULT_CLUSTER_TIMING, type ClusterConfig } from '../agent/relay/cluster/config.ts';
import { encodeEntry } from '../agent/relay/cluster/redis-store.ts';
import { silentLogger } from '../agent/util/log.ts';
import { UsageError } from '../agent/util/errors.ts';
import { tempDir } from './helpers/diode.ts';
import { freePort } from './helpers/sshd.ts';
import { startRedis } from './helpers/redis.ts';

test('--cluster takes one Redis, a Redis Cluster seed list or Sentinels', (t) => {
  t.deepEqual(parseRedisTarget('redis://127.0.0.1:6379'), { kind: 'single', url: 'redis://127.0.0.1:6379' });
  t.like(parseRedisTarget('redis://ops@a:7000,redis://b:7001'), { kind: 'cluster', nodes: [{ host: 'a', port: 7000 }, { host: 'b', port: 7001 }], username: 'ops' });
  t.like(parseRedisTarget('redis+cluster://a:7000,b:7001'), { kind: 'cluster', nodes: [{ host: 'a', port: 7000 }, { host: 'b', port: 7001 }] });
  t.like(parseRedisTarget('redis+sentinel://u@s1:26379,s2:26379/mymaster/2'), {
    kind: 'sentinel',
    sentinels: [{ host: 's1', port: 26379 }, { host: 's2', port: 26379 }],
    name: 'mymaster',
    db: 2,
    username: 'u',
  });
  t.throws(() => parseRedisTarget('http://a:1'), { instanceOf: UsageError, message: /must start with redis:\/\// });
  t.throws(() => parseRedisTarget('redis+sentinel://s1:26379'), { message: /master's name/ });
});

test('--cluster needs --advertise and --cluster-allow; without --cluster neither is taken', (t) => {
  const a = Identity.random().address;
  t.is(clusterConfigFromFlags({}), undefined);
  t.throws(() => clusterConfigFromFlags({ advertise: 'h:1' }), { message: /need --cluster/ });
  t.throws(() => clusterConfigFromFlags({ cluster: 'redis://h:6379', 'cluster-allow': a }), { message: /--advertise/ });
  t.throws(() => clusterConfigFromFlags({ cluster: 'redis://h:6379', advertise: 'h:1' }), { message: /--cluster-allow/ });
  t.throws(() => clusterConfigFromFlags({ cluster: 'redis://h:6379', advertise: 'h:1', 'cluster-allow': '0x1234' }), { message: /--cluster-allow/ });
  const config = clusterConfigFromFlags({ cluster: 'redis://h:6379', advertise: 'h:41046', 'cluster-allow': [a.toLowerCase()] })!;
  t.deepEqual([...config.allow], [a]);
  t.deepEqual(config.advertise, { host: 'h', port: 41046 });
});

/** The relay refuses the link inside the hello exchange: the dialler reads the one-line reason. */
async function refused(dial: ReturnType<typeof dialRelay>): Promise<string> {
  try {
    const connection = await dial;
    connection.socket.destroy();
  } catch (err) {
    return (err as Error).message;
  }
  throw new Error('the relay link was admitted');
}

async function clusterRelay(t: ExecutionContext, redisUrl: string, allow: string[], identity = Identity.random()) {
  const port = await freePort();
  const config: ClusterConfig = {
    redis: parseRedisTarget(redisUrl),
    advertise: { host: '127.0.0.1', port },
    allow: new Set([...allow, identity.address]),
    ...DEFAULT_CLUSTER_TIMING,
  };
  const relay = await startRelay({ listen: { host: '127.0.0.1', port }, home: tempDir(t), identity, log: silentLogger, cluster: config });
  t.teardown(() => relay.close());
  return { relay, identity, port };
}

test('a cluster relay links with a relay on its --cluster-allow list only, and never with its own address (a reflected hello)', async (t) => {
  const redis = await startRedis(t);
  const friend = Identity.random();
  const { relay, identity, port } = await clusterRelay(t, redis.url, [friend.address]);
  const target = { host: '127.0.0.1', port };
  const ok = await dialRelay(target, friend, relay.server.address, { role: 'relay' });
  ok.socket.destroy();
  t.regex(await refused(dialRelay(target, Identity.random(), undefined, { role: 'relay' })), /hello refused: relay 0x[0-9a-fA-F]{40} is not on the --cluster-allow list/);
  t.regex(await refused(dialRelay(target, identity, undefined, { role: 'relay' })), /is this relay itself/);
  t.is(relay.server.stats.get('peer_rejected'), 2);
  t.is(relay.server.stats.get('peer_session_opened'), 1);
});

test('a relay on its own refuses any relay-to-relay link', async (t) => {
  const relay = await startRelay({ listen: { host: '127.0.0.1', port: 0 }, home: tempDir(t), identity: Identity.random(), log: silentLogger });
  t.teardown(() => relay.close());
  t.regex(await refused(dialRelay({ host: '127.0.0.1', port: relay.port }, Identity.random(), undefined, { role: 'relay' })), /this relay is not in a cluster/);
  t.is(relay.server.stats.get('peer_rejected'), 1);
});

async function connectThrough(port: number, to: string): Promise<{ code?: string; message: string }> {
  const { socket } = await dialRelay({ host: '127.0.0.1', port }, Identity.random());
  const mux = new MuxSession(socket, { role: 'client' });
  try {
    const stream = mux.open();
    stream.on('error', () => {});
    await requestStream(stream, { t: 'connect', to, port: 22 });
    return { message: 'ok' };
  } catch (err) {
    return { code: err instanceof HeaderRefused ? err.reply?.code : undefined, message: String((err as Error).message) };
  } finally {
    mux.close();
  }
}

test('a stale map entry never routes: the named relay answers offline and fixes it, and an unreachable relay\'s entry is dropped', async (t) => {
  const redis = await startRedis(t);
  const aId = Identity.random();
  const bId = Identity.random();
  const dead = Identity.random();
  const a = await clusterRelay(t, redis.url, [bId.address, dead.address], aId);
  const b = await clusterRelay(t, redis.url, [aId.address], bId);
  const device = Identity.random().address;
  const key = `diode:dev:${device.toLowerCase()}`;

  // The map says b holds the device (left from before a restart of b), but b does not.
  await redis.cli('set', key, encodeEntry(bId.address, { host: '127.0.0.1', port: b.port }, Date.now()), 'px', '60000');
  const viaB = await connectThrough(a.port, device);
  t.is(viaB.code, 'offline');
  t.is(await redis.cli('exists', key), '0');
  t.is(b.relay.server.stats.get('cluster_stale_here'), 1);

  // The map names a relay that is gone (nothing listens there any more).
  const gonePort = await freePort();
  // Written and announced as a relay would: a remembers the device as absent for 5 s after viaB
  // (ABSENT_TTL_MS), and only an announcement ends that early.
  const value = encodeEntry(dead.address, { host: '127.0.0.1', port: gonePort }, Date.now());
  await redis.cli('set', key, value, 'px', '60000');
  await redis.cli('publish', 'diode:moves', `${device} ${value}`);
  await new Promise((resolve) => setTimeout(resolve, 500));
  const started = Date.now();
  const viaDead = await connectThrough(a.port, device);
  t.is(viaDead.code, 'offline');
  t.regex(viaDead.message, /unreachable/);
  t.true(Date.now() - started < 3000);
  t.is(await redis.cli('exists', key), '0');
});
