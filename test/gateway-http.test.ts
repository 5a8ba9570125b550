import test from 'ava';
import { execFile } from 'node:child_process';
import { createHash, randomBytes } from 'node:crypto';
import { createReadStream, readFileSync, writeFileSync } from 'node:fs';
import { Agent, request } from 'node:http';
import { join } from 'node:path';
import { promisify } from 'node:util';
import selfsigned from 'selfsigned';
import { startRelay, startPublish, tempDir } from './helpers/diode.ts';
import { startOrigin, webSocketEcho } from './helpers/http.ts';

const run = promisify(execFile);
const DOMAIN = 'gw.example.test';
const OTHER_CLIENT = '0x0000000000000000000000000000000000000001';
const BIG_BYTES = 64 * 1024 * 1024;
/**
 * bytes: the relay's peak RSS after moving 64 MiB each way. An idle relay peaks
 * at ≈ 75 MiB and a streaming one at ≈ 110 MiB here; holding one whole body would
 * pass 140.
 */
const RELAY_PEAK_RSS_LIMIT = 140 * 1024 * 1024;

function sha256File(path: string): Promise<string> {
  return new Promise((resolve, reject) => {
    const hash = createHash('sha256');
    createReadStream(path).on('data', (c) => hash.update(c)).on('end', () => resolve(hash.digest('hex'))).on('error', reject);
  });
}

