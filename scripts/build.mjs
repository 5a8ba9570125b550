// Bundles the whole program into one CommonJS file that `node` runs
// (and that cross-build/ turns into single executables: inside a Node SEA
// `require` only loads built-ins, so everything must be in the bundle).
import { build } from 'esbuild';
import { execFileSync } from 'node:child_process';
import { readFileSync, chmodSync } from 'node:fs';
import { buildFleetUi } from '../agent/fleet-ui/build.mjs';

const pkg = JSON.parse(readFileSync(new URL('../package.json', import.meta.url), 'utf8'));
// DIODE_VERSION: build another version than package.json's (a release under test, an update to try).
const version = process.env.DIODE_VERSION ?? pkg.version;
if (!/^\d+\.\d+\.\d+(-[0-9A-Za-z.-]+)?$/.test(version)) throw new Error(`DIODE_VERSION "${version}" is not MAJOR.MINOR.PATCH[-prerelease]`);

function gitCommit() {
  if (process.env.DIODE_COMMIT) return process.env.DIODE_COMMIT;
  try {
    return execFileSync('git', ['rev-parse', '--short=12', 'HEAD'], { stdio: ['ignore', 'pipe', 'ignore'] }).toString().trim();
  } catch {
    return 'unknown';
  }
}

const outfile = process.argv[2] ?? 'dist/diode.cjs';
// Whitespace and comments out, names kept: the source text stays in every
// agent's heap for its whole life (and a single non-ASCII character in a
// comment makes V8 hold all of it as UTF-16), so this saves ≈ 3 MB of RSS
// per process. DIODE_BUNDLE_READABLE=1 keeps the layout, with esbuild's
// "// path/to/file.ts" markers that `npm run bench -- --profile` maps back.
const readable = process.env.DIODE_BUNDLE_READABLE === '1';
// The fleet admin page (`diode fleet ui`) travels inside the bundle as strings.
const fleetUi = await buildFleetUi();
await build({
  entryPoints: ['agent/cli/main.ts'],
  outfile,
  bundle: true,
  platform: 'node',
  target: 'node20',
  format: 'cjs',
  minifyWhitespace: !readable,
  minifySyntax: !readable,
  charset: 'ascii',
  sourcemap: false,
  legalComments: 'none',
  banner: { js: '#!/usr/bin/env node' },
  define: {
    // agent/cli/version.ts: the version as one verbatim mark, which `diode release sign` reads from a build.
    __DIODE_VERSION_MARK__: JSON.stringify(`diode-version=${version};`),
    __DIODE_COMMIT__: JSON.stringify(gitCommit()),
    __FLEET_UI_HTML__: JSON.stringify(fleetUi.html),
    __FLEET_UI_JS__: JSON.stringify(fleetUi.js),
  },
  logLevel: 'warning',
});
chmodSync(outfile, 0o755);
