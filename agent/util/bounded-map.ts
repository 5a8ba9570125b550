/**
 * Sets `key` in a Map used as a bounded cache: the entry goes to the end
 * (a Map iterates in insertion order), and the oldest entries are dropped
 * while the map holds more than `max`. Caches of proofs and keys seen
 * lately, where a miss costs only a recomputation.
 */
export function setBounded<K, V>(map: Map<K, V>, key: K, value: V, max: number): void {
  map.delete(key);
  map.set(key, value);
  while (map.size > max) map.delete(map.keys().next().value as K);
}
