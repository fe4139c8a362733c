// Unit tests of maple.js with node's built-in runner: node --test clients/js
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
import { fileURLToPath } from 'node:url';
import { dirname, join } from 'node:path';

import {
  MAGIC, HEADER_LEN, Ret, CMD_MOVE, encode, decode, FrameError, Client, MapleError, backoffDelay,
} from './maple.js';

const here = dirname(fileURLToPath(import.meta.url));

// golden reads a hex dump of testdata/box (written by the Go tests).
function golden(name) {
  const dump = readFileSync(join(here, '..', '..', 'testdata', 'box', name + '.golden'), 'utf8');
  const bytes = [];
  for (const line of dump.split('\n')) {
    const hex = line.slice(10, 58).trim();
    if (hex) for (const b of hex.split(/\s+/)) bytes.push(parseInt(b, 16));
  }
  return Uint8Array.from(bytes);
}

test('encode matches the Go codec (testdata/box golden frames)', () => {
  assert.deepEqual(encode({ cmd: 1, sn: 1, body: 'hi' }), golden('echo_request'));
  assert.deepEqual(encode({ cmd: 99, ret: Ret.NO_ROUTE, sn: 2 }), golden('no_route_reply'));
  assert.deepEqual(encode({ cmd: 6, body: 'alice: hello' }), golden('say_push'));
});

test('decode reads what encode wrote', () => {
  const body = new Uint8Array([0, 1, 2, 255]);
  const f = decode(encode({ cmd: -7, ret: -10001, sn: 0xfffffffe, body, version: 3, flag: 9 }));
  assert.equal(f.cmd, -7);
  assert.equal(f.ret, -10001);
  assert.equal(f.sn, 0xfffffffe);
  assert.equal(f.version, 3);
  assert.equal(f.flag, 9);
  assert.deepEqual(f.body, body);
  const g = decode(golden('say_push').buffer);
  assert.equal(g.text(), 'alice: hello');
  assert.equal(g.sn, 0);
  const j = decode(encode({ cmd: 1, body: JSON.stringify({ a: [1, 'é'] }) }));
  assert.deepEqual(j.json(), { a: [1, 'é'] });
  assert.equal(decode(encode({ cmd: 1 })).json(), undefined);
});

test('decode refuses anything but exactly one valid frame', () => {
  const f = encode({ cmd: 1, sn: 1, body: 'hello' });
  const bad = f.slice();
  bad[0] = 0;
  const shortLen = f.slice();
  new DataView(shortLen.buffer).setUint32(8, 10);
  const cases = {
    empty: new Uint8Array(0),
    'part of a header': f.slice(0, 10),
    'part of a body': f.slice(0, f.length - 1),
    'two frames': Uint8Array.from([...f, ...f]),
    'bad magic': bad,
    'packet_len under 24': shortLen,
    text: 'hello',
  };
  for (const [name, data] of Object.entries(cases)) {
    assert.throws(() => decode(data), FrameError, name);
  }
  assert.throws(() => decode(encode({ cmd: 1, body: new Uint8Array(100) }), 64), /over the limit 64/);
  assert.equal(new DataView(f.buffer).getUint32(0), MAGIC);
  assert.equal(HEADER_LEN, 24);
});

test('backoff grows, is capped and jittered', () => {
  const o = { minBackoff: 100, maxBackoff: 1000, backoffFactor: 2, jitter: 0.5 };
  assert.deepEqual([0, 1, 2, 3, 4, 10].map((n) => backoffDelay(n, { ...o, random: () => 0 })), [100, 200, 400, 800, 1000, 1000]);
  assert.equal(backoffDelay(1, { ...o, random: () => 1 }), 100);
  for (let i = 0; i < 100; i++) {
    const d = backoffDelay(3, o);
    assert.ok(d >= 400 && d <= 800, `delay ${d}`);
  }
});

// FakeSocket is a WebSocket the tests drive: server() answers frames.
class FakeSocket {
  static all = [];
  static refuse = 0; // the next n sockets fail to open
  static handler = null; // (socket, frame) => ..., for sockets without onsend

