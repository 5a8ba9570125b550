import { readFileSync } from 'node:fs';
import { dirname, join } from 'node:path';
import type { ParsedArgs } from '../args.ts';
import type { CommandContext } from '../commands.ts';
import { DiodeError, UsageError, errorMessage } from '../../util/errors.ts';
import { MANIFEST_SUFFIX, parseManifestText, type ReleaseManifest } from '../../release/manifest.ts';
import { applyRelease, updatePolicy } from '../../update/apply.ts';
import { readAllStatuses } from '../../ops/control.ts';

/**
 * `diode update --from FILE`: applies a release by hand, with the checks an
 * agent makes on a release from its relay (update-keys, signature, size,
 * SHA-256, architecture, newer, never rolled back, its --version). FILE is
 * the executable (its manifest beside it as FILE.release.json) or the
 * manifest. A publish agent of this home that runs under the launcher is
 * then stopped, so that its service manager starts the update.
 */
export async function run(args: ParsedArgs, ctx: CommandContext): Promise<number> {
  const from = args.flags.from as string | undefined;
  if (!from) throw new UsageError('update: give the release with --from FILE (the executable, its FILE.release.json beside it)');
  if (args.positionals.length > 0) throw new UsageError(`update: unexpected "${args.positionals[0]}"; the release goes after --from`);
  const { executable, manifest } = readRelease(from);
  if (updatePolicy(ctx.home).keys.length === 0) {
    throw new DiodeError('ENOKEYS', `update-keys is not set in ${ctx.home}: this agent takes no release; set the release key first: diode config -set update-keys=0x<release key address>`);
  }
  const applied = await applyRelease(ctx.home, executable, manifest);
  const back = applied.previous === 'packaged' ? 'the packaged agent' : applied.previous.version;
  process.stdout.write(`installed diode ${applied.version} in ${ctx.home}/update; on trial: back to ${back} unless it reaches a relay within 3 minutes of starting\n`);
  const { statuses } = await readAllStatuses(ctx.home);
  const agent = statuses.find((s) => s.role === 'publish' && s.update?.launcher);
  if (agent) {
    process.kill(agent.pid, 'SIGTERM');
    process.stdout.write(`stopped diode publish (pid ${agent.pid}): its service manager starts ${applied.version} through the launcher\n`);
  } else {
    process.stdout.write('it runs when the launcher next starts the agent (sudo systemctl restart diode-publish; on the image: sudo systemctl restart diode)\n');
  }
  return 0;
}

function readRelease(from: string): { executable: string; manifest: ReleaseManifest } {
  const manifestPath = from.endsWith(MANIFEST_SUFFIX) ? from : `${from}${MANIFEST_SUFFIX}`;
  let text: Buffer;
  try {
    text = readFileSync(manifestPath);
  } catch (err) {
    throw new DiodeError('ERELEASE', `cannot read the release manifest ${manifestPath}: ${errorMessage(err)} (diode release sign writes it beside the executable)`);
  }
  const manifest = parseManifestText(text);
  const executable = from.endsWith(MANIFEST_SUFFIX) ? join(dirname(from), manifest.file) : from;
  return { executable, manifest };
}
