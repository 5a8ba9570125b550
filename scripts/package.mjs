// npm run package: Debian packages from the single executables.
//
//   node scripts/package.mjs [--arch amd64,arm64,armhf] [--out dist/deb] [--fast] [--version V]
//
// writes dist/deb/diode_<version>_<arch>.deb with dpkg-deb. Each holds
// /usr/bin/diode (the single executable from dist/bin, built with
// `npm run cross-build` for the missing ones), diode-publish.service and
// diode-relay.service reading their flags from /etc/diode/{publish,relay}.conf
// (conffiles), and maintainer scripts that create the `diode` system user and
// /var/lib/diode (the key survives upgrades; purge removes both).
// --fast compresses with gzip -1 instead of xz (tests).
import { execFileSync } from 'node:child_process';
import { chmodSync, copyFileSync, existsSync, mkdirSync, mkdtempSync, readFileSync, rmSync, statSync, writeFileSync, readdirSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { dirname, join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import { gzipSync } from 'node:zlib';

const root = join(dirname(fileURLToPath(import.meta.url)), '..');
const pkg = JSON.parse(readFileSync(join(root, 'package.json'), 'utf8'));
const files = join(root, 'packaging', 'debian');

/** Debian architecture → cross-build target and what its binary needs besides libc. */
const ARCHES = {
  amd64: { target: 'x64', depends: ['libc6 (>= 2.28)', 'libstdc++6', 'libgcc-s1'] },
  arm64: { target: 'arm64', depends: ['libc6 (>= 2.28)', 'libstdc++6', 'libgcc-s1'] },
  armhf: { target: 'armv7', depends: ['libc6 (>= 2.28)', 'libstdc++6', 'libgcc-s1', 'libatomic1'] },
};

function option(name, fallback) {
  const i = process.argv.indexOf(`--${name}`);
  return i >= 0 ? process.argv[i + 1] : fallback;
}

const arches = option('arch', Object.keys(ARCHES).join(',')).split(',');
for (const a of arches) if (!ARCHES[a]) throw new Error(`package: unknown --arch ${a}; use ${Object.keys(ARCHES).join(', ')}`);
const out = resolve(root, option('out', 'dist/deb'));
const fast = process.argv.includes('--fast');
/** --version overrides package.json's (a test builds an "upgrade" this way). */
const version = option('version', pkg.version);
const binDir = process.env.DIODE_BIN_DIR ?? join(root, 'dist', 'bin');

const missing = arches.filter((a) => !existsSync(join(binDir, `diode-linux-${ARCHES[a].target}`)));
if (missing.length > 0) {
  console.log(`package: building ${missing.map((a) => ARCHES[a].target).join(', ')} with cross-build`);
  execFileSync(process.execPath, [join(root, 'cross-build', 'build.mjs'), '--target', missing.map((a) => ARCHES[a].target).join(',')], { stdio: 'inherit', cwd: root });
}

function put(tree, path, source, mode) {
  const dest = join(tree, path);
  mkdirSync(dirname(dest), { recursive: true });
  if (Buffer.isBuffer(source) || typeof source === 'string' && !existsSync(source)) writeFileSync(dest, source);
  else copyFileSync(source, dest);
  chmodSync(dest, mode);
}

function du(dir) {
  let bytes = 0;
  for (const entry of readdirSync(dir, { withFileTypes: true })) {
    const p = join(dir, entry.name);
    bytes += entry.isDirectory() ? du(p) : statSync(p).size;
  }
  return bytes;
}

mkdirSync(out, { recursive: true });
const date = new Date().toUTCString().replace(/GMT$/, '+0000');
const changelog = `diode (${version}) unstable; urgency=medium\n\n  * Packaged from the single executables (npm run package).\n\n -- diode maintainers <maintainers@example.org>  ${date}\n`;
const copyright = [
  'Format: https://www.debian.org/doc/packaging-manuals/copyright-format/1.0/',
  'Upstream-Name: diode',
  '',
  'Files: *',
  `Copyright: ${new Date().getUTCFullYear()} diode authors`,
  `License: ${pkg.license}`,
  '',
  'Files: usr/bin/diode',
  'Comment: a Node.js runtime (https://nodejs.org, MIT and the licenses in its',
  ' LICENSE file) with the diode bundle and its npm dependencies inside.',
  '',
  `License: ${pkg.license}`,
  ' Permission is hereby granted, free of charge, to any person obtaining a copy',
  ' of this software and associated documentation files, to deal in the Software',
  ' without restriction, subject to the MIT license conditions.',
  '',
].join('\n');

for (const arch of arches) {
  const started = Date.now();
  const tree = mkdtempSync(join(tmpdir(), `diode-deb-${arch}-`));
  chmodSync(tree, 0o755);
  try {
    put(tree, 'usr/bin/diode', join(binDir, `diode-linux-${ARCHES[arch].target}`), 0o755);
    // How diode-publish starts: a verified update from /var/lib/diode/update when one is selected, else /usr/bin/diode.
    put(tree, 'usr/lib/diode/launch', join(root, 'packaging/diode-launch'), 0o755);
    for (const unit of ['diode-publish.service', 'diode-relay.service']) put(tree, `lib/systemd/system/${unit}`, join(files, unit), 0o644);
    for (const conf of ['publish.conf', 'relay.conf']) put(tree, `etc/diode/${conf}`, join(files, conf), 0o644);
    put(tree, 'usr/share/doc/diode/copyright', copyright, 0o644);
    put(tree, 'usr/share/doc/diode/changelog.gz', gzipSync(changelog, { level: 9 }), 0o644);
    for (const doc of ['README.md', 'docs/OPERATING.md', 'docs/PROTOCOL.md']) {
      if (existsSync(join(root, doc))) put(tree, `usr/share/doc/diode/${doc.split('/').pop()}`, join(root, doc), 0o644);
    }
    put(tree, 'usr/share/lintian/overrides/diode', readFileSync(join(files, 'lintian-overrides')), 0o644);
    const installedKiB = Math.ceil(du(tree) / 1024);
    const control = [
      'Package: diode',
      `Version: ${version}`,
      `Architecture: ${arch}`,
      'Maintainer: diode maintainers <maintainers@example.org>',
      `Installed-Size: ${installedKiB}`,
      `Depends: adduser, ${ARCHES[arch].depends.join(', ')}`,
      'Section: net',
      'Priority: optional',
      'Homepage: https://diode.invalid/',
      `Description: reach a device by a name derived from its key`,
      ' diode publishes a device\'s local TCP ports (SSH first) through relays, so',
      ' a machine with no public IP and no open port is reachable as',
      ' 0x<address>.diode. This package runs either side as a service:',
      ' diode-publish (a device) or diode-relay (a relay on a public server).',
      '',
    ].join('\n');
    put(tree, 'DEBIAN/control', control, 0o644);
    put(tree, 'DEBIAN/conffiles', '/etc/diode/publish.conf\n/etc/diode/relay.conf\n', 0o644);
    for (const script of ['postinst', 'prerm', 'postrm']) put(tree, `DEBIAN/${script}`, join(files, script), 0o755);
    const deb = join(out, `diode_${version}_${arch}.deb`);
    execFileSync('dpkg-deb', ['--root-owner-group', fast ? '-Zgzip' : '-Zxz', fast ? '-z1' : '-z6', '--build', tree, deb], { stdio: ['ignore', 'ignore', 'inherit'] });
    console.log(`package: ${deb} (${(statSync(deb).size / 1e6).toFixed(1)} MB) in ${((Date.now() - started) / 1000).toFixed(1)} s`);
  } finally {
    rmSync(tree, { recursive: true, force: true });
  }
}