  constructor(url) {
    this.url = url;
    this.readyState = 0;
    this.sent = [];
    this.closedWith = null;
    FakeSocket.all.push(this);
    setTimeout(() => {
      if (FakeSocket.refuse > 0) {
        FakeSocket.refuse--;
        this.drop(1006);
        return;
      }
      this.readyState = 1;
      this.onopen?.({});
    }, 1);
  }

  send(data) {
    if (this.readyState !== 1) throw new Error('not open');
    const f = decode(data);
    this.sent.push(f);
    if (this.onsend) this.onsend(f);
    else FakeSocket.handler?.(this, f);
  }

  close(code = 1000, reason = '') {
    if (code !== 1000 && (code < 3000 || code > 4999)) {
      throw new Error(`InvalidAccessError: a page may not close with code ${code}`); // as browsers do
    }
    this.closedWith = { code, reason };
    this.drop(code, reason);
  }

  // Server side.
  reply(f, body, ret = 0) {
    this.deliver(encode({ cmd: f.cmd, ret, sn: f.sn, body }));
  }

  deliver(bytes) {
    const copy = bytes.buffer.slice(bytes.byteOffset, bytes.byteOffset + bytes.byteLength);
    setTimeout(() => this.readyState === 1 && this.onmessage?.({ data: copy }), 0);
  }

  drop(code = 1006, reason = '') {
    if (this.readyState === 3) return;
    this.readyState = 3;
    setTimeout(() => this.onclose?.({ code, reason, wasClean: code !== 1006 }), 0);
  }

  static reset() {
    FakeSocket.all = [];
    FakeSocket.refuse = 0;
    FakeSocket.handler = null;
  }

  static last() {
    return FakeSocket.all[FakeSocket.all.length - 1];
  }
}

const fast = { WebSocket: FakeSocket, minBackoff: 5, maxBackoff: 20, jitter: 0, timeout: 500 };
const tick = (ms = 5) => new Promise((r) => setTimeout(r, ms));
async function until(cond, what, ms = 2000) {
  const end = Date.now() + ms;
  while (!cond()) {
    if (Date.now() > end) throw new Error('timed out waiting for ' + what);
    await tick();
  }
}

test('requests are resolved by the reply with their sn, in any order', async (t) => {
  FakeSocket.reset();
  const c = new Client('ws://x/ws', fast);
  t.after(() => c.close());
  await c.connect();
  const ws = FakeSocket.last();
  const held = [];
  ws.onsend = (f) => held.push(f);
  const ps = [c.request(1, 'a'), c.request(1, 'b'), c.request(3, 'c')];
  await until(() => held.length === 3, '3 requests sent');
  assert.deepEqual(held.map((f) => f.sn), [1, 2, 3]);
  for (const f of [...held].reverse()) ws.reply(f, f.text().toUpperCase(), f.cmd === 3 ? Ret.LOGIN_REQUIRED : 0);
  const replies = await Promise.all(ps);
  assert.deepEqual(replies.map((r) => [r.sn, r.text(), r.ret]), [[1, 'A', 0], [2, 'B', 0], [3, 'C', Ret.LOGIN_REQUIRED]]);
  // call rejects on a ret.
  ws.onsend = (f) => ws.reply(f, 'nope', Ret.LOGIN_REQUIRED);
  await assert.rejects(c.call(5, 'lobby'), (e) => e instanceof MapleError && e.ret === Ret.LOGIN_REQUIRED && e.code === 'ret');
  ws.onsend = (f) => ws.reply(f, 'ok');
  assert.equal((await c.call(5, 'lobby')).text(), 'ok');
  c.close();
  assert.equal(c.state, 'closed');
});

