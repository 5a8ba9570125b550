import { connect, type TLSSocket } from 'node:tls';
import type { Identity } from '../identity/index.ts';
import { exchangeHello } from '../protocol/handshake.ts';
import { HANDSHAKE_TIMEOUT_MS } from '../protocol/limits.ts';
import type { HostPort } from '../util/hostport.ts';
import { DiodeError } from '../util/errors.ts';

export interface RelayConnection {
  socket: TLSSocket;
  /** The relay's proven address. */
  relayAddress: string;
}

/**
 * TCP + TLS 1.3 + hello to one relay. The relay's certificate is
 * self-signed: its identity is the address proven in its hello, which the
 * caller may pin (expectRelay).
 */
export function dialRelay(target: HostPort, identity: Identity, expectRelay?: string): Promise<RelayConnection> {
  return new Promise((resolve, reject) => {
    const socket = connect({
      host: target.host,
      port: target.port,
      minVersion: 'TLSv1.3',
      rejectUnauthorized: false,
      servername: isIp(target.host) ? undefined : target.host,
    });
    const timer = setTimeout(() => fail(new DiodeError('ETIMEDOUT', `no TLS handshake within ${HANDSHAKE_TIMEOUT_MS} ms`)), HANDSHAKE_TIMEOUT_MS);
    const fail = (err: Error) => {
      clearTimeout(timer);
      socket.destroy();
      reject(err);
    };
    socket.once('error', fail);
    socket.once('secureConnect', () => {
      socket.setNoDelay(true);
      exchangeHello(socket, identity, 'agent', HANDSHAKE_TIMEOUT_MS).then(
        (relayAddress) => {
          clearTimeout(timer);
          socket.off('error', fail);
          if (expectRelay && relayAddress !== expectRelay) {
            socket.destroy();
            reject(new DiodeError('EAUTH', `relay proved address ${relayAddress}, expected ${expectRelay}`));
            return;
          }
          resolve({ socket, relayAddress });
        },
        fail,
      );
    });
  });
}

function isIp(host: string): boolean {
  return /^[\d.]+$/.test(host) || host.includes(':');
}
