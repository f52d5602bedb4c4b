// The logged-in state: contacts, conversations, the outbox, and the /chat protocol
// (PROTOCOL.md, "Chat over WebSocket"). Views read from here and listen to its events;
// they never talk to the socket themselves.
//
// Rules this file implements:
//   - Every message the server delivers has an id; a conversation keeps messages by id,
//     so the same message arriving twice (live delivery during a sync, history page
//     overlapping a sync) is shown once.
//   - A one-to-one message belongs to the conversation with the *other* person: the
//     sender when someone writes to me, the recipient when it is mine (from another
//     device). fastIM showed every message to me in whichever chat was open.
//   - After each (re)connection: sync from the last id seen ({"cmd":20,"id":N}), again
//     while the reply ends with "more":true. The last id is kept in localStorage per user
//     and only moved forward by what is known to be complete (the end of a sync, live
//     deliveries after it), so a drop in the middle never skips messages.
//   - Each message sent gets a unique `ref`: pending until the ack (cmd 21) gives its id;
//     failed on an error (cmd 22) or when no ack comes within 10 s, with a retry that
//     resends the same ref (the server stores it once). Messages written while offline
//     wait in the outbox and go out after the reconnection, with the unacknowledged ones.
//   - Unread counts, last messages and read markers come from the server
//     (/contact/conversations) after each sync, and are kept current from the socket:
//     deliveries, own acks and read frames (cmd 14/15). The open conversation, while
//     the page is visible, is marked read up to its newest message; the server tells
//     the other devices (unread clears there) and the other side ("seen").

import { onGroupEvent, removesMe } from './groups.js';
import * as api from './api.js';
import { ChatSocket } from './socket.js';
import { uploadChatImage } from './images.js';
import { formatTime } from './ui.js';
import { CMD, TYPING_INTERVAL_MS } from './commands.js';

const ACK_TIMEOUT = 10_000;
export const PAGE = 30;
export const MAX_TEXT = 4000;

export const key = (cmd, id) => `${cmd}:${id}`;

// localStorage can be missing or refuse writes (private browsing, quota): the app then
// works without remembering the last id across reloads.
function load(name) {
  try {
    return localStorage.getItem(name);
  } catch {
    return null;
  }
}
function save(name, value) {
  try {
    localStorage.setItem(name, value);
  } catch {
    // not remembered; nothing else breaks
  }
}

function newRef() {
  // crypto.randomUUID exists only on https/localhost pages; getRandomValues everywhere.
  const b = crypto.getRandomValues(new Uint8Array(12));
  return `w${Date.now().toString(36)}${Array.from(b, (x) => x.toString(16).padStart(2, '0')).join('')}`;
}

class Conversation {
  constructor(k) {
    const [cmd, id] = k.split(':').map(Number);
    this.key = k;
    this.cmd = cmd;
    this.dstid = id;
    this.byId = new Map(); // id -> delivered message
    this.pending = new Map(); // ref -> outgoing message not yet acknowledged
    this.historyLoaded = false;
    this.hasMore = true;
    this.loading = false;
    this.historyError = '';
    this.unread = 0;
    this.read = 0; // my read marker, as the server has it (or is about to)
    this.seen = 0; // one-to-one: the other side's read marker
    this.reads = new Map(); // group: member id -> their read marker
    this.summary = null; // the last message as /contact/conversations described it
    this._sorted = null;
  }

  /** The newest delivered id known here, from the messages or the server's summary. */
  newestId() {
    const d = this.delivered();
    return Math.max(d.length ? d[d.length - 1].id : 0, this.summary?.id || 0);
  }

  /** Last activity (ms), for sorting the lists. */
  activity() {
    const d = this.delivered();
    return Math.max(d.length ? d[d.length - 1].createat || 0 : 0, this.summary?.createat || 0);
  }

  /** Delivered messages by id (the cached array: do not change it). */
  delivered() {
    if (!this._sorted) this._sorted = [...this.byId.values()].sort((a, b) => a.id - b.id);
    return this._sorted;
  }

