// Issue 24 item 2: a cluster map entry is trusted only as far as its relay is, and Redis
// credentials never sit on a command line.
import test, { type ExecutionContext } from 'ava';
import { execFile } from 'node:child_process';
import { chmodSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { promisify } from 'node:util';
import { randomBytes } from 'node:crypto';
import { RedisStore } from '../agent/relay/cluster/redis-store.ts';
import { DEFAULT_CLUSTER_TIMING, parseRedisTarget } from '../agent/relay/cluster/config.ts';
import type { ClusterDirectory } from '../agent/relay/cluster/directory.ts';
import { startRelay as startRelayInProcess } from '../agent/relay/listen.ts';
import { Identity } from '../agent/identity/index.ts';
import { toChecksumAddress } from '../agent/identity/checksum.ts';
import { silentLogger } from '../agent/util/log.ts';
import { runDiode, start, startPublish, tempDir } from './helpers/diode.ts';
import { clusterRelays, makeHome } from './helpers/cluster.ts';
import { startRedis } from './helpers/redis.ts';
import { startOrigin } from './helpers/http.ts';
import { startHostileRelay } from './helpers/hostile-relay.ts';
import { freePort } from './helpers/sshd.ts';

const run = promisify(execFile);
const DOMAIN = 'gw.example.test';
const HOSTILE_PAGE = 'HTTP/1.1 200 OK\r\nContent-Length: 14\r\nConnection: close\r\n\r\nhostile relay\n';
const YEAR_MS = 365 * 24 * 3600 * 1000;

/** GET / of the device's port 80 through a relay's HTTP gateway. */
async function viaGateway(http: number, device: string): Promise<string> {
  const { stdout } = await run('curl', ['-sS', '--max-time', '20', '--connect-to', `::127.0.0.1:${http}`, `http://${device.toLowerCase()}.${DOMAIN}/who`], { timeout: 30_000 });
  return stdout;
}

/** Writes a map entry as anyone with access to Redis could, and announces it as the relays do. */
async function forge(redis: { cli(...args: string[]): Promise<string> }, device: string, value: string): Promise<void> {
  await redis.cli('set', `diode:dev:${device.toLowerCase()}`, value);
  await redis.cli('publish', 'diode:moves', `${device} ${value}`);
}

async function gatewayCluster(t: ExecutionContext, n: number) {
  const redis = await startRedis(t);
  const relays = await clusterRelays(t, redis.url, n, (i) => (i === 0 ? ['--gateway-http', '127.0.0.1:0', '--gateway-domain', DOMAIN] : []));
  for (const r of relays) await r.start();
  const http = Number((await relays[0].proc.waitFor(/gateway http listening on 127\.0\.0\.1:(\d+)/))[1]);
  const origin = await startOrigin(t, 'web');
  const device = await startPublish(t, relays[0].port, ['-public', `${origin.port}:80`]);
  t.regex(await viaGateway(http, device.address), /"name":"web"/);
  return { redis, relays, http, device };
}

test('a map entry naming a relay not on --cluster-allow cannot redirect a device\'s gateway traffic to that relay', async (t) => {
  const { redis, relays, http, device } = await gatewayCluster(t, 1);
  // A relay of nobody's cluster, which would serve its own page and read the requests.
  const hostile = await startHostileRelay(t, () => ({ t: 'ok' }), { roles: ['agent', 'relay'], after: HOSTILE_PAGE });
  await forge(redis, device.address, `${Date.now() + 10 * YEAR_MS} ${hostile.address} 127.0.0.1:${hostile.port}`);
  await new Promise((r) => setTimeout(r, 300));
  const page = await viaGateway(http, device.address);
  t.regex(page, /"name":"web"/, 'the device answered, from its own relay');
  t.deepEqual(hostile.frames, [], 'nothing was forwarded to the unlisted relay');
  await relays[0].proc.waitFor(/cluster map entry of 0x[0-9a-fA-F]{40} ignored: it names relay 0x[0-9a-fA-F]{40}, which is not on --cluster-allow/);
});

test('a map entry dated far ahead of the clock cannot take a device away from its relay, even naming a relay of the cluster', async (t) => {
  const { redis, relays, http, device } = await gatewayCluster(t, 2);
  await forge(redis, device.address, `${Date.now() + YEAR_MS} ${relays[1].address} ${relays[1].at}`);
  await new Promise((r) => setTimeout(r, 300));
  t.regex(await viaGateway(http, device.address), /"name":"web"/);
  t.notRegex(relays[1].proc.output(), /via relay/, 'nothing was forwarded to the other relay');
  await relays[0].proc.waitFor(/cluster map entry of 0x[0-9a-fA-F]{40} ignored: it is dated \d+ s ahead of this relay's clock/);
});

test('a relay\'s claim replaces a forged entry of an unlisted relay or a date far ahead, which would otherwise win every refresh', async (t) => {
  const redis = await startRedis(t);
  const relay = toChecksumAddress(`0x${randomBytes(20).toString('hex')}`);
  const store = new RedisStore({
    target: parseRedisTarget(redis.url),
    relay,
    allow: new Set([relay]),
    advertise: { host: '127.0.0.1', port: 41046 },
    keyPrefix: 'diode:',
    entryTtlMs: 90_000,
    refreshIntervalMs: 30_000,
    log: silentLogger,
  });
  t.teardown(() => store.close());
  await store.start();
  const device = toChecksumAddress(`0x${randomBytes(20).toString('hex')}`);
  const other = toChecksumAddress(`0x${randomBytes(20).toString('hex')}`);
  for (const forged of [`${Date.now() + YEAR_MS} ${other} 10.0.0.9:41046`, `${Date.now() + YEAR_MS} ${relay} 10.0.0.9:41046`]) {
    await redis.cli('set', `diode:dev:${device.toLowerCase()}`, forged);
    store.hold(device, Date.now());
    await new Promise((r) => setTimeout(r, 300));
    const value = await redis.cli('get', `diode:dev:${device.toLowerCase()}`);
    t.regex(value, new RegExp(`^\\d+ ${relay} 127\\.0\\.0\\.1:41046$`), `after ${forged}`);
  }
});

/** A relay of a one-relay cluster on `url`; resolves with its process once it printed its cluster line. */
async function clusterRelay(t: ExecutionContext, url: string, extra: string[] = [], env: NodeJS.ProcessEnv = {}) {
  const { home, address } = await makeHome(t);
  const port = await freePort();
  const proc = start(t, ['relay', '--listen', `127.0.0.1:${port}`, '--home', home, '--cluster', url, '--advertise', `127.0.0.1:${port}`, '--cluster-allow', address, ...extra], { env });
  await proc.waitFor(/cluster .*advertised as/);
  return proc;
}

test('Redis credentials come from a file or the environment, never from the command line; an ACL user works', async (t) => {
  const redis = await startRedis(t, ['--user', 'default', 'off', '--user', 'relay', 'on', '>s3cret-pw', '~diode:*', '&diode:*', '+@all']);
  const url = `redis://relay@127.0.0.1:${redis.port}`;
  // In the URL: refused before anything connects.
  const inUrl = await runDiode(['relay', '--listen', '127.0.0.1:0', '--home', tempDir(t), '--cluster', `redis://relay:s3cret-pw@127.0.0.1:${redis.port}`, '--advertise', '127.0.0.1:1', '--cluster-allow', toChecksumAddress(`0x${'ab'.repeat(20)}`)]);
  t.is(inUrl.code, 2);
  t.regex(inUrl.stderr, /holds a password, which every user of this machine can read in its command line.*--cluster-password-file FILE, or in \$DIODE_CLUSTER_PASSWORD/);
  t.notRegex(inUrl.stderr, /s3cret-pw/, 'and the message does not repeat it');
  // From a file (0600): connects.
  const dir = tempDir(t);
  const file = join(dir, 'redis-password');
  writeFileSync(file, 's3cret-pw\n', { mode: 0o600 });
  const fromFile = await clusterRelay(t, url, ['--cluster-password-file', file]);
  await fromFile.waitFor(/cluster map: connected to redis:\/\/relay@127\.0\.0\.1/);
  t.notRegex(fromFile.output(), /s3cret-pw/);
  // From the environment: connects.
  const fromEnv = await clusterRelay(t, url, [], { DIODE_CLUSTER_PASSWORD: 's3cret-pw' });
  await fromEnv.waitFor(/cluster map: connected to/);
  // A file every user can read: refused.
  chmodSync(file, 0o644);
  const open = await runDiode(['relay', '--listen', '127.0.0.1:0', '--home', tempDir(t), '--cluster', url, '--cluster-password-file', file, '--advertise', '127.0.0.1:1', '--cluster-allow', toChecksumAddress(`0x${'ab'.repeat(20)}`)]);
  t.is(open.code, 2);
  t.regex(open.stderr, /is readable by every user of this machine; chmod 600/);
});

test('a relay reaches Redis over TLS (rediss://) with an ACL user, trusting the operator\'s CA', async (t) => {
  const dir = tempDir(t);
  const [key, cert] = [join(dir, 'redis.key'), join(dir, 'redis.crt')];
  await run('openssl', ['req', '-x509', '-newkey', 'ec', '-pkeyopt', 'ec_paramgen_curve:P-256', '-nodes', '-keyout', key, '-out', cert, '-days', '1', '-subj', '/CN=127.0.0.1', '-addext', 'subjectAltName=IP:127.0.0.1']);
  const tlsPort = await freePort();
  const redis = await startRedis(t, ['--tls-port', String(tlsPort), '--tls-cert-file', cert, '--tls-key-file', key, '--tls-auth-clients', 'no', '--user', 'default', 'off', '--user', 'relay', 'on', '>tls-pw', '~diode:*', '&diode:*', '+@all']);
  t.truthy(redis);
  const relay = await clusterRelay(t, `rediss://relay@127.0.0.1:${tlsPort}`, [], { DIODE_CLUSTER_PASSWORD: 'tls-pw', NODE_EXTRA_CA_CERTS: cert });
  await relay.waitFor(/cluster map: connected to rediss:\/\/relay@127\.0\.0\.1/);
});

test('lookups of an address the map does not hold are remembered for a moment: a flood of connects to it costs one Redis call', async (t) => {
  const redis = await startRedis(t);
  const identity = Identity.random();
  const relay = await startRelayInProcess({
    listen: { host: '127.0.0.1', port: 0 },
    home: tempDir(t),
    identity,
    log: silentLogger,
    cluster: { redis: parseRedisTarget(redis.url), advertise: { host: '127.0.0.1', port: 1 }, allow: new Set([identity.address]), ...DEFAULT_CLUSTER_TIMING },
  });
  t.teardown(() => relay.close());
  const directory = relay.server.directory as ClusterDirectory;
  const unknown = toChecksumAddress(`0x${randomBytes(20).toString('hex')}`);
  const before = directory.store.calls;
  for (let i = 0; i < 100; i++) t.is(await directory.locate(unknown), undefined);
  t.is(directory.store.calls - before, 1, 'one lookup for 100 asks');
  // A claim announced for it ends the memory at once.
  const other = Identity.random().address;
  await redis.cli('publish', 'diode:moves', `${unknown} ${Date.now()} ${other} 127.0.0.1:2`);
  await new Promise((r) => setTimeout(r, 200));
  await directory.locate(unknown);
  t.is(directory.store.calls - before, 2);
});
