import type { Logger } from '../util/log.ts';
import type { RelayStats } from '../relay/stats.ts';
import { parseHostPort, type HostPort } from '../util/hostport.ts';
import { versionString } from '../cli/version.ts';
import { startControlSocket } from './control.ts';
import type { AgentRole, AgentStatus } from './status.ts';
import type { MetricsServer } from './metrics.ts';
import { startStreamSocket, type StreamService } from './stream-socket.ts';

export interface OpsOptions {
  home: string;
  role: AgentRole;
  log: Logger;
  status: () => AgentStatus;
  /** --metrics, parsed with parseMetricsFlag before anything started */
  metrics?: HostPort;
  relayStats?: RelayStats;
  /** socksd, bind: streams for `diode proxy` on this agent's relay session (ops/stream-protocol.ts). */
  streams?: StreamService;
}

export interface RunningOps {
  /** the port /metrics is served on, if --metrics was given */
  metricsPort?: number;
  close(): Promise<void>;
}

const STARTED_AT = Date.now();

/** The fields every role's status starts with. */
export function baseStatus(role: AgentRole, address: string): Pick<AgentStatus, 'role' | 'pid' | 'version' | 'startedAt' | 'address'> {
  return { role, pid: process.pid, version: versionString(), startedAt: STARTED_AT, address };
}

/** --metrics HOST:PORT (":9464" and "9464" mean 127.0.0.1): checked before a command starts anything. */
export function parseMetricsFlag(value: unknown): HostPort | undefined {
  return typeof value === 'string' ? parseHostPort(value, '--metrics', '127.0.0.1', true) : undefined;
}

/**
 * What a long-running command serves besides its work: the control socket
 * for `diode status`, and /metrics + /healthz when --metrics is given. The
 * metrics address is checked before anything listens.
 */
export async function startOps(options: OpsOptions): Promise<RunningOps> {
  const metricsAt = options.metrics;
  const control = await startControlSocket(options.home, options.role, options.status, options.log);
  const role = options.role;
  const streams = options.streams && (role === 'socksd' || role === 'bind') ? await startStreamSocket(options.home, role, options.streams, options.log) : undefined;
  let metrics: MetricsServer | undefined;
  if (metricsAt) {
    try {
      const { startMetricsServer } = await import('./metrics.ts');
      metrics = await startMetricsServer(metricsAt, { status: options.status, relayStats: options.relayStats }, options.log);
    } catch (err) {
      await streams?.close();
      await control?.close();
      throw err;
    }
  }
  return {
    metricsPort: metrics?.port,
    close: async () => {
      await metrics?.close();
      await streams?.close();
      await control?.close();
    },
  };
}
