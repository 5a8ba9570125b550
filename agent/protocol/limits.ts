// Every bound the protocol enforces, with its unit and reason.

/** ms: a peer must finish TLS and its hello within this, or it is dropped (slowloris guard). */
export const HANDSHAKE_TIMEOUT_MS = 10_000;
/**
 * ms: a frame once begun (its first byte in) must be complete within this, on
 * a control stream too, which may otherwise stay quiet between frames: a body
 * trickled or left unfinished would hold its bytes on the relay for good.
 */
export const FRAME_BODY_TIMEOUT_MS = 10_000;
/** ms: a data stream's header answer (ok/error) must arrive within this (the relay waiting for a device, a device for its header). */
export const STREAM_HEADER_TIMEOUT_MS = 10_000;
/**
 * ms: a client waits this long for the relay's answer to its connect:
 * longer than the relay waits for the device, so the relay's `unavailable`
 * (with its reason) always arrives before the client gives up on its own.
 */
export const CLIENT_ANSWER_TIMEOUT_MS = 15_000;
/**
 * ms: a relay that forwarded a stream to the relay holding the device waits
 * this long for its answer: longer than that relay waits for the device, so
 * its `unavailable` arrives first.
 */
export const FORWARD_ANSWER_TIMEOUT_MS = STREAM_HEADER_TIMEOUT_MS + 1_000;
/** ms: TCP, TLS and both hellos of a relay-to-relay link; shorter than an agent's, as a caller is waiting. */
export const PEER_DIAL_TIMEOUT_MS = 3_000;
/** bytes: largest hello frame (a version, a role and a 65-byte signature fit easily). */
export const MAX_HELLO_BYTES = 1024;
/** bytes: largest header frame on a data stream (connect / incoming / ok / error). */
export const MAX_STREAM_HEADER_BYTES = 4096;
/** bytes: largest control message (a publish set with its allow lists). */
export const MAX_CONTROL_BYTES = 256 * 1024;
/** chars: the longest message an error reply keeps (control characters escaped; it may reach a terminal). */
export const MAX_REPLY_MESSAGE_CHARS = 300;
/** Ports one agent may publish. */
export const MAX_PUBLISHED_PORTS = 256;
/** Addresses one private port may list. */
export const MAX_ALLOWED_ADDRESSES = 1024;
/**
 * ms: relay ↔ agent liveness (docs/PROTOCOL.md, "Keep-alive"). Any byte received proves the
 * path; after KEEPALIVE_INTERVAL_MS of silence we ping, after KEEPALIVE_TIMEOUT_MS of silence
 * the path is dead (noticed within timeout + one tick of interval / 5: 27 s, under the 30 s
 * target, idle or busy).
 */
export const KEEPALIVE_INTERVAL_MS = 10_000;
export const KEEPALIVE_TIMEOUT_MS = 25_000;
/** ms: an agent's TCP connect to a relay; past it the try is abandoned and retried (SYN retries back off to 4 s and more). */
export const RELAY_CONNECT_TIMEOUT_MS = 3_000;
/** ms: TCP keep-alive idle time on relay ↔ agent sockets (keeps NAT state; the kernel's own backstop). */
export const TCP_KEEPALIVE_MS = 10_000;
/** ms: the end-to-end layer inside a data stream (TLS, both hellos, the device's verdict) must finish within this. */
export const E2E_HANDSHAKE_TIMEOUT_MS = 10_000;
/**
 * ms: a device waits this long for the first byte of the client's end-to-end TLS handshake after its ok.
 * A client sends it at once; a silent stream is an attack holding one of the device's stream slots.
 */
export const E2E_SILENT_CLIENT_TIMEOUT_MS = 3_000;
/**
 * Relays one `relays` or `retire` control message may name: a cluster's relays, with room to spare.
 * An agent keeps at most MAX_LEARNED_RELAYS of them (agent/link/learned-relays.ts).
 */
export const MAX_ANNOUNCED_RELAYS = 16;
/**
 * ms a data connection token stays valid once issued: an agent uses it within one TCP connect
 * (a slow path's SYN retries at 1 and 3 s included); an unused one then no longer counts against
 * its session's data connections.
 */
export const DATA_TOKEN_TTL_MS = 10_000;
/**
 * ms a data connection may wait to be paired once it is spoken for: bytes arrived on it ahead of
 * the `connect` that names it (the client's ClientHello may overtake its connect, which travels on
 * another TCP connection), or the relay named it in an `incoming` and waits for the device's
 * answer. The same as the device's answer deadline: nothing honest takes longer.
 */
export const DATA_PAIRING_TIMEOUT_MS = STREAM_HEADER_TIMEOUT_MS;
/**
 * ms a data connection may sit idle in a relay's pool: twice an agent's own idle lifetime (the
 * agent replaces its idle connections after 5 min, to keep them fresh through NATs), so only a
 * peer that never replaces its connections meets it.
 */
export const DATA_IDLE_MAX_MS = 10 * 60_000;
/**
 * bytes a caller may send behind its header before the device answered (its TLS ClientHello, one
 * record of at most 16 KiB plus its 5-byte header, with room to spare): the relay keeps a copy of
 * them until the device's answer, so that a device leg found dead can be replaced by another.
 * Beyond it the relay stops reading the caller until the answer.
 */
export const MAX_EARLY_BYTES = 32 * 1024;

/** The largest per-session data connection cap a relay may have and say (`--max-data-per-session`, the `tokens` answer's `max`). */
export const MAX_DATA_PER_SESSION = 1024;
