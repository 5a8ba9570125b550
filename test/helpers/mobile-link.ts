import { spawn } from 'node:child_process';
import { createSocket, type Socket } from 'node:dgram';
import { once } from 'node:events';
import { performance } from 'node:perf_hooks';
import type { ExecutionContext } from 'ava';
import { sh, type Host, type Net } from './netns.ts';

// An emulated mobile link between a host and the hub (issue 29 item 5: the
// device's link 40 ± 10 ms, 0.5 % loss). This machine's kernel has no
// sch_netem, so the host's veth is replaced by a pair of TUN devices with the
// same names and addresses, and every IP packet between them passes through
// this process: delayed (uniform in delay ± jitter, each direction, so packets
// may reorder as with netem's jitter) or dropped at random. socat opens each
// TUN device (Node has no ioctl) and carries its packets as UDP datagrams on
// this machine's loopback, one packet a datagram; the devices are then moved
// into their namespaces, where the kernel's TCP sees real delay and loss.

export interface LinkSpec {
  /** One-way delay each direction, ms. */
  delayMs: number;
  jitterMs: number;
  /** Fraction of packets dropped, each direction. */
  loss: number;
}

/** The mobile link. */
export const MOBILE_LINK: LinkSpec = Object.freeze({ delayMs: 40, jitterMs: 10, loss: 0.005 });

export interface LinkCounts {
  forwarded: number;
  dropped: number;
}

/** Why this machine cannot emulate the link (no socat, or TUN refused), or undefined when it can. */
export async function mobileLinkRefusal(): Promise<string | undefined> {
  try {
    await sh('socat', ['-V']);
  } catch {
    return 'socat is not installed (apt-get install socat)';
  }
  return undefined;
}

async function boundSocket(): Promise<Socket> {
  const s = createSocket('udp4');
  s.bind(0, '127.0.0.1');
  await once(s, 'listening');
  return s;
}

/** A UDP port free on 127.0.0.1 for socat's end (taken and given back at once). */
async function freeUdpPort(): Promise<number> {
  const s = await boundSocket();
  const { port } = s.address();
  await new Promise<void>((r) => s.close(() => r()));
  return port;
}

async function until(what: string, pred: () => Promise<boolean>, ms: number): Promise<void> {
  const deadline = Date.now() + ms;
  while (!(await pred())) {
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 50));
  }
}

/**
 * Replaces the host's veth to the hub by the emulated link (same interface
 * names, addresses and default route, so Net's cut, changeAddress and the
 * like work on it unchanged). Returns live packet counts.
 */
export async function emulateLink(t: ExecutionContext, net: Net, host: Host, spec: LinkSpec = MOBILE_LINK): Promise<LinkCounts> {
  const counts: LinkCounts = { forwarded: 0, dropped: 0 };
  await sh('ip', ['-n', host.ns, 'link', 'del', host.ifname]);
  const ends = [
    { name: host.hubIf, ns: net.hub, sock: await boundSocket(), peerPort: await freeUdpPort() },
    { name: host.ifname, ns: host.ns, sock: await boundSocket(), peerPort: await freeUdpPort() },
  ];
  const timers = new Set<NodeJS.Timeout>();
  const socats = ends.map((e) => {
    const child = spawn('socat', ['-b', '65536', `TUN,tun-name=${e.name},iff-no-pi,tun-type=tun`, `UDP:127.0.0.1:${e.sock.address().port},bind=127.0.0.1:${e.peerPort}`], { stdio: ['ignore', 'ignore', 'pipe'] });
    let err = '';
    child.stderr!.on('data', (d) => { err += d; });
    child.once('exit', (code) => { if (code) t.log(`socat for ${e.name} exited ${code}: ${err.trim()}`); });
    return child;
  });
  t.teardown(() => {
    for (const timer of timers) clearTimeout(timer);
    for (const c of socats) c.kill('SIGKILL');
    for (const e of ends) e.sock.close();
  });
  // A packet read from one TUN device is written to the other after the delay, or dropped.
  ends.forEach((from, i) => {
    const to = ends[1 - i];
    from.sock.on('message', (packet, rinfo) => {
      if (rinfo.port !== from.peerPort) return;
      if (Math.random() < spec.loss) {
        counts.dropped++;
        return;
      }
      const timer = setTimeout(() => {
        timers.delete(timer);
        counts.forwarded++;
        to.sock.send(packet, to.peerPort, '127.0.0.1');
      }, spec.delayMs + (Math.random() * 2 - 1) * spec.jitterMs);
      timers.add(timer);
    });
  });
  for (const e of ends) {
    await until(`socat's TUN device ${e.name}`, () => sh('ip', ['link', 'show', e.name]).then(() => true, () => false), 10_000);
    await sh('ip', ['link', 'set', e.name, 'netns', e.ns]);
  }
  await sh('ip', ['-n', net.hub, 'addr', 'add', `${host.gateway}/24`, 'dev', host.hubIf]);
  await sh('ip', ['-n', net.hub, 'link', 'set', host.hubIf, 'up']);
  await sh('ip', ['-n', host.ns, 'addr', 'add', `${host.addr}/24`, 'dev', host.ifname]);
  await sh('ip', ['-n', host.ns, 'link', 'set', host.ifname, 'up']);
  await sh('ip', ['-n', host.ns, 'route', 'add', 'default', 'via', host.gateway]);
  return counts;
}

/**
 * ms each of `n` TCP connects (nc -z: SYN, SYN-ACK) from the host to `addr`:`port` took, spawning
 * included: the smallest is at least the link's round trip, so it shows the emulation is there.
 */
export async function connectTimes(host: Host, addr: string, port: number, n = 5): Promise<number[]> {
  const times: number[] = [];
  for (let i = 0; i < n; i++) {
    const t0 = performance.now();
    await sh('ip', ['netns', 'exec', host.ns, 'nc', '-z', '-w', '5', addr, String(port)]);
    times.push(performance.now() - t0);
  }
  return times;
}
