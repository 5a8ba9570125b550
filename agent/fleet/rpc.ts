// Opening a JSON-RPC connection without ethers' endless "retry in 1s" network
// detection: probe once with a deadline, then hand ethers a fixed network.
// Standard methods only (eth_chainId, eth_call, eth_getLogs, ...).
import { FetchRequest, JsonRpcProvider, Network, WebSocketProvider } from 'ethers';
import { FleetError } from './errors.ts';
import { rpcUrlProblem } from './rpc-url.ts';

/**
 * Admin default deadline for reaching the RPC endpoint and for each request,
 * in ms. Generous: public RPCs and a loaded ganache (estimateGas re-executes
 * the call many times) can take seconds. The device side sets its own, shorter.
 */
export const RPC_TIMEOUT_MS = 30_000;
/** How often ethers polls for a receipt while waiting for a transaction, in ms. */
export const RECEIPT_POLL_MS = 1_000;

/**
 * ethers shares identical requests for 250 ms by default; on an instamine
 * chain that hands a second transaction the first one's nonce. Off.
 */
const NO_REQUEST_CACHE = -1;

export type FleetProvider = JsonRpcProvider | WebSocketProvider;

export function isWebSocketUrl(rpc: string): boolean {
  return /^wss?:\/\//i.test(rpc);
}

/**
 * Checks that `rpc` is an https:// or wss:// URL, or http:// / ws:// to a
 * loopback host (the RPC is trusted: see docs/FLEET.md); throws ERPC naming
 * the setting otherwise.
 */
export function checkRpcUrl(rpc: string, setting = 'rpc (config key rpc, or --rpc)'): void {
  const problem = rpcUrlProblem(rpc, setting);
  if (problem) throw new FleetError('ERPC', problem);
}

/** Rejects with `onTimeout()` when `promise` takes longer than `ms`. */
export function withTimeout<T>(promise: Promise<T>, ms: number, onTimeout: () => Error): Promise<T> {
  let timer: NodeJS.Timeout | undefined;
  const deadline = new Promise<never>((_, reject) => {
    timer = setTimeout(() => reject(onTimeout()), ms);
  });
  return Promise.race([promise, deadline]).finally(() => clearTimeout(timer));
}

function unreachable(rpc: string, why: string, cause?: unknown): FleetError {
  return new FleetError('ERPC', `cannot reach RPC ${rpc}: ${why}; check the URL and that the node is running`, { cause });
}

function reason(error: unknown): string {
  if (error instanceof Error) {
    const cause = (error as { cause?: unknown }).cause;
    const code = (cause as { code?: string } | undefined)?.code ?? (error as { code?: string }).code;
    return code && code !== 'UNKNOWN_ERROR' ? code : error.message.split('\n')[0]!.slice(0, 200);
  }
  return String(error);
}

function fetchRequest(rpc: string, timeoutMs: number): FetchRequest {
  const request = new FetchRequest(rpc);
  request.timeout = timeoutMs;
  return request;
}

async function probeChainId(rpc: string, timeoutMs: number): Promise<bigint> {
  const request = fetchRequest(rpc, timeoutMs);
  request.body = { jsonrpc: '2.0', id: 1, method: 'eth_chainId', params: [] };
  request.setHeader('content-type', 'application/json');
  let body: { result?: unknown };
  try {
    const response = await request.send();
    if (!response.ok()) throw new Error(`HTTP ${response.statusCode} ${response.statusMessage}`);
    body = response.bodyJson as { result?: unknown };
  } catch (error) {
    throw unreachable(rpc, reason(error), error);
  }
  if (typeof body?.result !== 'string') throw unreachable(rpc, 'eth_chainId gave no chain id (is this an Ethereum JSON-RPC endpoint?)');
  return BigInt(body.result);
}

async function openWebSocket(rpc: string, timeoutMs: number): Promise<WebSocketProvider> {
  const provider = new WebSocketProvider(rpc, undefined, { cacheTimeout: NO_REQUEST_CACHE });
  const socket = provider.websocket as unknown as {
    addEventListener(type: string, listener: (event: unknown) => void): void;
    readyState: number;
  };
  let failure: string | undefined;
  // Without an error listener the `ws` socket would throw from its emitter.
  socket.addEventListener('error', (event) => {
    failure = reason((event as { error?: unknown }).error ?? event);
  });
  try {
    await withTimeout(
      new Promise<void>((resolve, reject) => {
        socket.addEventListener('open', () => resolve());
        socket.addEventListener('close', () => reject(new Error(failure ?? 'connection closed')));
      }),
      timeoutMs,
      () => new Error(`no answer within ${timeoutMs} ms`),
    );
    await withTimeout(provider.getNetwork(), timeoutMs, () => new Error(`eth_chainId gave no answer within ${timeoutMs} ms`));
  } catch (error) {
    await provider.destroy();
    throw unreachable(rpc, reason(error), error);
  }
  return provider;
}

/**
 * Opens `rpc` (http(s) or ws(s)) and checks it answers eth_chainId within
 * `timeoutMs`. Throws FleetError ERPC otherwise. The caller destroys it.
 */
export async function openProvider(rpc: string, timeoutMs: number = RPC_TIMEOUT_MS): Promise<FleetProvider> {
  checkRpcUrl(rpc);
  if (isWebSocketUrl(rpc)) return openWebSocket(rpc, timeoutMs);
  const chainId = await probeChainId(rpc, timeoutMs);
  const network = Network.from(chainId);
  return new JsonRpcProvider(fetchRequest(rpc, timeoutMs), network, {
    staticNetwork: network,
    pollingInterval: RECEIPT_POLL_MS,
    batchMaxCount: 1,
    cacheTimeout: NO_REQUEST_CACHE,
  });
}