  /** Delivered messages by id, then the pending ones in the order they were written. */
  items() {
    return [...this.delivered(), ...this.pending.values()];
  }

  oldestId() {
    return this.items().find((m) => m.id)?.id;
  }

  last() {
    const items = this.items();
    return items[items.length - 1];
  }

  add(m) {
    if (this.byId.has(m.id)) return false;
    this.byId.set(m.id, m);
    this._sorted = null;
    return true;
  }
}

export class Session extends EventTarget {
  /** `me`: the own profile from /user/me, /user/login or /user/register. */
  constructor(me) {
    super();
    this.me = me;
    this.friends = new Map();
    this.groups = new Map();
    this.users = new Map([[me.id, me]]); // id -> public profile (cache for group senders)
    this.lookups = new Map(); // id -> in-flight /user/find
    this.convs = new Map();
    this.refs = new Map(); // ref -> conversation key, for acks and errors
    this.openKey = null;
    this.syncing = false;
    this.connState = 'connecting';
    this.contactsLoaded = false;
    this.presence = new Map(); // user id -> {online, lastseen}, as the server last told
    this.typing = new Map(); // conversation key -> Map(user id -> when it expires, ms)
    this.typedAt = new Map(); // conversation key -> when a typing notice last left, ms

    this.store = { lastId: `fastim:${me.id}:lastId` };
    const saved = load(this.store.lastId);
    this.lastId = Number(saved) || 0;
    // First time on this browser: the first sync brings old messages (history, not news;
    // the unread counts come from the server either way).
    this.quietSync = saved === null;
    this.conversationsLoaded = false;

    this.socket = new ChatSocket();
    this.socket.addEventListener('open', () => this.onOpen());
    this.socket.addEventListener('close', (e) => this.onClose(e.detail));
    this.socket.addEventListener('frame', (e) => this.onFrame(e.detail));
  }

  emit(type, detail = {}) {
    this.dispatchEvent(new CustomEvent(type, { detail }));
  }

  start() {
    this.loadContacts();
    this.loadConversations();
    this.socket.start();
    this.onVisible = () => document.visibilityState === 'visible' && this.markRead(this.openKey);
    document.addEventListener('visibilitychange', this.onVisible);
  }

  stop() {
    document.removeEventListener('visibilitychange', this.onVisible);
    this.socket.stop();
    for (const c of this.convs.values()) for (const p of c.pending.values()) clearTimeout(p.timer);
  }

  // --- contacts ------------------------------------------------------------------

  async loadContacts() {
    try {
      const [friends, groups] = await Promise.all([api.friends(), api.groups()]);
      this.friends = new Map(friends.map((f) => [f.id, f]));
      this.groups = new Map(groups.map((g) => [g.id, g]));
      for (const f of friends) this.users.set(f.id, f);
      this.contactsLoaded = true;
      this.contactsError = '';
    } catch (e) {
      this.contactsError = e.message;
      if (e.status !== 401) this.emit('error', { message: `Could not load your contacts: ${e.message}` });
    }
    this.emit('contacts');
  }

  /**
   * Unread counts, last messages and read markers from the server. Messages that
   * arrived here after the server made its list are counted on top.
   */
  async loadConversations() {
    let rows;
    try {
      rows = await api.conversations();
    } catch (e) {
      if (e.status !== 401) this.emit('error', { message: `Could not load your conversations: ${e.message}` });
      return;
    }
    for (const r of rows) {
      if (r.cmd !== CMD.SINGLE && r.cmd !== CMD.GROUP) continue;
      const c = this.conv(key(r.cmd, r.dstid));
      c.summary = r.lastid ? { id: r.lastid, userid: r.userid, media: r.media, preview: r.preview, createat: r.createat } : { id: 0, createat: r.createat };
      c.read = Math.max(c.read, r.read || 0);
      if (r.seen) c.seen = Math.max(c.seen, r.seen);
      const later = [...c.byId.values()].filter((m) => m.id > r.lastid && m.id > c.read && m.userid !== this.me.id).length;
      c.unread = c.read >= c.newestId() ? 0 : Math.min((r.unread || 0) + later, 100);
    }
    this.conversationsLoaded = true;
    this.emit('unread', {});
    this.emit('seen', {});
    this.markRead(this.openKey);
  }