/** curl against a real name: --connect-to sends it to the gateway with that Host (and SNI for https). */
async function curl(gatewayPort: number, url: string, extra: string[] = []): Promise<{ status: number; body: string; headers: string }> {
  const { stdout } = await run(
    'curl',
    ['-sS', '-D', '-', '--connect-to', `::127.0.0.1:${gatewayPort}`, '--max-time', '60', ...extra, url],
    { timeout: 90_000, maxBuffer: 16 * 1024 * 1024 },
  );
  // -D - prints every head, interim ones (100 Continue) first; the last one is the answer.
  let rest = stdout;
  for (;;) {
    const split = rest.indexOf('\r\n\r\n');
    const headers = rest.slice(0, split);
    const status = Number(/^HTTP\/[\d.]+ (\d{3})/.exec(headers)?.[1]);
    rest = rest.slice(split + 4);
    if (status >= 200 || !/^HTTP\//.test(rest)) return { status, headers, body: rest };
  }
}

function peakRss(pid: number): number {
  const kib = /VmHWM:\s+(\d+) kB/.exec(readFileSync(`/proc/${pid}/status`, 'utf8'))?.[1];
  return Number(kib) * 1024;
}

test('curl reaches public web ports of a device through the HTTP and HTTPS gateway by Host name, streams 64 MiB each way, passes WebSockets, and explains every refusal', async (t) => {
  const dir = tempDir(t);
  const download = join(dir, 'download.bin');
  writeFileSync(download, randomBytes(BIG_BYTES));
  const web = await startOrigin(t, 'web', download);
  const admin = await startOrigin(t, 'admin');
  const pems = await selfsigned.generate([{ name: 'commonName', value: `*.${DOMAIN}` }], { keyType: 'ec', curve: 'P-256', algorithm: 'sha256' });
  writeFileSync(join(dir, 'cert.pem'), pems.cert);
  writeFileSync(join(dir, 'key.pem'), pems.private);

  const relay = await startRelay(t, [
    '--gateway-http', '127.0.0.1:0',
    '--gateway-https', '127.0.0.1:0',
    '--gateway-cert', join(dir, 'cert.pem'),
    '--gateway-key', join(dir, 'key.pem'),
    '--gateway-domain', DOMAIN,
  ]);
  const http = Number((await relay.proc.waitFor(/gateway http listening on 127\.0\.0\.1:(\d+)/))[1]);
  const https = Number((await relay.proc.waitFor(/gateway https listening on 127\.0\.0\.1:(\d+)/))[1]);
  const device = await startPublish(t, relay.port, ['-public', `${web.port}:80,${admin.port}:8081`, '-private', `${web.port}:81,${OTHER_CLIENT}`]);
  const host = `${device.address.toLowerCase()}.${DOMAIN}`;

  // GET by Host: port 80 by default, `-<port>` for another public port; X-Forwarded-* added.
  const hello = await curl(http, `http://${host}/who`, ['-H', 'X-Forwarded-For: 198.51.100.7']);
  t.is(hello.status, 200);
  const seen = JSON.parse(hello.body);
  t.is(seen.name, 'web');
  t.is(seen.headers.host, host);
  t.is(seen.headers['x-forwarded-for'], '198.51.100.7, 127.0.0.1');
  t.is(seen.headers['x-forwarded-proto'], 'http');
  t.is(JSON.parse((await curl(http, `http://${device.address.toLowerCase()}-8081.${DOMAIN}/who`)).body).name, 'admin');

  // HTTPS with the operator's certificate, same router.
  const secure = await curl(https, `https://${host}/who`, ['-k']);
  t.is(secure.status, 200);
  t.is(JSON.parse(secure.body).headers['x-forwarded-proto'], 'https');

  // One keep-alive connection, two devices' ports: each request is routed by its own Host.
  const agent = new Agent({ keepAlive: true, maxSockets: 1 });
  t.teardown(() => agent.destroy());
  const who = (hostHeader: string) =>
    new Promise<{ name: string; reused: boolean }>((resolve, reject) => {
      const req = request({ host: '127.0.0.1', port: http, path: '/who', agent, headers: { Host: hostHeader } }, (res) => {
        let body = '';
        res.on('data', (c) => (body += c));
        res.on('end', () => resolve({ name: JSON.parse(body).name, reused: req.reusedSocket }));
      });
      req.on('error', reject);
      req.end();
    });
  t.deepEqual(await who(host), { name: 'web', reused: false });
  t.deepEqual(await who(`${device.address.toLowerCase()}-8081.${DOMAIN}:${http}`), { name: 'admin', reused: true });
  t.deepEqual(await who(host), { name: 'web', reused: true });

  // 64 MiB up and down, streamed, hashes match; the relay never holds a whole body.
  const upload = join(dir, 'upload.bin');
  writeFileSync(upload, randomBytes(BIG_BYTES));
  const up = await curl(http, `http://${host}/sha256`, ['--data-binary', `@${upload}`, '-H', 'Content-Type: application/octet-stream']);
  t.is(up.body, await sha256File(upload));
  const chunkedUp = await curl(http, `http://${host}/sha256`, ['-T', upload, '-X', 'POST', '-H', 'Transfer-Encoding: chunked']);
  t.is(chunkedUp.body, await sha256File(upload));
  const downloaded = join(dir, 'downloaded.bin');
  await run('curl', ['-sS', '--fail', '--connect-to', `::127.0.0.1:${http}`, '-o', downloaded, `http://${host}/download`], { timeout: 90_000 });
  t.is(await sha256File(downloaded), await sha256File(download));
  const rss = peakRss(relay.proc.child.pid!);
  t.log(`relay peak RSS ${Math.round(rss / 1048576)} MiB`);
  t.true(rss < RELAY_PEAK_RSS_LIMIT, `relay peak RSS ${Math.round(rss / 1048576)} MiB`);

  // WebSocket echo through the upgrade path (plain and the gateway's X-Forwarded-For on the upgrade request).
  const ws = await webSocketEcho(http, host, ['one', 'two', 'x'.repeat(1000)]);
  t.deepEqual(ws.echoes, ['one', 'two', 'x'.repeat(1000)]);
  t.is(web.seen.at(-1)?.['x-forwarded-for'], '127.0.0.1');

  // Refusals: clear pages with the right status.
  // A private port is answered as a port the device does not publish (issue 24 item 7: nothing to enumerate).
  const privatePort = await curl(http, `http://${device.address.toLowerCase()}-81.${DOMAIN}/who`);
  t.is(privatePort.status, 502);
  t.regex(privatePort.body, /502 Port not published\ndevice 0x[0-9a-fA-F]{40} does not publish port 81/);
  const offline = await curl(http, `http://0x0000000000000000000000000000000000000bad.${DOMAIN}/`, ['-H', 'Accept: text/html']);
  t.is(offline.status, 502);
  t.regex(offline.headers, /content-type: text\/html/i);
  t.regex(offline.body, /<h1>502 Device offline<\/h1>/);
  const badHost = await curl(http, `http://not_a_device.${DOMAIN}/`);
  t.is(badHost.status, 400);
  t.regex(badHost.body, /is not a device name \(a name has only the letters a-z, digits and -\)/);
  const unknownName = await curl(http, `http://not-a-device.${DOMAIN}/`);
  t.is(unknownName.status, 404);
  t.regex(unknownName.body, /404 Unknown name\nnot-a-device\.diode: no device has this name/);
  const unpublished = await curl(http, `http://${device.address.toLowerCase()}-9999.${DOMAIN}/`);
  t.is(unpublished.status, 502);
  t.regex(unpublished.body, /does not publish port 9999/);

  // An oversize request head: 431, counted and logged.
  const big = await curl(http, `http://${host}/who`, ['-H', `X-Big: ${'a'.repeat(20_000)}`]);
  t.is(big.status, 431);
  await relay.proc.waitFor(/request head larger than 16384 bytes refused \(431\)/);
});
