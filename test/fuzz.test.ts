// Issue 14, item 9: property tests (random inputs, random split points, shrinking) for every parser a peer feeds.
import test from 'ava';
import fc from 'fast-check';
import { PassThrough } from 'node:stream';
import { FrameDecoder } from '../agent/mux/decoder.ts';
import { FrameType, HEADER_LENGTH, encodeHeader } from '../agent/mux/frame.ts';
import { MuxError } from '../agent/mux/errors.ts';
import { encodeFrame, readFrame } from '../agent/protocol/frames.ts';
import { parseHello, parseConnect, parseIncoming, parsePublish, parseReply } from '../agent/protocol/messages.ts';
import { parseSocks4Request, parseSocks5Greeting, parseSocks5Request } from '../agent/socks/protocol.ts';
import { parsePortItem } from '../agent/device/port-spec.ts';
import { parseDiodeHost } from '../agent/names/host.ts';
import { nameProblem } from '../agent/names/name.ts';
import { parseClaim, parseClaimed, parseLookup, parseNameInfo } from '../agent/protocol/names.ts';
import { parseRelayList, formatRelayEntry } from '../agent/config/relay-entry.ts';
import { DiodeError } from '../agent/util/errors.ts';

const RUNS = { numRuns: 300 };
const MAX_DATA = 64 * 1024;

/** Splits `buf` at the given (sorted, deduplicated) offsets. */
function splitAt(buf: Buffer, cuts: number[]): Buffer[] {
  const points = [...new Set(cuts.map((c) => c % (buf.length + 1)))].sort((a, b) => a - b);
  const out: Buffer[] = [];
  let prev = 0;
  for (const p of points) {
    out.push(buf.subarray(prev, p));
    prev = p;
  }
  out.push(buf.subarray(prev));
  return out;
}

const cuts = fc.array(fc.nat(), { maxLength: 12 });

/** `chars` hex digits (even). */
const hex = (chars: number) => fc.uint8Array({ minLength: chars / 2, maxLength: chars / 2 }).map((b) => Buffer.from(b).toString('hex'));

// ---- yamux decoder ------------------------------------------------------------------

const frameArb = fc.oneof(
  fc.record({ type: fc.constant(FrameType.Data), flags: fc.integer({ min: 0, max: 0xf }), streamId: fc.integer({ min: 1, max: 0xffff_ffff }), payload: fc.uint8Array({ maxLength: 300 }) }),
  fc.record({ type: fc.constantFrom(FrameType.WindowUpdate, FrameType.Ping, FrameType.GoAway), flags: fc.integer({ min: 0, max: 0xf }), streamId: fc.integer({ min: 0, max: 0xffff_ffff }), length: fc.integer({ min: 0, max: 0xffff_ffff }) }),
);
type Frame = { type: number; flags: number; streamId: number; payload?: Uint8Array; length?: number };

function encodeFrames(frames: Frame[]): Buffer {
  const parts: Buffer[] = [];
  for (const f of frames) {
    const h = Buffer.alloc(HEADER_LENGTH);
    encodeHeader(h, 0, f.type, f.flags, f.streamId, f.payload ? f.payload.length : f.length!);
    parts.push(h);
    if (f.payload) parts.push(Buffer.from(f.payload));
  }
  return Buffer.concat(parts);
}

function decodeAll(chunks: Buffer[]): Frame[] {
  const out: Frame[] = [];
  let data: Buffer[] = [];
  const decoder = new FrameDecoder(MAX_DATA, (h, payload, first, last) => {
    if (first) data = [];
    data.push(Buffer.from(payload));
    if (!last) return;
    if (h.type === FrameType.Data) out.push({ type: h.type, flags: h.flags, streamId: h.streamId, payload: new Uint8Array(Buffer.concat(data)) });
    else out.push({ type: h.type, flags: h.flags, streamId: h.streamId, length: h.length });
  });
  for (const c of chunks) decoder.push(c);
  return out;
}

test('the yamux decoder yields exactly the encoded frames however the bytes are split', (t) => {
  fc.assert(
    fc.property(fc.array(frameArb, { maxLength: 20 }), cuts, (frames, at) => {
      const decoded = decodeAll(splitAt(encodeFrames(frames), at));
      const norm = (fs: Frame[]) => fs.map((f) => ({ ...f, payload: f.payload ? Buffer.from(f.payload).toString('hex') : undefined }));
      t.deepEqual(norm(decoded), norm(frames));
    }),
    RUNS,
  );
});

test('the yamux decoder fed random bytes only ever fails with a MuxError, and rejects oversize data before buffering it', (t) => {
  fc.assert(
    fc.property(fc.uint8Array({ maxLength: 2000 }), cuts, (bytes, at) => {
      try {
        decodeAll(splitAt(Buffer.from(bytes), at));
      } catch (err) {
        if (!(err instanceof MuxError)) throw err;
      }
    }),
    RUNS,
  );
  const h = Buffer.alloc(HEADER_LENGTH);
  encodeHeader(h, 0, FrameType.Data, 0, 1, MAX_DATA + 1);
  t.throws(() => decodeAll([h]), { instanceOf: MuxError });
});

