// maple.js: the JavaScript client of a maple farm over WebSocket, for
// browsers (H5 games) and anything else with a WebSocket class. No
// dependencies; one ES module.
//
// The wire (docs/protocol.md section 1): each binary WebSocket message carries
// exactly one "Box" frame, a 24-byte big-endian header and a body.
//
//   import { Client } from './maple.js';
//   const c = new Client('ws://127.0.0.1:28080/ws', {
//     // Runs after every (re)connect, before queued requests go out:
//     // log in again here.
//     onOpen: async ({ request }) => { if (name) await request(2, name); },
//   });
//   c.on('state', (s) => console.log('connection', s)); // connecting, open, reconnecting, closed
//   c.onPush(6, (f) => console.log(f.text()));         // pushes carry sn 0
//   await c.connect();
//   const reply = await c.request(1, 'hi');            // resolved by the reply with the same sn
//   console.log(reply.ret, reply.text());
//
// Gateway rolls (docs/operations.md, "What a client sees during a gateway
// roll"; farm additions beyond docs/protocol.md): a gateway that is stopping
// pushes CMD_MOVE (sn 0) to each connection, later answers frames it no
// longer takes Ret.MOVED (not run), and closes each connection once it
// answered every frame it took; a request it gave no answer never ran. The
// client follows (option followMoves, on by default): on the push it
// holds new requests until none of its requests is in flight (or
// moveWait ms), then reconnects at once (onOpen runs: log in again) and
// sends what it held; requests answered Ret.MOVED or left unanswered by
// the stopping gateway are sent again on the new connection, so they
// resolve with their real replies. It emits 'move' ({ reason: 'push' |
// 'moved' }: the move push, or a Ret.MOVED answer) when a move starts.

/** The first field of every frame. */
export const MAGIC = 0x7978aecf;
/** Size of the fixed header. */
export const HEADER_LEN = 24;
/** The gateway's default largest frame (packet_len), 1 MiB. */
export const DEFAULT_MAX_FRAME = 1 << 20;

/**
 * Result codes (docs/protocol.md section 2). MOVED is a farm addition (the Go
 * side's box.RetMoved): a stopping gateway did not take the frame, which
 * never ran; send it again on a new connection (the client does).
 */
export const Ret = Object.freeze({
  OK: 0,
  NO_ROUTE: -10000,
  HANDLER_FAILED: -10001,
  BUSY: -10002,
  MOVED: -10003,
  LOGIN_REQUIRED: -10004,
});

/**
 * The cmd of the push (sn 0) that means "this gateway is stopping:
 * reconnect at a quiet moment": a farm addition (the Go side's
 * box.CmdMove), not a game route.
 */
export const CMD_MOVE = -1;

const encoder = new TextEncoder();
const decoder = new TextDecoder();

/** Turns a body (string, Uint8Array, ArrayBuffer, view, null) into bytes. */
export function toBytes(body) {
  if (body === undefined || body === null) return new Uint8Array(0);
  if (typeof body === 'string') return encoder.encode(body);
  if (body instanceof Uint8Array) return body;
  if (body instanceof ArrayBuffer) return new Uint8Array(body);
  if (ArrayBuffer.isView(body)) return new Uint8Array(body.buffer, body.byteOffset, body.byteLength);
  throw new TypeError('maple: a body is a string, a Uint8Array or an ArrayBuffer');
}

/** A decoded frame. body aliases the bytes it was decoded from. */
export class Frame {
  constructor({ cmd = 0, ret = 0, sn = 0, body = new Uint8Array(0), version = 0, flag = 0 }) {
    this.cmd = cmd;
    this.ret = ret;
    this.sn = sn;
    this.body = body;
    this.version = version;
    this.flag = flag;
  }

  /** The body as UTF-8 text. */
  text() {
    return decoder.decode(this.body);
  }

  /** The body parsed as JSON (undefined for an empty body). */
  json() {
    return this.body.length === 0 ? undefined : JSON.parse(this.text());
  }
}

/** A message that is not exactly one valid frame. */
export class FrameError extends Error {
  constructor(message) {
    super(message);
    this.name = 'FrameError';
  }
}

