// A relay that speaks the protocol (TLS 1.3, hello, yamux) and then answers
// every stream's first frame as the test says: the hostile relay of the
// attack tests (refuses every publish, answers connects with escape codes).
import { createServer, type Socket } from 'node:net';
import { TLSSocket, createSecureContext } from 'node:tls';
import type { ExecutionContext } from 'ava';
import { Identity } from '../../agent/identity/index.ts';
import { loadOrCreateRelayCert } from '../../agent/relay/cert.ts';
import { exchangeHelloAccepting } from '../../agent/protocol/handshake.ts';
import { readFrame, writeFrame } from '../../agent/protocol/frames.ts';
import { MuxSession, type MuxStream } from '../../agent/mux/index.ts';
import { tempDir } from './diode.ts';

export interface HostileRelay {
  port: number;
  address: string;
  /** First frames received, in order. */
  frames: Record<string, unknown>[];
}

/**
 * A TLS server on 127.0.0.1 with a relay certificate bound to `certOf` (or the given pair); each
 * connection's TLS socket goes to `onSecure` once TLS is up. Closed when the
 * test ends. What a fake relay of a test is built on.
 */
export async function listenTlsRelay(t: ExecutionContext, certOf: Identity | { key: string; cert: string }, onSecure: (tls: TLSSocket) => void): Promise<number> {
  // An identity: the relay certificate bound to it; else the given key and certificate (an older relay's).
  const cert = certOf instanceof Identity ? await loadOrCreateRelayCert(tempDir(t), certOf) : certOf;
  const context = createSecureContext({ key: cert.key, cert: cert.cert, minVersion: 'TLSv1.3' });
  const sockets = new Set<Socket>();
  const server = createServer((raw) => {
    sockets.add(raw);
    raw.once('close', () => sockets.delete(raw));
    raw.on('error', () => {});
    const tls = new TLSSocket(raw, { isServer: true, secureContext: context });
    tls.on('error', () => {});
    tls.once('secure', () => onSecure(tls));
  });
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  t.teardown(
    () =>
      new Promise<void>((resolve) => {
        for (const s of sockets) s.destroy();
        server.close(() => resolve());
      }),
  );
  return (server.address() as { port: number }).port;
}

/**
 * Listens on 127.0.0.1; `answer` gives the reply frame to a stream's first frame, then `after` (if
 * given) is written and the stream ended. `roles`: the hellos it accepts (['agent', 'relay'] to
 * take a relay-to-relay link too, as a relay of someone's cluster would).
 */
export async function startHostileRelay(
  t: ExecutionContext,
  answer: (first: Record<string, unknown>) => object,
  options: { roles?: Array<'agent' | 'relay'>; after?: string } = {},
): Promise<HostileRelay> {
  const identity = Identity.random();
  const frames: Record<string, unknown>[] = [];
  const port = await listenTlsRelay(t, identity, (tls) => {
    exchangeHelloAccepting(tls, identity, 'relay', options.roles ?? ['agent'], 10_000).then(
      () => {
        const mux = new MuxSession(tls, { role: 'server' });
        mux.on('stream', (stream: MuxStream) => {
          stream.on('error', () => {});
          readFrame(stream, 256 * 1024, 10_000).then(
            (first) => {
              frames.push(first);
              writeFrame(stream, answer(first));
              stream.end(options.after);
            },
            () => stream.destroy(),
          );
        });
      },
      () => tls.destroy(),
    );
  });
  return { port, address: identity.address, frames };
}
