import { FrameError } from './frames.ts';
import { parseManifest, ReleaseError, type ReleaseManifest } from '../release/manifest.ts';
import { RELEASE_ARCHES, type ReleaseArch } from '../release/arch.ts';

// Releases over the relay link (docs/PROTOCOL.md, "Releases"): two more first
// frames of an agent's data stream, answered by the relay itself.

/** Releases a relay names in one answer: the newest few of an architecture. */
export const MAX_OFFERED_RELEASES = 8;
/** bytes: the largest `releases` answer (eight manifests of ≈ 500 bytes, with room). */
export const MAX_RELEASE_LIST_BYTES = 16 * 1024;

/** Agent → relay: which releases do you hold for this architecture? */
export interface ReleaseQuery {
  t: 'releases';
  arch: ReleaseArch;
}

/** Agent → relay: send me this release's executable. */
export interface ReleaseGet {
  t: 'release-get';
  sha256: string;
}

function fail(what: string): never {
  throw new FrameError('EPROTO', `malformed message: ${what}`);
}

export function parseReleaseQuery(m: Record<string, unknown>): ReleaseQuery {
  if (m.t !== 'releases') fail('expected releases');
  if (!RELEASE_ARCHES.includes(m.arch as ReleaseArch)) fail(`releases.arch is not one of ${RELEASE_ARCHES.join(', ')}`);
  return { t: 'releases', arch: m.arch as ReleaseArch };
}

export function parseReleaseGet(m: Record<string, unknown>): ReleaseGet {
  if (m.t !== 'release-get') fail('expected release-get');
  if (typeof m.sha256 !== 'string' || !/^[0-9a-f]{64}$/.test(m.sha256)) fail('release-get.sha256 is not 64 lower-case hex digits');
  return { t: 'release-get', sha256: m.sha256 };
}

/**
 * The relay's answer to a query: the manifests it holds (signed by whoever
 * made them: the agent checks each against its own keys). A malformed entry
 * is dropped with its reason in `refused`; more than MAX_OFFERED_RELEASES
 * entries is a malformed answer.
 */
export function parseReleaseList(m: Record<string, unknown>): { releases: ReleaseManifest[]; refused: string[] } {
  if (m.t !== 'releases') fail('expected releases');
  if (!Array.isArray(m.releases) || m.releases.length > MAX_OFFERED_RELEASES) fail(`releases.releases must list at most ${MAX_OFFERED_RELEASES} manifests`);
  const releases: ReleaseManifest[] = [];
  const refused: string[] = [];
  for (const entry of m.releases) {
    try {
      releases.push(parseManifest(entry));
    } catch (err) {
      refused.push(err instanceof ReleaseError ? err.message : String(err));
    }
  }
  return { releases, refused };
}

/** The relay's `ok` before a release's bytes: how many follow. */
export function parseReleaseOk(m: Record<string, unknown>): number {
  if (m.t !== 'ok' || typeof m.size !== 'number' || !Number.isSafeInteger(m.size) || m.size < 1) fail('expected {"t":"ok","size":N} before the release');
  return m.size;
}
