import { DiodeError } from '../util/errors.ts';

/**
 * Release versions: MAJOR.MINOR.PATCH with an optional -prerelease
 * (semver 2.0 precedence; no build metadata). What `diode --version` prints
 * first, what a manifest names, what the launcher compares (sort -V agrees
 * for release versions; a prerelease sorts before its release in both).
 */
export const VERSION_PATTERN = /^(0|[1-9]\d{0,8})\.(0|[1-9]\d{0,8})\.(0|[1-9]\d{0,8})(?:-([0-9A-Za-z-]+(?:\.[0-9A-Za-z-]+)*))?$/;
/** characters: the longest version taken. */
export const MAX_VERSION_CHARS = 64;

export function isVersion(text: string): boolean {
  return text.length <= MAX_VERSION_CHARS && VERSION_PATTERN.test(text);
}

function parts(text: string): { core: number[]; pre: string[] } {
  const m = VERSION_PATTERN.exec(text);
  if (!m || text.length > MAX_VERSION_CHARS) throw new DiodeError('EVERSION', `"${text}" is not a release version (MAJOR.MINOR.PATCH[-prerelease])`);
  return { core: [Number(m[1]), Number(m[2]), Number(m[3])], pre: m[4] ? m[4].split('.') : [] };
}

/** < 0: a is older than b; 0: the same; > 0: a is newer. Semver precedence. */
export function compareVersions(a: string, b: string): number {
  const x = parts(a);
  const y = parts(b);
  for (let i = 0; i < 3; i++) if (x.core[i] !== y.core[i]) return x.core[i] - y.core[i];
  if (x.pre.length === 0 || y.pre.length === 0) return y.pre.length - x.pre.length;
  for (let i = 0; i < Math.min(x.pre.length, y.pre.length); i++) {
    const p = x.pre[i];
    const q = y.pre[i];
    if (p === q) continue;
    const pn = /^\d+$/.test(p);
    const qn = /^\d+$/.test(q);
    if (pn && qn) return Number(p) - Number(q);
    if (pn !== qn) return pn ? -1 : 1;
    return p < q ? -1 : 1;
  }
  return x.pre.length - y.pre.length;
}
