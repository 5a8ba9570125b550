// One line per event, to stderr, so stdout stays free for what a command prints
// (an address, a port) and for ProxyCommand use.
export type LogLevel = 'debug' | 'info' | 'warn' | 'error';

const LEVELS: Record<LogLevel, number> = { debug: 10, info: 20, warn: 30, error: 40 };

export interface Logger {
  debug(msg: string): void;
  info(msg: string): void;
  warn(msg: string): void;
  error(msg: string): void;
  child(component: string): Logger;
}

function threshold(): number {
  const env = (process.env.DIODE_LOG ?? 'info') as LogLevel;
  return LEVELS[env] ?? LEVELS.info;
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
