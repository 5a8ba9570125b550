// Turns whatever ethers or the node threw into a FleetError with a stable code
// and one line for people. Revert data is decoded against the fleet ABI, so a
// revert reads "reverted with NotOwner()" whatever node produced it.
import { isError } from 'ethers';
import { FLEET_INTERFACE } from './artifact.ts';
import { FleetError } from './errors.ts';

const HEX_DATA = /^0x[0-9a-fA-F]{8,}$/;
const FUNDS_MESSAGE = /insufficient funds|enough funds|exceeds (the )?balance/i;
/** How deep to look for revert data inside nested node errors. */
const MAX_SEARCH_DEPTH = 4;

/** Finds revert data wherever a node tucked it (`data`, `data.result`, `error.data`, ...). */
function findRevertData(value: unknown, depth = 0): string | undefined {
  if (depth > MAX_SEARCH_DEPTH || value == null) return undefined;
  if (typeof value === 'string') return HEX_DATA.test(value) ? value : undefined;
  if (typeof value !== 'object') return undefined;
  for (const key of ['data', 'result', 'error', 'info', 'cause']) {
    const found = findRevertData((value as Record<string, unknown>)[key], depth + 1);
    if (found) return found;
  }
  return undefined;
}

/** The fleet custom error name in `error` (e.g. `NotOwner`), if any. */
export function revertName(error: unknown): string | undefined {
  const decoded = (error as { revert?: { name?: string } } | null)?.revert?.name;
  if (decoded) return decoded;
  const data = findRevertData(error);
  if (!data) return undefined;
  try {
    return FLEET_INTERFACE.parseError(data)?.name;
  } catch {
    return undefined;
  }
}

function messageOf(error: unknown): string {
  if (error instanceof Error) return (error as { shortMessage?: string }).shortMessage ?? error.message.split('\n')[0]!;
  return String(error);
}

function flatText(error: unknown): string {
  try {
    return `${messageOf(error)} ${JSON.stringify((error as { info?: unknown })?.info ?? '')}`;
  } catch {
    return messageOf(error);
  }
}

const REVERT_ADVICE: Record<string, string> = {
  NotOwner: 'the admin key is not the fleet owner; use the key that deployed the fleet (or that ownership was transferred to)',
  ZeroAddress: 'the zero address cannot be a member or the owner; remove it from the list',
};

export interface ErrorContext {
  /** What was being done, e.g. `addMembers on fleet 0x...`. */
  action: string;
  rpc: string;
  fleet?: string;
  from?: string;
}

/** Maps any error thrown while talking to the chain to a FleetError. */
export function toFleetError(error: unknown, context: ErrorContext): FleetError {
  if (error instanceof FleetError) return error;
  const name = revertName(error);
  if (name) {
    const advice = REVERT_ADVICE[name] ?? 'check the arguments';
    return new FleetError('EREVERT', `${context.action} reverted with ${name}(): ${advice}`, { cause: error, revertName: name });
  }
  if (isError(error, 'INSUFFICIENT_FUNDS') || FUNDS_MESSAGE.test(flatText(error))) {
    return new FleetError('EFUNDS', `admin account ${context.from ?? '(unknown)'} cannot pay for ${context.action}: fund it with the chain's native coin and retry`, { cause: error });
  }
  if (isError(error, 'CALL_EXCEPTION')) {
    const why = (error as { reason?: string | null }).reason;
    return new FleetError('EREVERT', `${context.action} reverted${why ? ` (${why})` : ' without a reason'}: check the fleet address and the arguments`, { cause: error });
  }
  if (isError(error, 'BAD_DATA') && context.fleet) {
    return new FleetError('ENOTCONTRACT', `${context.fleet} does not answer like a DiodeFleet contract on ${context.rpc}: check the fleet address and the chain`, { cause: error });
  }
  if (isError(error, 'NETWORK_ERROR') || isError(error, 'TIMEOUT') || isError(error, 'SERVER_ERROR') || isError(error, 'UNKNOWN_ERROR')) {
    return new FleetError('ERPC', `RPC ${context.rpc} failed during ${context.action}: ${messageOf(error)}; check that the node is running and retry`, { cause: error });
  }
  return new FleetError('ERPC', `${context.action} failed on ${context.rpc}: ${messageOf(error)}`, { cause: error });
}
