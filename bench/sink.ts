// The far end of every path: a small TCP server in its own process (so its CPU
// is not the bench client's), started by bench/run.ts over IPC. See lib/wire.ts.
import { createServer, type Socket } from 'node:net';
import { COUNT_BYTES, MODE_DISCARD, MODE_ECHO, MODE_GENERATE, MODE_SLOW } from './lib/wire.ts';
import { randomBytes } from 'node:crypto';

/** ms between the slow reader's progress reports and read slices. */
const SLOW_TICK_MS = 100;

function countBuffer(n: number): Buffer {
  const b = Buffer.alloc(COUNT_BYTES);
  b.writeBigUInt64BE(BigInt(n));
  return b;
}

function discard(socket: Socket, first: Buffer): void {
  let count = first.length;
  socket.on('data', (chunk: Buffer) => {
    count += chunk.length;
  });
  socket.once('end', () => socket.end(countBuffer(count)));
}

function echo(socket: Socket, first: Buffer): void {
  socket.write(Buffer.from([MODE_ECHO]));
  if (first.length > 0) socket.write(first);
  socket.pipe(socket);
}

function slow(socket: Socket, first: Buffer): void {
  let pending = first;
  let rate = 0;
  let count = 0;
  let budget = 0;
  let ticks = 0;
  const queue: Buffer[] = [];
  let queued = 0;
  const consume = () => {
    while (budget > 0 && queued > 0) {
      const head = queue[0];
      const take = Math.min(head.length, budget);
      budget -= take;
      count += take;
      queued -= take;
      if (take === head.length) queue.shift();
      else queue[0] = head.subarray(take);
    }
    // Keep at most one tick's worth buffered here: the rest waits in the path.
    if (queued > rate) socket.pause();
    else socket.resume();
  };
  const timer = setInterval(() => {
    budget = Math.ceil((rate * SLOW_TICK_MS) / 1000);
    consume();
    if (++ticks % (1000 / SLOW_TICK_MS) === 0 && socket.writable) socket.write(countBuffer(count));
  }, SLOW_TICK_MS);
  socket.once('close', () => clearInterval(timer));
  const onData = (chunk: Buffer) => {
    if (rate === 0) {
      pending = Buffer.concat([pending, chunk]);
      if (pending.length < 4) return;
      rate = pending.readUInt32BE(0);
      chunk = pending.subarray(4);
    }
    if (chunk.length > 0) {
      queue.push(chunk);
      queued += chunk.length;
    }
    consume();
  };
  socket.on('data', onData);
  if (pending.length > 0) onData(Buffer.alloc(0));
  socket.once('end', () => socket.end(countBuffer(count)));
}

/** What the generator writes, again and again (random: nothing on a path compresses it). */
const GENERATED = randomBytes(256 * 1024);

function generate(socket: Socket, first: Buffer): void {
  let head = first;
  const start = (count: number) => {
    let left = count;
    const pump = () => {
      while (left > 0) {
        const n = Math.min(left, GENERATED.length);
        left -= n;
        if (!socket.write(n === GENERATED.length ? GENERATED : GENERATED.subarray(0, n))) return void socket.once('drain', pump);
      }
      socket.end();
    };
    pump();
  };
  if (head.length >= COUNT_BYTES) return start(Number(head.readBigUInt64BE(0)));
  const onData = (chunk: Buffer) => {
    head = Buffer.concat([head, chunk]);
    if (head.length < COUNT_BYTES) return;
    socket.off('data', onData);
    start(Number(head.readBigUInt64BE(0)));
  };
  socket.on('data', onData);
}

const server = createServer({ allowHalfOpen: true, noDelay: true }, (socket) => {
  socket.on('error', () => socket.destroy());
  socket.once('data', (chunk: Buffer) => {
    const mode = chunk[0];
    const rest = chunk.subarray(1);
    if (mode === MODE_DISCARD) discard(socket, rest);
    else if (mode === MODE_ECHO) echo(socket, rest);
    else if (mode === MODE_SLOW) slow(socket, rest);
    else if (mode === MODE_GENERATE) generate(socket, rest);
    else socket.destroy();
  });
});

server.listen(0, '127.0.0.1', () => {
  const address = server.address();
  const port = typeof address === 'object' && address ? address.port : 0;
  process.stdout.write(`sink listening on 127.0.0.1:${port}\n`);
});
// The bench stops us with SIGTERM; exiting closes every socket.
process.on('SIGTERM', () => process.exit(0));
