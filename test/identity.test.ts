import test from 'ava';
import { randomBytes } from 'node:crypto';
import { createHash } from 'node:crypto';
import { Wallet, getAddress } from 'ethers';
import { secp256k1 } from '@noble/curves/secp256k1';
import { Identity, authMessage, verifyAuth, parseAddress } from '../agent/identity/index.ts';
import { toChecksumAddress, isValidAddress } from '../agent/identity/checksum.ts';

// The agent uses node:crypto (OpenSSL); ethers (what wallets and the fleet
// contract use) is the reference for addresses, @noble/curves an independent
// ECDSA implementation for the signatures.

const sha256 = (text: string) => createHash('sha256').update(text).digest();

test('addresses match ethers for the same key, and proofs are plain ECDSA-SHA256 both ways', (t) => {
  for (let i = 0; i < 20; i++) {
    const wallet = Wallet.createRandom();
    const id = new Identity(wallet.privateKey);
    t.is(id.address, wallet.address);
    t.is(id.privateKey, wallet.privateKey);
    t.is(`0x${id.publicKey.toString('hex')}`, wallet.signingKey.publicKey);
    const ekm = randomBytes(32);
    const proof = id.signAuth('agent', ekm);
    t.true(secp256k1.verify(proof.sig.slice(2), sha256(authMessage('agent', ekm)), proof.pub.slice(2), { lowS: false }));
    const theirs = secp256k1.sign(sha256(authMessage('relay', ekm)), wallet.privateKey.slice(2));
    t.is(verifyAuth('relay', ekm, { pub: wallet.signingKey.publicKey, sig: `0x${theirs.toCompactHex()}` }), wallet.address);
    t.is(toChecksumAddress(wallet.address.toLowerCase()), getAddress(wallet.address.toLowerCase()));
  }
});

test('a proof over other keying material, for another role or with another key does not verify', (t) => {
  const id = Identity.random();
  const other = Identity.random();
  const ekm = randomBytes(32);
  const proof = id.signAuth('agent', ekm);
  t.is(verifyAuth('agent', ekm, proof), id.address);
  t.throws(() => verifyAuth('agent', randomBytes(32), proof), { message: /does not verify/ });
  t.throws(() => verifyAuth('relay', ekm, proof), { message: /does not verify/ });
  t.throws(() => verifyAuth('agent', ekm, { pub: `0x${other.publicKey.toString('hex')}`, sig: proof.sig }), { message: /does not verify/ });
  t.throws(() => verifyAuth('agent', ekm, { pub: proof.pub, sig: '0x1234' }), { message: /64 bytes/ });
  t.throws(() => verifyAuth('agent', ekm, { pub: '0x05' + proof.pub.slice(4), sig: proof.sig }), { message: /0x04/ });
  // A well-formed point that is not on the curve is refused by the key import.
  const offCurve = '0x04' + '00'.repeat(31) + '01' + '00'.repeat(31) + '01';
  t.throws(() => verifyAuth('agent', ekm, { pub: offCurve, sig: proof.sig }));
});

test('EIP-55: lower and upper case pass, a wrong mixed-case checksum does not', (t) => {
  t.true(isValidAddress('0x63115a27c3d1b549011198c69f4120ca4ea12ee9'));
  t.true(isValidAddress('0x63115A27c3d1B549011198C69F4120ca4Ea12EE9'));
  t.false(isValidAddress('0x63115a27C3d1b549011198c69F4120CA4ea12EE9'));
  t.is(parseAddress('0x63115a27c3d1b549011198c69f4120ca4ea12ee9'), '0x63115A27c3d1B549011198C69F4120ca4Ea12EE9');
});

test('a private key out of range is refused', (t) => {
  t.throws(() => new Identity('0x' + '00'.repeat(32)));
  t.throws(() => new Identity('0x' + 'ff'.repeat(32)));
  t.throws(() => new Identity('0x1234'));
});