test('pushes go to listeners by cmd; stray replies are late', async (t) => {
  FakeSocket.reset();
  const c = new Client('ws://x/ws', fast);
  t.after(() => c.close());
  const all = [];
  const says = [];
  const late = [];
  c.on('push', (f) => all.push(f.cmd));
  c.onPush(6, (f) => says.push(f.text()));
  c.on('late', (f) => late.push(f.sn));
  await c.connect();
  const ws = FakeSocket.last();
  ws.deliver(encode({ cmd: 6, body: 'alice: hi' }));
  ws.deliver(encode({ cmd: 7, body: 'x' }));
  ws.deliver(encode({ cmd: 6, body: 'bob: yo' }));
  ws.deliver(encode({ cmd: 1, sn: 77, body: 'late' }));
  await until(() => all.length === 3 && late.length === 1, 'pushes');
  assert.deepEqual(all, [6, 7, 6]);
  assert.deepEqual(says, ['alice: hi', 'bob: yo']);
  assert.deepEqual(late, [77]);
  c.close();
});

test('a bad frame from the server drops the connection, which comes back', async (t) => {
  FakeSocket.reset();
  const c = new Client('ws://x/ws', fast);
  t.after(() => c.close());
  const errors = [];
  c.on('error', (e) => errors.push(e));
  await c.connect();
  const first = FakeSocket.last();
  first.deliver(Uint8Array.from([1, 2, 3]));
  await until(() => c.connects === 2, 'reconnect');
  assert.equal(first.closedWith.code, 4002);
  assert.ok(errors[0] instanceof FrameError);
  c.close();
});

test('reconnects with backoff, logs in again, then sends what waited', async (t) => {
  FakeSocket.reset();
  const logins = [];
  const states = [];
  const c = new Client('ws://x/ws', {
    ...fast,
    onOpen: async ({ request, reconnect }) => {
      const r = await request(2, 'alice');
      logins.push([reconnect, r.text()]);
    },
  });
  t.after(() => c.close());
  c.on('state', (s) => states.push(s));
  FakeSocket.handler = (ws, f) => ws.reply(f, f.cmd === 2 ? 'welcome ' + f.text() : f.text());
  await c.connect();
  assert.deepEqual(logins, [[false, 'welcome alice']]);
  assert.equal(c.connects, 1);

  // A request in flight when the connection drops fails (it may have run);
  // one made while reconnecting waits and goes out after the login.
  const ws1 = FakeSocket.last();
  ws1.onsend = () => {}; // never answers
  const inflight = c.request(1, 'lost');
  await until(() => ws1.sent.length === 2, 'in-flight request sent');
  FakeSocket.refuse = 2; // two failed attempts before one works
  ws1.drop(1006);
  await assert.rejects(inflight, (e) => e.code === 'disconnected');
  assert.equal(c.state, 'reconnecting');
  const waiting = c.request(1, 'queued', { timeout: 2000 });
  assert.equal((await waiting).text(), 'queued');
  assert.equal(FakeSocket.all.length, 4, 'two refused sockets, then one that opened');
  assert.equal(c.connects, 2);
  assert.deepEqual(logins, [[false, 'welcome alice'], [true, 'welcome alice']]);
  const sent = FakeSocket.last().sent.map((f) => [f.cmd, f.text()]);
  assert.deepEqual(sent, [[2, 'alice'], [1, 'queued']], 'login before the queued request');
  assert.equal(c.attempt, 0, 'backoff reset after a successful open');
  assert.deepEqual(states, ['connecting', 'open', 'reconnecting', 'open']);
  c.close();
  assert.deepEqual(states.at(-1), 'closed');
});

test('a failing onOpen hook drops the connection and retries', async (t) => {
  FakeSocket.reset();
  let tries = 0;
  const c = new Client('ws://x/ws', {
    ...fast,
    onOpen: async () => {
      if (++tries < 3) throw new Error('login refused');
    },
  });
  t.after(() => c.close());
  const errors = [];
  c.on('error', (e) => errors.push(e.message));
  await c.connect();
  assert.equal(tries, 3);
  assert.deepEqual(errors, ['login refused', 'login refused']);
  assert.equal(FakeSocket.all[0].closedWith.code, 4000);
  c.close();
});

