// Fleet errors: one class, a stable `code`, and a one-line message for people
// that names the input and what to do. The CLI maps codes to exit statuses.

export const FLEET_ERROR_CODES = {
  /** The JSON-RPC endpoint cannot be reached or answered garbage. */
  ERPC: 'ERPC',
  /** The contract reverted (message carries the decoded custom error name). */
  EREVERT: 'EREVERT',
  /** The admin key's account cannot pay for the transaction. */
  EFUNDS: 'EFUNDS',
  /** No fleet contract at the given address. */
  ENOTCONTRACT: 'ENOTCONTRACT',
  /** A malformed address (fleet or member). */
  EBADADDR: 'EBADADDR',
  /** A write was asked for without an admin key, or the key is malformed. */
  ENOKEY: 'ENOKEY',
} as const;

export type FleetErrorCode = keyof typeof FLEET_ERROR_CODES;

export class FleetError extends Error {
  override readonly name = 'FleetError';
  readonly code: FleetErrorCode;
  /** For EREVERT: the decoded custom error name (e.g. `NotOwner`), if any. */
  readonly revertName: string | undefined;

  constructor(code: FleetErrorCode, message: string, options?: { cause?: unknown; revertName?: string }) {
    super(message, options?.cause === undefined ? undefined : { cause: options.cause });
    this.code = code;
    this.revertName = options?.revertName;
  }
}
