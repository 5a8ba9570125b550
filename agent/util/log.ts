// One line per event, to stderr, so stdout stays free for what a command prints
// (an address, a port) and for ProxyCommand use.
import { fstatSync } from 'node:fs';
import { UsageError } from './errors.ts';
import { escapeText } from './escape.ts';

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

/**
 * `text`: `<ISO time> <level> [<component>] <message>`; when stderr is the
 * journal (systemd's JOURNAL_STREAM names it), `<syslog priority><level>
 * [<component>] <message>`: journald stamps each line itself and reads the
 * priority from the prefix, so a line carries one time stamp, not two.
 * `json`: one object per line, `{"time","level","component","msg",...fields}`,
 * for journald/Loki/Elastic; the fields repeat what the message says
 * (addresses, ports, reasons), never key material.
 */
export type LogFormat = 'text' | 'json';
export const LOG_FORMATS: readonly LogFormat[] = ['text', 'json'];

/** Structured detail of a line: shown as JSON fields in the json format, dropped in text (the message says it). */
export type LogFields = Record<string, string | number | boolean | undefined>;

export interface Logger {
  debug(msg: string, fields?: LogFields): void;
  info(msg: string, fields?: LogFields): void;
  warn(msg: string, fields?: LogFields): void;
  error(msg: string, fields?: LogFields): void;
  child(component: string): Logger;
}

function threshold(): number {
  const level = chosenLevel ?? ((process.env.DIODE_LOG ?? 'info').trim().toLowerCase() as LogLevel);
  return LEVELS[level] ?? LEVELS.info;
}

/** Checks a --log-format / DIODE_LOG_FORMAT value. */
export function parseLogFormat(value: string, what: string): LogFormat {
  if ((LOG_FORMATS as readonly string[]).includes(value)) return value as LogFormat;
  throw new UsageError(`${what}: "${value}" is not a log format; use ${LOG_FORMATS.join(' or ')}`);
}

let format: LogFormat | undefined;

/** Sets the line format for loggers created afterwards (the CLI's --log-format; else $DIODE_LOG_FORMAT; else text). */
export function setLogFormat(value: LogFormat): void {
  format = value;
}

function currentFormat(): LogFormat {
  if (format) return format;
  return process.env.DIODE_LOG_FORMAT === 'json' ? 'json' : 'text';
}

/** syslog(3) priorities of the levels, for journald's `<N>` line prefix (SyslogLevelPrefix=yes, its default). */
const SYSLOG_PRIORITY: Record<LogLevel, number> = { debug: 7, info: 6, warn: 4, error: 3 };

const stderrSink = (line: string): void => void process.stderr.write(line + '\n');

let journal: boolean | undefined;

/**
 * True when stderr is a stream to systemd's journal: JOURNAL_STREAM holds the
 * "device:inode" of that stream, and stderr must be that very file (a child
 * inherits the variable with its stderr redirected elsewhere).
 */
export function stderrIsJournal(env: NodeJS.ProcessEnv = process.env): boolean {
  const m = /^(\d+):(\d+)$/.exec(env.JOURNAL_STREAM ?? '');
  if (!m) return false;
  try {
    const st = fstatSync(2, { bigint: true });
    return st.dev === BigInt(m[1]) && st.ino === BigInt(m[2]);
  } catch {
    return false;
  }
}

export function createLogger(component: string, sink: (line: string) => void = stderrSink): Logger {
  const min = threshold();
  const json = currentFormat() === 'json';
  journal ??= stderrIsJournal();
  const toJournal = sink === stderrSink && journal;
  const emit = (level: LogLevel, msg: string, fields?: LogFields) => {
    if (LEVELS[level] < min) return;
    // Messages quote what peers sent (names, reasons, frame kinds): escaped, one event stays one line.
    const text = escapeText(msg);
    if (json) sink(JSON.stringify({ time: new Date().toISOString(), level, component, msg: text, ...escapeFields(fields) }));
    else if (toJournal) sink(`<${SYSLOG_PRIORITY[level]}>${level.padEnd(5)} [${component}] ${text}`);
    else sink(`${new Date().toISOString()} ${level.padEnd(5)} [${component}] ${text}`);
  };
  return {
    debug: (m, f) => emit('debug', m, f),
    info: (m, f) => emit('info', m, f),
    warn: (m, f) => emit('warn', m, f),
    error: (m, f) => emit('error', m, f),
    child: (c) => createLogger(`${component}/${c}`, sink),
  };
}

function escapeFields(fields: LogFields | undefined): LogFields | undefined {
  if (!fields) return fields;
  const out: LogFields = {};
  for (const [key, value] of Object.entries(fields)) out[key] = typeof value === 'string' ? escapeText(value) : value;
  return out;
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
