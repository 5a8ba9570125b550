// The floor for any ProxyCommand written for Node (bench login, "node's
// floor"): a bare `node` that speaks SOCKS5 to a running socksd and pipes
// stdin/stdout, as `nc -X 5` does, loading nothing but `net`. What `diode
// proxy` beside a socksd costs beyond `nc -X 5` that this costs too is
// Node's own start, not the proxy's.
//
//   node node-socks-pipe.cjs SOCKSHOST:SOCKSPORT HOST PORT
'use strict';
const { connect } = require('node:net');
const [socksAt, host, port] = process.argv.slice(2);
const [socksHost, socksPort] = [socksAt.slice(0, socksAt.lastIndexOf(':')), Number(socksAt.slice(socksAt.lastIndexOf(':') + 1))];
const socket = connect({ host: socksHost, port: socksPort, allowHalfOpen: true });
const name = Buffer.from(host);
// Greeting and CONNECT in one write (socksd answers both).
const request = Buffer.concat([Buffer.from([5, 1, 0, 5, 1, 0, 3, name.length]), name, Buffer.from([Number(port) >> 8, Number(port) & 255])]);
socket.write(request);
let buffer = Buffer.alloc(0);
const onData = (chunk) => {
  buffer = Buffer.concat([buffer, chunk]);
  // Method reply (2 bytes), then a reply with an IPv4 bound address (10 bytes): what socksd sends.
  if (buffer.length < 12) return;
  if (buffer[1] !== 0 || buffer[3] !== 0) {
    process.stderr.write(`node-socks-pipe: refused (${buffer[3]})\n`);
    process.exit(1);
  }
  socket.off('data', onData);
  if (buffer.length > 12) process.stdout.write(buffer.subarray(12));
  process.stdin.pipe(socket);
  socket.pipe(process.stdout);
  socket.on('end', () => process.exit(0));
};
socket.on('data', onData);
socket.on('error', (err) => {
  process.stderr.write(`node-socks-pipe: ${err.message}\n`);
  process.exit(1);
});
