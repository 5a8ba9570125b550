import test from 'ava';
import { existsSync } from 'node:fs';
import { request } from 'node:http';
import { chromium, type Browser, type Page } from 'playwright-core';
import { start, tempDir } from './helpers/diode.ts';
import { startEvm, type Evm } from './helpers/evm.ts';
import { runDiode } from './helpers/fleet.ts';

const CHROMIUM = '/usr/bin/chromium';
const CHROMIUM_ARGS = ['--headless', '--no-sandbox', '--disable-gpu', '--disable-quic', '--no-first-run', '--disable-background-networking', '--disable-component-update', '--disable-sync'];
/** Longest wait for one UI step (a transaction and its confirmation on a loaded machine), in ms. */
const STEP_TIMEOUT_MS = 30_000;

let evm: Evm;
let browser: Browser;
test.before(async () => {
  if (!existsSync(CHROMIUM)) throw new Error(`${CHROMIUM} not found: apt-get install chromium`);
  [evm, browser] = await Promise.all([startEvm(), chromium.launch({ executablePath: CHROMIUM, args: CHROMIUM_ARGS })]);
});
test.after.always(async () => {
  await Promise.all([browser?.close(), evm?.stop()]);
});

/**
 * Stands in for MetaMask: `window.ethereum.request` forwards to ganache's
 * JSON-RPC through the test process, as ganache account 0 (unlocked, so
 * eth_sendTransaction signs there). Records the methods the page used.
 */
async function injectWallet(page: Page, evm: Evm, methods: string[]): Promise<void> {
  await page.exposeFunction('__testWalletRpc', async (method: string, params: unknown[]) => {
    methods.push(method);
    const body = method === 'eth_requestAccounts' || method === 'eth_accounts'
      ? { result: [evm.accounts[0]] }
      : ((await (await fetch(evm.url, {
          method: 'POST',
          headers: { 'content-type': 'application/json' },
          body: JSON.stringify({ jsonrpc: '2.0', id: 1, method, params }),
        })).json()) as { result?: unknown; error?: { code: number; message: string; data?: unknown } });
    return body;
  });
  await page.addInitScript(() => {
    const call = (window as unknown as { __testWalletRpc(m: string, p: unknown[]): Promise<{ result?: unknown; error?: { code: number; message: string; data?: unknown } }> }).__testWalletRpc;
    (window as unknown as { ethereum: unknown }).ethereum = {
      isMetaMask: false,
      async request({ method, params }: { method: string; params?: unknown[] }) {
        const answer = await call(method, params ?? []);
        if (answer.error) throw Object.assign(new Error(answer.error.message), answer.error);
        return answer.result;
      },
      on() {},
      removeListener() {},
    };
  });
}

function hostStatus(port: number, host: string): Promise<number> {
  return new Promise((resolve, reject) => {
    const req = request({ host: '127.0.0.1', port, path: '/', headers: { host } }, (res) => {
      res.resume();
      resolve(res.statusCode ?? 0);
    });
    req.once('error', reject);
    req.end();
  });
}

test('the admin page deploys a fleet, adds and removes members and lists them through an injected wallet', async (t) => {
  const ui = start(t, ['fleet', 'ui', '--listen', '127.0.0.1:0', '--home', tempDir(t)]);
  const url = (await ui.waitFor(/fleet ui on (http:\/\/127\.0\.0\.1:(\d+)\/)/))[1]!;
  const port = Number(new URL(url).port);
  t.is(await hostStatus(port, 'attacker.example'), 421, 'a foreign Host header (DNS rebinding) is refused');

  const methods: string[] = [];
  const page = await browser.newPage();
  t.teardown(() => page.close());
  await injectWallet(page, evm, methods);
  await page.goto(url);
  await page.waitForSelector('body[data-ready="true"]');

  await page.click('#connect');
  await page.waitForFunction((account) => document.getElementById('account')?.textContent === account, evm.accounts[0]);

  await page.click('#deploy');
  await page.waitForFunction(() => /fleet deployed at 0x[0-9a-fA-F]{40}/.test(document.getElementById('log')?.textContent ?? ''), undefined, { timeout: STEP_TIMEOUT_MS });
  const fleet = await page.inputValue('#fleet');
  t.regex(fleet, /^0x[0-9a-fA-F]{40}$/);
  t.regex(await page.textContent('#log') ?? '', /deploy fleet: sent tx 0x[0-9a-f]{64}, waiting for confirmation/);
  await page.waitForFunction((owner) => document.getElementById('owner')?.textContent === `${owner} (you)`, evm.accounts[0]);

  const [a, b] = [evm.accounts[7]!, evm.accounts[8]!];
  await page.fill('#addresses', `${a}\n${b.toLowerCase()}`);
  await page.click('#add');
  await page.waitForFunction(() => document.getElementById('count')?.textContent === '2', undefined, { timeout: STEP_TIMEOUT_MS });
  t.deepEqual(await page.locator('#members li').allTextContents(), [a, b]);

  await page.fill('#addresses', a);
  await page.click('#remove');
  await page.waitForFunction(() => document.getElementById('count')?.textContent === '1', undefined, { timeout: STEP_TIMEOUT_MS });
  t.deepEqual(await page.locator('#members li').allTextContents(), [b]);

  // The chain agrees, read by the CLI; and the wallet, not the page, sent every transaction.
  const list = await runDiode(['fleet', 'list', '--rpc', evm.url, '--fleet', fleet]);
  t.is(list.stdout, `${b}\n`);
  t.is(methods.filter((m) => m === 'eth_sendTransaction').length, 3);
  t.false(methods.includes('eth_sendRawTransaction'));

  // A bad address is one line in the page, not a transaction.
  await page.fill('#addresses', '0x1234');
  await page.click('#add');
  await page.waitForSelector('#log .error');
  t.regex(await page.textContent('#log .error') ?? '', /not an address: 0x1234/);
});
