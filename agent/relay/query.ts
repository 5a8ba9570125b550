import type { DeviceInfo, Ping, PortInfo } from '../protocol/messages.ts';
import { requestStream, HeaderRefused } from '../protocol/request.ts';
import { errorMessage } from '../util/errors.ts';
import type { SessionSet } from './registry.ts';
import type { Directory } from './directory.ts';
import { RouteError, openDeviceStream, withShare, type Caller } from './router.ts';
import type { CallerShares } from './fair-share.ts';

/**
 * What a query names: whether `address` publishes on this relay, since when,
 * and the ports `caller` may see. Public ports are named to anyone; a private
 * port only to a caller on its allow list (others would learn nothing they
 * could use, but the list is the device owner's); protected ports never,
 * since the relay cannot check the fleet contract and the device does not
 * want strangers to learn they exist.
 */
export async function describeDevice(registry: SessionSet, directory: Directory, caller: string, address: string): Promise<DeviceInfo> {
  const device = registry.publisher(address);
  if (!device) {
    // In a cluster the device may be on another relay: online, but its ports are known only there.
    const where = await directory.locate(address).catch(() => undefined);
    if (where?.kind === 'relay') return { t: 'info', address, online: true, relay: where.relay, ports: [] };
    return { t: 'info', address, online: false, ports: [] };
  }
  const ports: PortInfo[] = [];
  for (const p of [...device.ports.values()].sort((a, b) => a.port - b.port)) {
    if (p.mode === 'public' || (p.mode === 'private' && p.allow?.includes(caller))) ports.push({ port: p.port, mode: p.mode });
  }
  return { t: 'info', address, online: true, ...(device.publishingSince !== undefined ? { since: device.publishingSince } : {}), ports };
}

export interface PingRequest {
  registry: SessionSet;
  relayAddress: string;
  /** Who pings: an agent, counted in the fair share toward the device as its streams are. */
  caller: Extract<Caller, { kind: 'agent' }>;
  to: string;
  shares?: CallerShares;
}

/**
 * Forwards a ping to the device and resolves once it answered ok; the stream
 * is closed either way. A ping is a stream to the device like any other: it
 * takes a slot of the caller's fair share while it waits for the answer, so
 * a ping flood cannot crowd out other callers' streams.
 */
export async function pingDevice({ registry, relayAddress, caller, to, shares }: PingRequest): Promise<void> {
  const device = registry.publisher(to);
  if (!device) throw new RouteError('offline', `device ${to} is not connected`);
  const { stream } = await withShare(shares, caller, to, async () => {
    const stream = openDeviceStream(device, to);
    const header: Ping = { t: 'ping', from: caller.address, via: relayAddress };
    try {
      await requestStream(stream, header);
    } catch (err) {
      const refused = err instanceof HeaderRefused ? err.reply : undefined;
      throw new RouteError(refused?.code ?? 'unavailable', `device ${to} did not answer the ping${refused ? '' : ' (an older diode answers no pings)'}: ${errorMessage(err)}`);
    }
    return { stream, e2e: false, leg: 'link' as const };
  });
  stream.destroy();
}
