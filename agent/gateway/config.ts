import { readFileSync } from 'node:fs';
import { createSecureContext } from 'node:tls';
import { parseHostPort, type HostPort } from '../util/hostport.ts';
import { UsageError } from '../util/errors.ts';
import { DEFAULT_GATEWAY_LIMITS, type GatewayLimits } from './limits.ts';

export { DEFAULT_GATEWAY_LIMITS, type GatewayLimits };

/**
 * The relay's public gateway: SOCKS5 and HTTP(S) host routing for clients
 * with no agent, to PUBLIC ports only. Every listener is optional; the limits
 * apply to all of them together.
 */
export interface GatewayConfig {
  /** SOCKS5/4a listener (`--gateway-socks`). */
  socks?: HostPort;
  /** Plain HTTP listener (`--gateway-http`). */
  http?: HostPort;
  /** HTTPS listener (`--gateway-https`), same router as HTTP; needs `tls`. */
  https?: HostPort;
  /** Operator certificate and key (PEM) for HTTPS. */
  tls?: { cert: string; key: string };
  /** `<address>.<domain>` and `<address>-<port>.<domain>` route like `.diode`; lowercase, no leading dot. */
  domain?: string;
  limits: GatewayLimits;
}

/** bytes: Node's http parser refuses heads above this anyway (its --max-http-header-size ceiling we allow). */
const MAX_HEADER_BYTES_CEILING = 1024 * 1024;
/** s: the longest idle timeout the flag accepts (a day). */
const MAX_IDLE_TIMEOUT_S = 86_400;
const DOMAIN = /^(?=.{1,253}$)([a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?)(\.[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?)*$/;

/** Refuses a config that cannot work, before anything listens. */
export function validateGatewayConfig(config: GatewayConfig): GatewayConfig {
  const l = config.limits;
  const positive = (n: number, what: string, max: number) => {
    if (!Number.isInteger(n) || n < 1 || n > max) throw new UsageError(`${what} must be an integer from 1 to ${max} (got ${n})`);
  };
  positive(l.maxConns, 'gateway max-conns', 1_000_000);
  positive(l.maxConnsPerIp, 'gateway max-conns-per-ip', l.maxConns);
  positive(l.idleTimeoutMs, 'gateway idle timeout (ms)', MAX_IDLE_TIMEOUT_S * 1000);
  positive(l.maxHeaderBytes, 'gateway max header bytes', MAX_HEADER_BYTES_CEILING);
  positive(l.headerTimeoutMs, 'gateway header timeout (ms)', 600_000);
  positive(l.keepAliveMs, 'gateway keep-alive (ms)', 600_000);
  if (config.https && !config.tls) throw new UsageError('--gateway-https needs --gateway-cert and --gateway-key');
  if (config.tls && !config.https) throw new UsageError('--gateway-cert/--gateway-key serve HTTPS: add --gateway-https HOST:PORT');
  if (config.domain !== undefined && !DOMAIN.test(config.domain)) {
    throw new UsageError(`--gateway-domain "${config.domain}" is not a DNS name (e.g. gw.example.org)`);
  }
  if (config.domain !== undefined && !gatewayEnabled(config)) {
    throw new UsageError('--gateway-domain names what the gateways serve: add --gateway-http, --gateway-https or --gateway-socks HOST:PORT');
  }
  return config;
}

export function gatewayEnabled(config: GatewayConfig): boolean {
  return Boolean(config.socks || config.http || config.https);
}

/** Flag values of `diode relay`, as the command table declares them. */
export interface GatewayFlags {
  'gateway-socks'?: string;
  'gateway-http'?: string;
  'gateway-https'?: string;
  'gateway-domain'?: string;
  'gateway-cert'?: string;
  'gateway-key'?: string;
  'gateway-max-conns'?: string;
  'gateway-max-conns-per-ip'?: string;
  'gateway-idle-timeout'?: string;
}

function intFlag(value: string | undefined, flag: string, fallback: number): number {
  if (value === undefined) return fallback;
  if (!/^\d{1,9}$/.test(value)) throw new UsageError(`${flag}: "${value}" is not a whole number`);
  return Number(value);
}

function readPem(path: string, flag: string): string {
  try {
    return readFileSync(path, 'utf8');
  } catch (err) {
    throw new UsageError(`${flag}: cannot read ${path}: ${(err as Error).message}`);
  }
}

/** Refuses a certificate or key that TLS cannot use, before anything listens (was an OpenSSL stack at start). */
function checkTlsPair(pair: { cert: string; key: string }, certPath: string, keyPath: string): { cert: string; key: string } {
  try {
    createSecureContext(pair);
  } catch (err) {
    const reason = (err as Error & { reason?: string }).reason ?? (err as Error).message;
    const hint = /no start line/i.test(reason) ? 'not PEM (expected -----BEGIN ...-----)' : /key values mismatch/i.test(reason) ? 'the key does not belong to the certificate' : reason;
    throw new UsageError(`--gateway-cert ${certPath} / --gateway-key ${keyPath}: ${hint}`);
  }
  return pair;
}

/** Builds and validates the gateway config from `diode relay` flags. */
export function gatewayConfigFromFlags(flags: GatewayFlags): GatewayConfig {
  const listen = (flag: keyof GatewayFlags) => {
    const v = flags[flag];
    return v === undefined ? undefined : parseHostPort(v, `--${flag}`, '0.0.0.0', true);
  };
  const certPath = flags['gateway-cert'];
  const keyPath = flags['gateway-key'];
  if ((certPath === undefined) !== (keyPath === undefined)) throw new UsageError('--gateway-cert and --gateway-key go together');
  const idleS = intFlag(flags['gateway-idle-timeout'], '--gateway-idle-timeout', DEFAULT_GATEWAY_LIMITS.idleTimeoutMs / 1000);
  if (idleS > MAX_IDLE_TIMEOUT_S) throw new UsageError(`--gateway-idle-timeout: at most ${MAX_IDLE_TIMEOUT_S} seconds`);
  return validateGatewayConfig({
    socks: listen('gateway-socks'),
    http: listen('gateway-http'),
    https: listen('gateway-https'),
    tls: certPath && keyPath ? checkTlsPair({ cert: readPem(certPath, '--gateway-cert'), key: readPem(keyPath, '--gateway-key') }, certPath, keyPath) : undefined,
    domain: flags['gateway-domain']?.toLowerCase().replace(/^\.|\.$/g, ''),
    limits: {
      ...DEFAULT_GATEWAY_LIMITS,
      maxConns: intFlag(flags['gateway-max-conns'], '--gateway-max-conns', DEFAULT_GATEWAY_LIMITS.maxConns),
      maxConnsPerIp: intFlag(flags['gateway-max-conns-per-ip'], '--gateway-max-conns-per-ip', DEFAULT_GATEWAY_LIMITS.maxConnsPerIp),
      idleTimeoutMs: idleS * 1000,
    },
  });
}
