import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { configKeySpec } from './keys.ts';
import { DiodeError, UsageError, errorMessage } from '../util/errors.ts';

/** The file ConfigStore (conf, cwd = home, configName "config") writes. */
export function configPath(home: string): string {
  return join(home, 'config.json');
}

/**
 * Reads one key without loading conf: the long-running agents only read
 * their settings, and conf with its JSON-schema validator costs ≈ 14 MB of
 * RSS that a Pi's agent should not carry. `diode config` writes through conf.
 */
export function readConfigValue(home: string, key: string): string | undefined {
  configKeySpec(key);
  const path = configPath(home);
  let text: string;
  try {
    text = readFileSync(path, 'utf8');
  } catch (err) {
    // ENOTDIR: the home is a file; creating it (for the key) says so.
    const code = (err as NodeJS.ErrnoException).code;
    if (code === 'ENOENT' || code === 'ENOTDIR') return undefined;
    throw new DiodeError('ECONFIG', `cannot read the config ${path}: ${errorMessage(err)}`);
  }
  let parsed: unknown;
  try {
    parsed = JSON.parse(text);
  } catch {
    throw new DiodeError('ECONFIG', `the config ${path} is not valid JSON; fix it or delete it and set the keys again with diode config -set`);
  }
  if (parsed === null || typeof parsed !== 'object') throw new DiodeError('ECONFIG', `the config ${path} is not a JSON object`);
  return stringValue(path, key, (parsed as Record<string, unknown>)[key]);
}

/**
 * A key's value as stored: every value is a JSON string, so a hand-edited
 * `"relays": 5` or `"fleet-ttl": 60` is refused by name, not taken for an
 * unset key.
 */
export function stringValue(path: string, key: string, value: unknown): string | undefined {
  if (value === undefined || typeof value === 'string') return value;
  const shown = JSON.stringify(value);
  throw new UsageError(
    `the "${key}" key in ${path} holds ${shown.length > 40 ? shown.slice(0, 40) + '…' : shown}, not a string; fix it with diode config -set ${key}=${configKeySpec(key).example}`,
  );
}
