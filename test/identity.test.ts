import test from 'ava';
import { randomBytes } from 'node:crypto';
import { Wallet, verifyMessage, getAddress } from 'ethers';
import { Identity, authMessage, recoverAuth, parseAddress } from '../agent/identity/index.ts';
import { toChecksumAddress, isValidAddress } from '../agent/identity/checksum.ts';

// The agent signs with @noble directly; ethers (what wallets and the fleet use) is the reference.

test('addresses and EIP-191 signatures match ethers in both directions', (t) => {
  for (let i = 0; i < 20; i++) {
    const wallet = Wallet.createRandom();
    const id = new Identity(wallet.privateKey);
    t.is(id.address, wallet.address);
    const ekm = randomBytes(32);
    t.is(verifyMessage(authMessage('agent', ekm), id.signAuth('agent', ekm)), wallet.address);
    t.is(recoverAuth('relay', ekm, wallet.signMessageSync(authMessage('relay', ekm))), wallet.address);
    t.is(toChecksumAddress(wallet.address.toLowerCase()), getAddress(wallet.address.toLowerCase()));
  }
});

test('a signature over other keying material or another role recovers another address', (t) => {
  const id = Identity.random();
  const ekm = randomBytes(32);
  const sig = id.signAuth('agent', ekm);
  t.is(recoverAuth('agent', ekm, sig), id.address);
  t.not(recoverAuth('agent', randomBytes(32), sig), id.address);
  t.not(recoverAuth('relay', ekm, sig), id.address);
  t.throws(() => recoverAuth('agent', ekm, '0x1234'));
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