test('timeouts and close reject; sn skips 0 when it wraps', async (t) => {
  FakeSocket.reset();
  const c = new Client('ws://x/ws', { ...fast, timeout: 30 });
  t.after(() => c.close());
  await c.connect();
  await assert.rejects(c.request(1, 'x'), (e) => e.code === 'timeout');
  c._sn = 0xffffffff;
  const ws = FakeSocket.last();
  ws.onsend = (f) => ws.reply(f, 'y');
  const r = await c.request(1, 'y');
  assert.equal(r.sn, 1);
  ws.onsend = () => {};
  const p = c.request(1, 'z', { timeout: 5000 });
  c.close();
  await assert.rejects(p, (e) => e.code === 'closed');
  await assert.rejects(c.request(1, 'after'), (e) => e.code === 'closed');
  assert.equal(FakeSocket.all.length, 1, 'no reconnect after close');
  await tick(30);
  assert.equal(FakeSocket.all.length, 1, 'no reconnect after close');
});

test('no WebSocket class is an error at once', () => {
  assert.throws(() => new Client('ws://x', { WebSocket: undefined }), TypeError);
});

// Gateway rolls (docs/operations.md, "What a client sees during a gateway
// roll"): the move push, Ret.MOVED, and the close of a stopping gateway.

test('the farm additions for gateway rolls', () => {
  assert.equal(CMD_MOVE, -1);
  assert.equal(Ret.MOVED, -10003);
});

test('a move push: requests wait for a quiet moment, then go to a new connection after onOpen', async (t) => {
  FakeSocket.reset();
  const logins = [];
  const moves = [];
  const states = [];
  const c = new Client('ws://x/ws', {
    ...fast,
    moveWait: 5000,
    onOpen: async ({ request, reconnect }) => {
      logins.push(reconnect);
      await request(2, 'alice');
    },
  });
  t.after(() => c.close());
  c.on('move', (m) => moves.push(m.reason));
  c.on('state', (s) => states.push(s));
  const pushes = [];
  c.on('push', (f) => pushes.push(f.cmd));
  FakeSocket.handler = (ws, f) => ws.reply(f, f.text());
  await c.connect();
  const old = FakeSocket.last();
  const held = [];
  old.onsend = (f) => held.push(f);
  const inflight = c.request(1, 'first');
  await until(() => held.length === 1, 'the first request sent');
  old.deliver(encode({ cmd: CMD_MOVE }));
  await until(() => moves.length === 1, 'the move push read');
  const waiting = c.request(1, 'second');
  await tick(20);
  assert.equal(held.length, 1, 'a request made after the move push is not sent to the stopping gateway');
  assert.equal(FakeSocket.all.length, 1, 'no move while a request is in flight');
  old.reply(held[0], 'one');
  assert.equal((await inflight).text(), 'one');
  assert.equal((await waiting).text(), 'second');
  const next = FakeSocket.last();
  assert.notEqual(next, old);
  assert.deepEqual(next.sent.map((f) => [f.cmd, f.text()]), [[2, 'alice'], [1, 'second']], 'login first, then the held request');
  assert.deepEqual(old.closedWith, { code: 1000, reason: 'moved' }, 'the old connection closed by the client');
  assert.deepEqual(moves, ['push']);
  assert.deepEqual(logins, [false, true]);
  assert.deepEqual(pushes, [], 'the move push is not a game push');
  assert.deepEqual(states, ['connecting', 'open', 'reconnecting', 'open']);
  assert.equal((await c.request(1, 'after')).text(), 'after');
  assert.equal(FakeSocket.last(), next);
});

