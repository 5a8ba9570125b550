import { Script } from 'node:vm';
import { join } from 'node:path';

// Loads the program's chunks (scripts/build.mjs splits it per command) as
// CommonJS modules: each chunk's `require` resolves other chunks through
// this loader and everything else through Node's own require (inside a
// single executable, built-ins only). A chunk's code runs once, on its first
// require; `diode publish` never reads the relay's or the fleet admin's.

/** Where chunks come from: files next to the bundle, or the archive inside the executable. */
export interface ChunkSource {
  /** The chunk's source text. */
  source(name: string): string;
  /** V8's code cache for it, if the build made one for this node. */
  codeCache?(name: string): Buffer | undefined;
  /** A path-like name for stack traces. */
  filename(name: string): string;
}

/** How many chunks' code caches V8 accepted and rejected (a rejected cache costs its read, nothing else). */
export const codeCacheStats = { accepted: 0, rejected: 0 };

/** DIODE_TRACE_CHUNKS=1: one stderr line per chunk loaded (tests check what each command loads). */
const TRACE = process.env.DIODE_TRACE_CHUNKS === '1';

const WRAP_HEAD = '(function (exports, require, module, __filename, __dirname) {';
const WRAP_TAIL = '\n})';

interface Module {
  exports: unknown;
}

export class ChunkLoader {
  readonly #from: ChunkSource;
  readonly #nodeRequire: NodeJS.Require;
  readonly #dirname: string;
  readonly #modules = new Map<string, Module>();

  constructor(from: ChunkSource, nodeRequire: NodeJS.Require, dirname: string) {
    this.#from = from;
    this.#nodeRequire = nodeRequire;
    this.#dirname = dirname;
  }

  /** A chunk's exports (its code runs on the first call). */
  load(name: string): unknown {
    const known = this.#modules.get(name);
    if (known) return known.exports;
    const filename = this.#from.filename(name);
    if (TRACE) process.stderr.write(`diode: loading chunk ${name}\n`);
    const cachedData = this.#from.codeCache?.(name);
    const script = new Script(WRAP_HEAD + this.#from.source(name) + WRAP_TAIL, { filename, cachedData });
    if (cachedData) codeCacheStats[script.cachedDataRejected ? 'rejected' : 'accepted']++;
    const fn = script.runInThisContext() as (exports: unknown, require: (id: string) => unknown, module: Module, filename: string, dirname: string) => void;
    const module: Module = { exports: {} };
    // Registered before it runs, as Node does: a cycle sees the exports made so far.
    this.#modules.set(name, module);
    fn.call(module.exports, module.exports, (id) => this.require(id), module, filename, this.#dirname);
    return module.exports;
  }

  require(id: string): unknown {
    // Chunks import each other as "./<name>.js" (esbuild's splitting output).
    if (id.startsWith('./')) return this.load(id.slice(2));
    return this.#nodeRequire(id);
  }
}

/** Chunks as files in a directory (the npm bundle: dist/chunks/). */
export function fileSource(dir: string, read: (path: string) => string): ChunkSource {
  return {
    source: (name) => read(join(dir, name)),
    filename: (name) => join(dir, name),
  };
}