/** Encodes one frame; ret, sn, version and flag default to 0. */
export function encode({ cmd, ret = 0, sn = 0, body, version = 0, flag = 0 }) {
  const b = toBytes(body);
  const out = new Uint8Array(HEADER_LEN + b.length);
  const v = new DataView(out.buffer);
  v.setUint32(0, MAGIC);
  v.setUint16(4, version);
  v.setUint16(6, flag);
  v.setUint32(8, out.length);
  v.setInt32(12, cmd);
  v.setInt32(16, ret);
  v.setUint32(20, sn);
  out.set(b, HEADER_LEN);
  return out;
}

/**
 * Decodes data, which must be exactly one frame (a WebSocket message), and
 * throws a FrameError otherwise: short, bad magic, packet_len under 24 or
 * over maxFrame, or not the message's length.
 */
export function decode(data, maxFrame = DEFAULT_MAX_FRAME) {
  let u8;
  if (data instanceof Uint8Array) u8 = data;
  else if (data instanceof ArrayBuffer) u8 = new Uint8Array(data);
  else if (ArrayBuffer.isView(data)) u8 = new Uint8Array(data.buffer, data.byteOffset, data.byteLength);
  else throw new FrameError(`maple: a frame is binary, not ${typeof data}`);
  if (u8.length < HEADER_LEN) {
    throw new FrameError(`maple: ${u8.length} bytes, shorter than a frame header`);
  }
  const v = new DataView(u8.buffer, u8.byteOffset, u8.byteLength);
  const magic = v.getUint32(0);
  if (magic !== MAGIC) {
    throw new FrameError(`maple: bad magic 0x${magic.toString(16).padStart(8, '0')}`);
  }
  const len = v.getUint32(8);
  if (len < HEADER_LEN) throw new FrameError(`maple: packet_len ${len} under the header size`);
  if (len > maxFrame) throw new FrameError(`maple: packet_len ${len} over the limit ${maxFrame}`);
  if (len !== u8.length) {
    throw new FrameError(`maple: a message of ${u8.length} bytes holds a frame of ${len}: one frame per message`);
  }
  return new Frame({
    version: v.getUint16(4),
    flag: v.getUint16(6),
    cmd: v.getInt32(12),
    ret: v.getInt32(16),
    sn: v.getUint32(20),
    body: u8.subarray(HEADER_LEN),
  });
}

/** A request that failed: no connection, a timeout, or a reply with ret != 0 (from call). */
export class MapleError extends Error {
  constructor(message, { ret, cmd, reply, code } = {}) {
    super(message);
    this.name = 'MapleError';
    this.ret = ret; // the reply's result code, if there was a reply
    this.cmd = cmd;
    this.reply = reply;
    this.code = code; // 'timeout', 'disconnected', 'closed' or 'ret'
  }
}

/**
 * The delay before reconnect attempt n (0-based): min * factor^n, capped
 * at max, less up to jitter of it at random.
 */
export function backoffDelay(n, { minBackoff = 250, maxBackoff = 8000, backoffFactor = 2, jitter = 0.3, random = Math.random } = {}) {
  const base = Math.min(maxBackoff, minBackoff * backoffFactor ** n);
  return Math.round(base * (1 - jitter * random()));
}

const OPEN = 1; // WebSocket.OPEN

/**
 * A connection to a gateway that stays up: it reconnects with backoff
 * whenever the connection is lost, until close() is called.
 *
 * Events (on(name, fn)): 'state' (connecting | open | reconnecting |
 * closed), 'open' ({ connects, reconnect }), 'close' ({ code, reason }),
 * 'push' (a Frame with sn 0), 'late' (a reply whose request gave up),
 * 'move' ({ reason }: the gateway is stopping, the client moves; see
 * "Gateway rolls" above), 'error' (an Error: a bad frame, a failed onOpen
 * hook).
 */
