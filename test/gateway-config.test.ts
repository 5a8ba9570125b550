import test from 'ava';
import { ConnectionLimiter, sourceKey } from '../agent/gateway/limiter.ts';
import { DEFAULT_GATEWAY_LIMITS, gatewayConfigFromFlags, gatewayEnabled } from '../agent/gateway/config.ts';
import { gatewayTarget } from '../agent/gateway/route.ts';
import { UsageError } from '../agent/util/errors.ts';

test('a source is one IPv4 address (also IPv4-mapped) or one IPv6 /64', (t) => {
  t.is(sourceKey('203.0.113.9'), '203.0.113.9');
  t.is(sourceKey('::ffff:203.0.113.9'), '203.0.113.9');
  t.is(sourceKey('2001:db8:1:2:aaaa::1'), '2001:db8:1:2::/64');
  t.is(sourceKey('2001:DB8:1:2:bbbb:cccc:dddd:eeee'), '2001:db8:1:2::/64');
  t.is(sourceKey('2001:db8::1'), '2001:db8:0:0::/64');
  t.is(sourceKey('::1'), '0:0:0:0::/64');
});

test('the limiter refuses per source before the total, and a release frees exactly one slot', (t) => {
  const limiter = new ConnectionLimiter(3, 2);
  t.is(limiter.admit('a'), undefined);
  t.is(limiter.admit('a'), undefined);
  t.is(limiter.admit('a'), 'per-ip');
  t.is(limiter.admit('b'), undefined);
  t.is(limiter.admit('c'), 'total');
  limiter.release('a');
  t.is(limiter.total, 2);
  t.is(limiter.admit('c'), undefined);
  limiter.release('nobody');
  t.is(limiter.total, 3);
});

test('gateway flags: defaults, and refusals for HTTPS without a certificate, a certificate without HTTPS, a bad domain and a bad number', (t) => {
  const none = gatewayConfigFromFlags({});
  t.false(gatewayEnabled(none));
  t.deepEqual(none.limits, { ...DEFAULT_GATEWAY_LIMITS });
  const socks = gatewayConfigFromFlags({ 'gateway-socks': ':1080', 'gateway-domain': 'GW.Example.org.', 'gateway-idle-timeout': '60' });
  t.deepEqual(socks.socks, { host: '0.0.0.0', port: 1080 });
  t.is(socks.domain, 'gw.example.org');
  t.is(socks.limits.idleTimeoutMs, 60_000);
  t.throws(() => gatewayConfigFromFlags({ 'gateway-https': '127.0.0.1:443' }), { instanceOf: UsageError, message: /needs --gateway-cert/ });
  t.throws(() => gatewayConfigFromFlags({ 'gateway-cert': '/nonexistent' }), { instanceOf: UsageError, message: /go together/ });
  t.throws(() => gatewayConfigFromFlags({ 'gateway-domain': 'bad_domain!' }), { instanceOf: UsageError, message: /not a DNS name/ });
  t.throws(() => gatewayConfigFromFlags({ 'gateway-max-conns': 'lots' }), { instanceOf: UsageError, message: /not a whole number/ });
  t.throws(() => gatewayConfigFromFlags({ 'gateway-max-conns': '4', 'gateway-max-conns-per-ip': '8' }), { instanceOf: UsageError, message: /max-conns-per-ip/ });
});

test('gateway names: the gateway domain and .diode route, by address or name, a port in the name wins, anything else is no target', (t) => {
  const address = '0x63115a27ca8d1b1d1e1e8e6e20e5b3f3fb1e4c8c';
  t.like(gatewayTarget(`${address}.gw.example.org`, 80, 'gw.example.org'), { kind: 'device', host: { port: 80 } });
  t.like(gatewayTarget(`${address}-8080.GW.example.org`, 80, 'gw.example.org'), { kind: 'device', host: { port: 8080 } });
  t.like(gatewayTarget(`${address}.diode`, 80, 'gw.example.org'), { kind: 'device', host: { port: 80 } });
  t.like(gatewayTarget(`kitchen-8080.gw.example.org`, 80, 'gw.example.org'), { kind: 'device', host: { name: 'kitchen', port: 8080 } });
  t.is(gatewayTarget(`${address}.other.org`, 80, 'gw.example.org').kind, 'other');
  t.is(gatewayTarget(`a.www.gw.example.org`, 80, 'gw.example.org').kind, 'malformed');
  t.is(gatewayTarget(`ab.gw.example.org`, 80, 'gw.example.org').kind, 'malformed');
});
