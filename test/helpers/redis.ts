import { execFile } from 'node:child_process';
import { createServer } from 'node:net';
import { join } from 'node:path';
import { promisify } from 'node:util';
import type { ExecutionContext } from 'ava';
import { start, tempDir, type Running } from './diode.ts';

const run = promisify(execFile);
export const REDIS_SERVER = '/usr/bin/redis-server';

/** A redis-server of the test's own on a loopback port: no persistence, killed when the test ends. */
export interface RedisServer {
  port: number;
  url: string;
  proc: Running;
  /** Stops it (SIGTERM; SIGKILL after 3 s). */
  stop(): Promise<void>;
  /** Starts it again on the same port, empty (no persistence). */
  restart(): Promise<void>;
  cli(...args: string[]): Promise<string>;
}

function portFree(port: number): Promise<boolean> {
  return new Promise((resolve) => {
    const server = createServer();
    server.once('error', () => resolve(false));
    server.listen(port, '127.0.0.1', () => server.close(() => resolve(true)));
  });
}

/** A free port below 55536 whose +10000 (a Redis Cluster node's bus port) is free too. */
async function redisPort(): Promise<number> {
  for (let i = 0; i < 50; i++) {
    const port = 20_000 + Math.floor(Math.random() * 25_000);
    if ((await portFree(port)) && (await portFree(port + 10_000))) return port;
  }
  throw new Error('no free port pair for redis-server');
}

async function launch(t: ExecutionContext, port: number, extra: string[]): Promise<Running> {
  const proc = start(t, ['--port', String(port), '--bind', '127.0.0.1', '--save', '', '--appendonly', 'no', ...extra], { command: REDIS_SERVER });
  await proc.waitFor(/Ready to accept connections/, 10_000);
  return proc;
}

export async function startRedis(t: ExecutionContext, extra: string[] = []): Promise<RedisServer> {
  const port = await redisPort();
  const dir = tempDir(t, 'diode-redis-');
  const args = ['--dir', dir, ...extra];
  const server: RedisServer = {
    port,
    url: `redis://127.0.0.1:${port}`,
    proc: await launch(t, port, args),
    stop: () => server.proc.stop(),
    async restart() {
      await server.proc.stop();
      server.proc = await launch(t, port, args);
    },
    cli: async (...cmd) => (await run('redis-cli', ['-p', String(port), ...cmd])).stdout.trim(),
  };
  return server;
}

/** Three redis-server nodes joined by `redis-cli --cluster create` (no replicas), ready for commands. */
export async function startRedisCluster(t: ExecutionContext, size = 3): Promise<{ nodes: RedisServer[]; url: string }> {
  const nodes: RedisServer[] = [];
  for (let i = 0; i < size; i++) {
    const dir = tempDir(t, 'diode-redis-cluster-');
    nodes.push(await startRedis(t, ['--cluster-enabled', 'yes', '--cluster-config-file', join(dir, 'nodes.conf'), '--cluster-node-timeout', '2000']));
  }
  await run('redis-cli', ['--cluster', 'create', ...nodes.map((n) => `127.0.0.1:${n.port}`), '--cluster-replicas', '0', '--cluster-yes'], { timeout: 30_000 });
  const deadline = Date.now() + 20_000;
  for (const node of nodes) {
    while (!/cluster_state:ok/.test(await node.cli('cluster', 'info'))) {
      if (Date.now() > deadline) throw new Error(`Redis Cluster node ${node.port} never reached cluster_state:ok`);
      await new Promise((r) => setTimeout(r, 200));
    }
  }
  return { nodes, url: nodes.map((n) => n.url).join(',') };
}