export class Client {
  /**
   * options:
   *  - onOpen({ request, reconnect, client }): runs after each connect,
   *    before requests queued meanwhile are sent; use request() given here
   *    to log in again. If it throws, the connection is dropped and retried.
   *  - timeout: ms a request waits for its reply (default 10000)
   *  - minBackoff, maxBackoff, backoffFactor, jitter: reconnect delays
   *  - maxFrame: largest frame accepted (default 1 MiB)
   *  - followMoves: follow a stopping gateway (default true; false: the
   *    move push is an ordinary push and Ret.MOVED an ordinary reply)
   *  - moveWait: ms a move waits for no request in flight (default 1000)
   *  - WebSocket: the WebSocket class (default globalThis.WebSocket)
   */
  constructor(url, options = {}) {
    this.url = url;
    this.options = {
      timeout: 10000,
      minBackoff: 250,
      maxBackoff: 8000,
      backoffFactor: 2,
      jitter: 0.3,
      maxFrame: DEFAULT_MAX_FRAME,
      followMoves: true,
      moveWait: 1000,
      random: Math.random,
      onOpen: null,
      WebSocket: globalThis.WebSocket,
      ...options,
    };
    if (typeof this.options.WebSocket !== 'function') {
      throw new TypeError('maple: no WebSocket class: pass options.WebSocket');
    }
    this.state = 'idle';
    this.connects = 0; // connections opened so far (1 means no reconnect yet)
    this.attempt = 0; // failed attempts since the last open
    this._ws = null;
    this._ready = false; // open and onOpen done
    this._closed = false;
    this._sn = 0;
    this._order = 0; // requests made so far: sent again in this order
    this._pending = new Map(); // sn -> {resolve, reject, timer, cmd}
    this._queue = []; // requests waiting for a ready connection
    this._listeners = new Map();
    this._retry = null;
    this._firstOpen = null;
    this._moving = null; // { ws, timer }: the gateway of ws is stopping; requests wait
    this._olds = new Set(); // sockets moved away from, still owed replies
  }

  /** Adds a listener; returns a function that removes it. */
  on(event, fn) {
    let set = this._listeners.get(event);
    if (!set) this._listeners.set(event, (set = new Set()));
    set.add(fn);
    return () => set.delete(fn);
  }

  /** Listens to pushes of one cmd. */
  onPush(cmd, fn) {
    return this.on('push', (f) => {
      if (f.cmd === cmd) fn(f);
    });
  }

  _emit(event, arg) {
    const set = this._listeners.get(event);
    if (!set) return;
    for (const fn of [...set]) {
      try {
        fn(arg);
      } catch (err) {
        if (event !== 'error') this._emit('error', err);
      }
    }
  }

  _setState(s) {
    if (this.state === s) return;
    this.state = s;
    this._emit('state', s);
  }

  /** Starts connecting; resolves once the first connection is ready (onOpen done). */
  connect() {
    if (this._closed) return Promise.reject(new MapleError('maple: client closed', { code: 'closed' }));
    if (!this._firstOpen) {
      this._firstOpen = {};
      this._firstOpen.promise = new Promise((resolve, reject) => {
        this._firstOpen.resolve = resolve;
        this._firstOpen.reject = reject;
      });
      this._dial();
    }
    return this._firstOpen.promise;
  }

  /** Closes for good: no reconnect; waiting requests fail. */
  close(code = 1000, reason = '') {
    if (this._closed) return;
    this._closed = true;
    clearTimeout(this._retry);
    if (this._moving) clearTimeout(this._moving.timer);
    this._moving = null;
    const ws = this._ws;
    this._ws = null;
    this._ready = false;
    for (const s of [ws, ...this._olds]) {
      if (!s) continue;
      s.onopen = s.onmessage = s.onclose = s.onerror = null;
      try {
        s.close(code, reason);
      } catch {
        // already closing
      }
    }
    this._olds.clear();
    const err = new MapleError('maple: client closed', { code: 'closed' });
    this._failPending(err);
    for (const q of this._queue.splice(0)) {
      clearTimeout(q.timer);
      q.reject(err);
    }
    if (this._firstOpen) this._firstOpen.reject(err);
    this._setState('closed');
  }

  /**
   * Sends a request and resolves with the reply (a Frame with the same sn),
   * whatever its ret. While disconnected the request waits for the next
   * connection, up to the timeout. It rejects with a MapleError on timeout,
   * when the connection is lost after it was sent (it may or may not have
   * run), or when the client is closed. A request that a stopping gateway
   * did not run (Ret.MOVED, or closed unanswered after the move push) is
   * sent again on the next connection instead (followMoves).
   */
  request(cmd, body, { timeout = this.options.timeout } = {}) {
    if (this._closed) return Promise.reject(new MapleError('maple: client closed', { code: 'closed', cmd }));
    const bytes = toBytes(body);
    return new Promise((resolve, reject) => {
      const job = { cmd, bytes, resolve, reject, timeout, timer: null, order: this._order++ };
      job.timer = setTimeout(() => {
        const i = this._queue.indexOf(job);
        if (i >= 0) this._queue.splice(i, 1);
        if (job.sn !== undefined) this._pending.delete(job.sn);
        reject(new MapleError(`maple: no reply to cmd ${cmd} within ${timeout} ms`, { code: 'timeout', cmd }));
        this._settled(job.ws);
      }, timeout);
      if (this._ready) this._send(job);
      else this._queue.push(job);
    });
  }