test('Ret.MOVED and a close after the move push send requests again; nothing fails', async (t) => {
  FakeSocket.reset();
  const c = new Client('ws://x/ws', { ...fast, moveWait: 5000 });
  t.after(() => c.close());
  const moves = [];
  c.on('move', (m) => moves.push(m.reason));
  await c.connect();
  // Ret.MOVED: the gateway took no more work; move at once.
  let ws = FakeSocket.last();
  ws.onsend = (f) => ws.reply(f, '', Ret.MOVED);
  FakeSocket.handler = (s, f) => s.reply(f, 'again ' + f.text());
  const r = await c.request(3, 'counter');
  assert.equal(r.ret, Ret.OK);
  assert.equal(r.text(), 'again counter');
  assert.deepEqual(moves, ['moved']);
  assert.equal(FakeSocket.all.length, 2);
  // A gateway that pushes move and closes with requests unanswered did
  // not run them.
  ws = FakeSocket.last();
  const held = [];
  ws.onsend = (f) => held.push(f);
  const a = c.request(1, 'a');
  const b = c.request(1, 'b');
  await until(() => held.length === 2, 'two requests sent');
  ws.deliver(encode({ cmd: CMD_MOVE }));
  await until(() => moves.length === 2, 'the move push read');
  ws.drop(1000);
  assert.deepEqual([(await a).text(), (await b).text()], ['again a', 'again b']);
  assert.equal(FakeSocket.all.length, 3);
  assert.deepEqual(FakeSocket.last().sent.map((f) => f.text()), ['a', 'b'], 'sent again in order');
  assert.equal(c.state, 'open');
});

test('moveWait bounds the wait: the move goes on, and the old connection still answers what it owes', async (t) => {
  FakeSocket.reset();
  const c = new Client('ws://x/ws', { ...fast, moveWait: 30 });
  t.after(() => c.close());
  FakeSocket.handler = (ws, f) => ws.reply(f, 'new ' + f.text());
  await c.connect();
  const old = FakeSocket.last();
  const held = [];
  old.onsend = (f) => held.push(f);
  const slow = c.request(7, 'slow', { timeout: 5000 });
  await until(() => held.length === 1, 'the slow request sent');
  let moved = false;
  c.on('move', () => (moved = true));
  old.deliver(encode({ cmd: CMD_MOVE }));
  await until(() => moved, 'the move push read');
  const start = Date.now();
  const meanwhile = await c.request(1, 'meanwhile');
  assert.ok(Date.now() - start < 400, 'held about moveWait');
  assert.equal(meanwhile.text(), 'new meanwhile');
  assert.equal(old.closedWith, null, 'the old connection stays while it owes a reply');
  old.reply(held[0], 'late');
  assert.equal((await slow).text(), 'late');
  await until(() => old.closedWith !== null, 'the old connection closed once owed nothing');
  assert.equal(FakeSocket.all.length, 2);
});

test('followMoves false: the move push is a push and Ret.MOVED a reply', async (t) => {
  FakeSocket.reset();
  const c = new Client('ws://x/ws', { ...fast, followMoves: false });
  t.after(() => c.close());
  const pushes = [];
  c.on('push', (f) => pushes.push(f.cmd));
  await c.connect();
  const ws = FakeSocket.last();
  ws.onsend = (f) => ws.reply(f, '', Ret.MOVED);
  ws.deliver(encode({ cmd: CMD_MOVE }));
  const r = await c.request(1, 'x');
  assert.equal(r.ret, Ret.MOVED);
  assert.deepEqual(pushes, [CMD_MOVE]);
  assert.equal(FakeSocket.all.length, 1);
});

test('a login refused during a move is retried; requests owed on the old connection still resolve', async (t) => {
  FakeSocket.reset();
  let opens = 0;
  const c = new Client('ws://x/ws', {
    ...fast,
    moveWait: 10,
    onOpen: async () => {
      if (++opens === 2) throw new Error('login refused: the old session is still bound');
    },
  });
  t.after(() => c.close());
  c.on('error', () => {});
  FakeSocket.handler = (ws, f) => ws.reply(f, 'new ' + f.text());
  await c.connect();
  const old = FakeSocket.last();
  const held = [];
  old.onsend = (f) => held.push(f);
  const slow = c.request(7, 'slow', { timeout: 5000 });
  await until(() => held.length === 1, 'the slow request sent');
  let moved = false;
  c.on('move', () => (moved = true));
  old.deliver(encode({ cmd: CMD_MOVE }));
  await until(() => moved, 'the move push read');
  const after = c.request(1, 'after', { timeout: 5000 });
  assert.equal((await after).text(), 'new after');
  assert.equal(opens, 3, 'the refused login was retried on a new connection');
  old.reply(held[0], 'late');
  assert.equal((await slow).text(), 'late');
});
