import test from 'ava';
import { readFileSync } from 'node:fs';
import { fileURLToPath } from 'node:url';
import { COMMANDS } from '../agent/cli/commands.ts';
import { buildRegistry } from '../agent/ops/metrics.ts';
import { RelayStats } from '../agent/relay/stats.ts';
import type { AgentStatus } from '../agent/ops/status.ts';

// docs/OPERATING.md (issue 16 item 7) against the program: the topics it must
// cover, and no metric family or flag it names that the program lacks (or the
// other way round for the metric families).

const guide = readFileSync(fileURLToPath(new URL('../docs/OPERATING.md', import.meta.url)), 'utf8');

function section(title: string): string {
  const start = guide.indexOf(`\n## ${title}\n`);
  if (start < 0) return '';
  const end = guide.indexOf('\n## ', start + 4);
  return guide.slice(start, end < 0 ? undefined : end);
}

test('the guide covers a relay on a public server, a device on Raspberry Pi OS, reboot and upgrade', (t) => {
  const relay = section('A relay on a public server');
  for (const topic of [/Firewall: open TCP 41046/, /sudo systemctl enable --now diode-relay/, /0x<relay>@relay\.example\.org:41046/, /LimitNOFILE/, /--metrics 127\.0\.0\.1:9464/, /Upgrades:/, /back up/i]) {
    t.regex(relay, topic, `relay section: ${topic}`);
  }
  const device = section('A device on an existing Raspberry Pi OS');
  for (const topic of [/apt install \.\/diode_[\d.]+_arm64\.deb/, /\/etc\/diode\/publish\.conf/, /systemctl enable --now diode-publish/, /diode status/]) {
    t.regex(device, topic, `device section: ${topic}`);
  }
  const reboot = section('Reboot and upgrade');
  for (const topic of [/Reboot:/, /Upgrade:/, /purge/, /Restart=always/]) t.regex(reboot, topic, `reboot section: ${topic}`);
});

test('the guide says how to make and keep a release key, publish a release to a relay, watch a fleet update, and retire a relay (issue 26 item 7)', (t) => {
  const releases = section('Releases: updating devices from their relay');
  for (const topic of [
    /diode release keygen --key-file/,
    /chmod 600|mode 0600/,
    /offline|backup|back it up/i,
    /diode release sign --key-file \S+ dist\/bin\/diode-linux-arm64/,
    /--releases \/var\/lib\/diode-releases/,
    /update-keys=0x/,
    /diode update --from/,
    /diode status/,
    /diode_update_rollbacks_total/,
    /rolled back/,
    /dpkg/,
  ]) t.regex(releases, topic, `releases section: ${topic}`);
  const relays = section('Moving and retiring relays');
  for (const topic of [/learned/, /diode relay --retire-to 0x\S+@\S+:41046/, /--retire-deadline/, /retired\.json/, /--advertise-agents/, /pinned/]) {
    t.regex(relays, topic, `relays section: ${topic}`);
  }
});

test('every diode_* metric family the guide names is exported, and every exported one is named', async (t) => {
  const status: AgentStatus = { role: 'relay', pid: 1, version: 'test', address: '0x0', startedAt: 0, connected: true, streams: { opened: 0, open: 0, failed: {}, bytes: { rx: 0, tx: 0 } }, sessions: 0 };
  const registry = buildRegistry({ status: () => status, relayStats: new RelayStats() });
  // A device with update-keys adds the update families.
  const update = { keys: 1, applied: 0, rollbacks: 0, launcher: true, counters: { checks: {}, downloads: {}, refusals: {} } };
  const device = buildRegistry({ status: () => ({ ...status, role: 'publish', update }) });
  const exported = new Set([...(await registry.getMetricsAsJSON()), ...(await device.getMetricsAsJSON())].map((m) => m.name).filter((n) => n.startsWith('diode_')));
  const named = new Set(guide.match(/\bdiode_[a-z_]+[a-z]/g));
  t.deepEqual([...named].filter((n) => !exported.has(n)), [], 'named in the guide, not exported');
  t.deepEqual([...exported].filter((n) => !named.has(n)), [], 'exported, not in the guide');
});

test('every --flag the guide uses exists', (t) => {
  const known = new Set(COMMANDS.flatMap((c) => c.flags.map((f) => `--${f.name}`)));
  // service's own options, systemctl's, and the V8 heap bound the agent units give node
  for (const other of ['--user', '--print', '--now', '--max-old-space-size']) known.add(other);
  const used = new Set(guide.match(/--[a-z][a-z-]*/g));
  t.deepEqual([...used].filter((f) => !known.has(f)), []);
});
