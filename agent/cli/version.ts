// Replaced at bundle time by scripts/build.mjs (esbuild define); "dev" when run from source.
declare const __DIODE_VERSION__: string | undefined;
declare const __DIODE_COMMIT__: string | undefined;

export function versionString(): string {
  const version = typeof __DIODE_VERSION__ === 'string' ? __DIODE_VERSION__ : 'dev';
  const commit = typeof __DIODE_COMMIT__ === 'string' ? __DIODE_COMMIT__ : 'unknown';
  return `${version} (commit ${commit})`;
}
