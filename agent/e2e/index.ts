// End-to-end layer between client and device inside every data stream between two agents.
export { acceptE2E, connectE2E, sendVerdict, E2EError, type E2ESession } from './channel.ts';
export { e2eCredentials } from './cert.ts';
