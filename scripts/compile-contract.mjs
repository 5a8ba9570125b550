// Compiles contracts/DiodeFleet.sol with the solc npm package and writes
// contracts/artifacts/DiodeFleet.json ({contractName, abi, bytecode, compiler}).
// The artifact is committed: the agent needs no compiler at run time.
//
//   node scripts/compile-contract.mjs          write the artifact
//   node scripts/compile-contract.mjs --check  exit 1 if the committed one is stale
//
// evmVersion "paris": ganache 7.9.2 knows no PUSH0 (shanghai), and paris
// bytecode runs on every current chain too. Output is deterministic: same
// source and compiler, same bytes (source key has no absolute path).
import solc from 'solc';
import { readFileSync, writeFileSync, mkdirSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';

const CONTRACT = 'DiodeFleet';
const EVM_VERSION = 'paris';
const OPTIMIZER_RUNS = 200;

const root = join(dirname(fileURLToPath(import.meta.url)), '..');
const sourceName = `${CONTRACT}.sol`;
const sourcePath = join(root, 'contracts', sourceName);
const outPath = join(root, 'contracts', 'artifacts', `${CONTRACT}.json`);

const input = {
  language: 'Solidity',
  sources: { [sourceName]: { content: readFileSync(sourcePath, 'utf8') } },
  settings: {
    optimizer: { enabled: true, runs: OPTIMIZER_RUNS },
    evmVersion: EVM_VERSION,
    outputSelection: { [sourceName]: { [CONTRACT]: ['abi', 'evm.bytecode.object'] } },
  },
};

const output = JSON.parse(solc.compile(JSON.stringify(input)));
const errors = (output.errors ?? []).filter((e) => e.severity === 'error');
for (const e of output.errors ?? []) process.stderr.write(`${e.formattedMessage}\n`);
if (errors.length > 0) {
  process.stderr.write(`compile-contract: ${errors.length} error(s) in ${sourcePath}\n`);
  process.exit(1);
}

const compiled = output.contracts[sourceName][CONTRACT];
const artifact = {
  contractName: CONTRACT,
  abi: compiled.abi,
  bytecode: `0x${compiled.evm.bytecode.object}`,
  compiler: {
    solc: solc.version(),
    evmVersion: EVM_VERSION,
    optimizer: { enabled: true, runs: OPTIMIZER_RUNS },
  },
};
const text = `${JSON.stringify(artifact, null, 2)}\n`;

if (process.argv.includes('--check')) {
  let current = '';
  try {
    current = readFileSync(outPath, 'utf8');
  } catch {
    // missing counts as stale
  }
  if (current !== text) {
    process.stderr.write(`compile-contract: ${outPath} is stale; run node scripts/compile-contract.mjs\n`);
    process.exit(1);
  }
  process.stdout.write(`compile-contract: ${outPath} is up to date\n`);
} else {
  mkdirSync(dirname(outPath), { recursive: true });
  writeFileSync(outPath, text);
  process.stdout.write(`compile-contract: wrote ${outPath} (${(artifact.bytecode.length - 2) / 2} bytes)\n`);
}
