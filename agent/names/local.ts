import { join } from 'node:path';
import { NameFile } from './file.ts';
import type { NameSource, Pins } from './resolver.ts';

/** In the state directory: a person's own names (`diode name set`), looked up first and never sent anywhere. */
export const LOCAL_NAMES_FILE = 'names';
/** In the state directory: names learned from relays, pinned on first use (`diode name forget` drops one). */
export const KNOWN_NAMES_FILE = 'known_names';

export function localNamesFile(home: string): NameFile {
  return new NameFile(join(home, LOCAL_NAMES_FILE), 'local names');
}

export function knownNamesFile(home: string): NameFile {
  return new NameFile(join(home, KNOWN_NAMES_FILE), 'known names');
}

/** The person's own names as the first source of the chain. */
export function localNameSource(file: NameFile): NameSource {
  return {
    label: 'your names (diode name list)',
    pinned: false,
    lookup: async (name) => {
      const entry = file.get(name);
      return entry ? { address: entry.address, from: `your names (${file.path})` } : undefined;
    },
  };
}

/** Pins kept in the known_names file, each with where and when it was learned. */
export function filePins(file: NameFile): Pins {
  return {
    where: file.path,
    pinned: (name) => file.get(name)?.address,
    pin: (name, address, from) => file.append({ name, address, comment: `from ${from}, ${new Date().toISOString()}` }),
  };
}
