// `diode fleet ui`: serves the fleet admin page (agent/fleet-ui/) on a local
// port. The page talks to the admin's wallet in the browser; this server only
// hands out three fixed files and never sees a key or a transaction.
import { createServer, type IncomingMessage, type ServerResponse } from 'node:http';
import { parseHostPort, formatHostPort } from '../../util/hostport.ts';
import { DiodeError } from '../../util/errors.ts';
import { listenOn } from '../../util/listen.ts';

// Embedded by scripts/build.mjs (esbuild define) from agent/fleet-ui/build.mjs.
declare const __FLEET_UI_HTML__: string | undefined;
declare const __FLEET_UI_JS__: string | undefined;

/** Only the page's own script and styles; the wallet is injected by the browser. */
const CSP = "default-src 'none'; script-src 'self'; style-src 'unsafe-inline'; connect-src 'self'; base-uri 'none'; form-action 'none'; frame-ancestors 'none'";
const LOOPBACK_HOSTS = new Set(['127.0.0.1', 'localhost', '[::1]', '::1']);

export interface FleetUiOptions {
  /** HOST:PORT to listen on (port 0 picks a free one). */
  listen: string;
  /** Pre-filled fleet address (from --fleet or the config), if any. */
  fleet: string | undefined;
  stopSignal: Promise<string>;
}

export async function serveFleetUi(options: FleetUiOptions): Promise<number> {
  if (typeof __FLEET_UI_HTML__ !== 'string' || typeof __FLEET_UI_JS__ !== 'string') {
    throw new DiodeError('EUI', 'the fleet ui assets are embedded at build time: run node scripts/build.mjs and use dist/diode.cjs');
  }
  const listen = parseHostPort(options.listen, '--listen', '127.0.0.1', true);
  const files: Record<string, { type: string; body: string }> = {
    '/': { type: 'text/html; charset=utf-8', body: __FLEET_UI_HTML__ },
    '/app.js': { type: 'text/javascript; charset=utf-8', body: __FLEET_UI_JS__ },
    '/config.json': { type: 'application/json', body: JSON.stringify({ fleet: options.fleet ?? null }) },
  };
  const allowedHosts = new Set([...LOOPBACK_HOSTS, listen.host]);
  const server = createServer((req, res) => serve(req, res, files, allowedHosts));
  const port = await listenOn(server, listen, 'fleet ui');
  const url = `http://${formatHostPort({ host: listen.host, port })}/`;
  process.stdout.write(`fleet ui on ${url}\n`);
  process.stderr.write('open it in a browser with a wallet (MetaMask); Ctrl-C stops it\n');
  await options.stopSignal;
  server.closeAllConnections();
  await new Promise((resolve) => server.close(resolve));
  return 0;
}

/** Answers GET/HEAD for the fixed files; a foreign Host header (DNS rebinding) gets 421. */
function serve(req: IncomingMessage, res: ServerResponse, files: Record<string, { type: string; body: string }>, allowedHosts: Set<string>): void {
  const host = (req.headers.host ?? '').replace(/:\d+$/, '').toLowerCase();
  if (!allowedHosts.has(host)) return plain(res, 421, 'wrong Host header: open the page by the address diode printed\n');
  if (req.method !== 'GET' && req.method !== 'HEAD') return plain(res, 405, 'GET only\n');
  const path = (req.url ?? '/').split('?')[0]!;
  const file = files[path === '/index.html' ? '/' : path];
  if (!file) return plain(res, 404, 'not found\n');
  res.writeHead(200, {
    'content-type': file.type,
    'content-length': Buffer.byteLength(file.body),
    'content-security-policy': CSP,
    'x-content-type-options': 'nosniff',
    'referrer-policy': 'no-referrer',
    'cache-control': 'no-store',
  });
  res.end(req.method === 'HEAD' ? undefined : file.body);
}

function plain(res: ServerResponse, status: number, text: string): void {
  res.writeHead(status, { 'content-type': 'text/plain; charset=utf-8', 'content-length': Buffer.byteLength(text) });
  res.end(text);
}