  /** Like request, but rejects with a MapleError (code 'ret') when ret != 0. */
  async call(cmd, body, opts) {
    const reply = await this.request(cmd, body, opts);
    if (reply.ret !== Ret.OK) {
      const msg = reply.body.length ? reply.text() : `ret ${reply.ret}`;
      throw new MapleError(`maple: cmd ${cmd}: ${msg}`, { code: 'ret', ret: reply.ret, cmd, reply });
    }
    return reply;
  }

  _nextSN() {
    do {
      this._sn = this._sn >= 0xffffffff ? 1 : this._sn + 1;
    } while (this._pending.has(this._sn));
    return this._sn;
  }

  _send(job) {
    const ws = this._ws;
    job.sn = this._nextSN();
    job.ws = ws;
    this._pending.set(job.sn, job);
    try {
      ws.send(encode({ cmd: job.cmd, sn: job.sn, body: job.bytes }));
    } catch (err) {
      this._pending.delete(job.sn);
      clearTimeout(job.timer);
      job.reject(new MapleError(`maple: send failed: ${err.message}`, { code: 'disconnected', cmd: job.cmd }));
    }
  }

  // Rejects the requests waiting for a reply on ws (all of them if ws is
  // not given); those on a socket moved away from still wait there.
  _failPending(err, ws) {
    for (const [sn, job] of this._pending) {
      if (ws !== undefined && job.ws !== ws) continue;
      clearTimeout(job.timer);
      job.reject(new MapleError(err.message, { code: err.code, cmd: job.cmd }));
      this._pending.delete(sn);
    }
  }

  _dial() {
    if (this._closed) return;
    this._setState(this.connects === 0 ? 'connecting' : 'reconnecting');
    let ws;
    try {
      ws = new this.options.WebSocket(this.url);
    } catch (err) {
      this._emit('error', err);
      this._scheduleRetry();
      return;
    }
    ws.binaryType = 'arraybuffer';
    this._ws = ws;
    ws.onopen = () => this._opened(ws);
    ws.onmessage = (ev) => this._message(ws, ev.data);
    ws.onerror = () => {}; // a close event follows
    ws.onclose = (ev) => this._lost(ws, ev);
  }

  async _opened(ws) {
    if (ws !== this._ws) return;
    this.connects++;
    const reconnect = this.connects > 1;
    const hook = this.options.onOpen;
    if (hook) {
      // Requests of the hook go out at once, ahead of the queue.
      const request = (cmd, body, opts = {}) =>
        new Promise((resolve, reject) => {
          if (ws !== this._ws || ws.readyState !== OPEN) {
            reject(new MapleError('maple: connection lost', { code: 'disconnected', cmd }));
            return;
          }
          const timeout = opts.timeout ?? this.options.timeout;
          const job = { cmd, bytes: toBytes(body), resolve, reject, timeout, timer: null, order: this._order++ };
          job.timer = setTimeout(() => {
            this._pending.delete(job.sn);
            reject(new MapleError(`maple: no reply to cmd ${cmd} within ${timeout} ms`, { code: 'timeout', cmd }));
          }, timeout);
          this._send(job);
        });
      try {
        await hook({ request, reconnect, client: this });
      } catch (err) {
        if (ws !== this._ws) return;
        this._emit('error', err);
        ws.close(4000, 'onOpen failed');
        return;
      }
      if (ws !== this._ws) return; // lost meanwhile
    }
    this.attempt = 0;
    this._ready = true;
    this._setState('open');
    this._emit('open', { connects: this.connects, reconnect });
    this._flush();
    if (this._firstOpen && this._firstOpen.resolve) {
      this._firstOpen.resolve(this);
      this._firstOpen.resolve = null;
    }
  }

