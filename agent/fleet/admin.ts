// Fleet administration: deploy a DiodeFleet and edit or read its members.
// Each function opens the RPC, does its work and closes it again. Writes are
// checked before they are sent (eth_call for reverts, balance for fees), then
// each transaction's hash is reported and one confirmation awaited.
import { Contract, ContractFactory, Wallet, formatEther, getAddress, type TransactionRequest } from 'ethers';
import { FLEET_ABI, FLEET_BYTECODE, FLEET_INTERFACE } from './artifact.ts';
import { FleetError } from './errors.ts';
import { parsePrivateKey } from './key.ts';
import { toFleetError } from './mapError.ts';
import { checkRpcUrl, openProvider, type FleetProvider } from './rpc.ts';

/** Addresses per addMembers/removeMembers transaction (≈ 50k gas each, so well under a block). */
export const MEMBERS_PER_TX = 100;
/** Default wait for one confirmation of each transaction, in seconds. */
export const DEFAULT_CONFIRM_TIMEOUT_S = 180;
const CONFIRMATIONS = 1;

export interface FleetAdminOptions {
  /** JSON-RPC URL: http(s):// or ws(s)://. */
  rpc: string;
  /** Fleet contract address (all calls but deployFleet). */
  fleet?: string;
  /** Admin private key (writes only); see readAdminKey(). */
  adminKey?: string;
  /** Receives one human-readable line per step (tx sent, confirmed, ...). */
  onProgress?: (line: string) => void;
  /** How long to wait for each confirmation, in seconds. */
  confirmTimeoutSeconds?: number;
  /** Addresses per transaction for addMembers/removeMembers (default MEMBERS_PER_TX). */
  membersPerTx?: number;
}

export interface TxResult {
  hash: string;
  blockNumber: number;
  gasUsed: bigint;
}

export interface DeployResult extends TxResult {
  /** Address of the new fleet contract. */
  fleet: string;
  /** Its owner: the admin account. */
  owner: string;
}

export interface MembersResult {
  /** One per transaction sent (none when the list was empty). */
  txs: TxResult[];
  /** Addresses whose membership actually changed (from the contract's events). */
  changed: string[];
}

interface AdminSession {
  provider: FleetProvider;
  wallet?: Wallet;
  fleet?: string;
  report: (line: string) => void;
}

/** Checksums `value` or throws EBADADDR naming `what`. */
export function normalizeAddress(value: string, what: string): string {
  try {
    return getAddress(value.trim());
  } catch {
    throw new FleetError('EBADADDR', `${what} "${value}" is not an address: give 0x followed by 40 hex digits (mixed case must be a valid checksum)`);
  }
}

function normalizeMembers(addresses: readonly string[]): string[] {
  const seen = new Set<string>();
  return addresses
    .map((address, i) => normalizeAddress(address, `member #${i + 1}`))
    .filter((address) => (seen.has(address) ? false : (seen.add(address), true)));
}

async function withSession<T>(
  options: FleetAdminOptions,
  needs: { key: boolean; fleet: boolean },
  action: string,
  body: (session: AdminSession) => Promise<T>,
): Promise<T> {
  checkRpcUrl(options.rpc);
  const fleet = options.fleet === undefined ? undefined : normalizeAddress(options.fleet, 'fleet address');
  if (needs.fleet && !fleet) throw new FleetError('EBADADDR', `${action} needs the fleet contract address: pass --fleet 0x...`);
  let key: string | undefined;
  if (needs.key) {
    if (!options.adminKey) throw new FleetError('ENOKEY', `${action} needs the admin key: set $DIODE_ADMIN_KEY or pass --admin-key-file FILE`);
    key = parsePrivateKey(options.adminKey);
    if (!key) throw new FleetError('ENOKEY', 'the admin key is malformed: it must be 64 hex digits, with or without 0x');
  }
  const report = options.onProgress ?? (() => {});
  const provider = await openProvider(options.rpc);
  const wallet = key ? new Wallet(key, provider) : undefined;
  const context = { action, rpc: options.rpc, fleet, from: wallet?.address };
  try {
    if (fleet) {
      const code = await provider.getCode(fleet);
      if (code === '0x') {
        throw new FleetError('ENOTCONTRACT', `no contract at fleet address ${fleet} on ${options.rpc}: check the address and that the RPC is the chain the fleet was deployed on`);
      }
    }
    return await body({ provider, wallet, fleet, report });
  } catch (error) {
    throw toFleetError(error, context);
  } finally {
    provider.destroy();
  }
}