  /**
   * Marks the open conversation read up to its newest message, if the page is seen and
   * the server does not have that yet. The server coalesces marks to one per second.
   */
  markRead(k) {
    if (!k || k !== this.openKey || document.visibilityState !== 'visible') return;
    const c = this.conv(k);
    const newest = c.newestId();
    if (c.unread) {
      c.unread = 0;
      this.emit('unread', { key: k });
    }
    if (!newest || newest <= c.read || this.connState !== 'online') return;
    if (this.socket.send({ cmd: c.cmd === CMD.GROUP ? CMD.READ_GROUP : CMD.READ_SINGLE, dstid: c.dstid, id: newest })) c.read = newest;
  }

  /** A read frame: my own marker (from any device), or someone else's in my conversation. */
  onRead(f) {
    const id = Number(f.id) || 0;
    if (f.userid === this.me.id) {
      const c = this.conv(f.cmd === CMD.READ_GROUP ? key(CMD.GROUP, f.dstid) : key(CMD.SINGLE, f.dstid));
      c.read = Math.max(c.read, id);
      const after = [...c.byId.values()].filter((m) => m.id > c.read && m.userid !== this.me.id).length;
      const unread = c.read >= c.newestId() ? 0 : Math.min(after, c.unread);
      if (unread !== c.unread) {
        c.unread = unread;
        this.emit('unread', { key: c.key });
      }
      return;
    }
    if (f.cmd === CMD.READ_SINGLE) {
      if (f.dstid !== this.me.id) return;
      const c = this.conv(key(CMD.SINGLE, f.userid));
      c.seen = Math.max(c.seen, id);
      this.emit('seen', { key: c.key });
    } else {
      const c = this.conv(key(CMD.GROUP, f.dstid));
      c.reads.set(f.userid, Math.max(c.reads.get(f.userid) || 0, id));
      this.emit('seen', { key: c.key });
    }
  }

  /** Loads the contacts again, at most once per second however many messages ask for it. */
  refreshContactsSoon() {
    if (this.refreshTimer) return;
    this.refreshTimer = setTimeout(() => {
      this.refreshTimer = null;
      this.loadContacts();
    }, 1000);
  }

  /** A profile we have, or null while /user/find runs (then a `users` event). */
  userNow(id) {
    const u = this.users.get(id);
    if (u) return u;
    if (!this.lookups.has(id)) {
      const lookup = api
        .findUser(id)
        .then(
          (u) => this.users.set(id, u),
          // 404: no such user (any more). Other failures are retried after a while.
          (e) => e.status === 404 && this.users.set(id, { id, nickname: `User ${id}`, avatar: '' }),
        )
        .finally(() => {
          if (this.users.has(id)) this.lookups.delete(id);
          else setTimeout(() => this.lookups.delete(id), 15_000);
          this.emit('users', { id });
        });
      this.lookups.set(id, lookup);
    }
    return null;
  }

  /** Loads a group's members into the profile cache (one request for all senders). */
  async loadMembers(gid) {
    try {
      const rows = await api.members(gid);
      const c = this.conv(key(CMD.GROUP, gid));
      for (const m of rows) {
        this.users.set(m.id, m);
        if (m.read) c.reads.set(m.id, Math.max(c.reads.get(m.id) || 0, m.read));
      }
      this.emit('seen', { key: c.key });
      this.emit('users', {});
      return rows;
    } catch (e) {
      if (e.status !== 401) this.emit('error', { message: `Could not load the members: ${e.message}` });
      return null;
    }
  }

  async addFriend(mobile) {
    const r = await api.addFriend(mobile);
    await this.loadContacts();
    return r;
  }

  async joinGroup(name) {
    const r = await api.joinGroup(name);
    await this.loadContacts();
    return r;
  }

  async createGroup(fields) {
    const g = await api.createGroup(fields);
    await this.loadContacts();
    return g;
  }

