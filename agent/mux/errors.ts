import { GoAwayCode } from './frame.ts';

/** Stable error codes; callers switch on these, never on messages. */
export type MuxErrorCode =
  | 'EPROTOCOL' // the peer broke the yamux protocol; session closed with go-away 1
  | 'EINTERNAL' // we failed internally; session closed with go-away 2
  | 'ETIMEDOUT' // nothing received from the peer for keepAliveTimeout, or queued bytes not taken for writeTimeout; session closed
  | 'ECONTROLSTALL' // the peer left our control frames (ping ACKs, window updates, RSTs) unread past the bound; session closed
  | 'ECONNRESET' // the stream was reset (RST) by the peer
  | 'ECONNCLOSED' // the underlying connection ended or failed under the stream/session
  | 'ESESSIONCLOSED' // the session was closed locally
  | 'EGOAWAY' // a go-away was sent or received: no new streams
  | 'ESTREAMLIMIT' // maxStreams reached, or stream ids exhausted
  | 'ECONFIG'; // invalid MuxConfig

/** Go-away code each error causes when it ends a session; undefined = none (not a session error). */
const GO_AWAY_BY_CODE: Record<MuxErrorCode, GoAwayCode | undefined> = {
  EPROTOCOL: GoAwayCode.ProtocolError,
  EINTERNAL: GoAwayCode.InternalError,
  ETIMEDOUT: GoAwayCode.InternalError,
  ECONTROLSTALL: GoAwayCode.ProtocolError,
  ECONNRESET: undefined,
  ECONNCLOSED: undefined,
  ESESSIONCLOSED: undefined,
  EGOAWAY: undefined,
  ESTREAMLIMIT: undefined,
  ECONFIG: undefined,
};

export class MuxError extends Error {
  override readonly name = 'MuxError';
  readonly code: MuxErrorCode;
  /** The go-away code sent when this error closes a session, if it does. */
  readonly goAwayCode: GoAwayCode | undefined;

  constructor(code: MuxErrorCode, message: string) {
    super(message);
    this.code = code;
    this.goAwayCode = GO_AWAY_BY_CODE[code];
  }
}
