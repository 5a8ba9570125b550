// Replaced at bundle time by scripts/build.mjs (esbuild define); "dev" when run from source.
declare const __DIODE_VERSION_MARK__: string | undefined;
declare const __DIODE_COMMIT__: string | undefined;

/**
 * `diode-version=<version>;`: the version as a text every build carries once
 * and verbatim, so `diode release sign` can read a build's version without
 * running it (agent/release/file.ts VERSION_MARK_PREFIX).
 */
const MARK_PREFIX = 'diode-version=';

/** The release version alone ("0.2.0"; "dev" from source). */
export function releaseVersion(): string {
  const mark = typeof __DIODE_VERSION_MARK__ === 'string' ? __DIODE_VERSION_MARK__ : undefined;
  return mark?.startsWith(MARK_PREFIX) && mark.endsWith(';') ? mark.slice(MARK_PREFIX.length, -1) : 'dev';
}

export function versionString(): string {
  const commit = typeof __DIODE_COMMIT__ === 'string' ? __DIODE_COMMIT__ : 'unknown';
  return `${releaseVersion()} (commit ${commit})`;
}
