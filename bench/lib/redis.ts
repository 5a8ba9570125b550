import { startProcess, type BenchProcess } from './procs.ts';
import { freePort, scratch } from './paths.ts';

/** A throw-away redis-server on a loopback port, no persistence (the relays' cluster map). */
export async function startRedis(name = 'redis'): Promise<{ port: number; proc: BenchProcess }> {
  const port = await freePort();
  const proc = startProcess(name, 'redis-server', ['--port', String(port), '--bind', '127.0.0.1', '--save', '', '--appendonly', 'no', '--dir', scratch(name)]);
  await proc.waitFor(/Ready to accept connections/);
  return { port, proc };
}
