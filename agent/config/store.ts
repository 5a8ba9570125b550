import Conf from 'conf';
import { configKeySpec, CONFIG_KEYS } from './keys.ts';
import { DiodeError, UsageError, errorMessage } from '../util/errors.ts';
import { makeHome } from '../identity/home.ts';
import { stringValue } from './read.ts';

/** The agent's settings, a JSON file in the state directory (written atomically by conf). */
export class ConfigStore {
  readonly #conf: Conf<Record<string, string>>;

  constructor(home: string) {
    makeHome(home);
    try {
      this.#conf = new Conf<Record<string, string>>({ cwd: home, configName: 'config', clearInvalidConfig: false });
    } catch (err) {
      throw new DiodeError('ECONFIG', `cannot open the config in ${home}: ${errorMessage(err)}; fix or delete ${home}/config.json`);
    }
  }

  get path(): string {
    return this.#conf.path;
  }

  get(key: string): string | undefined {
    configKeySpec(key);
    return stringValue(this.path, key, this.#conf.get(key));
  }

  /** Validates and stores; returns the normalised value. */
  set(key: string, value: string): string {
    const normalised = configKeySpec(key).parse(value);
    this.#conf.set(key, normalised);
    return normalised;
  }

  delete(key: string): boolean {
    configKeySpec(key);
    const had = this.#conf.has(key);
    this.#conf.delete(key);
    return had;
  }

  list(): Array<[string, string]> {
    // A hand-edited value of another JSON type is shown as written (get() refuses it by name).
    return Object.keys(CONFIG_KEYS)
      .filter((k) => this.#conf.get(k) !== undefined)
      .map((k) => {
        const value: unknown = this.#conf.get(k);
        return [k, typeof value === 'string' ? value : JSON.stringify(value)];
      });
  }
}

/** Splits "key=value" for -set; the value may itself contain '='. */
export function parseAssignment(text: string): [string, string] {
  const idx = text.indexOf('=');
  if (idx <= 0) throw new UsageError(`-set "${text}": write key=value`);
  return [text.slice(0, idx).trim(), text.slice(idx + 1).trim()];
}
