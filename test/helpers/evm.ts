// Starts a real ganache node as a child process for the fleet tests.
// One node per test file: `const evm = await startEvm()` in test.before,
// `await evm.stop()` in test.after.always (also killed if the worker exits).
import { spawn, type ChildProcess } from 'node:child_process';
import { createServer } from 'node:net';
import { createRequire } from 'node:module';
import { HDNodeWallet, Mnemonic } from 'ethers';

/** ganache's `--wallet.deterministic` mnemonic. */
export const GANACHE_MNEMONIC = 'myth like bonus scare over problem client lizard pioneer submit female collect';
export const CHAIN_ID = 1337;
const ACCOUNT_COUNT = 10;
/** How long ganache may take to answer its first request, in ms. */
const START_TIMEOUT_MS = 30_000;
/** Delay between readiness probes, in ms. */
const PROBE_INTERVAL_MS = 100;
/** Grace between SIGTERM and SIGKILL on stop, in ms. */
const STOP_GRACE_MS = 2_000;
/** Attempts when the picked free port is taken before ganache binds it. */
const PORT_ATTEMPTS = 3;

export interface Evm {
  url: string;
  wsUrl: string;
  port: number;
  /** Checksummed addresses of the deterministic accounts (1000 ETH each). */
  accounts: string[];
  privateKeys: string[];
  /** Kills the node and waits for it to exit. Safe to call twice. */
  stop(): Promise<void>;
}

const require = createRequire(import.meta.url);
const GANACHE_CLI = require.resolve('ganache/dist/node/cli.js');

function freePort(): Promise<number> {
  return new Promise((resolve, reject) => {
    const server = createServer();
    server.unref();
    server.once('error', reject);
    server.listen(0, '127.0.0.1', () => {
      const address = server.address();
      const port = typeof address === 'object' && address ? address.port : 0;
      server.close(() => resolve(port));
    });
  });
}

function deterministicKeys(): { accounts: string[]; privateKeys: string[] } {
  const mnemonic = Mnemonic.fromPhrase(GANACHE_MNEMONIC);
  const accounts: string[] = [];
  const privateKeys: string[] = [];
  for (let i = 0; i < ACCOUNT_COUNT; i++) {
    const wallet = HDNodeWallet.fromMnemonic(mnemonic, `m/44'/60'/0'/0/${i}`);
    accounts.push(wallet.address);
    privateKeys.push(wallet.privateKey);
  }
  return { accounts, privateKeys };
}

async function rpcAnswers(url: string): Promise<boolean> {
  try {
    const response = await fetch(url, {
      method: 'POST',
      headers: { 'content-type': 'application/json' },
      body: JSON.stringify({ jsonrpc: '2.0', id: 1, method: 'eth_chainId', params: [] }),
      signal: AbortSignal.timeout(1_000),
    });
    const body = (await response.json()) as { result?: string };
    return typeof body.result === 'string';
  } catch {
    return false;
  }
}

const live = new Set<ChildProcess>();
process.once('exit', () => {
  for (const child of live) child.kill('SIGKILL');
});

async function startOnce(port: number): Promise<Evm> {
  const child = spawn(
    process.execPath,
    [
      GANACHE_CLI,
      '--server.host', '127.0.0.1',
      '--server.port', String(port),
      '--wallet.deterministic',
      '--wallet.totalAccounts', String(ACCOUNT_COUNT),
      '--chain.chainId', String(CHAIN_ID),
      '--miner.instamine', 'eager',
      '--logging.quiet',
    ],
    { stdio: ['ignore', 'ignore', 'pipe'] },
  );
  live.add(child);
  let stderr = '';
  child.stderr!.setEncoding('utf8').on('data', (chunk: string) => {
    stderr = (stderr + chunk).slice(-4_000);
  });
  const exited = new Promise<void>((resolve) => child.once('exit', () => resolve()));
  let hasExited = false;
  void exited.then(() => {
    hasExited = true;
    live.delete(child);
  });

  const stop = async (): Promise<void> => {
    if (hasExited) return;
    child.kill('SIGTERM');
    const timer = setTimeout(() => child.kill('SIGKILL'), STOP_GRACE_MS);
    await exited;
    clearTimeout(timer);
  };

  const url = `http://127.0.0.1:${port}`;
  const deadline = Date.now() + START_TIMEOUT_MS;
  while (!(await rpcAnswers(url))) {
    if (hasExited) throw new Error(`ganache exited before answering on port ${port}: ${stderr.trim()}`);
    if (Date.now() > deadline) {
      await stop();
      throw new Error(`ganache did not answer on ${url} within ${START_TIMEOUT_MS} ms: ${stderr.trim()}`);
    }
    await new Promise((resolve) => setTimeout(resolve, PROBE_INTERVAL_MS));
  }
  return { url, wsUrl: `ws://127.0.0.1:${port}`, port, ...deterministicKeys(), stop };
}

/** Starts ganache on a free loopback port and waits until JSON-RPC answers. */
export async function startEvm(): Promise<Evm> {
  let lastError: unknown;
  for (let attempt = 0; attempt < PORT_ATTEMPTS; attempt++) {
    try {
      return await startOnce(await freePort());
    } catch (error) {
      lastError = error;
    }
  }
  throw lastError;
}
