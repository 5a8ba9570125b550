import { existsSync, readFileSync, readdirSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { round } from './stats.ts';

interface CpuProfileNode {
  id: number;
  callFrame: { functionName: string; url: string; lineNumber: number };
  hitCount?: number;
}

interface CpuProfile {
  nodes: CpuProfileNode[];
  samples: number[];
  timeDeltas: number[];
}

export interface HotSpot {
  /** Share of the process's busy (non-idle) samples spent in this function itself. */
  selfPct: number;
  fn: string;
  /** Source file (mapped back from the bundle) or the script's name; "native" for V8/Node internals. */
  where: string;
}

export interface ProfileSummary {
  process: string;
  busyMs: number;
  top: HotSpot[];
  /** Self time grouped by source file (bundle regions mapped back to agent/..., node internals by module). */
  byFile: Array<{ file: string; selfPct: number }>;
}

/**
 * esbuild marks each module's start in a readable chunk with a `/*! path/to/file.ts *\/`
 * line (scripts/build.mjs); this maps a chunk's line number (0-based) to the source file.
 */
function chunkRegions(chunk: string): (line: number) => string {
  const starts: Array<{ line: number; file: string }> = [];
  readFileSync(chunk, 'utf8').split('\n').forEach((text, line) => {
    const m = text.match(/^\/\*! ((?:agent|node_modules)\/\S+) \*\/$/);
    if (m) starts.push({ line, file: m[1].replace(/^node_modules\/((?:@[^/]+\/)?[^/]+)\/.*/, '$1 (dependency)') });
  });
  return (line) => {
    let file = '?';
    for (const s of starts) {
      if (s.line > line) break;
      file = s.file;
    }
    return file;
  };
}

/** Summarises every <role>.cpuprofile in dir: top functions by self time and self time per file. */
export function summariseProfiles(dir: string, bundle: string, topN = 15): ProfileSummary[] {
  // The program runs from the chunks beside the bundle's loader (scripts/build.mjs).
  const chunkDir = join(dirname(bundle), 'chunks');
  const regions = new Map<string, (line: number) => string>();
  const region = (url: string, line: number): string | undefined => {
    if (dirname(url) !== chunkDir || !existsSync(url)) return undefined;
    let map = regions.get(url);
    if (!map) regions.set(url, (map = chunkRegions(url)));
    return map(line);
  };
  const out: ProfileSummary[] = [];
  for (const name of readdirSync(dir).filter((f) => f.endsWith('.cpuprofile')).sort()) {
    const profile = JSON.parse(readFileSync(join(dir, name), 'utf8')) as CpuProfile;
    const byId = new Map(profile.nodes.map((n) => [n.id, n]));
    const self = new Map<number, number>();
    for (let i = 0; i < profile.samples.length; i++) {
      const id = profile.samples[i];
      self.set(id, (self.get(id) ?? 0) + (profile.timeDeltas[i] ?? 0));
    }
    const fns = new Map<string, HotSpot & { us: number }>();
    const files = new Map<string, number>();
    let busy = 0;
    for (const [id, us] of self) {
      const frame = byId.get(id)!.callFrame;
      if (frame.functionName === '(idle)') continue;
      busy += us;
      const where = frame.url === '' ? 'native' : (region(frame.url, frame.lineNumber) ?? frame.url.replace(/^file:\/\//, ''));
      const fn = frame.functionName || '(anonymous)';
      const key = `${fn}@${where}:${frame.lineNumber}`;
      const entry = fns.get(key) ?? { fn, where, selfPct: 0, us: 0 };
      entry.us += us;
      fns.set(key, entry);
      files.set(where, (files.get(where) ?? 0) + us);
    }
    const pct = (us: number) => round((100 * us) / Math.max(1, busy));
    out.push({
      process: name.replace(/\.cpuprofile$/, ''),
      busyMs: round(busy / 1000),
      top: [...fns.values()].sort((a, b) => b.us - a.us).slice(0, topN).map((e) => ({ selfPct: pct(e.us), fn: e.fn, where: e.where })),
      byFile: [...files.entries()].sort((a, b) => b[1] - a[1]).slice(0, topN).map(([file, us]) => ({ file, selfPct: pct(us) })),
    });
  }
  return out;
}
