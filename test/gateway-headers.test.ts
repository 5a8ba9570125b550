// Issue 24 item 10: a client of the HTTP gateway cannot tell the device it is someone else.
import test from 'ava';
import { connect } from 'node:net';
import { startPublish, startRelay } from './helpers/diode.ts';
import { startOrigin } from './helpers/http.ts';

/** The address a client claims to be in every header a web server may read it from. */
const FORGED = '6.6.6.6';

/** One raw HTTP/1.1 request with the given header lines; resolves with the whole answer. */
function rawRequest(port: number, host: string, headerLines: string[]): Promise<string> {
  return new Promise((resolve, reject) => {
    const socket = connect({ host: '127.0.0.1', port });
    let answer = '';
    socket.on('data', (b: Buffer) => (answer += b.toString()));
    socket.on('end', () => resolve(answer));
    socket.on('error', reject);
    socket.write([`GET /who HTTP/1.1`, `Host: ${host}`, 'Connection: close', ...headerLines, '', ''].join('\r\n'));
  });
}

for (const upgrade of [false, true]) {
  test(`X-Real-IP, Forwarded and their underscore spellings from a client never reach the device${upgrade ? ' (upgrade request)' : ''}: the gateway sets them`, async (t) => {
    const origin = await startOrigin(t, 'web');
    const relay = await startRelay(t, ['--gateway-http', '127.0.0.1:0', '--gateway-domain', 'gw.example.test']);
    const http = Number((await relay.proc.waitFor(/gateway http listening on 127\.0\.0\.1:(\d+)/))[1]);
    const device = await startPublish(t, relay.port, ['-public', `${origin.port}:80`]);
    const forged = [
      `X-Real-IP: ${FORGED}`,
      `Forwarded: for=${FORGED};proto=https`,
      `X_Real_IP: ${FORGED}`,
      `X_Forwarded_For: ${FORGED}`,
      `X-Forwarded_Host: ${FORGED}`,
      `True-Client-IP: ${FORGED}`,
      `X-Client-IP: ${FORGED}`,
    ];
    const extra = upgrade ? ['Upgrade: websocket', 'Sec-WebSocket-Version: 13', 'Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ=='] : [];
    await rawRequest(http, `${device.address.toLowerCase()}.gw.example.test`, [...forged, ...extra]);
    const seen = origin.seen.at(-1);
    t.truthy(seen, 'the request reached the device');
    const leaked = Object.entries(seen!).filter(([, v]) => String(v).includes(FORGED));
    t.deepEqual(leaked, [], 'no header the device sees carries the forged address');
    t.is(seen!['x-real-ip'], '127.0.0.1');
    t.is(seen!['x-forwarded-for'], '127.0.0.1');
    t.regex(String(seen!.forwarded), /^for=127\.0\.0\.1;proto=http;host="/);
  });
}
