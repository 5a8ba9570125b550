// Runs the bundled diode for the fleet tests: the admin CLI against the test's EVM node.
import { execFile } from 'node:child_process';
import { promisify } from 'node:util';
import { DIODE_BUNDLE } from './diode.ts';
import type { Evm } from './evm.ts';

const run = promisify(execFile);
/** Longest a single diode command may take on a loaded machine, in ms. */
const COMMAND_TIMEOUT_MS = 60_000;

export interface Ran {
  code: number;
  stdout: string;
  stderr: string;
}

/** Runs `node dist/diode.cjs ...args`; returns its exit status and output instead of throwing. */
export async function runDiode(args: string[], env: NodeJS.ProcessEnv = {}): Promise<Ran> {
  try {
    const { stdout, stderr } = await run(process.execPath, [DIODE_BUNDLE, ...args], { env: { ...process.env, ...env }, timeout: COMMAND_TIMEOUT_MS });
    return { code: 0, stdout, stderr };
  } catch (err) {
    const e = err as { code: number; stdout: string; stderr: string };
    return { code: e.code, stdout: e.stdout, stderr: e.stderr };
  }
}

/** `diode fleet ...args --rpc <evm>` with ganache account 0 as the admin; throws on failure, returns stdout trimmed. */
export async function fleetAdmin(evm: Evm, args: string[]): Promise<string> {
  const result = await runDiode(['fleet', ...args, '--rpc', evm.url], { DIODE_ADMIN_KEY: evm.privateKeys[0] });
  if (result.code !== 0) throw new Error(`diode fleet ${args.join(' ')} failed (${result.code}): ${result.stderr}`);
  return result.stdout.trim();
}