  // --- conversations ---------------------------------------------------------------

  conv(k) {
    let c = this.convs.get(k);
    if (!c) {
      c = new Conversation(k);
      this.convs.set(k, c);
    }
    return c;
  }

  /** The conversation a delivered message belongs to. */
  keyOf(m) {
    if (m.cmd === CMD.GROUP) return key(CMD.GROUP, m.dstid);
    return key(CMD.SINGLE, m.userid === this.me.id ? m.dstid : m.userid);
  }

  open(k) {
    this.openKey = k;
    const c = this.conv(k);
    this.markRead(k);
    if (!c.historyLoaded) this.loadOlder(k);
    return c;
  }

  close(k) {
    if (this.openKey === k) this.openKey = null;
  }

  totalUnread() {
    let n = 0;
    for (const c of this.convs.values()) n += c.unread;
    return n;
  }

  /** One page of /message/history: the newest first time, then older than what we have. */
  async loadOlder(k) {
    const c = this.conv(k);
    if (c.loading || (c.historyLoaded && !c.hasMore)) return;
    c.loading = true;
    c.historyError = '';
    this.emit('messages', { key: k, history: true });
    try {
      const before = c.historyLoaded ? c.oldestId() : undefined;
      const rows = await api.history(c.cmd, c.dstid, before, PAGE);
      for (const m of rows) this.ingest(m, { history: true });
      c.hasMore = rows.length === PAGE;
      c.historyLoaded = true;
      this.markRead(k);
    } catch (e) {
      c.historyError = e.message;
      if (e.status !== 401) this.emit('error', { message: `Could not load the history: ${e.message}` });
    } finally {
      c.loading = false;
      this.emit('messages', { key: k, history: true });
    }
  }

  /** Adds a delivered message; false if it was already there. */
  ingest(m, { history = false } = {}) {
    if (!(m.id > 0) || (m.cmd !== CMD.SINGLE && m.cmd !== CMD.GROUP)) return false;
    const k = this.keyOf(m);
    const c = this.conv(k);
    if (!c.add(m)) return false;
    if (history) return true;
    const mine = m.userid === this.me.id;
    // Their message ends their "typing…".
    if (!mine && this.typing.get(k)?.delete(m.userid)) this.emit('typing', { key: k });
    // Counted here only once the server's counts are in (they include what a sync brings).
    if (!mine && m.id > c.read && this.conversationsLoaded && !this.syncing && !removesMe(m, this.me.id)) {
      if (k === this.openKey && document.visibilityState === 'visible') this.markRead(k);
      else {
        c.unread = Math.min(c.unread + 1, 100);
        this.emit('unread', { key: k });
      }
    }
    // A message from someone who is not (yet) in the lists: they added me, or I joined a
    // group from another device. Reload the lists so the conversation can be opened.
    if ((m.cmd === CMD.SINGLE && !this.friends.has(c.dstid) && c.dstid !== this.me.id) || (m.cmd === CMD.GROUP && !this.groups.has(c.dstid))) {
      this.refreshContactsSoon();
    }
    this.emit('messages', { key: k, id: m.id });
    return true;
  }

  // --- the socket ------------------------------------------------------------------

  setConn(state, extra = {}) {
    this.connState = state;
    this.emit('conn', { state, ...extra });
  }

  onOpen() {
    this.setConn('online');
    if (this.everOpened) this.loadContacts(); // things may have changed while we were away
    this.everOpened = true;
    this.syncing = true;
    this.sync();
    // Presence and typing: the answer is the contacts' current states, then changes.
    this.presence.clear();
    this.socket.send({ cmd: CMD.PRESENCE });
    // Then what is waiting in the outbox, oldest first, with the refs it already had.
    for (const c of this.convs.values()) {
      for (const p of c.pending.values()) if (p.status === 'queued' || p.status === 'sending') this.transmit(p);
    }
  }

  /** Asks for what arrived after the last id, as one message (which the server may
   *  compress as a whole) rather than a frame per message. */
  sync() {
    this.socket.send({ cmd: CMD.SYNC, id: this.lastId, batch: true });
  }

