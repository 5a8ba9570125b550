// The gateway's limits and their defaults, apart from config.ts: the flag
// table every command loads (cli/commands.ts) shows the defaults, and
// config.ts loads node:tls, which `diode --version` or `diode proxy` must not.

export interface GatewayLimits {
  /** Concurrent gateway connections (all listeners together). */
  maxConns: number;
  /** Concurrent gateway connections from one source (one IPv4 address, one IPv6 /64). */
  maxConnsPerIp: number;
  /** ms without a byte either way before a gateway connection is closed. */
  idleTimeoutMs: number;
  /** bytes: largest HTTP request head (request line + headers); larger gets 431. */
  maxHeaderBytes: number;
  /** ms a client has to send a complete HTTP request head, TLS handshake or SOCKS handshake. */
  headerTimeoutMs: number;
  /** ms an idle HTTP keep-alive connection stays open between requests. */
  keepAliveMs: number;
}

export const DEFAULT_GATEWAY_LIMITS: Readonly<GatewayLimits> = Object.freeze({
  maxConns: 1024,
  maxConnsPerIp: 32,
  idleTimeoutMs: 300_000,
  maxHeaderBytes: 16 * 1024,
  headerTimeoutMs: 10_000,
  keepAliveMs: 5_000,
});
