import { createReadStream, readdirSync, readFileSync, statSync } from 'node:fs';
import { basename, join } from 'node:path';
import type { MuxStream } from '../mux/index.ts';
import type { Logger } from '../util/log.ts';
import { errorMessage } from '../util/errors.ts';
import { writeFrame } from '../protocol/frames.ts';
import { errorReply } from '../protocol/messages.ts';
import { MAX_OFFERED_RELEASES, parseReleaseGet, parseReleaseQuery } from '../protocol/release-messages.ts';
import { MANIFEST_SUFFIX, MAX_MANIFEST_BYTES, parseManifestText, signerOf, type ReleaseManifest } from '../release/manifest.ts';
import { checkReleaseFile } from '../release/file.ts';
import { compareVersions } from '../release/version.ts';
import type { ReleaseArch } from '../release/arch.ts';
import type { RelayStats } from './stats.ts';

/** Manifests read from a --releases directory; more are ignored (with a line). */
export const MAX_RELEASE_FILES = 64;
/** Downloads the relay serves at once, all agents together: the uplink a fleet's update may take. */
export const MAX_CONCURRENT_DOWNLOADS = 16;
/** ms between rescans of the directory (new releases are picked up without a restart; SIGHUP rescans at once). */
export const RESCAN_INTERVAL_MS = 60_000;
/** bytes read from the executable at a time while serving it. */
const READ_CHUNK_BYTES = 64 * 1024;

interface Shelved {
  manifest: ReleaseManifest;
  path: string;
  /** What the check saw: a changed file is checked again. */
  mtimeMs: number;
  size: number;
}

/**
 * The releases a relay serves (`diode relay --releases DIR`): every
 * `*.release.json` in DIR whose signature verifies and whose executable
 * beside it matches the signed size and hash. The relay does not know which
 * keys its agents trust: each agent checks every manifest against its own
 * update-keys. Served bytes are read from disk as they are then: the agent
 * checks size and hash again before anything else.
 */
export class ReleaseShelf {
  readonly #dir: string;
  readonly #log: Logger;
  readonly #stats: RelayStats;
  #shelved = new Map<string, Shelved>();
  #downloads = 0;
  readonly #downloading = new WeakSet<object>();
  #timer: NodeJS.Timeout | undefined;
  #scanning: Promise<void> | undefined;

  constructor(dir: string, log: Logger, stats: RelayStats) {
    this.#dir = dir;
    this.#log = log;
    this.#stats = stats;
  }

  /** Reads the directory; then again every RESCAN_INTERVAL_MS. */
  async start(): Promise<void> {
    await this.rescan();
    this.#timer = setInterval(() => void this.rescan(), RESCAN_INTERVAL_MS);
    this.#timer.unref();
  }

  close(): void {
    clearInterval(this.#timer);
  }

  get releases(): ReleaseManifest[] {
    return [...this.#shelved.values()].map((s) => s.manifest);
  }

  rescan(): Promise<void> {
    this.#scanning ??= this.#scan().finally(() => (this.#scanning = undefined));
    return this.#scanning;
  }

  async #scan(): Promise<void> {
    let names: string[];
    try {
      names = readdirSync(this.#dir).filter((n) => n.endsWith(MANIFEST_SUFFIX)).sort();
    } catch (err) {
      this.#log.warn(`--releases ${this.#dir}: cannot read it: ${errorMessage(err)}; serving no release`);
      this.#shelved = new Map();
      return;
    }
    if (names.length > MAX_RELEASE_FILES) {
      this.#log.warn(`--releases ${this.#dir}: ${names.length} manifests; only the first ${MAX_RELEASE_FILES} are served`);
      names = names.slice(0, MAX_RELEASE_FILES);
    }
    const next = new Map<string, Shelved>();
    for (const name of names) {
      const manifestPath = join(this.#dir, name);
      try {
        if (statSync(manifestPath).size > MAX_MANIFEST_BYTES) throw new Error(`larger than ${MAX_MANIFEST_BYTES} bytes`);
        const manifest = parseManifestText(readFileSync(manifestPath));
        const path = join(this.#dir, basename(manifest.file));
        const st = statSync(path);
        const known = [...this.#shelved.values()].find((s) => s.path === path && s.manifest.sha256 === manifest.sha256);
        if (!known || known.mtimeMs !== st.mtimeMs || known.size !== st.size) {
          const signer = signerOf(manifest);
          await checkReleaseFile(path, manifest);
          this.#log.info(`release ${manifest.version} for ${manifest.arch} (${manifest.size} bytes, signed by ${signer}): serving ${path}`);
        }
        next.set(manifest.sha256, { manifest, path, mtimeMs: st.mtimeMs, size: st.size });
      } catch (err) {
        this.#log.warn(`--releases: ${manifestPath} not served: ${errorMessage(err)}`);
      }
    }
    for (const sha of this.#shelved.keys()) if (!next.has(sha)) this.#log.info(`release ${this.#shelved.get(sha)!.manifest.version} (${sha.slice(0, 12)}…) is no longer served`);
    this.#shelved = next;
  }

  /** The newest releases for an architecture, newest first. */
  list(arch: ReleaseArch): ReleaseManifest[] {
    return this.releases
      .filter((m) => m.arch === arch)
      .sort((a, b) => compareVersions(b.version, a.version))
      .slice(0, MAX_OFFERED_RELEASES);
  }

  /** A `releases` query on an agent's data stream: the list, then the end. */
  answerQuery(stream: MuxStream, first: Record<string, unknown>): void {
    const query = parseReleaseQuery(first);
    this.#stats.count('release_query');
    if (stream.writable) writeFrame(stream, { t: 'releases', releases: this.list(query.arch) });
    stream.end();
  }

  /**
   * A `release-get`: `{"t":"ok","size":N}`, the executable's bytes, the end.
   * At most MAX_CONCURRENT_DOWNLOADS at once and one per session; the
   * agent's reading sets the pace (stream windows), so a download takes no
   * more of the relay's memory than one window.
   */
  serve(session: object, stream: MuxStream, first: Record<string, unknown>): void {
    const get = parseReleaseGet(first);
    const shelved = this.#shelved.get(get.sha256);
    const refuse = (why: string) => {
      this.#stats.count('release_download_refused');
      if (stream.writable) writeFrame(stream, errorReply('unavailable', why));
      stream.end();
    };
    if (!shelved) return refuse(`no release ${get.sha256.slice(0, 12)}… here (any more)`);
    if (this.#downloading.has(session)) return refuse('one download per session at a time');
    if (this.#downloads >= MAX_CONCURRENT_DOWNLOADS) return refuse(`the relay serves ${MAX_CONCURRENT_DOWNLOADS} downloads already; try later`);
    this.#downloads++;
    this.#downloading.add(session);
    this.#stats.count('release_download');
    const file = createReadStream(shelved.path, { highWaterMark: READ_CHUNK_BYTES });
    let released = false;
    const release = () => {
      if (released) return;
      released = true;
      this.#downloads--;
      this.#downloading.delete(session);
      file.destroy();
    };
    stream.once('close', release);
    file.once('error', (err) => {
      this.#log.warn(`release ${shelved.manifest.version}: cannot read ${shelved.path}: ${errorMessage(err)}`);
      release();
      stream.reset();
    });
    file.once('end', release);
    writeFrame(stream, { t: 'ok', size: shelved.manifest.size });
    file.pipe(stream);
  }
}