  onClose({ delay, opened }) {
    this.syncing = false;
    // Nothing is known while away; the next connection brings the states again.
    if (this.presence.size) {
      this.presence.clear();
      this.emit('presence', {});
    }
    for (const c of this.convs.values()) {
      for (const p of c.pending.values()) {
        if (p.status === 'sending') {
          clearTimeout(p.timer);
          p.status = 'queued';
          this.emit('messages', { key: c.key, ref: p.ref });
        }
      }
    }
    this.setConn('reconnecting', { delay });
    // A connection refused before it opened may be a session that ended (logged out
    // elsewhere, expired): the browser does not show the 401, so ask the API. A 401 there
    // sends the user to the login view; a network error means the server is away.
    if (!opened) api.me().catch((e) => e.status === 401 && this.emit('expired'));
  }

  /** Someone is typing: shown for `ttl` ms, or until their message arrives. */
  onTyping(f) {
    const k = f.cmd === CMD.TYPING_GROUP ? key(CMD.GROUP, f.dstid) : key(CMD.SINGLE, f.userid);
    if (!this.typing.has(k)) this.typing.set(k, new Map());
    const ttl = Math.min(Math.max(Number(f.ttl) || 0, 0), 30_000);
    this.typing.get(k).set(f.userid, Date.now() + ttl);
    this.emit('typing', { key: k });
    setTimeout(() => this.emit('typing', { key: k }), ttl + 50);
  }

  /** "online", "last seen 14:05", or '' when nothing is known. */
  presenceText(id) {
    const p = this.presence.get(id);
    if (!p) return '';
    if (p.online) return 'online';
    return p.lastseen ? `last seen ${formatTime(p.lastseen)}` : 'offline';
  }

  /** Who is typing in a conversation now (user ids). */
  typingIn(k) {
    const now = Date.now();
    const t = this.typing.get(k);
    if (!t) return [];
    for (const [id, until] of t) if (until <= now) t.delete(id);
    return [...t.keys()];
  }

  /** The user typed in conversation `k`: tell the other side, at most once a second. */
  notifyTyping(k) {
    const c = this.conv(k);
    const now = Date.now();
    if (this.connState !== 'online' || now - (this.typedAt.get(k) || 0) < TYPING_INTERVAL_MS) return;
    if (c.cmd === CMD.SINGLE && c.dstid === this.me.id) return;
    this.typedAt.set(k, now);
    this.socket.send({ cmd: c.cmd === CMD.GROUP ? CMD.TYPING_GROUP : CMD.TYPING_SINGLE, dstid: c.dstid });
  }

  onFrame(f) {
    switch (f.cmd) {
      case CMD.SINGLE:
      case CMD.GROUP:
        this.ingest(f);
        if (!this.syncing && f.id > this.lastId) this.setLastId(f.id);
        break;
      case CMD.ACK:
        this.onAck(f);
        break;
      case CMD.PRESENCE:
        for (const p of f.presence || []) this.presence.set(p.userid, { online: p.online, lastseen: p.lastseen });
        this.emit('presence', {});
        break;
      case CMD.TYPING_SINGLE:
      case CMD.TYPING_GROUP:
        this.onTyping(f);
        break;
      case CMD.READ_SINGLE:
      case CMD.READ_GROUP:
        this.onRead(f);
        break;
      case CMD.ERROR:
        this.onError(f);
        break;
      case CMD.CONTACT:
        onGroupEvent(this, f);
        break;
      case CMD.SYNC_BATCH:
        for (const m of f.messages || []) this.ingest(m);
      // falls through: the batch ends like a sync reply
      case CMD.SYNC_DONE:
        if (f.id > this.lastId) this.setLastId(f.id);
        if (f.more) {
          this.sync();
        } else {
          this.syncing = false;
          // What the sync brought is in the server's counts: take them (again, after a reconnect).
          this.loadConversations();
          if (this.quietSync) {
            this.quietSync = false;
            this.setLastId(this.lastId);
          }
        }
        break;
      default:
        break; // the heartbeat's reply; anything newer is ignored
    }
  }

