import { createWriteStream, rmSync } from 'node:fs';
import { join } from 'node:path';
import type { MuxStream } from '../mux/index.ts';
import type { RelayLink } from '../link/relay-link.ts';
import type { Logger } from '../util/log.ts';
import { DiodeError, errorMessage } from '../util/errors.ts';
import { readFrame, writeFrame } from '../protocol/frames.ts';
import { MAX_STREAM_HEADER_BYTES, STREAM_HEADER_TIMEOUT_MS } from '../protocol/limits.ts';
import { MAX_RELEASE_LIST_BYTES, parseReleaseList, parseReleaseOk } from '../protocol/release-messages.ts';
import { checkOffer, ReleaseError, REFUSAL_WORDS, type ReleaseManifest } from '../release/manifest.ts';
import { compareVersions } from '../release/version.ts';
import { DEFAULT_UPDATE_RATE_KIB } from '../config/keys.ts';
import { readConfigValue } from '../config/read.ts';
import { applyRelease, updatePolicy } from './apply.ts';
import { ensureUpdateDir, readRecord, readRollbacks, writeRecord, type Rollback } from './layout.ts';

/** ms between checks once connected ("then daily"), with up to CHECK_JITTER_MS more so a fleet spreads out. */
export const CHECK_INTERVAL_MS = 24 * 3_600_000;
/**
 * ms: a check after a reconnect waits up to this (random), so a fleet
 * reconnecting at once does not ask at once. The first check of a process
 * is at once (an agent just started, a device just powered on); the relay
 * bounds the downloads it serves at once, and one it turns away tries again
 * within BUSY_RETRY_MS.
 */
export const CHECK_JITTER_MS = 60_000;
/** ms: a relay that was serving its most downloads is asked again after a random wait up to this (at least a third of it). */
export const BUSY_RETRY_MS = 30 * 60_000;
/** ms: a check is not repeated within this on reconnects (a flapping link). */
export const MIN_CHECK_GAP_MS = 10 * 60_000;
/** ms a download may go without a byte before it is abandoned (and tried at the next check). */
export const DOWNLOAD_STALL_MS = 60_000;

/** Counters of this process, for /metrics; rollbacks and updates applied are read from the state directory. */
export interface UpdateCounters {
  checks: Record<string, number>;
  downloads: Record<string, number>;
  refusals: Record<string, number>;
}

/** What `diode status` shows of updates. */
export interface UpdateStatus {
  /** The release keys this agent takes releases of (none: it never updates). */
  keys: number;
  lastCheck?: { at: number; result: string };
  /** Updates switched to in this state directory, ever. */
  applied: number;
  rollbacks: number;
  lastRollback?: Rollback;
  /** Running under the launcher: an update can be applied. */
  launcher: boolean;
  /** This process's checks, downloads and refusals by result. */
  counters: UpdateCounters;
}

export interface UpdaterOptions {
  home: string;
  link: RelayLink;
  log: Logger;
  /** Started by /usr/lib/diode/launch (DIODE_LAUNCHER=1): an update can be switched to and restarted into. */
  launcher: boolean;
  /** A release was installed and selected: stop, so that the service manager starts it. */
  onApplied: (version: string) => void;
}

/**
 * Checks the relay for a newer release signed by one of update-keys, on
 * connect and then daily; downloads it over the relay link at update-rate;
 * verifies it (applyRelease) and hands over to the launcher. An agent
 * without update-keys never makes an Updater: it never asks.
 */
export class Updater {
  readonly #o: UpdaterOptions;
  readonly counters: UpdateCounters = { checks: {}, downloads: {}, refusals: {} };
  #timer: NodeJS.Timeout | undefined;
  #running: Promise<void> | undefined;
  #lastCheckAt = 0;
  #stopped = false;
  /** Refusals logged once per release and reason (a relay offers the same bad release every day). */
  readonly #logged = new Set<string>();
  readonly #onUp = () => this.#schedule(this.#lastCheckAt === 0 ? 0 : Math.random() * CHECK_JITTER_MS);
  /** When the last check ended with a busy relay: the next one comes sooner than a day. */
  #busy = false;

  constructor(options: UpdaterOptions) {
    this.#o = options;
  }

  start(): void {
    this.#o.link.on('up', this.#onUp);
  }

