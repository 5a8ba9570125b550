// The fleet RPC is trusted: whatever it answers for deviceWhitelist() decides who
// reaches a protected port. So it must be a node on this machine or one reached over
// TLS; this check has no dependencies so the config layer can use it too.

/** Host names that stay on this machine: plain http:// and ws:// are accepted for these only. */
export function isLoopbackHost(hostname: string): boolean {
  const host = hostname.replace(/^\[|\]$/g, '').toLowerCase();
  return host === 'localhost' || host.endsWith('.localhost') || host === '::1' || /^127\.\d{1,3}\.\d{1,3}\.\d{1,3}$/.test(host) || /^::ffff:127\./.test(host);
}

/**
 * Why `rpc` cannot be the fleet RPC, in one sentence naming `setting`, or
 * undefined when it can: an http(s):// or ws(s):// URL, and TLS unless the
 * host is loopback.
 */
export function rpcUrlProblem(rpc: string, setting: string): string | undefined {
  let url: URL;
  try {
    url = new URL(rpc);
  } catch {
    return `${setting}: RPC URL "${rpc}" is not a URL; give a JSON-RPC endpoint such as https://rpc.example.org or http://127.0.0.1:8545`;
  }
  if (!['http:', 'https:', 'ws:', 'wss:'].includes(url.protocol)) {
    return `${setting}: RPC URL "${rpc}" must be an https:// or wss:// JSON-RPC URL (http:// and ws:// only on this machine)`;
  }
  if ((url.protocol === 'http:' || url.protocol === 'ws:') && !isLoopbackHost(url.hostname)) {
    const secure = url.protocol === 'http:' ? 'https://' : 'wss://';
    return (
      `${setting}: RPC URL "${rpc}" is plain ${url.protocol.slice(0, -1)} to another machine; the fleet RPC decides who may reach protected ports, ` +
      `so anyone on the path could admit anyone: use ${secure} (plain http:// and ws:// only for a node on this machine: 127.0.0.1, ::1, localhost)`
    );
  }
  return undefined;
}
