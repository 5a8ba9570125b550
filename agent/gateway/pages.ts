import { STATUS_CODES, type IncomingMessage, type ServerResponse } from 'node:http';
import type { Duplex } from 'node:stream';

// The gateway's own answers: one short page, HTML for browsers and plain
// text for everything else, always with Connection: close when the
// connection must not be reused.

function escapeHtml(text: string): string {
  return text.replace(/[&<>"']/g, (c) => `&#${c.charCodeAt(0)};`);
}

function body(status: number, title: string, detail: string, html: boolean): string {
  if (!html) return `${status} ${title}\n${detail}\n`;
  const t = escapeHtml(title);
  return `<!doctype html>\n<html><head><meta charset="utf-8"><title>${status} ${t}</title></head>\n<body><h1>${status} ${t}</h1>\n<p>${escapeHtml(detail)}</p>\n<hr><p>diode gateway</p></body></html>\n`;
}

function wantsHtml(accept: string | undefined): boolean {
  return typeof accept === 'string' && accept.includes('text/html');
}

/** Answers a request with the gateway's error page (the request body, if any, is discarded). */
export function sendErrorPage(req: IncomingMessage, res: ServerResponse, status: number, title: string, detail: string, close = false): void {
  if (res.headersSent) {
    res.destroy();
    return;
  }
  const html = wantsHtml(req.headers.accept);
  const text = body(status, title, detail, html);
  const headers: Record<string, string | number> = {
    'Content-Type': html ? 'text/html; charset=utf-8' : 'text/plain; charset=utf-8',
    'Content-Length': Buffer.byteLength(text),
    'Cache-Control': 'no-store',
    'X-Diode-Gateway-Error': title,
  };
  if (close) headers.Connection = 'close';
  if (status === 429 || status === 503) headers['Retry-After'] = 5;
  res.writeHead(status, title, headers);
  res.end(req.method === 'HEAD' ? undefined : text);
  req.resume();
}

/** The same page written raw on a socket that left the HTTP server (an upgrade or a parse error), then closed. */
export function writeRawErrorPage(socket: Duplex, status: number, title: string, detail: string, accept?: string): void {
  if (!socket.writable) {
    socket.destroy();
    return;
  }
  const html = wantsHtml(accept);
  const text = body(status, title, detail, html);
  socket.end(
    `HTTP/1.1 ${status} ${STATUS_CODES[status] ?? title}\r\n` +
      `Content-Type: ${html ? 'text/html' : 'text/plain'}; charset=utf-8\r\n` +
      `Content-Length: ${Buffer.byteLength(text)}\r\nX-Diode-Gateway-Error: ${title}\r\nConnection: close\r\n\r\n${text}`,
  );
  setTimeout(() => socket.destroy(), 1000).unref();
}
