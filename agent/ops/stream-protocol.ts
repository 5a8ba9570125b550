import { join } from 'node:path';

// The stream socket: how `diode proxy` asks a running client agent (socksd,
// bind) of the same user and state directory for a stream on that agent's
// relay session, instead of opening a relay session of its own (TCP, TLS
// and the hello: round trips to the relay, and the TLS and signature code
// loaded and run, for every ssh connection). Beside the agent's control
// socket: <home>/run/<role>-<pid>.streams.sock, mode 0600 in the 0700 run
// directory, so only its owner (and root) can connect; the control socket's
// own protocol (a status line on connect, for `diode status`) is unchanged.
//
// One stream per connection. Lines are UTF-8 JSON ending in "\n":
//
//   caller → agent   {"host": "<as given to diode proxy>", "port": "<as given>", "relay": ["<--relay values>"]}
//                    ("relay" only when --relay was given)
//   agent → caller   {"refused": "<why>"}         not this agent (another key, other relays, its
//                                                 link down, a request it cannot parse): the caller
//                                                 opens its own relay session, as without an agent
//                    {"taken": true}              the agent dials; then, in order:
//                    {"notice": "<line>"}         zero or more: what the caller prints on stderr
//                    {"ok": true, "watch": "<token>"}
//                                                 the stream's bytes follow, both ways, raw
//                    {"error": {"code": "<code>", "message": "<line>"}}
//                                                 the dial failed as it would have for the caller
//                                                 (exit status 1, the message as its one line)
//
// Raw bytes cannot say how the stream ended: the caller learns it on a second
// connection, the watch (a Unix socket has no reset to pass on an abort):
//
//   caller → agent   {"watch": "<token>"}
//   agent → caller   {"end": true}                the device's side ended (said before that end
//                                                 reaches the stream's connection)
//                    {"broke": "<why>"}           the stream broke (reset, session lost): the
//                                                 caller says "the connection broke" and exits 1
//                    {"unknown": true}            no such stream (it waited too long to watch)
//
// The end-to-end TLS with the device and the device's verdict are the
// agent's, exactly as for one of its SOCKS or bind streams. A half-close
// (shutdown of the writing side) either way passes through to the device.

/** Roles whose sessions open client streams, in the order a caller tries them. */
export const STREAM_ROLES = ['socksd', 'bind'] as const;
export type StreamRole = (typeof STREAM_ROLES)[number];

/** <role>-<pid>.streams.sock */
export const STREAM_SOCKET_NAME = /^([a-z]+)-(\d+)\.streams\.sock$/;

/** bytes: the largest request line an agent reads (a host name, a port, a few relay entries). */
export const MAX_STREAM_REQUEST_BYTES = 8 * 1024;
/** bytes: the largest answer line a caller reads (a notice or an error quoting a relay's words). */
export const MAX_STREAM_ANSWER_BYTES = 64 * 1024;
/**
 * ms a caller waits for "taken" or "refused": a live agent answers within a
 * millisecond; one that does not is treated as gone and the caller opens its
 * own session. (The dial itself, after "taken", is bounded by the agent.)
 */
export const STREAM_ANSWER_TIMEOUT_MS = 1_000;
/** ms an agent waits for a connected caller's request line. */
export const STREAM_REQUEST_TIMEOUT_MS = 2_000;
/** ms an agent keeps a stream's watch for its caller to connect (it does so right after "ok"). */
export const STREAM_WATCH_WAIT_MS = 10_000;
/** ms a caller whose stream ended waits for the verdict on its watch (it comes with the end). */
export const STREAM_VERDICT_WAIT_MS = 2_000;

/** How a stream ended, as its watch says. */
export type StreamVerdict = { end: true } | { broke: string };

export interface StreamRequest {
  host: string;
  port: string;
  relay?: string[];
}

export function streamSocketPath(runDir: string, role: StreamRole, pid: number): string {
  return join(runDir, `${role}-${pid}.streams.sock`);
}
