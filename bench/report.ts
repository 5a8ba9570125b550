import type { PathResult } from './scenarios/path.ts';
import type { RelayScaleResult } from './scenarios/relay-scale.ts';
import type { SoakResult } from './scenarios/soak.ts';
import type { ProfileSummary } from './lib/profile.ts';
import { round } from './lib/stats.ts';
import type { FloorFigures } from './scenarios/floor.ts';

type Paths = Partial<Record<PathResult['path'], PathResult>>;

export interface Ratios {
  /** diode / ssh-tunnel single-stream throughput. */
  diodeVsSshSingle?: number;
  diodeVsSshMulti?: number;
  /** diode / direct single-stream throughput (what the tunnel keeps of the physical limit). */
  diodeVsDirectSingle?: number;
  /** Round-trip time diode adds over direct, ms. */
  diodeAddedRttP50ms?: number;
  diodeAddedRttP99ms?: number;
  sshAddedRttP50ms?: number;
  sshAddedRttP99ms?: number;
  /** diode / diode-before (the same path from a build of --before REF): single stream and 64 streams. */
  diodeVsBeforeSingle?: number;
  diodeVsBeforeMulti?: number;
  beforeVsSshSingle?: number;
  beforeAddedRttP50ms?: number;
  beforeAddedRttP99ms?: number;
}

export function ratios(paths: Paths): Ratios {
  const { direct, diode } = paths;
  const ssh = paths['ssh-tunnel'];
  const r: Ratios = {};
  if (diode && ssh) {
    r.diodeVsSshSingle = round(diode.singleStream.medianMBps / ssh.singleStream.medianMBps);
    r.diodeVsSshMulti = round(diode.multiStream.totalMBps / ssh.multiStream.totalMBps);
  }
  if (diode && direct) {
    r.diodeVsDirectSingle = round(diode.singleStream.medianMBps / direct.singleStream.medianMBps);
    r.diodeAddedRttP50ms = round((diode.rtt.p50us - direct.rtt.p50us) / 1000);
    r.diodeAddedRttP99ms = round((diode.rtt.p99us - direct.rtt.p99us) / 1000);
  }
  const before = paths['diode-before'];
  if (diode && before) {
    r.diodeVsBeforeSingle = round(diode.singleStream.medianMBps / before.singleStream.medianMBps);
    r.diodeVsBeforeMulti = round(diode.multiStream.totalMBps / before.multiStream.totalMBps);
  }
  if (before && ssh) r.beforeVsSshSingle = round(before.singleStream.medianMBps / ssh.singleStream.medianMBps);
  if (before && direct) {
    r.beforeAddedRttP50ms = round((before.rtt.p50us - direct.rtt.p50us) / 1000);
    r.beforeAddedRttP99ms = round((before.rtt.p99us - direct.rtt.p99us) / 1000);
  }
  if (ssh && direct) {
    r.sshAddedRttP50ms = round((ssh.rtt.p50us - direct.rtt.p50us) / 1000);
    r.sshAddedRttP99ms = round((ssh.rtt.p99us - direct.rtt.p99us) / 1000);
  }
  return r;
}

export interface Target {
  target: string;
  value: string;
  /** undefined when this run did not measure it. */
  pass: boolean | undefined;
}

