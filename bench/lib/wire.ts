/**
 * The bench's sink protocol: the client's first byte picks the mode.
 *
 * - 'D' discard: the sink counts every following byte; when the client ends
 *   its side, the sink answers the count as 8 bytes (big-endian) and ends.
 * - 'E' echo: the sink answers 'E' at once (so the first byte back proves the
 *   path is open end to end), then echoes everything.
 * - 'S' slow reader: 4 bytes follow, a rate in bytes/s; the sink reads at
 *   most that fast (pausing the socket, so backpressure goes all the way back
 *   to the writer) and sends the count read so far as 8 bytes every second.
 * - 'G' generate: 8 bytes follow, a count (big-endian); the sink sends that
 *   many bytes as fast as the path takes them, then ends (a download from
 *   the device's side).
 */
export const MODE_DISCARD = 0x44; // 'D'
export const MODE_ECHO = 0x45; // 'E'
export const MODE_SLOW = 0x53; // 'S'
export const MODE_GENERATE = 0x47; // 'G'
export const COUNT_BYTES = 8;
