import { networkInterfaces } from 'node:os';

/** ms between looks at the machine's addresses. A look is one getifaddrs(3): cheap. */
export const NETWORK_POLL_MS = 1_000;

/**
 * The addresses of the interfaces that are up and running (libuv lists only
 * those), as one string: a link that goes down takes its addresses out of
 * it, a DHCP lease or a route's interface coming up puts them in.
 */
export function networkSignature(): string {
  let list: string[] = [];
  try {
    for (const [name, addresses] of Object.entries(networkInterfaces())) {
      for (const a of addresses ?? []) if (!a.internal) list.push(`${name}/${a.address}`);
    }
  } catch {
    list = ['?']; // at EMFILE and the like: no change seen, never a throw from a timer
  }
  return list.sort().join(',');
}

/**
 * Calls `onChange` when the set of usable addresses changes (a network
 * appeared, came back or moved): the moment to retry at once instead of
 * after the backoff. Returns the stop function.
 */
export function watchNetwork(onChange: () => void, pollMs = NETWORK_POLL_MS, signature: () => string = networkSignature): () => void {
  let last = signature();
  const timer = setInterval(() => {
    const now = signature();
    if (now === last) return;
    last = now;
    try {
      onChange();
    } catch {
      // a listener's failure is not the watch's
    }
  }, pollMs).unref();
  return () => clearInterval(timer);
}

/** Starts watching and returns the stop function: watchNetwork's shape (tests hand RelayLink their own). */
export type NetworkWatch = (onChange: () => void) => () => void;

/**
 * Whether this machine still has `address` (a socket's local address) on
 * any interface. A connection whose local address is gone is dead for sure:
 * nothing sent to that address reaches us any more (a phone-like address
 * change, a DHCP lease replaced). True when the interfaces cannot be listed.
 */
export function hasLocalAddress(address: string): boolean {
  const want = address.replace(/^::ffff:/, '').replace(/%.*$/, '');
  try {
    for (const addresses of Object.values(networkInterfaces())) {
      for (const a of addresses ?? []) if (a.address === want) return true;
    }
    return false;
  } catch {
    return true;
  }
}
