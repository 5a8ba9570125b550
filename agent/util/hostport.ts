import { isIPv4, isIPv6 } from 'node:net';
import { UsageError } from './errors.ts';

export interface HostPort {
  host: string;
  port: number;
}

export function parsePort(text: string, what: string, allowZero = false): number {
  if (!/^\d{1,5}$/.test(text)) throw new UsageError(`${what}: "${text}" is not a port number (1-65535)`);
  const port = Number(text);
  if (port > 65535 || (port === 0 && !allowZero)) throw new UsageError(`${what}: port ${text} is outside 1-65535`);
  return port;
}

/** Parses "host:port", "[v6]:port" or ":port"/"port" (host defaults to defaultHost). */
export function parseHostPort(text: string, what: string, defaultHost?: string, allowZero = false): HostPort {
  const trimmed = text.trim();
  let host: string;
  let portText: string;
  const v6 = /^\[([^\]]+)\]:(\d+)$/.exec(trimmed);
  if (v6) {
    host = v6[1];
    portText = v6[2];
  } else {
    const idx = trimmed.lastIndexOf(':');
    if (idx < 0) {
      if (defaultHost === undefined) throw new UsageError(`${what}: "${text}" must be host:port`);
      host = defaultHost;
      portText = trimmed;
    } else {
      host = trimmed.slice(0, idx) || (defaultHost ?? '');
      portText = trimmed.slice(idx + 1);
    }
  }
  if (!host) throw new UsageError(`${what}: "${text}" has no host; write host:port`);
  if (/\s/.test(host)) throw new UsageError(`${what}: "${text}" has a space in its host`);
  return { host, port: parsePort(portText, what, allowZero) };
}

export function formatHostPort(hp: HostPort): string {
  return hp.host.includes(':') ? `[${hp.host}]:${hp.port}` : `${hp.host}:${hp.port}`;
}

/** True for addresses only this machine can reach: 127.0.0.0/8, ::1, localhost. */
export function isLoopbackHost(host: string): boolean {
  const h = host.toLowerCase().replace(/^\[|\]$/g, '');
  return h === 'localhost' || h === '::1' || /^127\.\d{1,3}\.\d{1,3}\.\d{1,3}$/.test(h) || /^::ffff:127\./.test(h);
}

const HOST_NAME = /^(?=.{1,253}$)[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?(\.[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?)*$/i;

/** What is wrong with a host (IP address or name) that could never be reached, in words; undefined when it is well-formed. */
export function hostProblem(host: string): string | undefined {
  if (host.includes(':')) return isIPv6(host) ? undefined : 'is not an IPv6 address';
  if (/^[\d.]+$/.test(host)) return isIPv4(host) ? undefined : 'is not an IPv4 address';
  return HOST_NAME.test(host) ? undefined : 'is not a host name (letters, digits, dashes and dots)';
}
