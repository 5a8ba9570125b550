import { createServer, type Server } from 'node:http';
import { Counter, Gauge, Histogram, Registry, collectDefaultMetrics } from 'prom-client';
import type { HostPort } from '../util/hostport.ts';
import type { Logger } from '../util/log.ts';
import { formatHostPort } from '../util/hostport.ts';
import { listenOn } from '../util/listen.ts';
import type { RelayStats } from '../relay/stats.ts';
import type { AgentStatus } from './status.ts';

// `--metrics HOST:PORT`: Prometheus text on /metrics, a health answer on
// /healthz. Loaded only when asked for (prom-client is not in an agent's
// heap otherwise). Every number is read at scrape time from the same objects
// `diode status` reads (StreamStats, the relay's RelayStats), so the
// metrics, the status and the relay's shutdown counters never disagree.

/** Buckets (seconds) for admission (TCP accept → hello verified) and stream set-up (connect → device's ok). */
const SETUP_BUCKETS = [0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10];

export interface MetricsSource {
  status: () => AgentStatus;
  /** relay only: its named counters and timings */
  relayStats?: RelayStats;
}

export interface MetricsServer {
  port: number;
  registry: Registry;
  close(): Promise<void>;
}

/** Sorts a relay counter name into the family it is exported in. */
export function classifyRelayCounter(name: string): { family: 'handshake_failures' | 'refusals' | 'gateway' | 'events'; label: string } {
  if (name === 'handshake_timeout' || name === 'hello_rejected' || name.startsWith('handshake_')) return { family: 'handshake_failures', label: name.replace(/^handshake_/, '') };
  if (name.startsWith('gateway_')) return { family: 'gateway', label: name.slice('gateway_'.length) };
  if (name.startsWith('refused_')) return { family: 'refusals', label: name.slice('refused_'.length) };
  if (name.startsWith('route_')) return { family: 'refusals', label: `route_${name.slice('route_'.length)}` };
  return { family: 'events', label: name };
}

export function buildRegistry(source: MetricsSource): Registry {
  const registry = new Registry();
  // Standard names (process_*, nodejs_*), as dashboards for Node services expect.
  collectDefaultMetrics({ register: registry });
  const role = source.status().role;
  registry.setDefaultLabels({ role });
  // One status per scrape, shared by every collector below.
  let cached: { at: number; status: AgentStatus } | undefined;
  const status = () => {
    const now = Date.now();
    if (!cached || now - cached.at > 50) cached = { at: now, status: source.status() };
    return cached.status;
  };
  new Gauge({
    name: 'diode_connected',
    help: 'Agents: 1 while a relay session is up. Relay: 1 while listening.',
    registers: [registry],
    collect() {
      this.set(status().connected ? 1 : 0);
    },
  });
  new Gauge({
    name: 'diode_streams_open',
    help: 'Streams carrying bytes right now.',
    registers: [registry],
    collect() {
      this.set(status().streams.open);
    },
  });
  new Counter({
    name: 'diode_streams_total',
    help: 'Streams by result: ok (set up and carried bytes) or the reason it was refused or failed.',
    labelNames: ['result'],
    registers: [registry],
    collect() {
      const s = status().streams;
      this.reset();
      this.inc({ result: 'ok' }, s.opened);
      for (const [reason, n] of Object.entries(s.failed)) this.inc({ result: reason }, n);
    },
  });
  new Counter({
    name: 'diode_bytes_total',
    help: 'Bytes by direction: rx received, tx sent (agents: through their tunnels; relay: on agent sessions, TLS included).',
    labelNames: ['direction'],
    registers: [registry],
    collect() {
      const b = status().streams.bytes;
      this.reset();
      this.inc({ direction: 'rx' }, b.rx);
      this.inc({ direction: 'tx' }, b.tx);
    },
  });
  if (source.relayStats) addRelayMetrics(registry, source.relayStats, status);
  if (status().update) addUpdateMetrics(registry, status);
  return registry;
}

/** A device's releases: checks, downloads and refusals of this process; updates applied and rollbacks of its state directory, ever. */
function addUpdateMetrics(registry: Registry, status: () => AgentStatus): void {
  const byLabel = (name: string, help: string, label: string, pick: (u: NonNullable<AgentStatus['update']>) => Record<string, number>) =>
    new Counter({
      name,
      help,
      labelNames: [label],
      registers: [registry],
      collect() {
        const u = status().update;
        this.reset();
        if (u) for (const [value, n] of Object.entries(pick(u))) this.inc({ [label]: value }, n);
      },
    });
  byLabel('diode_update_checks_total', 'Checks of the relay for a newer release, by result (up_to_date, applied, newer, refused, failed, no_relay).', 'result', (u) => u.counters.checks);
  byLabel('diode_update_downloads_total', 'Release downloads, by result (ok, failed).', 'result', (u) => u.counters.downloads);
  byLabel('diode_update_refusals_total', 'Releases refused, by reason (bad_signature, unknown_key, wrong_arch, not_newer, rolled_back, hash_mismatch, size_mismatch, ...).', 'reason', (u) => u.counters.refusals);
  const persisted = (name: string, help: string, pick: (u: NonNullable<AgentStatus['update']>) => number) =>
    new Counter({
      name,
      help,
      registers: [registry],
      collect() {
        this.reset();
        this.inc(pick(status().update!) ?? 0);
      },
    });
  persisted('diode_updates_applied_total', 'Updates installed and switched to in this state directory, ever (each then on trial).', (u) => u.applied);
  persisted('diode_update_rollbacks_total', 'Updates rolled back in this state directory, ever (did not reach a relay in time, or exited first).', (u) => u.rollbacks);
}