  stop(): void {
    this.#stopped = true;
    clearTimeout(this.#timer);
    this.#o.link.off('up', this.#onUp);
  }

  status(): UpdateStatus {
    const record = readRecord(this.#o.home);
    const rollbacks = readRollbacks(this.#o.home);
    return {
      keys: updatePolicy(this.#o.home).keys.length,
      ...(record.lastCheck ? { lastCheck: record.lastCheck } : {}),
      applied: record.applied ?? 0,
      rollbacks: rollbacks.length,
      ...(rollbacks.length > 0 ? { lastRollback: rollbacks[rollbacks.length - 1] } : {}),
      launcher: this.#o.launcher,
      counters: this.counters,
    };
  }

  /** Runs one check now (tests, and the schedule). */
  check(): Promise<void> {
    this.#running ??= this.#check().finally(() => (this.#running = undefined));
    return this.#running;
  }

  #schedule(delayMs: number): void {
    if (this.#stopped) return;
    clearTimeout(this.#timer);
    const sinceLast = Date.now() - this.#lastCheckAt;
    const wait = this.#lastCheckAt > 0 && sinceLast < MIN_CHECK_GAP_MS ? MIN_CHECK_GAP_MS - sinceLast : delayMs;
    this.#timer = setTimeout(() => {
      void this.check().finally(() => {
        const busy = this.#busy;
        this.#busy = false;
        this.#schedule(busy ? BUSY_RETRY_MS * (1 + 2 * Math.random()) / 3 : CHECK_INTERVAL_MS + Math.random() * CHECK_JITTER_MS);
      });
    }, wait);
    this.#timer.unref();
  }

  #result(result: string, counter: string): void {
    this.counters.checks[counter] = (this.counters.checks[counter] ?? 0) + 1;
    writeRecord(this.#o.home, (r) => (r.lastCheck = { at: Date.now(), result }));
  }

  #refused(err: ReleaseError, m: ReleaseManifest | undefined): void {
    const word = REFUSAL_WORDS[err.refusal];
    this.counters.refusals[word] = (this.counters.refusals[word] ?? 0) + 1;
    const key = `${m?.sha256 ?? ''}:${err.refusal}`;
    if (this.#logged.has(key)) return;
    this.#logged.add(key);
    this.#o.log.warn(`update refused: ${err.message}`, { event: 'update-refused', reason: word, ...(m ? { version: m.version, arch: m.arch } : {}) });
  }

  async #check(): Promise<void> {
    this.#lastCheckAt = Date.now();
    const session = this.#o.link.session;
    if (!session || session.closed) return this.#result('no relay to ask', 'no_relay');
    const policy = updatePolicy(this.#o.home);
    if (policy.keys.length === 0) return;
    let offers: ReleaseManifest[];
    try {
      const stream = session.open();
      stream.on('error', () => {});
      writeFrame(stream, { t: 'releases', arch: policy.arch });
      const answer = await readFrame(stream, MAX_RELEASE_LIST_BYTES, STREAM_HEADER_TIMEOUT_MS);
      stream.destroy();
      const list = parseReleaseList(answer);
      for (const why of list.refused) this.#refused(new ReleaseError('EFORMAT', why), undefined);
      offers = list.releases;
    } catch (err) {
      this.#o.log.info(`update check failed: relay ${this.#o.link.relayEndpoint}: ${errorMessage(err)}`);
      return this.#result(`failed: ${errorMessage(err)}`, 'failed');
    }
    const acceptable: ReleaseManifest[] = [];
    const refused: string[] = [];
    for (const m of offers) {
      try {
        checkOffer(m, policy);
        acceptable.push(m);
      } catch (err) {
        if (!(err instanceof ReleaseError)) throw err;
        // An older or the same release is the normal answer, not a refusal worth a line.
        if (err.refusal === 'EDOWNGRADE' && m.version === policy.running) continue;
        this.#refused(err, m);
        refused.push(`${m.version} ${REFUSAL_WORDS[err.refusal]}`);
      }
    }
    const best = acceptable.sort((a, b) => compareVersions(b.version, a.version))[0];
    if (!best) return this.#result(`up to date (${policy.running}${refused.length > 0 ? `; refused ${refused.join(', ')}` : ''})`, 'up_to_date');
    if (!this.#o.launcher) {
      const key = `not-launched:${best.version}`;
      if (!this.#logged.has(key)) {
        this.#logged.add(key);
        this.#o.log.warn(`release ${best.version} is offered; not applied: this agent was not started by the diode launcher (/usr/lib/diode/launch, as the package's and the image's units do)`);
      }
      return this.#result(`${best.version} offered; not applied (no launcher)`, 'newer');
    }
    this.#o.log.info(`release ${best.version} for ${best.arch} offered by relay ${this.#o.link.relayEndpoint}; downloading ${best.size} bytes at ${this.#rateKiB()} KiB/s`);
    let staged: string | undefined;
    try {
      staged = await this.#download(best);
      this.counters.downloads.ok = (this.counters.downloads.ok ?? 0) + 1;
      const applied = await applyRelease(this.#o.home, staged, best);
      this.#result(`applied ${applied.version}`, 'applied');
      this.#o.log.info(`update ${applied.version} verified and installed (signature, size, SHA-256, architecture, --version); restarting into it through the service manager (it is on trial: back to ${applied.previous === 'packaged' ? 'the packaged agent' : applied.previous.version} unless it reaches a relay within 3 minutes)`);
      this.#o.onApplied(applied.version);
    } catch (err) {
      if (staged) rmSync(staged, { force: true });
      if (err instanceof ReleaseError) {
        this.#refused(err, best);
        return this.#result(`refused ${best.version}: ${REFUSAL_WORDS[err.refusal]}`, 'refused');
      }
      this.counters.downloads.failed = (this.counters.downloads.failed ?? 0) + 1;
      this.#o.log.warn(`update to ${best.version} failed: ${errorMessage(err)}; tried again at the next check`);
      return this.#result(`failed: ${errorMessage(err)}`, 'failed');
    }
  }

  #rateKiB(): number {
    return Number(readConfigValue(this.#o.home, 'update-rate') ?? DEFAULT_UPDATE_RATE_KIB);
  }

  /** The release's bytes into the update folder, at update-rate at most; returns the file. */
  async #download(m: ReleaseManifest): Promise<string> {
    const session = this.#o.link.session;
    if (!session || session.closed) throw new DiodeError('ENORELAY', 'the relay link went down');
    const stream = session.open();
    stream.on('error', () => {});
    const path = join(ensureUpdateDir(this.#o.home), `.download-${m.sha256.slice(0, 16)}-${process.pid}`);
    const file = createWriteStream(path, { mode: 0o600 });
    const fileDone = new Promise<void>((resolve, reject) => {
      file.once('finish', resolve);
      file.once('error', reject);
    });
    try {
      writeFrame(stream, { t: 'release-get', sha256: m.sha256 });
      const answer = await readFrame(stream, MAX_STREAM_HEADER_BYTES, STREAM_HEADER_TIMEOUT_MS);
      if (answer.t === 'error') {
        this.#busy = true;
        throw new DiodeError('EUNAVAILABLE', `the relay does not serve it now: ${String(answer.message ?? answer.code).slice(0, 200)}`);
      }
      const size = parseReleaseOk(answer);
      if (size !== m.size) throw new ReleaseError('ESIZE', `release ${m.version}: the relay sends ${size} bytes, the manifest signed ${m.size}`);
      await this.#receive(stream, file, m);
      file.end();
      await fileDone;
      return path;
    } catch (err) {
      stream.destroy();
      file.destroy();
      rmSync(path, { force: true });
      throw err;
    }
  }

  /** Reads the stream into the file, pausing so that the average stays at update-rate (the stream window stops the relay meanwhile). */
  async #receive(stream: MuxStream, file: NodeJS.WritableStream, m: ReleaseManifest): Promise<void> {
    const bytesPerMs = (this.#rateKiB() * 1024) / 1000;
    const started = performance.now();
    let received = 0;
    let stall: NodeJS.Timeout | undefined;
    const armStall = () => {
      clearTimeout(stall);
      stall = setTimeout(() => stream.destroy(new DiodeError('ETIMEDOUT', `no byte of the release for ${DOWNLOAD_STALL_MS / 1000} s`)), DOWNLOAD_STALL_MS);
    };
    armStall();
    try {
      for await (const chunk of stream as AsyncIterable<Buffer>) {
        if (this.#stopped) throw new DiodeError('ESTOPPED', 'the agent is stopping');
        received += chunk.length;
        if (received > m.size) throw new ReleaseError('ESIZE', `release ${m.version}: the relay sent more than the ${m.size} bytes signed`);
        if (!file.write(chunk)) await new Promise((resolve) => file.once('drain', resolve));
        const ahead = received / bytesPerMs - (performance.now() - started);
        clearTimeout(stall);
        if (ahead > 0) await new Promise((resolve) => setTimeout(resolve, ahead));
        armStall();
      }
    } finally {
      clearTimeout(stall);
    }
    if (received !== m.size) throw new ReleaseError('ESIZE', `release ${m.version}: the stream ended after ${received} of ${m.size} bytes`);
  }
}