// ---- framed messages ------------------------------------------------------------------

async function readFrom(chunks: Buffer[], maxBytes: number): Promise<unknown> {
  const stream = new PassThrough();
  const result = readFrame(stream, maxBytes, 2_000);
  for (const c of chunks) stream.write(c);
  stream.end();
  return result;
}

const jsonObject = fc.dictionary(fc.string({ maxLength: 8 }), fc.jsonValue({ maxDepth: 2 }), { maxKeys: 6 });

test('a framed message reads back equal however it is split', async (t) => {
  await fc.assert(
    fc.asyncProperty(jsonObject, cuts, async (message, at) => {
      const bytes = encodeFrame(message);
      const got = await readFrom(splitAt(bytes, at), bytes.length);
      t.deepEqual(got, JSON.parse(JSON.stringify(message)));
    }),
    RUNS,
  );
});

test('random bytes as a framed message either parse to an object or fail with a DiodeError (oversize lengths before buffering)', async (t) => {
  await fc.assert(
    fc.asyncProperty(fc.uint8Array({ maxLength: 600 }), cuts, async (bytes, at) => {
      try {
        const got = await readFrom(splitAt(Buffer.from(bytes), at), 512);
        t.true(typeof got === 'object' && got !== null && !Array.isArray(got));
      } catch (err) {
        if (!(err instanceof DiodeError)) throw err;
      }
    }),
    RUNS,
  );
  t.pass();
});

// ---- hello and the other headers ------------------------------------------------------------------

const helloish = fc.record(
  {
    t: fc.constantFrom('hello', 'connect', 'incoming', 'publish', 'ok', 'error', 'x'),
    v: fc.oneof(fc.constant(3), fc.integer(), fc.string()),
    role: fc.oneof(fc.constantFrom('agent', 'relay', 'client', 'device'), fc.string()),
    pub: fc.oneof(hex(66), fc.string()),
    sig: fc.oneof(fc.oneof(hex(128), hex(130), hex(144)), fc.string()),
    to: fc.oneof(hex(40).map((h) => `0x${h}`), fc.string()),
    port: fc.oneof(fc.integer({ min: -5, max: 70000 }), fc.string()),
    ports: fc.array(fc.record({ port: fc.integer({ min: 0, max: 70000 }), mode: fc.constantFrom('public', 'private', 'protected', 'x') }), { maxLength: 4 }),
    code: fc.string(),
    message: fc.string(),
  },
  { requiredKeys: [] },
);

const nameish = fc.record({
  t: fc.constantFrom('claim', 'claimed', 'lookup', 'name'),
  name: fc.oneof(fc.string({ maxLength: 70 }), fc.constant('kitchen')),
  pub: fc.string(),
  names: fc.array(fc.record({ name: fc.oneof(fc.string(), fc.constant('kitchen')), sig: fc.string(), ok: fc.boolean(), code: fc.string() }), { maxLength: 10 }),
  address: fc.string(),
});

test('hello, connect, incoming, publish, reply and name parsers accept or throw a DiodeError, never anything else', (t) => {
  fc.assert(
    fc.property(fc.oneof(helloish, nameish, jsonObject), (m) => {
      for (const parse of [parseHello, parseConnect, parseIncoming, parsePublish, parseReply, parseClaim, parseClaimed, parseLookup, parseNameInfo] as Array<(m: Record<string, unknown>) => unknown>) {
        try {
          parse(m as Record<string, unknown>);
        } catch (err) {
          if (!(err instanceof DiodeError)) throw err;
        }
      }
    }),
    { numRuns: 500 },
  );
  t.pass();
});

// ---- SOCKS ------------------------------------------------------------------------------

const domain = fc.stringMatching(/^[a-z0-9.-]{1,60}$/);
const socks5Request = fc.oneof(
  fc.record({ atyp: fc.constant(1), host: fc.tuple(fc.nat(255), fc.nat(255), fc.nat(255), fc.nat(255)).map((a) => a.join('.')), port: fc.nat(65535) }),
  fc.record({ atyp: fc.constant(3), host: domain, port: fc.nat(65535) }),
);

function encodeSocks5(r: { atyp: number; host: string; port: number }): Buffer {
  const addr = r.atyp === 1 ? Buffer.from(r.host.split('.').map(Number)) : Buffer.concat([Buffer.from([r.host.length]), Buffer.from(r.host, 'latin1')]);
  const port = Buffer.alloc(2);
  port.writeUInt16BE(r.port);
  return Buffer.concat([Buffer.from([5, 1, 0, r.atyp]), addr, port]);
}