/** The issue's targets, checked against this run's figures. */
export function targets(paths: Paths, scale: RelayScaleResult[], soak: SoakResult | undefined): Target[] {
  const r = ratios(paths);
  const out: Target[] = [];
  const add = (target: string, value: number | undefined, pass: (v: number) => boolean, unit = '') =>
    out.push({ target, value: value === undefined ? 'not measured' : `${value}${unit}`, pass: value === undefined ? undefined : pass(value) });
  add('diode single stream >= 1.2x ssh-tunnel', r.diodeVsSshSingle, (v) => v >= 1.2, 'x');
  add('diode single stream >= 1.5x ssh-tunnel (aim)', r.diodeVsSshSingle, (v) => v >= 1.5, 'x');
  add('added p50 RTT over direct <= 0.5 ms', r.diodeAddedRttP50ms, (v) => v <= 0.5, ' ms');
  add('added p99 RTT over direct <= 2 ms', r.diodeAddedRttP99ms, (v) => v <= 2, ' ms');
  add('new connection p50 <= 10 ms', paths.diode?.setup.p50ms, (v) => v <= 10, ' ms');
  // Issue 27 (protocol version 4, data connections spliced by the relay).
  const cpu = (role: string) => paths.diode?.processes[role]?.cpuSecPerGiB;
  add('issue 27: relay CPU <= 0.8 s/GiB (end-to-end stream)', cpu('relay'), (v) => v <= 0.8, ' s/GiB');
  const ends = paths.diode ? Math.max(cpu('socksd')!, cpu('publish')!) : undefined;
  add('issue 27: each end <= 1.4 s/GiB (socksd, publish)', ends, (v) => v <= 1.4, ' s/GiB');
  add('issue 27: added p50 RTT over direct <= 0.25 ms', r.diodeAddedRttP50ms, (v) => v <= 0.25, ' ms');
  add('issue 27: added p99 RTT over direct <= 1 ms', r.diodeAddedRttP99ms, (v) => v <= 1, ' ms');
  add('issue 27: new connection p50 <= 7 ms', paths.diode?.setup.p50ms, (v) => v <= 7, ' ms');
  add('issue 27: 64 streams total >= diode-before (same run)', r.diodeVsBeforeMulti, (v) => v >= 1, 'x');
  const biggest = [...scale].sort((a, b) => b.devices - a.devices)[0];
  add(`relay <= 64 KiB per idle device (at ${biggest?.devices ?? 10_000})`, biggest?.relayKiBPerDevice, (v) => v <= 64 && biggest.failed === 0, ' KiB');
  if (biggest && biggest.devices < 10_000) out[out.length - 1].target += ' [target is at 10,000]';
  const agentIdle = paths.diode ? Math.max(paths.diode.processes.publish.rssIdleMB, paths.diode.processes.socksd.rssIdleMB) : undefined;
  add('agent RSS idle <= 60 MB (publish, socksd)', agentIdle, (v) => v <= 60, ' MB');
  const drift = soak ? Math.max(...Object.values(soak.processes).map((p) => p.driftPct)) : undefined;
  add(`memory flat (+-10 %) over ${soak?.minutes ?? 10} min sustained transfer and churn`, drift, (v) => v <= 10, ' % max drift');
  add('churn >= 20 streams/s during the soak', soak?.churn.streamsPerSec, (v) => v >= 20, '/s');
  add('churn: 0 checksummed bytes lost', soak?.churn.bytesLost, (v) => v === 0, ' bytes');
  return out;
}

interface Report {
  startedAt: string;
  commit: string;
  dirty: boolean;
  loadAverage: { start: number[]; end: number[] };
  quick: boolean;
  paths: Paths;
  ratios: Ratios;
  floor?: FloorFigures;
  relayScale: RelayScaleResult[];
  soak?: SoakResult;
  profile?: { dir: string | undefined; processes: ProfileSummary[] };
  targets: Target[];
}

function table(rows: string[][]): string {
  const widths = rows[0].map((_, c) => Math.max(...rows.map((r) => (r[c] ?? '').length)));
  return rows.map((r) => r.map((cell, c) => (c === 0 ? cell.padEnd(widths[c]) : cell.padStart(widths[c]))).join('  ')).join('\n');
}

