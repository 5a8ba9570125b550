// An agent session made by hand from a chosen loopback address, so that an
// attack in a test is a source of its own (127.0.0.2, ...) while the honest
// agents of the same test come from 127.0.0.1.
import { connect as netConnect, type Socket } from 'node:net';
import { connect } from 'node:tls';
import { readFileSync } from 'node:fs';
import type { ExecutionContext } from 'ava';
import { parseAnswer } from '../../agent/data/wire.ts';
import type { Identity } from '../../agent/identity/index.ts';
import { exchangeHello } from '../../agent/protocol/handshake.ts';
import { MuxSession } from '../../agent/mux/index.ts';
import { readFrame, writeFrame } from '../../agent/protocol/frames.ts';

/** TCP from `localAddress`, TLS 1.3, hello as an agent, then a yamux client session; closed when the test ends. */
export function attackerSession(t: ExecutionContext, relayPort: number, identity: Identity, localAddress = '127.0.0.2'): Promise<MuxSession> {
  return new Promise((resolve, reject) => {
    const tcp = netConnect({ host: '127.0.0.1', port: relayPort, localAddress });
    tcp.once('error', reject);
    tcp.once('connect', () => {
      const tls = connect({ socket: tcp, rejectUnauthorized: false, minVersion: 'TLSv1.3' });
      tls.once('error', reject);
      tls.once('secureConnect', () => {
        exchangeHello(tls, identity, 'agent', 10_000).then(() => {
          tls.on('error', () => {});
          const mux = new MuxSession(tls, { role: 'client' });
          t.teardown(() => mux.close());
          resolve(mux);
        }, reject);
      });
    });
  });
}

/** Resident set of a process in bytes (VmRSS of /proc/<pid>/status). */
export function rssOf(pid: number): number {
  const m = /^VmRSS:\s+(\d+) kB/m.exec(readFileSync(`/proc/${pid}/status`, 'utf8'));
  if (!m) throw new Error(`no VmRSS for pid ${pid}`);
  return Number(m[1]) * 1024;
}

/** Tokens for data connections, asked for on a session's link as an agent does (docs/PROTOCOL.md §10). */
export async function dataTokens(session: MuxSession, n: number, fields: Record<string, unknown> = {}): Promise<string[]> {
  const s = session.open();
  s.on('error', () => {});
  writeFrame(s, { t: 'tokens', n, ...fields });
  const answer = await readFrame(s, 4096, 10_000);
  s.end();
  s.resume();
  if (answer.t !== 'tokens') throw new Error(`no tokens: ${JSON.stringify(answer)}`);
  return answer.tokens as string[];
}

/** Opens a data connection with `opening` from `localAddress`; resolves with the socket and the relay's answer. Closed when the test ends. */
export function presentData(t: ExecutionContext, port: number, opening: Buffer, localAddress = '127.0.0.1'): Promise<{ socket: Socket; answer: ReturnType<typeof parseAnswer> }> {
  return new Promise((resolve, reject) => {
    const socket = netConnect({ host: '127.0.0.1', port, localAddress, allowHalfOpen: true });
    t.teardown(() => socket.destroy());
    socket.on('error', () => {});
    let got: Buffer = Buffer.alloc(0);
    socket.once('connect', () => socket.write(opening));
    const onData = (c: Buffer) => {
      got = Buffer.concat([got, c]);
      const answer = parseAnswer(got);
      if (answer === undefined) return;
      socket.off('data', onData);
      socket.pause();
      resolve({ socket, answer });
    };
    socket.on('data', onData);
    socket.once('close', () => reject(new Error(`closed before an answer (${got.length} bytes)`)));
  });
}
