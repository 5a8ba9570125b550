import test from 'ava';
import { Writable } from 'node:stream';
import { turnCorker } from '../agent/util/cork.ts';

/** A Writable that records each write call (writev counts once) with what it carried. */
function recorder(log: string[], name: string, onWrite?: () => void): Writable {
  return new Writable({
    writev(chunks, callback) {
      log.push(`${name}:${chunks.map((c) => String(c.chunk)).join('+')}`);
      onWrite?.();
      callback();
    },
  });
}

test("writes made in one turn leave in one writev after the turn's callbacks", async (t) => {
  const log: string[] = [];
  const out = recorder(log, 'out');
  const cork = turnCorker(out);
  for (const piece of ['a', 'b', 'c']) {
    cork();
    out.write(piece);
  }
  t.deepEqual(log, [], 'nothing leaves while the turn is still running');
  await new Promise((resolve) => setImmediate(resolve));
  t.deepEqual(log, ['out:a+b+c']);
});

test('a cork taken while uncorking (splice into a mux stream into its socket) is released in the same check phase', async (t) => {
  // The splice's destination is a mux stream; writing it corks the session's socket.
  // That second uncork must not wait a whole loop iteration (an extra epoll per hop).
  const log: string[] = [];
  const socket = recorder(log, 'socket');
  const corkSocket = turnCorker(socket);
  const stream = recorder(log, 'stream', () => {
    corkSocket();
    socket.write('frame');
  });
  const corkStream = turnCorker(stream);
  corkStream();
  stream.write('data');
  // Queued after the uncorks: runs later in the same check phase, unless an uncork slipped to the next turn.
  const sameCheckPhase = new Promise<void>((resolve) => setImmediate(() => {
    log.push('end of check phase');
    resolve();
  }));
  await sameCheckPhase;
  t.deepEqual(log, ['stream:data', 'socket:frame', 'end of check phase']);
});