function addRelayMetrics(registry: Registry, stats: RelayStats, status: () => AgentStatus): void {
  new Gauge({
    name: 'diode_relay_sessions',
    help: 'Authenticated agent sessions.',
    registers: [registry],
    collect() {
      this.set(status().sessions ?? 0);
    },
  });
  new Gauge({
    name: 'diode_relay_buffered_bytes',
    help: 'Bytes streams make the relay hold now: partial frames, bytes behind a header not yet answered, what slow far sides have not taken (capped by --session-, --source- and --stream-buffer-budget).',
    registers: [registry],
    collect() {
      this.set(status().buffered ?? 0);
    },
  });
  const families = {
    // Registered first of the four, so its collect() copies all of them before any is read.
    handshake_failures: new Counter({ name: 'diode_relay_handshake_failures_total', help: 'Connections dropped before they were authenticated, by reason.', labelNames: ['reason'], registers: [registry], collect: () => sync() }),
    refusals: new Counter({ name: 'diode_relay_refusals_total', help: 'Requests the relay refused, by reason (route_<reply>: a connect it could not route).', labelNames: ['reason'], registers: [registry] }),
    gateway: new Counter({ name: 'diode_relay_gateway_total', help: "The public gateway's counters, by event.", labelNames: ['event'], registers: [registry] }),
    events: new Counter({ name: 'diode_relay_events_total', help: 'Every other relay counter (sessions opened and replaced, streams routed, ...), by event.', labelNames: ['event'], registers: [registry] }),
  };
  // The counters live in RelayStats (the line the relay prints on shutdown); each scrape copies them.
  const sync = () => {
    for (const c of Object.values(families)) c.reset();
    for (const [name, value] of Object.entries(stats.snapshot())) {
      const { family, label } = classifyRelayCounter(name);
      (families[family] as Counter<string>).inc(family === 'gateway' || family === 'events' ? { event: label } : { reason: label }, value);
    }
  };
  const histograms: Record<string, Histogram> = {
    admission: new Histogram({ name: 'diode_relay_admission_seconds', help: 'TCP accept to verified hello, for connections that were admitted.', buckets: SETUP_BUCKETS, registers: [registry] }),
    stream_setup: new Histogram({ name: 'diode_relay_stream_setup_seconds', help: "An agent's connect to the device's ok.", buckets: SETUP_BUCKETS, registers: [registry] }),
  };
  stats.setObserver((name, seconds) => histograms[name]?.observe(seconds));
}

/** Serves /metrics and /healthz (200 "ok" while connected or listening, else 503) on host:port. */
export async function startMetricsServer(listen: HostPort, source: MetricsSource, log: Logger): Promise<MetricsServer> {
  const registry = buildRegistry(source);
  const server: Server = createServer((req, res) => {
    const path = (req.url ?? '/').split('?')[0];
    if (req.method !== 'GET' && req.method !== 'HEAD') {
      res.writeHead(405, { Allow: 'GET, HEAD' }).end();
      return;
    }
    if (path === '/metrics') {
      registry.metrics().then(
        (text) => res.writeHead(200, { 'Content-Type': registry.contentType }).end(text),
        (err: Error) => res.writeHead(500, { 'Content-Type': 'text/plain' }).end(`${err.message}\n`),
      );
      return;
    }
    if (path === '/healthz') {
      const s = source.status();
      res.writeHead(s.connected ? 200 : 503, { 'Content-Type': 'text/plain' }).end(s.connected ? 'ok\n' : 'not connected\n');
      return;
    }
    res.writeHead(404, { 'Content-Type': 'text/plain' }).end('try /metrics or /healthz\n');
  });
  const port = await listenOn(server, listen, '--metrics');
  log.info(`metrics on http://${formatHostPort({ host: listen.host, port })}/metrics`);
  return {
    port,
    registry,
    close: () =>
      new Promise<void>((resolve) => {
        source.relayStats?.setObserver(undefined);
        server.closeAllConnections();
        server.close(() => resolve());
      }),
  };
}
