import { chownSync, statSync, unlinkSync } from 'node:fs';
import { join } from 'node:path';
import { readAllStatuses } from '../ops/control.ts';
import { DiodeError, errorMessage } from '../util/errors.ts';
import { writeRetireOrder, type RetireOrder } from './retire.ts';

/** ms `diode relay --retire-to` waits for a running relay to confirm the order. */
const CONFIRM_TIMEOUT_MS = 5_000;
const POLL_MS = 100;

/** Where the order for the relay with this pid is left (in its state directory, mode 0600). */
export function retireOrderPath(home: string, pid: number): string {
  return join(home, `retire-order-${pid}.json`);
}

/**
 * `diode relay --retire-to ...` while a relay of this state directory runs:
 * the order goes to that relay (a file it alone may read, then SIGUSR2), and
 * this command waits for its status to show the retirement. Returns false
 * when no relay of this home runs (the caller then starts one that retires).
 */
export async function handOverRetirement(home: string, order: RetireOrder, print: (line: string) => void): Promise<boolean> {
  const { statuses, denied } = await readAllStatuses(home);
  const running = statuses.find((s) => s.role === 'relay' && s.pid !== process.pid);
  if (!running) {
    if (denied.length > 0) throw new DiodeError('EPERM', `may not read ${denied[0]} (permission denied): run as the relay's user or root to retire a running relay`);
    return false;
  }
  const path = retireOrderPath(home, running.pid);
  writeRetireOrder(path, order);
  try {
    // Root hands the file to the relay's user (a service's diode user), who owns the state directory.
    if (process.getuid?.() === 0) {
      const owner = statSync(home);
      chownSync(path, owner.uid, owner.gid);
    }
    process.kill(running.pid, 'SIGUSR2');
  } catch (err) {
    try {
      unlinkSync(path);
    } catch {}
    throw new DiodeError('ERETIRE', `cannot hand the retirement to relay ${running.address} (pid ${running.pid}): ${errorMessage(err)}`);
  }
  const started = Date.now();
  while (Date.now() - started < CONFIRM_TIMEOUT_MS) {
    await new Promise((r) => setTimeout(r, POLL_MS));
    const now = (await readAllStatuses(home)).statuses.find((s) => s.pid === running.pid);
    if (now?.retiring) {
      const r = now.retiring;
      print(`relay ${running.address} (pid ${running.pid}) retires to ${r.to.join(', ')}: ${r.remaining} agent session${r.remaining === 1 ? '' : 's'} connected; it exits when none is left or at ${new Date(r.deadline).toISOString()} (diode status --home ${home} shows how many moved)`);
      return true;
    }
  }
  throw new DiodeError('ERETIRE', `relay ${running.address} (pid ${running.pid}) did not confirm the retirement within ${CONFIRM_TIMEOUT_MS / 1000} s; see its log`);
}