/** Preflights `tx` (revert, fees), sends it, reports its hash and waits for one confirmation. */
async function send(session: AdminSession, options: FleetAdminOptions, label: string, tx: TransactionRequest): Promise<TxResult & { logs: readonly { address: string; topics: readonly string[]; data: string }[] }> {
  const { provider, wallet, report } = session;
  const from = wallet!.address;
  const request: TransactionRequest = { ...tx, from };
  await provider.call(request); // a revert surfaces here with its decoded error
  const gasLimit = await provider.estimateGas(request);
  const fees = await provider.getFeeData();
  const price = fees.maxFeePerGas ?? fees.gasPrice ?? 0n;
  const balance = await provider.getBalance(from);
  const cost = gasLimit * price;
  if (balance < cost) {
    throw new FleetError('EFUNDS', `admin account ${from} has ${formatEther(balance)} but ${label} may cost up to ${formatEther(cost)} (native coin): fund it and retry`);
  }
  const feeFields: TransactionRequest = fees.maxFeePerGas != null
    ? { maxFeePerGas: fees.maxFeePerGas, maxPriorityFeePerGas: fees.maxPriorityFeePerGas }
    : { gasPrice: fees.gasPrice };
  const sent = await wallet!.sendTransaction({ ...request, gasLimit, ...feeFields });
  report(`${label}: sent tx ${sent.hash}, waiting for ${CONFIRMATIONS} confirmation`);
  const timeoutMs = (options.confirmTimeoutSeconds ?? DEFAULT_CONFIRM_TIMEOUT_S) * 1_000;
  let receipt;
  try {
    receipt = await sent.wait(CONFIRMATIONS, timeoutMs);
  } catch (error) {
    if ((error as { code?: string }).code === 'TIMEOUT') {
      throw new FleetError('ERPC', `${label}: tx ${sent.hash} not confirmed within ${timeoutMs / 1_000} s; it may still be mined, check it before resending`, { cause: error });
    }
    throw error;
  }
  if (!receipt || receipt.status !== 1) {
    throw new FleetError('EREVERT', `${label}: tx ${sent.hash} was mined but reverted; check the fleet owner and the arguments`);
  }
  report(`${label}: confirmed in block ${receipt.blockNumber} (gas used ${receipt.gasUsed})`);
  return { hash: sent.hash, blockNumber: receipt.blockNumber, gasUsed: receipt.gasUsed, logs: receipt.logs };
}

function changedBy(logs: readonly { address: string; topics: readonly string[]; data: string }[], fleet: string, event: 'MemberAdded' | 'MemberRemoved'): string[] {
  const out: string[] = [];
  for (const log of logs) {
    if (getAddress(log.address) !== fleet) continue;
    const parsed = FLEET_INTERFACE.parseLog({ topics: [...log.topics], data: log.data });
    if (parsed?.name === event) out.push(getAddress(parsed.args[0] as string));
  }
  return out;
}

/** Deploys a new fleet owned by the admin key's account. */
export async function deployFleet(options: FleetAdminOptions): Promise<DeployResult> {
  return withSession({ ...options, fleet: undefined }, { key: true, fleet: false }, 'deploying a fleet contract', async (session) => {
    const factory = new ContractFactory(FLEET_ABI, FLEET_BYTECODE, session.wallet);
    const tx = await factory.getDeployTransaction();
    const result = await send(session, options, 'deploy fleet', tx);
    const receipt = await session.provider.getTransactionReceipt(result.hash);
    const fleet = getAddress(receipt!.contractAddress!);
    session.report(`fleet deployed at ${fleet} (owner ${session.wallet!.address})`);
    return { hash: result.hash, blockNumber: result.blockNumber, gasUsed: result.gasUsed, fleet, owner: session.wallet!.address };
  });
}

async function editMembers(options: FleetAdminOptions, addresses: readonly string[], method: 'addMembers' | 'removeMembers'): Promise<MembersResult> {
  const members = normalizeMembers(addresses);
  const perTx = options.membersPerTx ?? MEMBERS_PER_TX;
  if (!Number.isInteger(perTx) || perTx < 1) throw new RangeError(`membersPerTx must be an integer >= 1, got ${perTx}`);
  const event = method === 'addMembers' ? 'MemberAdded' : 'MemberRemoved';
  return withSession(options, { key: true, fleet: true }, `${method} on fleet ${options.fleet}`, async (session) => {
    const contract = new Contract(session.fleet!, FLEET_ABI, session.wallet);
    const result: MembersResult = { txs: [], changed: [] };
    const batches = Math.ceil(members.length / perTx);
    for (let b = 0; b < batches; b++) {
      const batch = members.slice(b * perTx, (b + 1) * perTx);
      const tx = await contract.getFunction(method).populateTransaction(batch);
      const label = batches > 1 ? `${method} batch ${b + 1}/${batches} (${batch.length})` : `${method} (${batch.length})`;
      const sent = await send(session, options, label, tx);
      result.txs.push({ hash: sent.hash, blockNumber: sent.blockNumber, gasUsed: sent.gasUsed });
      result.changed.push(...changedBy(sent.logs, session.fleet!, event));
    }
    return result;
  });
}

/** Adds `addresses` to the fleet (already-present ones are left alone). */
export function addMembers(options: FleetAdminOptions, addresses: readonly string[]): Promise<MembersResult> {
  return editMembers(options, addresses, 'addMembers');
}

/** Removes `addresses` from the fleet (non-members are ignored). */
export function removeMembers(options: FleetAdminOptions, addresses: readonly string[]): Promise<MembersResult> {
  return editMembers(options, addresses, 'removeMembers');
}

/** All current members, checksummed, in contract order. */
export async function listMembers(options: FleetAdminOptions): Promise<string[]> {
  return withSession(options, { key: false, fleet: true }, `listing members of fleet ${options.fleet}`, async (session) => {
    const contract = new Contract(session.fleet!, FLEET_ABI, session.provider);
    const list = (await contract.getFunction('members').staticCall()) as string[];
    return list.map((address) => getAddress(address));
  });
}

/** Whether `address` is a member of the fleet. */
export async function isMember(options: FleetAdminOptions, address: string): Promise<boolean> {
  const member = normalizeAddress(address, 'member');
  return withSession(options, { key: false, fleet: true }, `checking ${member} in fleet ${options.fleet}`, async (session) => {
    const contract = new Contract(session.fleet!, FLEET_ABI, session.provider);
    return (await contract.getFunction('deviceWhitelist').staticCall(member)) as boolean;
  });
}
