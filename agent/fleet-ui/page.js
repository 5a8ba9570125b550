// The fleet admin page: an injected EIP-1193 wallet (MetaMask, or a test
// provider) signs through ethers' BrowserProvider. Bundled for the browser by
// agent/fleet-ui/build.mjs and served by `diode fleet ui`.
import { BrowserProvider, Contract, ContractFactory, getAddress, isAddress } from 'ethers';
import artifact from '../../contracts/artifacts/DiodeFleet.json';

const $ = (id) => document.getElementById(id);
const state = { provider: null, signer: null, account: null, busy: false };

function log(line, error = false) {
  const row = document.createElement('div');
  row.textContent = `${new Date().toLocaleTimeString()} ${line}`;
  if (error) row.className = 'error';
  $('log').prepend(row);
}

function reason(err) {
  if (err?.code === 'ACTION_REJECTED') return 'rejected in the wallet';
  if (err?.revert?.name) return `reverted with ${err.revert.name}()${err.revert.name === 'NotOwner' ? ': the connected account is not the fleet owner' : ''}`;
  return err?.shortMessage ?? err?.message ?? String(err);
}

function fleetAddress() {
  const value = $('fleet').value.trim();
  if (!isAddress(value)) throw new Error(`fleet address "${value}" is not an address (0x followed by 40 hex digits)`);
  return getAddress(value);
}

function parseAddresses() {
  const items = $('addresses').value.split(/[\s,;]+/).filter(Boolean);
  if (items.length === 0) throw new Error('enter at least one client address');
  const bad = items.filter((a) => !isAddress(a));
  if (bad.length) throw new Error(`not an address: ${bad.join(', ')}`);
  return [...new Set(items.map((a) => getAddress(a)))];
}

function refreshButtons() {
  const connected = state.signer !== null;
  const hasFleet = isAddress($('fleet').value.trim());
  $('connect').disabled = state.busy;
  $('deploy').disabled = state.busy || !connected;
  $('load').disabled = state.busy || !connected || !hasFleet;
  $('add').disabled = state.busy || !connected || !hasFleet;
  $('remove').disabled = state.busy || !connected || !hasFleet;
}

/** Runs one action with the buttons locked; any error becomes one log line. */
async function action(body) {
  if (state.busy) return;
  state.busy = true;
  refreshButtons();
  try {
    await body();
  } catch (err) {
    log(reason(err), true);
  } finally {
    state.busy = false;
    refreshButtons();
  }
}

async function confirm(label, tx) {
  log(`${label}: sent tx ${tx.hash}, waiting for confirmation…`);
  const receipt = await tx.wait(1);
  if (!receipt || receipt.status !== 1) throw new Error(`${label}: tx ${tx.hash} reverted`);
  log(`${label}: confirmed in block ${receipt.blockNumber}`);
  return receipt;
}

async function connect() {
  if (!window.ethereum) throw new Error('no wallet found: install MetaMask (or another EIP-1193 wallet) and reload');
  state.provider = new BrowserProvider(window.ethereum);
  await state.provider.send('eth_requestAccounts', []);
  state.signer = await state.provider.getSigner();
  state.account = await state.signer.getAddress();
  const network = await state.provider.getNetwork();
  $('account').textContent = state.account;
  $('chain').textContent = String(network.chainId);
  log(`connected ${state.account} on chain ${network.chainId}`);
  window.ethereum.on?.('accountsChanged', () => location.reload());
  window.ethereum.on?.('chainChanged', () => location.reload());
}

function fleetContract(runner) {
  return new Contract(fleetAddress(), artifact.abi, runner);
}

async function loadMembers() {
  const address = fleetAddress();
  if ((await state.provider.getCode(address)) === '0x') throw new Error(`no contract at ${address} on this chain`);
  const fleet = fleetContract(state.provider);
  const [members, owner] = await Promise.all([fleet.members(), fleet.owner()]);
  $('owner').textContent = owner + (getAddress(owner) === state.account ? ' (you)' : '');
  $('count').textContent = String(members.length);
  const list = $('members');
  list.replaceChildren(...members.map((m) => {
    const item = document.createElement('li');
    item.textContent = getAddress(m);
    return item;
  }));
  history.replaceState(null, '', `#${address}`);
}

async function deploy() {
  const factory = new ContractFactory(artifact.abi, artifact.bytecode, state.signer);
  const contract = await factory.deploy();
  const receipt = await confirm('deploy fleet', contract.deploymentTransaction());
  const address = getAddress(receipt.contractAddress);
  $('fleet').value = address;
  log(`fleet deployed at ${address}; on devices and clients: diode config -set fleet=${address}`);
  await loadMembers();
}

async function edit(method) {
  const list = parseAddresses();
  const tx = await fleetContract(state.signer)[method](list);
  await confirm(`${method} (${list.length})`, tx);
  await loadMembers();
}

async function init() {
  $('connect').onclick = () => action(connect);
  $('deploy').onclick = () => action(deploy);
  $('load').onclick = () => action(loadMembers);
  $('add').onclick = () => action(() => edit('addMembers'));
  $('remove').onclick = () => action(() => edit('removeMembers'));
  $('fleet').oninput = refreshButtons;
  const fromHash = location.hash.slice(1);
  if (isAddress(fromHash)) $('fleet').value = getAddress(fromHash);
  else {
    try {
      const config = await (await fetch('config.json')).json();
      if (config.fleet) $('fleet').value = config.fleet;
    } catch {
      // no defaults: fine
    }
  }
  refreshButtons();
  document.body.dataset.ready = 'true';
}

void init();
