import { UsageError } from '../util/errors.ts';

export interface FlagSpec {
  name: string;
  type: 'string' | 'boolean';
  /** May be given several times; values collect in order. */
  multiple?: boolean;
  description: string;
  placeholder?: string;
  defaultValue?: string;
}

export type FlagValues = Record<string, string | boolean | string[] | undefined>;

export interface ParsedArgs {
  flags: FlagValues;
  positionals: string[];
}

/**
 * Flags as the Diode client writes them: `-public 22:22` and `--public 22:22`
 * are the same, `--listen=host:port` works too. Unknown flags are errors
 * that name the flag and list the known ones.
 */
export function parseArgs(argv: string[], specs: FlagSpec[], command: string): ParsedArgs {
  const byName = new Map(specs.map((s) => [s.name, s]));
  const flags: FlagValues = {};
  const positionals: string[] = [];
  for (let i = 0; i < argv.length; i++) {
    const arg = argv[i];
    if (arg === '--') {
      positionals.push(...argv.slice(i + 1));
      break;
    }
    if (!arg.startsWith('-') || arg === '-' || /^-\d/.test(arg)) {
      positionals.push(arg);
      continue;
    }
    const body = arg.replace(/^--?/, '');
    const eq = body.indexOf('=');
    const name = eq >= 0 ? body.slice(0, eq) : body;
    const spec = byName.get(name) ?? (name === 'h' ? byName.get('help') : undefined);
    if (!spec) {
      const known = specs.map((s) => `--${s.name}`).join(', ');
      throw new UsageError(`${command}: unknown flag "${arg}"; known flags: ${known}`);
    }
    if (spec.type === 'boolean') {
      if (eq >= 0) {
        const v = body.slice(eq + 1);
        if (v !== 'true' && v !== 'false') throw new UsageError(`${command}: ${arg}: write --${name} alone or --${name}=true|false`);
        flags[spec.name] = v === 'true';
      } else flags[spec.name] = true;
      continue;
    }
    let value: string;
    if (eq >= 0) value = body.slice(eq + 1);
    else {
      if (i + 1 >= argv.length) throw new UsageError(`${command}: ${arg} needs a value (${spec.placeholder ?? 'value'})`);
      value = argv[++i];
    }
    if (spec.multiple) {
      const list = (flags[spec.name] as string[] | undefined) ?? [];
      list.push(value);
      flags[spec.name] = list;
    } else {
      if (flags[spec.name] !== undefined) throw new UsageError(`${command}: --${name} given twice`);
      flags[spec.name] = value;
    }
  }
  for (const spec of specs) {
    if (flags[spec.name] === undefined && spec.defaultValue !== undefined) flags[spec.name] = spec.defaultValue;
  }
  return { flags, positionals };
}

export function flagHelp(specs: FlagSpec[]): string {
  const rows = specs.map((s) => {
    const left = `  --${s.name}${s.type === 'string' ? ` ${s.placeholder ?? 'VALUE'}` : ''}`;
    const extra = [s.multiple ? 'repeatable' : '', s.defaultValue !== undefined ? `default ${s.defaultValue}` : ''].filter(Boolean).join('; ');
    return [left, s.description + (extra ? ` (${extra})` : '')];
  });
  const width = Math.max(...rows.map(([l]) => l.length)) + 2;
  return rows.map(([l, r]) => l.padEnd(width) + r).join('\n');
}