test('SOCKS5 requests parse to what was encoded; every proper prefix asks for more', (t) => {
  fc.assert(
    fc.property(socks5Request, fc.nat(), (r, cut) => {
      const bytes = encodeSocks5(r);
      const got = parseSocks5Request(bytes);
      t.is(got.kind, 'ok');
      if (got.kind === 'ok') {
        t.is(got.value.host, r.host);
        t.is(got.value.port, r.port);
        t.is(got.used, bytes.length);
      }
      t.is(parseSocks5Request(bytes.subarray(0, cut % bytes.length)).kind, 'more');
    }),
    RUNS,
  );
});

test('SOCKS4 and 4a requests parse to what was encoded; every proper prefix asks for more', (t) => {
  fc.assert(
    fc.property(fc.oneof(domain, fc.constant('')), fc.stringMatching(/^[a-z]{0,10}$/), fc.nat(65535), fc.nat(), (host, user, port, cut) => {
      const head = Buffer.from([4, 1, port >> 8, port & 0xff, ...(host ? [0, 0, 0, 1] : [10, 0, 0, 1])]);
      const bytes = Buffer.concat([head, Buffer.from(user + '\0'), host ? Buffer.from(host + '\0') : Buffer.alloc(0)]);
      const got = parseSocks4Request(bytes);
      t.is(got.kind, 'ok');
      if (got.kind === 'ok') {
        t.is(got.value.host, host || '10.0.0.1');
        t.is(got.value.port, port);
        t.is(got.used, bytes.length);
      }
      t.is(parseSocks4Request(bytes.subarray(0, cut % bytes.length)).kind, 'more');
    }),
    RUNS,
  );
});

test('SOCKS parsers fed random bytes answer more, bad or ok and never throw', (t) => {
  fc.assert(
    fc.property(fc.uint8Array({ maxLength: 300 }), (bytes) => {
      const buf = Buffer.from(bytes);
      for (const parse of [parseSocks5Greeting, parseSocks5Request, parseSocks4Request]) {
        const r = parse(buf);
        t.true(['more', 'bad', 'ok'].includes(r.kind));
        if (r.kind === 'ok') t.true(r.used <= buf.length);
      }
    }),
    RUNS,
  );
});

// ---- port specs, host names, relay entries ------------------------------------------------------------------

test('port items parse to ports in range or fail with a DiodeError; local:remote round-trips', (t) => {
  fc.assert(
    fc.property(fc.string({ maxLength: 40 }), (item) => {
      try {
        const m = parsePortItem(item, '-public');
        t.true(m.localPort >= 1 && m.localPort <= 65535 && m.remotePort >= 1 && m.remotePort <= 65535);
      } catch (err) {
        if (!(err instanceof DiodeError)) throw err;
      }
    }),
    { numRuns: 500 },
  );
  fc.assert(
    fc.property(fc.integer({ min: 1, max: 65535 }), fc.integer({ min: 1, max: 65535 }), (local, remote) => {
      const m = parsePortItem(`${local}:${remote}`, '-public');
      t.is(m.localPort, local);
      t.is(m.remotePort, remote);
    }),
    RUNS,
  );
});

test('host names resolve only as <address>[-<port>].diode or <name>[-<port>].diode, in any letter case, and nothing else throws', (t) => {
  fc.assert(
    fc.property(fc.string({ maxLength: 80 }), (name) => {
      const target = parseDiodeHost(name, 22);
      if (target?.name !== undefined) t.is(nameProblem(target.name), undefined);
      else if (target) t.regex(target.address, /^0x[0-9a-fA-F]{40}$/);
    }),
    { numRuns: 500 },
  );
  fc.assert(
    fc.property(hex(40), fc.option(fc.integer({ min: 1, max: 65535 })), fc.boolean(), (hex, port, upper) => {
      const label = `0x${upper ? hex.toUpperCase() : hex.toLowerCase()}${port === null ? '' : `-${port}`}`;
      const target = parseDiodeHost(`${label}.diode`, 22);
      t.truthy(target);
      t.is(target!.address!.toLowerCase(), `0x${hex.toLowerCase()}`);
      t.is(target!.port, port ?? 22);
    }),
    RUNS,
  );
});

test('relay lists parse to entries with valid ports or fail with a DiodeError; host:port round-trips', (t) => {
  fc.assert(
    fc.property(fc.string({ maxLength: 80 }), (text) => {
      try {
        for (const e of parseRelayList(text)) t.true(e.port >= 1 && e.port <= 65535);
      } catch (err) {
        if (!(err instanceof DiodeError)) throw err;
      }
    }),
    { numRuns: 500 },
  );
  fc.assert(
    fc.property(fc.stringMatching(/^[a-z][a-z0-9]{0,10}\.[a-z]{2,6}$/), fc.integer({ min: 1, max: 65535 }), (host, port) => {
      const [entry] = parseRelayList(`${host}:${port}`);
      t.is(entry.host, host);
      t.is(entry.port, port);
      t.is(formatRelayEntry(entry), `${host}:${port}`);
    }),
    RUNS,
  );
});