export function printReport(report: Report): void {
  const w = (s = '') => process.stdout.write(s + '\n');
  const names = (['direct', 'diode', 'diode-before', 'ssh-tunnel'] as const).filter((n) => report.paths[n]);
  w(`\ndiode bench ${report.startedAt} commit ${report.commit}${report.dirty ? '+dirty' : ''}${report.quick ? ' (QUICK: small sizes, not for comparison)' : ''}`);
  w(`load average at start ${report.loadAverage.start.join(' ')}, at end ${report.loadAverage.end.join(' ')}`);
  if (names.length > 0) {
    const p = names.map((n) => report.paths[n]!);
    const first = p[0];
    w();
    w(
      table([
        ['figure', ...names],
        [`single stream MB/s (median of ${first.singleStream.trialsMBps.length} x ${first.singleStream.bytes / 2 ** 20} MiB)`, ...p.map((x) => String(x.singleStream.medianMBps))],
        [`${first.multiStream.streams} streams total MB/s`, ...p.map((x) => String(x.multiStream.totalMBps))],
        [`${first.multiStream.streams} streams per-stream min / max MB/s`, ...p.map((x) => `${x.multiStream.minStreamMBps} / ${x.multiStream.maxStreamMBps}`)],
        [`${first.rtt.bytes}-byte RTT p50 / p99 us (${first.rtt.count})`, ...p.map((x) => `${x.rtt.p50us} / ${x.rtt.p99us}`)],
        [`new connection p50 / p99 ms (${first.setup.count}, warm)`, ...p.map((x) => `${x.setup.p50ms} / ${x.setup.p99ms}`)],
        [`new connection p50 / p99 ms (first ${first.setup.cold.count} after start)`, ...p.map((x) => `${x.setup.cold.p50ms} / ${x.setup.cold.p99ms}`)],
      ]),
    );
    w();
    const rows = [['process', 'path', 'CPU s/GiB', 'RSS idle MB', `RSS ${first.idleStreams} idle streams MB`, 'RSS transfer MB']];
    for (const x of p) {
      for (const [name, f] of Object.entries(x.processes)) rows.push([name, x.path, String(f.cpuSecPerGiB), String(f.rssIdleMB), String(f.rssIdleStreamsMB), String(f.rssTransferMB)]);
    }
    w(table(rows));
  }
  const r = report.ratios;
  if (Object.keys(r).length > 0) {
    w();
    if (r.diodeVsSshSingle !== undefined) w(`diode / ssh-tunnel throughput: single ${r.diodeVsSshSingle}x, ${report.paths.diode!.multiStream.streams} streams ${r.diodeVsSshMulti}x`);
    if (r.diodeVsDirectSingle !== undefined) w(`diode / direct single stream: ${r.diodeVsDirectSingle}x; diode adds RTT p50 ${r.diodeAddedRttP50ms} ms, p99 ${r.diodeAddedRttP99ms} ms over direct`);
    if (r.diodeVsBeforeSingle !== undefined) w(`diode / diode-before: single ${r.diodeVsBeforeSingle}x, ${report.paths.diode!.multiStream.streams} streams ${r.diodeVsBeforeMulti}x`);
    if (r.beforeVsSshSingle !== undefined) w(`diode-before / ssh-tunnel single stream: ${r.beforeVsSshSingle}x`);
    if (r.beforeAddedRttP50ms !== undefined) w(`diode-before adds RTT p50 ${r.beforeAddedRttP50ms} ms, p99 ${r.beforeAddedRttP99ms} ms over direct`);
    if (r.sshAddedRttP50ms !== undefined) w(`ssh-tunnel adds RTT p50 ${r.sshAddedRttP50ms} ms, p99 ${r.sshAddedRttP99ms} ms over direct`);
  }
  for (const [name, f] of Object.entries(report.floor ?? {})) {
    w(`floor ${name} (three bare forwarders) adds RTT p50 ${f.addedRttP50ms} ms, p99 ${f.addedRttP99ms} ms over direct; new connection p50 ${f.setupP50ms} ms, p99 ${f.setupP99ms} ms`);
  }
  if (report.relayScale.length > 0) {
    w();
    w(
      table([
        ['relay scale: devices', 'admitted', 'failed', 'time to admit s', 'admits/s', 'relay RSS before MB', 'after MB', 'KiB / device', 'relay CPU s / 1000'],
        ...report.relayScale.map((s) => [String(s.devices), String(s.admitted), String(s.failed), String(round(s.admitMs / 1000)), String(s.admitPerSec), String(s.relayRssBeforeMB), String(s.relayRssAfterMB), String(s.relayKiBPerDevice), String(s.relayCpuSecPer1000)]),
      ]),
    );
  }
  if (report.soak) {
    const s = report.soak;
    w();
    w(`soak ${s.minutes} min: bulk ${s.bulkMBps} MB/s (${round(s.bulkBytes / 2 ** 30)} GiB); slow reader at ${s.slowReader.rateBps / 1024} KiB/s: writer at most ${s.slowReader.maxAheadMB} MB ahead`);
    const c = s.churn;
    w(`churn: ${c.streams} streams (${c.streamsPerSec}/s, set-up p50 ${c.setupP50ms} ms), ${c.failed} failed${c.firstError ? ` (first: ${c.firstError})` : ''}; ${c.bytesLost} of ${c.bytesSent} checksummed bytes lost; flapping device restarted ${c.flap.restarts}x every ${c.flap.everyS} s, reachable again p50 ${c.flap.reachableP50ms} ms, max ${c.flap.reachableMaxms} ms, ${c.flap.failed} failed`);
    w(table([['process', 'baseline MB', 'end MB', 'max MB', 'max drift %', 'last/first minute %', 'flat'], ...Object.entries(s.processes).map(([n, x]) => [n, String(x.baselineMB), String(x.endMB), String(x.maxMB), String(x.driftPct), String(x.trendPct), x.flat ? 'yes' : 'NO'])]));
    const names = Object.keys(s.processes);
    const minutes = Math.max(...names.map((n) => s.processes[n].perMinuteMB.length));
    w(table([['RSS MB, minute', ...names], ...Array.from({ length: minutes }, (_, i) => [String(i + 1), ...names.map((n) => String(s.processes[n].perMinuteMB[i] ?? '-'))])]));
  }
  if (report.profile) {
    for (const proc of report.profile.processes) {
      w();
      w(`profile ${proc.process} (busy ${proc.busyMs} ms): by file ${proc.byFile.slice(0, 6).map((f) => `${f.file} ${f.selfPct}%`).join(', ')}`);
      w(table([['self %', 'function', 'where'], ...proc.top.map((h) => [String(h.selfPct), h.fn, h.where])]));
    }
  }
  w();
  w(table([['target', 'value', 'result'], ...report.targets.map((t) => [t.target, t.value, t.pass === undefined ? '-' : t.pass ? 'PASS' : 'FAIL'])]));
}