  _message(ws, data) {
    if (ws !== this._ws && !this._olds.has(ws)) return;
    let f;
    try {
      f = decode(data, this.options.maxFrame);
    } catch (err) {
      this._emit('error', err);
      ws.close(4002, 'bad frame'); // browsers allow only 1000 and 3000-4999 here
      return;
    }
    const follow = this.options.followMoves;
    if (f.sn === 0 && f.cmd === CMD_MOVE && follow) {
      this._startMove(ws, 'push');
      return;
    }
    if (f.sn !== 0) {
      const job = this._pending.get(f.sn);
      if (job) {
        this._pending.delete(f.sn);
        if (f.ret === Ret.MOVED && follow) {
          // Not run: send it again on the next connection (once ready).
          this._startMove(ws, 'moved');
          this._requeue([job]);
          this._flush();
        } else {
          clearTimeout(job.timer);
          job.resolve(f);
        }
        this._settled(ws);
        return;
      }
      this._emit('late', f);
      return;
    }
    this._emit('push', f);
  }

  // Puts jobs that a stopping gateway did not run back at the front of the
  // queue, in the order they were sent.
  _requeue(jobs) {
    jobs.sort((a, b) => a.order - b.order);
    for (const job of jobs) {
      this._pending.delete(job.sn);
      job.sn = undefined;
      job.ws = undefined;
    }
    this._queue.unshift(...jobs);
  }

  // The jobs waiting for a reply on ws.
  _jobsOn(ws) {
    return [...this._pending.values()].filter((job) => job.ws === ws);
  }

  // A job sent on ws got its answer: a move waiting for a quiet moment
  // goes, and a socket moved away from closes once owed nothing.
  _settled(ws) {
    if (!ws || this._jobsOn(ws).length > 0) return;
    if (this._moving && this._moving.ws === ws) this._move();
    else if (this._olds.has(ws)) this._dropOld(ws);
  }

  // The gateway of ws is stopping: hold new requests and move once none of
  // ours is in flight on ws (at once if urgent), or after moveWait.
  _startMove(ws, reason) {
    if (ws !== this._ws || this._closed) return;
    const urgent = reason !== 'push';
    if (!this._moving) {
      this._moving = { ws, timer: setTimeout(() => this._move(), this.options.moveWait) };
      this._ready = false; // new requests queue
      this._emit('move', { reason });
    }
    if (urgent || this._jobsOn(ws).length === 0) this._move();
  }

  // Moves now: the old socket stays open for the replies still owed on it
  // (they resolve as usual), and a new connection is dialed at once.
  _move() {
    const m = this._moving;
    if (!m || m.ws !== this._ws) return;
    clearTimeout(m.timer);
    this._moving = null;
    const old = this._ws;
    this._ws = null;
    this._ready = false;
    this._olds.add(old);
    old.onclose = () => this._lostOld(old);
    if (this._jobsOn(old).length === 0) this._dropOld(old);
    clearTimeout(this._retry);
    this._dial();
  }

  _dropOld(ws) {
    this._olds.delete(ws);
    ws.onopen = ws.onmessage = ws.onclose = ws.onerror = null;
    try {
      ws.close(1000, 'moved');
    } catch {
      // already closing
    }
  }

  // A socket moved away from ended: what it still owed never ran there
  // (the gateway answers what it took before it closes), so send it again.
  _lostOld(ws) {
    this._olds.delete(ws);
    const jobs = this._jobsOn(ws);
    if (jobs.length === 0) return;
    this._requeue(jobs);
    this._flush();
  }

  // Sends what waits in the queue, if a connection is ready.
  _flush() {
    if (this._ready) for (const job of this._queue.splice(0)) this._send(job);
  }

  _lost(ws, ev) {
    if (ws !== this._ws) return;
    this._ws = null;
    this._ready = false;
    if (this._moving && this._moving.ws === ws) {
      // The stopping gateway closed before the move: what it did not
      // answer never ran. Send it again on a new connection, made at once.
      clearTimeout(this._moving.timer);
      this._moving = null;
      this._requeue(this._jobsOn(ws));
      this._emit('close', { code: ev && ev.code, reason: ev && ev.reason });
      this._dial();
      return;
    }
    this._failPending(new MapleError('maple: connection lost', { code: 'disconnected' }), ws);
    this._emit('close', { code: ev && ev.code, reason: ev && ev.reason });
    this._scheduleRetry();
  }

  _scheduleRetry() {
    if (this._closed) return;
    this._setState('reconnecting');
    const delay = backoffDelay(this.attempt++, this.options);
    this._retry = setTimeout(() => this._dial(), delay);
  }
}
