// The /chat WebSocket: one connection that is kept up. It knows nothing of messages;
// session.js reads the frames. What it does:
//   - connects to ws(s)://<this host>/chat (wss when the page is https; the session cookie
//     authenticates, so no token is put in the URL, where logs and history would keep it);
//   - reconnects after a drop with exponential backoff, 0.5 s doubling to 10 s, with
//     jitter so that a restarted server is not hit by every client at the same instant;
//   - sends a heartbeat ({"cmd":0}) after 25 s without sending, and drops the connection
//     when the server has not answered it within 15 s: a half-open TCP connection (a phone
//     that changed network) never closes by itself, and the browser does not expose the
//     server's pings. Timers of background tabs run once a minute; measuring from the
//     heartbeat (not from the last frame) keeps that from looking like a dead connection.
//   - reconnects at once when the browser says it is back online or the tab is shown;
//   - drops the connection at once when the browser says it is offline (the socket itself
//     may take a heartbeat period to notice), and while offline retries only every 10 s
//     (the `online` event brings the next attempt forward);
//   - a quick probe while a message waits for its ack: a heartbeat that must be answered
//     (by any frame) within 2.5 s, so a dead connection is noticed within seconds of
//     sending, not after the 40 s of the idle heartbeat.

import { CMD } from './commands.js';

const FIRST_DELAY = 500;
const MAX_DELAY = 10_000;
const CONNECT_TIMEOUT = 10_000;
const HEARTBEAT_EVERY = 25_000;
const ANSWER_WITHIN = 15_000;
const STABLE_AFTER = 10_000; // a connection that lived this long resets the backoff
const QUICK_ANSWER = 2500;

/** Whether the browser believes it has no network (false when it cannot tell). */
export const browserOffline = () => typeof navigator !== 'undefined' && navigator.onLine === false;

export function chatUrl(loc = window.location) {
  return `${loc.protocol === 'https:' ? 'wss:' : 'ws:'}//${loc.host}/chat`;
}

/**
 * Events: `open`; `close` (detail: {delay} before the next attempt, {opened} whether this
 * connection had opened); `frame` (detail: the parsed JSON object).
 */
export class ChatSocket extends EventTarget {
  constructor(url = chatUrl()) {
    super();
    this.url = url;
    this.ws = null;
    this.open = false;
    this.attempt = 0;
    this.stopped = true;
    this.retryTimer = null;
    this.tick = null;
    this.lastRecv = 0;
    this.lastSend = 0;
    this.probeSince = 0; // when the unanswered heartbeat was sent; 0 = none pending
    this.openedAt = 0;
    this.quickTimer = null;
    this.onOnline = () => this.reconnectNow();
    this.onOffline = () => {
      if (this.ws) this.drop();
      else this.scheduleRetry(false); // tells the listeners, with the offline delay
    };
    this.onVisible = () => {
      if (document.visibilityState !== 'visible') return;
      if (this.open) this.probe(); // back from the background: is the connection still there?
      else this.reconnectNow();
    };
  }

  start() {
    if (!this.stopped) return;
    this.stopped = false;
    window.addEventListener('online', this.onOnline);
    window.addEventListener('offline', this.onOffline);
    document.addEventListener('visibilitychange', this.onVisible);
    this.tick = setInterval(() => this.heartbeat(), 5000);
    this.connect();
  }

  /** Closes for good (logout): no reconnect. */
  stop() {
    this.stopped = true;
    window.removeEventListener('online', this.onOnline);
    window.removeEventListener('offline', this.onOffline);
    document.removeEventListener('visibilitychange', this.onVisible);
    clearInterval(this.tick);
    clearTimeout(this.retryTimer);
    clearTimeout(this.quickTimer);
    if (this.ws) {
      const ws = this.ws;
      this.detach();
      ws.close(1000, 'logout');
    }
    this.open = false;
  }

  /** Sends an object as JSON; false when there is no open connection (the caller queues). */
  send(obj) {
    if (!this.open || this.ws?.readyState !== WebSocket.OPEN) return false;
    this.ws.send(JSON.stringify(obj));
    this.lastSend = Date.now();
    return true;
  }

