// Errors that reach a person carry a stable code; the CLI entry maps them to
// one line and an exit status. Anything else is a bug and prints its stack.
export class DiodeError extends Error {
  readonly code: string;
  readonly exitCode: number;
  constructor(code: string, message: string, exitCode = 1) {
    super(message);
    this.name = 'DiodeError';
    this.code = code;
    this.exitCode = exitCode;
  }
}

/** Bad input from the user (flags, config values): exit status 2. */
export class UsageError extends DiodeError {
  constructor(message: string) {
    super('EUSAGE', message, 2);
    this.name = 'UsageError';
  }
}

export function errorMessage(err: unknown): string {
  if (err instanceof DiodeError) return err.message;
  if (err instanceof Error) {
    const code = (err as NodeJS.ErrnoException).code;
    return code && !err.message.includes(code) ? `${err.message} (${code})` : err.message;
  }
  return String(err);
}
