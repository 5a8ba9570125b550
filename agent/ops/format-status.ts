import type { AgentStatus } from './status.ts';

/** columns the human form of `diode status` never exceeds */
export const STATUS_WIDTH = 80;
const LABEL = 11;

function clock(ms: number): string {
  return new Date(ms).toISOString().replace('T', ' ').slice(0, 19) + 'Z';
}

/** "3d 4h", "2h 5m", "4m 10s", "12s" */
export function formatAge(ms: number): string {
  const s = Math.max(0, Math.floor(ms / 1000));
  const d = Math.floor(s / 86400);
  const h = Math.floor((s % 86400) / 3600);
  const m = Math.floor((s % 3600) / 60);
  if (d > 0) return `${d}d ${h}h`;
  if (h > 0) return `${h}h ${m}m`;
  if (m > 0) return `${m}m ${s % 60}s`;
  return `${s}s`;
}

/** 1023 B, 1.5 KiB, 12.0 MiB, ... */
export function formatBytes(n: number): string {
  const units = ['B', 'KiB', 'MiB', 'GiB', 'TiB'];
  let value = n;
  let i = 0;
  while (value >= 1024 && i < units.length - 1) {
    value /= 1024;
    i++;
  }
  return i === 0 ? `${n} B` : `${value.toFixed(1)} ${units[i]}`;
}

function fit(text: string, width: number): string {
  return text.length <= width ? text : text.slice(0, width - 1) + '…';
}

/** Splits a value longer than width at spaces (a word longer than width is cut). */
function wrap(text: string, width: number): string[] {
  const out: string[] = [];
  let line = '';
  for (const word of text.split(' ')) {
    if (line && line.length + 1 + word.length > width) {
      out.push(line);
      line = '';
    }
    line = line ? `${line} ${word}` : fit(word, width);
  }
  out.push(line);
  return out;
}

/** label, then values joined by commas and wrapped so every line stays within STATUS_WIDTH */
function field(lines: string[], label: string, values: string[]): void {
  const indent = ' '.repeat(2 + LABEL);
  const width = STATUS_WIDTH - indent.length;
  let current = '';
  const rows: string[] = [];
  for (const value of values) {
    const piece = current ? `, ${value}` : value;
    if (current && current.length + piece.length + 1 > width) {
      rows.push(current + ',');
      current = '';
    }
    if (!current && value.length > width) {
      const parts = wrap(value, width);
      rows.push(...parts.slice(0, -1));
      current = parts[parts.length - 1];
    } else current += current ? `, ${value}` : value;
  }
  rows.push(current);
  rows.forEach((row, i) => lines.push((i === 0 ? `  ${label.padEnd(LABEL)}` : indent) + row));
}

/** The update part of a status: whether it updates, the last check, rollbacks. */
function updateLine(u: NonNullable<AgentStatus['update']>, now: number): string[] {
  if (u.keys === 0) return ['never (no update-keys)', ...(u.rollbacks > 0 ? [`${u.rollbacks} rollback${u.rollbacks === 1 ? '' : 's'}`] : [])];
  const out = [`${u.keys} release key${u.keys === 1 ? '' : 's'}`];
  out.push(u.lastCheck ? `checked ${formatAge(now - u.lastCheck.at)} ago: ${u.lastCheck.result}` : 'not checked yet');
  if (u.applied > 0) out.push(`${u.applied} applied`);
  if (u.lastRollback) {
    const r = u.lastRollback;
    out.push(`ROLLED BACK ${r.from} → ${r.to} ${formatAge(now - r.at)} ago (${r.reason})`);
  }
  if (!u.launcher) out.push('not under the launcher: updates are not applied');
  return out;
}

/** The human form: one block per agent, each line within 80 columns. */
export function formatStatuses(statuses: AgentStatus[], now = Date.now()): string {
  const blocks = statuses.map((s) => formatOne(s, now));
  return blocks.join('\n');
}

function formatOne(s: AgentStatus, now: number): string {
  const lines: string[] = [];
  const state = s.connected ? (s.role === 'relay' ? 'listening' : 'connected') : 'NOT CONNECTED';
  lines.push(fit(`${s.role} ${s.address}  ${state}`, STATUS_WIDTH));
  field(lines, 'process', [`pid ${s.pid}`, `up ${formatAge(now - s.startedAt)}`, `diode ${s.version}`]);
  if (s.link) {
    const l = s.link;
    const relay = [l.relay ?? 'none', ...(l.relayAddress ? [l.relayAddress] : []), l.pinned ? 'pinned' : 'not pinned', ...(l.onLearned ? ['learned'] : [])];
    if (l.connected && l.since !== undefined) relay.push(`since ${clock(l.since)} (${formatAge(now - l.since)})`);
    field(lines, 'relay', relay);
    if (l.configured && l.learned) field(lines, 'configured', l.configured.length > 0 ? l.configured : ['none']);
    if (l.learned && l.learned.length > 0) field(lines, 'learned', l.learned.map((r) => `${r.relay} (seen ${formatAge(now - r.lastSeen)} ago)`));
    if (l.retired && l.retired.length > 0) field(lines, 'retired', l.retired);
  }
  if (s.names) {
    const names = s.names.map((n) => `${n.name}.diode ${n.state === 'held' ? `held at ${n.relay}` : n.state === 'refused' ? `refused by ${n.relay}: ${n.holder ? `held by ${n.holder}` : n.message}` : 'not claimed yet'}`);
    field(lines, 'names', names);
  }
  if (s.ports) {
    const ports = s.ports.map((p) => `${p.port} ${p.mode}${p.allowed !== undefined ? ` (${p.allowed} allowed)` : ''} → ${p.local}`);
    field(lines, 'ports', ports.length > 0 ? ports : ['none']);
  }
  if (s.listening && s.listening.length > 0) field(lines, 'listening', s.listening);
  if (s.sessions !== undefined) field(lines, 'sessions', [String(s.sessions)]);
  if (s.retiring) {
    const r = s.retiring;
    field(lines, 'retiring', [`to ${r.to.join(', ')}`, `${r.moved} moved`, `${r.remaining} connected`, `exits by ${clock(r.deadline)}`]);
  }
  if (s.update) field(lines, 'update', updateLine(s.update, now));
  const st = s.streams;
  const failed = Object.entries(st.failed).map(([reason, n]) => `${n} ${reason}`);
  field(lines, 'streams', [`${st.opened} opened`, `${st.open} open`, ...(failed.length > 0 ? failed : ['0 failed'])]);
  field(lines, 'bytes', [`${formatBytes(st.bytes.rx)} in`, `${formatBytes(st.bytes.tx)} out`]);
  if (s.counters && Object.keys(s.counters).length > 0) {
    field(lines, 'counters', Object.entries(s.counters).map(([k, v]) => `${k} ${v}`));
  }
  const errors = [s.lastError, s.link?.lastError].filter((e) => e !== undefined);
  const err = errors.sort((a, b) => b.at - a.at)[0];
  if (err) {
    const prefix = `${clock(err.at)} `;
    field(lines, 'last error', [prefix + err.message]);
  }
  return lines.join('\n') + '\n';
}
