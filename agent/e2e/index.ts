// End-to-end layer between client and device inside a data stream (private and protected ports).
export { acceptE2E, connectE2E, sendVerdict, E2EError, type E2ESession } from './channel.ts';
export { deviceTlsContext } from './cert.ts';
