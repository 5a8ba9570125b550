import type { RelayLink } from '../link/relay-link.ts';
import type { Logger } from '../util/log.ts';
import { errorMessage } from '../util/errors.ts';
import { releaseVersion } from '../cli/version.ts';
import { readConfigValue } from '../config/read.ts';
import { commitTrial, readRecord, readRollbacks } from './layout.ts';
import type { Updater, UpdateStatus } from './updater.ts';

export interface AgentUpdates {
  status(): UpdateStatus;
  /** Resolves with the version to restart into once an update was installed. */
  restart: Promise<string>;
  stop(): void;
}

/**
 * What `diode publish` does about releases: with update-keys set, an
 * Updater (loaded only then) asks its relay on connect and daily; without,
 * nothing is ever asked. Started on trial by the launcher (DIODE_TRIAL =
 * this version), it tells the launcher once the link is up, so the update
 * stays.
 */
export async function startUpdates(home: string, link: RelayLink, log: Logger): Promise<AgentUpdates> {
  const launcher = process.env.DIODE_LAUNCHER === '1';
  const version = releaseVersion();
  if (launcher && process.env.DIODE_TRIAL === version) {
    link.once('up', () => {
      try {
        commitTrial(home, version);
        log.info(`update ${version} reached relay ${link.relayEndpoint}: it stays (the launcher drops the previous one from rollback)`);
      } catch (err) {
        log.error(`update ${version} reached a relay but cannot tell the launcher: ${errorMessage(err)}; it will be rolled back`);
      }
    });
  }
  let restartInto: (version: string) => void = () => {};
  const restart = new Promise<string>((resolve) => (restartInto = resolve));
  let updater: Updater | undefined;
  if (readConfigValue(home, 'update-keys')) {
    const { Updater } = await import('./updater.ts');
    updater = new Updater({ home, link, log: log.child('update'), launcher, onApplied: restartInto });
    updater.start();
  } else log.debug('no update-keys: this agent never asks for releases');
  return {
    status: () => {
      if (updater) return updater.status();
      const rollbacks = readRollbacks(home);
      return {
        keys: 0,
        applied: readRecord(home).applied ?? 0,
        rollbacks: rollbacks.length,
        ...(rollbacks.length > 0 ? { lastRollback: rollbacks[rollbacks.length - 1] } : {}),
        launcher,
        counters: { checks: {}, downloads: {}, refusals: {} },
      };
    },
    restart,
    stop: () => updater?.stop(),
  };
}
