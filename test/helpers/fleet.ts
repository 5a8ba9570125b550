// Runs the bundled diode for the fleet tests: the admin CLI against the test's EVM node.
import { runDiode } from './diode.ts';
import type { Evm } from './evm.ts';

export { runDiode, type Ran } from './diode.ts';

/** `diode fleet ...args --rpc <evm>` with ganache account 0 as the admin; throws on failure, returns stdout trimmed. */
export async function fleetAdmin(evm: Evm, args: string[]): Promise<string> {
  const result = await runDiode(['fleet', ...args, '--rpc', evm.url], { DIODE_ADMIN_KEY: evm.privateKeys[0] });
  if (result.code !== 0) throw new Error(`diode fleet ${args.join(' ')} failed (${result.code}): ${result.stderr}`);
  return result.stdout.trim();
}
