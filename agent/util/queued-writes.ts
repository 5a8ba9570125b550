import type { Writable } from 'node:stream';

/**
 * Writes queued in `w` behind the one in progress, as Node's Writable counts
 * them (WritableState's bufferedRequestCount, Node 12 and later; 0 where it
 * is missing). Bytes alone say little of a queue's memory: each entry costs
 * a Buffer and a record of its own, and a peer's 1-byte pieces make many.
 */
export function queuedWrites(w: Writable): number {
  return (w as Writable & { _writableState?: { bufferedRequestCount?: number } })._writableState?.bufferedRequestCount ?? 0;
}