  connect() {
    clearTimeout(this.retryTimer);
    this.retryTimer = null;
    if (this.stopped || this.ws) return;
    let ws;
    try {
      ws = new WebSocket(this.url);
    } catch {
      this.scheduleRetry(false);
      return;
    }
    this.ws = ws;
    const connectTimer = setTimeout(() => ws === this.ws && this.drop(), CONNECT_TIMEOUT);
    ws.onopen = () => {
      clearTimeout(connectTimer);
      this.open = true;
      this.openedAt = this.lastRecv = this.lastSend = Date.now();
      this.probeSince = 0;
      this.dispatchEvent(new Event('open'));
    };
    ws.onmessage = (ev) => {
      this.lastRecv = Date.now();
      this.probeSince = 0;
      clearTimeout(this.quickTimer);
      this.quickTimer = null;
      if (typeof ev.data !== 'string') return;
      let frame;
      try {
        frame = JSON.parse(ev.data);
      } catch {
        return; // every /chat frame is JSON; anything else (fastIM's "welcome!") is ignored
      }
      if (frame && typeof frame === 'object') this.dispatchEvent(new CustomEvent('frame', { detail: frame }));
    };
    ws.onclose = () => {
      clearTimeout(connectTimer);
      if (ws === this.ws) this.lost();
    };
    ws.onerror = () => {}; // always followed by close
  }

  detach() {
    if (!this.ws) return;
    this.ws.onopen = this.ws.onmessage = this.ws.onclose = this.ws.onerror = null;
    this.ws = null;
  }

  /** Gives up on the current connection now (no close handshake to wait for) and retries. */
  drop() {
    const ws = this.ws;
    if (!ws) return;
    this.detach();
    try {
      ws.close();
    } catch {
      // already closing
    }
    this.lost();
  }

  lost() {
    const opened = this.open;
    clearTimeout(this.quickTimer);
    this.quickTimer = null;
    if (this.ws) this.detach();
    this.open = false;
    if (opened && Date.now() - this.openedAt >= STABLE_AFTER) this.attempt = 0;
    this.scheduleRetry(opened);
  }

  scheduleRetry(opened) {
    if (this.stopped) return;
    const offline = browserOffline();
    const base = Math.min(MAX_DELAY, FIRST_DELAY * 2 ** this.attempt);
    const delay = offline ? MAX_DELAY : Math.min(MAX_DELAY, Math.round(base * (0.75 + Math.random() * 0.5)));
    this.attempt++;
    clearTimeout(this.retryTimer);
    this.retryTimer = setTimeout(() => this.connect(), delay);
    this.dispatchEvent(new CustomEvent('close', { detail: { delay, opened, offline } }));
  }

  reconnectNow() {
    if (this.stopped || (this.ws && this.open)) return;
    if (this.ws) {
      // An attempt started while offline: start afresh rather than wait for it to fail.
      const old = this.ws;
      this.detach();
      try {
        old.close();
      } catch {
        // not open yet
      }
    }
    this.attempt = 0;
    this.connect();
  }

  heartbeat() {
    if (!this.open) return;
    const now = Date.now();
    if (this.probeSince && now - this.probeSince > ANSWER_WITHIN) this.drop();
    else if (now - this.lastSend >= HEARTBEAT_EVERY) this.probe();
  }

  /** A heartbeat whose answer (any frame) must come within ANSWER_WITHIN. */
  probe() {
    if (this.probeSince) return;
    if (this.send({ cmd: CMD.HEARTBEAT })) this.probeSince = Date.now();
  }

  /** A heartbeat that must be answered (by any frame) within QUICK_ANSWER, else the
   *  connection is dropped: called after sending a message. */
  quickProbe() {
    if (!this.open || this.quickTimer) return;
    if (!this.send({ cmd: CMD.HEARTBEAT })) return;
    const ws = this.ws;
    this.quickTimer = setTimeout(() => {
      this.quickTimer = null;
      if (ws === this.ws) this.drop();
    }, QUICK_ANSWER);
  }
}
