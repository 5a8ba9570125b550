import type { BenchProcess } from './procs.ts';

/**
 * Waits for the first IPC message of type `t` from a worker (sending `send`
 * first, if given); rejects when the worker exits or after timeoutMs, with
 * its output.
 */
export function ask<T extends { t: string }>(proc: BenchProcess, t: string, timeoutMs: number, send?: object): Promise<T> {
  return new Promise((resolve, reject) => {
    const timer = setTimeout(() => reject(new Error(`${proc.name}: no "${t}" within ${timeoutMs} ms:\n${proc.output()}`)), timeoutMs);
    const onMessage = (m: T) => {
      if (m.t !== t) return;
      clearTimeout(timer);
      proc.child.off('message', onMessage);
      proc.child.off('exit', onExit);
      resolve(m);
    };
    const onExit = () => {
      clearTimeout(timer);
      reject(new Error(`${proc.name} exited:\n${proc.output()}`));
    };
    proc.child.on('message', onMessage);
    proc.child.once('exit', onExit);
    if (send) proc.child.send(send);
  });
}

/** What a bench/devices.ts worker reports: {ready} once its keys exist, {done} after admission. */
export interface FleetMessage {
  t: 'ready' | 'done';
  admitted?: number;
  failed?: number;
  firstError?: string;
}
