// One line per event, to stderr, so stdout stays free for what a command prints
// (an address, a port) and for ProxyCommand use.
import { UsageError } from './errors.ts';

export type LogLevel = 'debug' | 'info' | 'warn' | 'error';

const LEVELS: Record<LogLevel, number> = { debug: 10, info: 20, warn: 30, error: 40 };
export const LOG_LEVELS = Object.freeze(Object.keys(LEVELS) as LogLevel[]);

/** Checks a level given by a person (`--log-level`, `DIODE_LOG`); `what` names where it came from. */
export function parseLogLevel(text: string, what: string): LogLevel {
  const level = text.trim().toLowerCase();
  if (!Object.prototype.hasOwnProperty.call(LEVELS, level)) {
    throw new UsageError(`${what}: "${text}" is not a log level; use ${LOG_LEVELS.join(', ')}`);
  }
  return level as LogLevel;
}

/** Set once by the CLI entry from --log-level or DIODE_LOG (validated there). */
let chosenLevel: LogLevel | undefined;

export function setLogLevel(level: LogLevel): void {
  chosenLevel = level;
}

/** True when a person asked for a level (flag or environment), not just the default. */
export function logLevelChosen(): boolean {
  return chosenLevel !== undefined || Boolean(process.env.DIODE_LOG);
}

export interface Logger {
  debug(msg: string): void;
  info(msg: string): void;
  warn(msg: string): void;
  error(msg: string): void;
  child(component: string): Logger;
}

function threshold(): number {
  const level = chosenLevel ?? ((process.env.DIODE_LOG ?? 'info').trim().toLowerCase() as LogLevel);
  return LEVELS[level] ?? LEVELS.info;
}

export function createLogger(component: string, sink: (line: string) => void = (l) => process.stderr.write(l + '\n')): Logger {
  const min = threshold();
  const emit = (level: LogLevel, msg: string) => {
    if (LEVELS[level] < min) return;
    sink(`${new Date().toISOString()} ${level.padEnd(5)} [${component}] ${msg}`);
  };
  return {
    debug: (m) => emit('debug', m),
    info: (m) => emit('info', m),
    warn: (m) => emit('warn', m),
    error: (m) => emit('error', m),
    child: (c) => createLogger(`${component}/${c}`, sink),
  };
}

/** A logger that drops everything: for library use in tests. */
export const silentLogger: Logger = {
  debug() {},
  info() {},
  warn() {},
  error() {},
  child() {
    return silentLogger;
  },
};