  setLastId(id) {
    this.lastId = id;
    save(this.store.lastId, String(id));
  }

  // --- sending ---------------------------------------------------------------------

  /** Queues a text message for conversation `k` and sends it when possible. */
  sendText(k, text) {
    if ([...text].length > MAX_TEXT) throw new Error(`A message can have at most ${MAX_TEXT} characters.`);
    this.enqueue(k, { media: 1, content: text });
  }

  /** Shows the picture at once (local preview), uploads it, then sends its URL. */
  sendImage(k, file) {
    this.enqueue(k, { media: 4, content: '', file, localUrl: URL.createObjectURL(file) });
  }

  enqueue(k, fields) {
    const c = this.conv(k);
    const p = {
      ref: newRef(),
      cmd: c.cmd,
      dstid: c.dstid,
      userid: this.me.id,
      url: '',
      status: 'queued',
      error: '',
      timer: null,
      pending: true,
      ...fields,
    };
    c.pending.set(p.ref, p);
    this.refs.set(p.ref, k);
    this.emit('messages', { key: k, ref: p.ref, own: true });
    this.transmit(p);
  }

  retry(ref) {
    const p = this.pendingByRef(ref);
    if (p && p.status === 'failed') this.transmit(p);
  }

  pendingByRef(ref) {
    const k = this.refs.get(ref);
    return k ? this.conv(k).pending.get(ref) : undefined;
  }

  changed(p) {
    this.emit('messages', { key: this.refs.get(p.ref), ref: p.ref });
  }

  async transmit(p) {
    clearTimeout(p.timer);
    p.error = '';
    if (p.media === 4 && !p.url) {
      if (p.status === 'uploading') return;
      p.status = 'uploading';
      this.changed(p);
      try {
        ({ url: p.url, pic: p.pic } = await uploadChatImage(p.file));
      } catch (e) {
        p.status = 'failed';
        p.error = `Upload failed: ${e.message}`;
        this.changed(p);
        return;
      }
      if (!this.refs.has(p.ref)) return; // acknowledged or dropped meanwhile
    }
    const frame = { cmd: p.cmd, dstid: p.dstid, media: p.media, ref: p.ref };
    if (p.content) frame.content = p.content;
    if (p.url) frame.url = p.url;
    if (p.pic) frame.pic = p.pic;
    if (this.socket.send(frame)) {
      p.status = 'sending';
      p.timer = setTimeout(() => {
        if (p.status !== 'sending') return;
        p.status = 'failed';
        p.error = 'No answer from the server.';
        this.changed(p);
      }, ACK_TIMEOUT);
    } else {
      p.status = 'queued'; // sent by onOpen
    }
    this.changed(p);
  }

  onAck(f) {
    const k = this.refs.get(f.ref);
    if (!k) return; // another tab's ack, or one we gave up on
    const c = this.conv(k);
    const p = c.pending.get(f.ref);
    if (!p) return;
    clearTimeout(p.timer);
    c.pending.delete(f.ref);
    this.refs.delete(f.ref);
    c.add({
      id: f.id,
      userid: this.me.id,
      cmd: p.cmd,
      dstid: p.dstid,
      media: p.media,
      content: p.content || '',
      url: p.url || '',
      pic: p.pic || '',
      createat: f.createat,
      ref: f.ref,
      localUrl: p.localUrl, // keeps the already decoded preview; no flash on swap
    });
    this.emit('messages', { key: k, ref: f.ref, id: f.id });
    // Writing in a conversation reads it up to there (and keeps the server's count cheap).
    this.markRead(k);
  }

  onError(f) {
    const p = f.ref !== undefined && this.pendingByRef(f.ref);
    if (!p) {
      this.emit('error', { message: f.msg || `The server refused a message (${f.code}).` });
      return;
    }
    clearTimeout(p.timer);
    p.status = 'failed';
    p.error = f.msg || `Refused (${f.code})`;
    this.changed(p);
  }
}
