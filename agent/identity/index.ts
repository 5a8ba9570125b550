export { Identity, authMessage, verifyAuth, verifyText, type AuthRole, type AuthProof, type AuthPurpose } from './identity.ts';
export { loadOrCreateIdentity, keyFilePath, IdentityError, KEY_FILE_NAME } from './keyfile.ts';
export { resolveHome } from './home.ts';
export { parseAddress, tryParseAddress } from './address.ts';
