import { UsageError } from '../util/errors.ts';
import { SYSTEM_HOME } from '../identity/home.ts';
/** A retired relay exits with it (agent/relay/retire.ts); its unit must not start it again. */
export const RETIRED_EXIT_CODE = 10;

// The systemd unit `diode service install` writes (and `--print` shows).

/** Commands that run as a service. */
export type ServiceRole = 'publish' | 'socksd' | 'bind' | 'relay';
export const SERVICE_ROLES: readonly ServiceRole[] = ['publish', 'socksd', 'bind', 'relay'];

/** Open files a relay may hold: two per relayed stream plus sessions and gateway connections. */
export const RELAY_NOFILE = 1_048_576;
/** s between a crash and the restart (no start limit: a device keeps trying for months). */
export const RESTART_SEC = 5;
/**
 * MiB of V8 old space an agent (publish, socksd, bind) may use: a bound that
 * holds on every board, where V8's own default is a quarter of the RAM. An
 * idle agent's heap holds ≈ 5 MB, one with 1,000 end-to-end streams open
 * ≈ 18 MB (13 KB a stream), so a device at its 4,096-stream cap fits twice;
 * a leak past it ends the process (systemd restarts it) before it starves
 * a Pi Zero 2 W's 512 MB. Given as NODE_OPTIONS, which the single
 * executable honours too (V8 heap limits cannot be set once it runs).
 */
export const AGENT_HEAP_MIB = 128;
/** The unit line that applies AGENT_HEAP_MIB. */
export const AGENT_HEAP_ENVIRONMENT = `Environment=NODE_OPTIONS=--max-old-space-size=${AGENT_HEAP_MIB}`;

/** The system user a system unit runs as (the Debian package creates the same one). */
export const SERVICE_USER = 'diode';
/** The system unit's state directory (identity/home.ts: root's default only while root owns it). */
export const SYSTEM_STATE_DIR = SYSTEM_HOME;

export interface UnitOptions {
  role: ServiceRole;
  /** diode's own arguments after the role, as given (validated by the caller) */
  args: string[];
  /** how to start diode: [binary] for the single executable, [node, bundle] otherwise */
  exec: string[];
  /** a user unit (systemctl --user) instead of a system one */
  user: boolean;
  /** --home given among args: the unit leaves the state directory to it */
  home?: string;
  /** e.g. "0.1.0 (commit abc)" */
  version: string;
}

export function unitName(role: ServiceRole): string {
  return `diode-${role}.service`;
}

const DESCRIPTIONS: Record<ServiceRole, string> = {
  publish: "diode publish: this device's ports through the relay network",
  socksd: 'diode socksd: SOCKS proxy to <address>.diode',
  bind: 'diode bind: local ports forwarded to device ports',
  relay: 'diode relay: authenticates agents and routes their streams',
};

/** One ExecStart word: quoted when needed; % and $ escaped so systemd passes them through. */
export function quoteExecArg(arg: string): string {
  if (/[\n\r]/.test(arg)) throw new UsageError(`an argument with a line break cannot go into a unit: ${JSON.stringify(arg)}`);
  const escaped = arg.replace(/%/g, '%%').replace(/\$/g, '$$$$');
  if (escaped !== '' && /^[A-Za-z0-9_@%+=:,./-]+$/.test(escaped)) return escaped;
  return `"${escaped.replace(/\\/g, '\\\\').replace(/"/g, '\\"')}"`;
}

export function renderUnit(o: UnitOptions): string {
  const relay = o.role === 'relay';
  const underHome = o.exec.some((p) => p.startsWith('/home/') || p.startsWith('/root/')) || (o.home ?? '').match(/^\/(home|root)\//);
  const lines = [
    `# Written by \`diode service install\` (diode ${o.version}).`,
    `# Remove with: diode service uninstall${o.user ? ' --user' : ''} ${o.role}`,
    '[Unit]',
    `Description=${DESCRIPTIONS[o.role]}`,
    // No hard wait for the network: the agent retries relays by itself.
    'Wants=network-online.target',
    'After=network-online.target',
    'StartLimitIntervalSec=0',
    '',
    '[Service]',
    'Type=exec',
    `ExecStart=${[...o.exec, o.role, ...o.args].map(quoteExecArg).join(' ')}`,
    ...(relay ? [] : [AGENT_HEAP_ENVIRONMENT]),
    'Restart=always',
    `RestartSec=${RESTART_SEC}`,
    'NoNewPrivileges=yes',
  ];
  // A user unit gets no mount sandbox (ProtectSystem=... needs privileges a
  // user manager lacks without user namespaces) and keeps ~/.config/diode.
  if (!o.user) {
    lines.push(
      `User=${SERVICE_USER}`,
      `Group=${SERVICE_USER}`,
      // /var/lib/diode, created and owned by the service user (the key lives here).
      'StateDirectory=diode',
      'StateDirectoryMode=0700',
      ...(o.home ? [`ReadWritePaths=${quoteExecArg(o.home)}`] : [`Environment=DIODE_HOME=${SYSTEM_STATE_DIR}`]),
      'ProtectSystem=strict',
      // The program itself may live under /home or /root when run from a checkout.
      `ProtectHome=${underHome ? 'read-only' : 'yes'}`,
      'PrivateTmp=yes',
      'PrivateDevices=yes',
      'ProtectKernelTunables=yes',
      'ProtectKernelModules=yes',
      'ProtectKernelLogs=yes',
      'ProtectControlGroups=yes',
      'ProtectClock=yes',
      'ProtectHostname=yes',
      'RestrictAddressFamilies=AF_INET AF_INET6 AF_UNIX',
      'RestrictNamespaces=yes',
      'RestrictRealtime=yes',
      'RestrictSUIDSGID=yes',
      'LockPersonality=yes',
      'SystemCallArchitectures=native',
      // Node's JIT needs writable and executable memory: no MemoryDenyWriteExecute.
      relay ? 'AmbientCapabilities=CAP_NET_BIND_SERVICE' : 'AmbientCapabilities=',
      relay ? 'CapabilityBoundingSet=CAP_NET_BIND_SERVICE' : 'CapabilityBoundingSet=',
    );
  }
  if (relay) lines.push(`LimitNOFILE=${RELAY_NOFILE}`, `RestartPreventExitStatus=${RETIRED_EXIT_CODE}`);
  lines.push('', '[Install]', `WantedBy=${o.user ? 'default.target' : 'multi-user.target'}`, '');
  return lines.join('\n');
}
