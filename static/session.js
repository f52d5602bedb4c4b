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
//   - Every sync also asks for the recalls and edits after the last change seen
//     ({"changes":seq}); they come as the live cmd 16/17 events (in a batch: `changed`),
//     and the closing frame's `changes` is kept in localStorage beside the last id,
//     moved forward like it (the end of a sync, live events after it). A server that
//     does not answer with `changes` has no change log: after a reconnection the newest
//     history page of each conversation shown is read again instead (msgchanges.js).
//   - Each message sent gets a unique `ref`: pending until the ack (cmd 21) gives its id.
//     The outbox (store.js: IndexedDB, so a reload keeps it) holds every message not yet
//     acknowledged, in the order written, with the picture file of one not yet uploaded;
//     after each (re)connection it goes out again, oldest first, with the refs it had:
//     the server stores a ref once and acknowledges a resend with the first id. No ack
//     within 10 s: the connection is probed and the frame sent again. An error the server
//     may get over (cmd 22 with 429, 500, 503; an upload that could not reach the server)
//     is retried after a pause; any other refusal marks the message failed with the
//     server's reason, and only the Retry button sends it again.
//   - One bubble per message: the ack turns the pending bubble into the delivered one.
//     My own message can also come back by another way before its ack (the sync after a
//     reconnection, the history after a reload, another device's send): the server gives
//     my own messages their `ref`, so one whose ref is pending is that message, acked.
//     From a server that sends no `ref`, an own message that looks like one still
//     unacknowledged (same conversation and content) is held back until that one's ack
//     says whether it is the same (its id).
//   - Unread counts, last messages and read markers come from the server
//     (/contact/conversations) after each sync, and are kept current from the socket:
//     deliveries, own acks and read frames (cmd 14/15). The open conversation, while
//     the page is visible, is marked read up to its newest message; the server tells
//     the other devices (unread clears there) and the other side ("seen").

import { onGroupEvent, removesMe } from './groups.js';
import * as api from './api.js';
import * as store from './store.js';
import { ChatSocket, browserOffline } from './socket.js';
import { uploadChatImage } from './images.js';
import { formatTime } from './ui.js';
import { CMD, TYPING_INTERVAL_MS } from './commands.js';
import { mergeCopy, onChangeFrame, refreshChanged } from './msgchanges.js';

const ACK_TIMEOUT = 10_000;
const HOLD_AT_MOST = 20_000; // an own delivery held back for its ack is shown after this anyway
const KEEP_MESSAGES = 30; // per conversation, kept on the device to show offline
/** cmd 22 codes after which the same message may well be taken later: resent by itself. */
const RETRYABLE = new Set([429, 500, 503]);
export { MAX_OUTBOX } from './store.js';
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
    this.held = new Map(); // id -> {m, ref}: my delivery that may be pending `ref` (see above)
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
    this.connState = browserOffline() ? 'offline' : 'connecting';
    this.seq = 0; // order of the outbox across conversations
    this.drafts = new Map(); // conversation key -> composer text (also in IndexedDB)
    this.saveTimers = new Map();
    this.contactsLoaded = false;
    this.presence = new Map(); // user id -> {online, lastseen}, as the server last told
    // Friend requests (id -> {user, createat}) and the users I blocked, from the API and
    // then from the socket's contact events (cmd 30): see friends.js.
    this.incoming = new Map();
    this.outgoing = new Map();
    this.blocked = new Map();
    this.blockedLoaded = false;
    this.typing = new Map(); // conversation key -> Map(user id -> when it expires, ms)
    this.typedAt = new Map(); // conversation key -> when a typing notice last left, ms

    this.store = { lastId: `fastim:${me.id}:lastId`, changes: `fastim:${me.id}:changes` };
    const saved = load(this.store.lastId);
    this.lastId = Number(saved) || 0;
    this.changesSeq = Number(load(this.store.changes)) || 0; // the last change seen
    this.reconnected = false; // this sync follows a connection that was lost
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
    store.lastUserSet(this.me);
    // What the device kept (shown at once, also offline), then the outbox before the
    // first connection, so that it goes out in order.
    const kept = Promise.all([this.restoreCached(), this.restoreOutbox()]).catch((e) => console.warn('fastim: what this device kept could not be read', e));
    this.restored = kept.finally(() => {
      if (this.stopped) return;
      this.loadContacts();
      this.loadRequests();
      this.loadConversations();
      this.socket.start();
    });
    this.onVisible = () => document.visibilityState === 'visible' && this.markRead(this.openKey);
    document.addEventListener('visibilitychange', this.onVisible);
  }

  stop() {
    this.stopped = true;
    document.removeEventListener('visibilitychange', this.onVisible);
    this.socket.stop();
    for (const c of this.convs.values()) for (const p of c.pending.values()) clearTimeout(p.timer);
    clearTimeout(this.flushTimer);
  }

  /** Whether a failed request is only the network (or the server being away). */
  static unreachable(e) {
    return !e.status || e.status >= 502;
  }

  // --- what the device keeps ----------------------------------------------------------

  /** Contacts, conversation summaries: what the app last knew, until the server answers. */
  async restoreCached() {
    const [friends, groups, convs] = await Promise.all([store.kvGet(this.me.id, 'friends'), store.kvGet(this.me.id, 'groups'), store.kvGet(this.me.id, 'conversations')]);
    if (Array.isArray(friends) && !this.contactsLoaded) {
      this.friends = new Map(friends.map((f) => [f.id, f]));
      this.groups = new Map((groups || []).map((g) => [g.id, g]));
      for (const f of friends) this.users.set(f.id, f);
      this.contactsLoaded = true; // lists to show: the server's replace them when it answers
      this.emit('contacts');
    }
    if (Array.isArray(convs) && !this.conversationsLoaded) this.applyConversations(convs, { cached: true });
  }

  async restoreOutbox() {
    const rows = await store.outboxAll(this.me.id);
    for (const r of rows) {
      if (this.refs.has(r.ref)) continue;
      const k = key(r.cmd, r.dstid);
      const c = this.conv(k);
      const p = {
        ...r,
        userid: this.me.id,
        status: r.status === 'failed' ? 'failed' : 'queued',
        timer: null,
        pending: true,
        localUrl: r.file && !r.url ? URL.createObjectURL(r.file) : '',
      };
      delete p.uid;
      this.seq = Math.max(this.seq, r.seq);
      c.pending.set(p.ref, p);
      this.refs.set(p.ref, k);
      this.emit('messages', { key: k, ref: p.ref });
    }
    this.emitOutbox();
  }

  /** Keeps `p` in the outbox on the device (the file only until it is uploaded). */
  persist(p) {
    if (!this.refs.has(p.ref)) return;
    store.outboxPut({
      uid: this.me.id,
      seq: p.seq,
      ref: p.ref,
      cmd: p.cmd,
      dstid: p.dstid,
      media: p.media,
      content: p.content || '',
      url: p.url || '',
      pic: p.pic || '',
      file: p.url ? null : p.file || null,
      status: p.status === 'failed' ? 'failed' : 'queued',
      error: p.status === 'failed' ? p.error : '',
      sentOnce: Boolean(p.sentOnce),
      createat: p.createat,
      ...(p.reply ? { reply: p.reply, quote: p.quote } : {}), // a reply stays a reply after a reload
    });
  }

  /** The newest messages of a conversation, kept to show while offline (soon, coalesced). */
  keepMessagesSoon(k) {
    if (this.saveTimers.has(k)) return;
    this.saveTimers.set(
      k,
      setTimeout(() => {
        this.saveTimers.delete(k);
        const rows = this.conv(k)
          .delivered()
          .slice(-KEEP_MESSAGES)
          .map(({ localUrl, ...m }) => m); // a blob: URL does not outlive the page
        store.kvSet(this.me.id, `msgs:${k}`, rows);
      }, 500),
    );
  }

  /** The messages kept for `k`, shown before the history arrives (or when it cannot). */
  async restoreMessages(k) {
    const c = this.conv(k);
    if (c.restored) return;
    c.restored = true;
    const rows = await store.kvGet(this.me.id, `msgs:${k}`);
    if (!Array.isArray(rows) || !rows.length) return;
    for (const m of rows) this.ingest(m, { history: true, kept: true });
    this.emit('messages', { key: k, history: true });
  }

  /** The draft of conversation `k` (from memory, else from the device). */
  async draft(k) {
    if (this.drafts.has(k)) return this.drafts.get(k);
    const t = (await store.draftGet(this.me.id, k)) || '';
    if (!this.drafts.has(k)) this.drafts.set(k, t);
    return this.drafts.get(k);
  }

  setDraft(k, text) {
    if ((this.drafts.get(k) || '') === text) return;
    this.drafts.set(k, text);
    store.draftSet(this.me.id, k, text);
  }

  /** How many messages wait in the outbox (not failed), for the banner. */
  outboxCount() {
    let n = 0;
    for (const c of this.convs.values()) for (const p of c.pending.values()) if (p.status !== 'failed') n++;
    return n;
  }

  emitOutbox() {
    this.emit('outbox', { waiting: this.outboxCount() });
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
      store.kvSet(this.me.id, 'friends', friends);
      store.kvSet(this.me.id, 'groups', groups);
    } catch (e) {
      // Away from the server with the lists kept on the device: the banner says enough.
      const kept = Session.unreachable(e) && this.friends.size + this.groups.size > 0;
      if (!kept) this.contactsError = e.message;
      if (e.status !== 401 && !kept) this.emit('error', { message: `Could not load your contacts: ${e.message}` });
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
      if (e.status !== 401 && !Session.unreachable(e)) this.emit('error', { message: `Could not load your conversations: ${e.message}` });
      return;
    }
    store.kvSet(this.me.id, 'conversations', rows);
    this.applyConversations(rows);
  }

  applyConversations(rows, { cached = false } = {}) {
    for (const r of rows) {
      if (r.cmd !== CMD.SINGLE && r.cmd !== CMD.GROUP) continue;
      const c = this.conv(key(r.cmd, r.dstid));
      c.summary = r.lastid ? { id: r.lastid, userid: r.userid, media: r.media, preview: r.preview, createat: r.createat } : { id: 0, createat: r.createat };
      c.read = Math.max(c.read, r.read || 0);
      if (r.seen) c.seen = Math.max(c.seen, r.seen);
      const later = [...c.byId.values()].filter((m) => m.id > r.lastid && m.id > c.read && m.userid !== this.me.id).length;
      c.unread = c.read >= c.newestId() ? 0 : Math.min((r.unread || 0) + later, 100);
    }
    if (!cached) this.conversationsLoaded = true;
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

  /** Asks the user with this mobile number to be friends; `data.status` says what came of it. */
  async addFriend(mobile) {
    const r = await api.addFriend(mobile);
    const u = r.data?.user;
    if (r.data?.status === 'requested' && u) {
      this.outgoing.set(u.id, { user: u, createat: r.data.createat });
      this.emit('requests');
    } else if (u) {
      this.befriended(u);
    } else {
      await this.loadContacts();
    }
    return r;
  }

  async loadRequests() {
    try {
      const r = await api.requests();
      this.incoming = new Map((r.incoming || []).map((x) => [x.user.id, x]));
      this.outgoing = new Map((r.outgoing || []).map((x) => [x.user.id, x]));
      for (const x of r.incoming || []) this.users.set(x.user.id, x.user);
    } catch (e) {
      if (e.status !== 401) this.emit('error', { message: `Could not load your friend requests: ${e.message}` });
      return;
    }
    this.emit('requests');
  }

  async loadBlocked() {
    try {
      const rows = await api.blocked();
      this.blocked = new Map(rows.map((x) => [x.user.id, x]));
      this.blockedLoaded = true;
    } catch (e) {
      if (e.status !== 401) this.emit('error', { message: `Could not load the users you blocked: ${e.message}` });
      return;
    }
    this.emit('blocked');
  }

  async acceptRequest(id) {
    const r = await api.accept(id);
    if (r.data) this.befriended(r.data);
    return r;
  }

  async declineRequest(id) {
    await api.decline(id);
    if (this.incoming.delete(id)) this.emit('requests');
  }

  async cancelRequest(id) {
    await api.cancelRequest(id);
    if (this.outgoing.delete(id)) this.emit('requests');
  }

  async removeFriend(id) {
    await api.removeFriend(id);
    this.unfriended(id);
  }

  async block(id) {
    const r = await api.block(id);
    this.blockedUser(r.data || this.users.get(id) || { id, nickname: '' });
  }

  async unblock(id) {
    await api.unblock(id);
    if (this.blocked.delete(id)) this.emit('blocked');
  }

  /** `u` is a friend now: into the list, out of the requests. */
  befriended(u) {
    this.friends.set(u.id, u);
    this.users.set(u.id, u);
    const changed = this.incoming.delete(u.id) | this.outgoing.delete(u.id);
    this.emit('contacts');
    if (changed) this.emit('requests');
  }

  unfriended(id) {
    if (this.friends.delete(id)) this.emit('contacts');
  }

  blockedUser(u) {
    this.unfriended(u.id);
    if (this.incoming.delete(u.id) | this.outgoing.delete(u.id)) this.emit('requests');
    this.blocked.set(u.id, { user: u, createat: Date.now() });
    this.emit('blocked');
  }

  /** A contact event (cmd 30, PROTOCOL.md "Contact events"): the lists change live. */
  onContact(f) {
    const id = f.user?.id ?? f.userid;
    if (!id) return;
    switch (f.event) {
      case 'friend_request':
        this.incoming.set(id, { user: f.user, createat: f.createat });
        this.users.set(id, f.user);
        this.emit('requests');
        break;
      case 'request_sent':
        this.outgoing.set(id, { user: f.user, createat: f.createat });
        this.emit('requests');
        break;
      case 'friend_added':
        this.befriended(f.user);
        // Its row in the conversation list (time, unread) comes with the server's list.
        this.loadConversations();
        break;
      case 'friend_removed':
        this.unfriended(id);
        break;
      case 'request_declined':
      case 'request_withdrawn':
        // Either way round: the request between us is gone.
        if (this.incoming.delete(id) | this.outgoing.delete(id)) this.emit('requests');
        break;
      case 'blocked':
        this.blockedUser(f.user);
        break;
      case 'unblocked':
        if (this.blocked.delete(id)) this.emit('blocked');
        break;
      case 'profile_updated':
        // A contact (or this user on another device) changed name, picture or about.
        if (id === this.me.id) Object.assign(this.me, f.user);
        for (const map of [this.friends, this.users]) if (map.has(id)) map.set(id, { ...map.get(id), ...f.user });
        this.emit('contacts');
        this.emit('users', { id });
        break;
      default:
        break; // an event this client does not know
    }
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
    this.restoreMessages(k);
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
      if (e.status !== 401 && !Session.unreachable(e)) this.emit('error', { message: `Could not load the history: ${e.message}` });
    } finally {
      c.loading = false;
      this.emit('messages', { key: k, history: true });
    }
  }

  /** Adds a delivered message; false if it was already there (or is held back). */
  ingest(m, { history = false, kept = false, released = false } = {}) {
    if (!(m.id > 0) || (m.cmd !== CMD.SINGLE && m.cmd !== CMD.GROUP)) return false;
    const k = this.keyOf(m);
    const c = this.conv(k);
    if (c.byId.has(m.id)) {
      mergeCopy(this, k, m); // it may have been recalled or edited since
      return false;
    }
    if (m.userid === this.me.id && !released && !this.hold(c, m, history)) return false;
    if (!c.add(m)) {
      mergeCopy(this, k, m);
      return false;
    }
    if (!kept) this.keepMessagesSoon(k);
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

  /**
   * My own message `m` came by sync, history or another device's send: if it is one of
   * the outbox's it is not shown twice. The server gives my own messages their `ref`:
   * a pending one is acknowledged by it, any other ref is another message. Only a copy
   * without `ref` (a server that does not send it, a message sent without one) is
   * matched by content: sent at least once, still unacknowledged, it is held back until
   * that one's ack. Returns whether to add it.
   */
  hold(c, m, history) {
    if (!c.pending.size) return true;
    if (m.ref !== undefined) {
      if (!c.pending.has(m.ref)) return true;
      this.onAck({ ref: m.ref, id: m.id, createat: m.createat });
      return false;
    }
    if (c.held.has(m.id)) return false;
    const claimed = new Set([...c.held.values()].map((x) => x.ref));
    for (const p of c.pending.values()) {
      if (!p.sentOnce || p.status === 'failed' || claimed.has(p.ref) || p.media !== m.media) continue;
      if ((p.content || '') !== (m.content || '') || (p.url && p.url !== m.url)) continue;
      c.held.set(m.id, { m, ref: p.ref, history });
      setTimeout(() => this.release(c, (x) => x.m.id === m.id), HOLD_AT_MOST);
      // The resend tells: on a connection, now; else after the next connection's resend.
      if (p.status === 'sending') this.socket.quickProbe();
      return false;
    }
    return true;
  }

  /** Shows the held deliveries that `which` selects (they were not the pending one). */
  release(c, which) {
    for (const [id, x] of [...c.held]) {
      if (!which(x)) continue;
      c.held.delete(id);
      this.ingest(x.m, { history: x.history, released: true });
      if (x.history) this.emit('messages', { key: c.key, history: true });
    }
  }

  // --- the socket ------------------------------------------------------------------

  setConn(state, extra = {}) {
    this.connState = state;
    this.emit('conn', { state, ...extra });
  }

  onOpen() {
    this.setConn('online');
    if (this.everOpened) {
      // Things may have changed while we were away (contact events are not stored).
      this.loadContacts();
      this.loadRequests();
      if (this.blockedLoaded) this.loadBlocked();
    }
    this.reconnected = this.everOpened;
    this.everOpened = true;
    this.syncing = true;
    this.sync();
    // A history that could not be loaded while away: now it can.
    const open = this.openKey && this.conv(this.openKey);
    if (open?.historyError) this.loadOlder(this.openKey);
    // Presence and typing: the answer is the contacts' current states, then changes.
    this.presence.clear();
    this.socket.send({ cmd: CMD.PRESENCE });
    // Then what is waiting in the outbox, oldest first, with the refs it already had.
    for (const p of this.outbox()) {
      if (p.status === 'sending') p.status = 'queued';
      p.retryAt = 0;
    }
    this.flush();
  }

  /** Every unacknowledged message, in the order written. */
  outbox() {
    const all = [];
    for (const c of this.convs.values()) all.push(...c.pending.values());
    return all.sort((a, b) => a.seq - b.seq);
  }

  /**
   * Sends what is queued, in order, while connected: a picture is uploaded first (the
   * messages after it wait for it, unless its upload is waiting to be retried).
   */
  async flush() {
    if (this.flushing) return;
    this.flushing = true;
    try {
      for (;;) {
        if (this.stopped || this.connState !== 'online') break;
        const now = Date.now();
        const next = this.outbox().find((p) => p.status === 'queued' && !(p.retryAt > now));
        if (!next) break;
        if (!(await this.transmit(next))) break;
      }
    } finally {
      this.flushing = false;
    }
    // A retry later for those that must wait.
    const waits = this.outbox().filter((p) => p.status === 'queued' && p.retryAt > Date.now());
    clearTimeout(this.flushTimer);
    if (waits.length && this.connState === 'online') {
      const at = Math.min(...waits.map((p) => p.retryAt));
      this.flushTimer = setTimeout(() => this.flush(), Math.max(50, at - Date.now()));
    }
  }

  /** Asks for what arrived after the last id, as one message (which the server may
   *  compress as a whole) rather than a frame per message. */
  sync() {
    this.socket.send({ cmd: CMD.SYNC, id: this.lastId, batch: true, changes: this.changesSeq });
  }

  onClose({ delay, opened, offline }) {
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
    this.setConn(offline ? 'offline' : 'reconnecting', { delay });
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
      case CMD.RECALL:
      case CMD.EDIT:
        onChangeFrame(this, f);
        if (!this.syncing && f.seq > this.changesSeq) this.setChangesSeq(f.seq);
        break;
      case CMD.CONTACT:
        if (!onGroupEvent(this, f)) this.onContact(f);
        break;
      case CMD.SYNC_BATCH:
        for (const m of f.messages || []) this.ingest(m);
        for (const e of f.changed || []) onChangeFrame(this, e);
      // falls through: the batch ends like a sync reply
      case CMD.SYNC_DONE:
        if (f.id > this.lastId) this.setLastId(f.id);
        if (f.changes > this.changesSeq) this.setChangesSeq(f.changes);
        if (f.more) {
          this.sync();
        } else {
          this.syncing = false;
          // No change log on this server: what changed while away is read from history.
          if (this.reconnected && typeof f.changes !== 'number') refreshChanged(this);
          this.reconnected = false;
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

  setChangesSeq(seq) {
    this.changesSeq = seq;
    save(this.store.changes, String(seq));
  }

  // --- sending ---------------------------------------------------------------------

  /** Queues a text message for conversation `k` and sends it when possible. */
  sendText(k, text, { reply, quote } = {}) {
    if ([...text].length > MAX_TEXT) throw new Error(`A message can have at most ${MAX_TEXT} characters.`);
    this.enqueue(k, { media: 1, content: text, ...(reply ? { reply, quote } : {}) });
  }

  /** Shows the picture at once (local preview), uploads it, then sends its URL. */
  sendImage(k, file) {
    this.enqueue(k, { media: 4, content: '', file, localUrl: URL.createObjectURL(file) });
  }

  enqueue(k, fields) {
    if (this.outbox().length >= store.MAX_OUTBOX) {
      throw new Error(`${store.MAX_OUTBOX} messages are waiting to be sent: wait for them to go out (or delete failed ones) before writing more.`);
    }
    const c = this.conv(k);
    const p = {
      ref: newRef(),
      seq: ++this.seq,
      cmd: c.cmd,
      dstid: c.dstid,
      userid: this.me.id,
      url: '',
      status: 'queued',
      error: '',
      timer: null,
      pending: true,
      sentOnce: false,
      tries: 0,
      createat: Date.now(),
      ...fields,
    };
    c.pending.set(p.ref, p);
    this.refs.set(p.ref, k);
    this.persist(p);
    this.emit('messages', { key: k, ref: p.ref, own: true });
    this.emitOutbox();
    this.flush();
  }

  /** The Retry button of a failed message. */
  retry(ref) {
    const p = this.pendingByRef(ref);
    if (!p || p.status !== 'failed') return;
    p.status = 'queued';
    p.error = '';
    p.retryAt = 0;
    p.tries = 0;
    this.persist(p);
    this.changed(p);
    this.flush();
  }

  /** Deletes a failed message from the outbox (it was never stored). */
  discard(ref) {
    const p = this.pendingByRef(ref);
    if (!p || p.status !== 'failed') return;
    const k = this.refs.get(ref);
    const c = this.conv(k);
    c.pending.delete(ref);
    this.refs.delete(ref);
    store.outboxDelete(ref);
    if (p.localUrl) URL.revokeObjectURL(p.localUrl);
    this.release(c, (x) => x.ref === ref);
    this.emit('messages', { key: k, ref });
    this.emitOutbox();
  }

  pendingByRef(ref) {
    const k = this.refs.get(ref);
    return k ? this.conv(k).pending.get(ref) : undefined;
  }

  changed(p) {
    this.emit('messages', { key: this.refs.get(p.ref), ref: p.ref });
  }

  /** Waits before `p` is tried again (1 s, doubling to 30 s). */
  later(p, why) {
    p.tries = (p.tries || 0) + 1;
    p.status = 'queued';
    p.error = why;
    p.retryAt = Date.now() + Math.min(30_000, 1000 * 2 ** (p.tries - 1));
    this.changed(p);
  }

  fail(p, why) {
    clearTimeout(p.timer);
    p.status = 'failed';
    p.error = why;
    this.persist(p);
    this.release(this.conv(this.refs.get(p.ref)), (x) => x.ref === p.ref);
    this.changed(p);
    this.emitOutbox();
  }

  /** Uploads (a picture) and sends `p`; false when the connection is gone. */
  async transmit(p) {
    clearTimeout(p.timer);
    if (p.media === 4 && !p.url) {
      p.status = 'uploading';
      this.changed(p);
      try {
        ({ url: p.url, pic: p.pic } = await uploadChatImage(p.file));
      } catch (e) {
        if (!this.refs.has(p.ref)) return true;
        // The server could not be reached (or is away): the file stays in the outbox.
        if (Session.unreachable(e) || e.status === 429) this.later(p, `Upload failed: ${e.message}`);
        else this.fail(p, `Upload failed: ${e.message}`);
        return true;
      }
      if (!this.refs.has(p.ref)) return true; // acknowledged or dropped meanwhile
      this.persist(p); // the URL from now on, not the file
    }
    const frame = { cmd: p.cmd, dstid: p.dstid, media: p.media, ref: p.ref };
    if (p.content) frame.content = p.content;
    if (p.url) frame.url = p.url;
    if (p.pic) frame.pic = p.pic;
    if (p.reply) frame.reply = p.reply;
    if (!this.socket.send(frame)) {
      p.status = 'queued'; // sent again after the next connection
      this.changed(p);
      return false;
    }
    p.status = 'sending';
    p.error = '';
    if (!p.sentOnce) {
      p.sentOnce = true; // from now on the server may have it: see hold()
      this.persist(p);
    }
    this.socket.quickProbe();
    const arm = () => {
      p.timer = setTimeout(() => {
        if (p.status !== 'sending' || !this.refs.has(p.ref)) return;
        // No ack yet: the connection is asked whether it is still there, and the frame
        // goes again (the server stores a ref once).
        if (this.socket.send(frame)) this.socket.quickProbe();
        arm();
      }, ACK_TIMEOUT);
    };
    arm();
    this.changed(p);
    return true;
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
    store.outboxDelete(f.ref);
    // A delivery held back for this one: the same message (dropped) or not (shown).
    const same = c.held.get(f.id);
    if (same && same.ref === f.ref) c.held.delete(f.id);
    this.release(c, (x) => x.ref === f.ref);
    if (!c.byId.has(f.id)) {
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
        ...(p.reply ? { reply: p.reply, quote: p.quote } : {}),
        localUrl: p.localUrl, // keeps the already decoded preview; no flash on swap
      });
      this.keepMessagesSoon(k);
    }
    this.emit('messages', { key: k, ref: f.ref, id: f.id });
    this.emitOutbox();
    // Writing in a conversation reads it up to there (and keeps the server's count cheap).
    this.markRead(k);
  }

  onError(f) {
    const p = f.ref !== undefined && this.pendingByRef(String(f.ref));
    if (!p) {
      this.emit('error', { message: f.msg || `The server refused a message (${f.code}).` });
      return;
    }
    clearTimeout(p.timer);
    if (RETRYABLE.has(Number(f.code))) {
      this.later(p, f.msg || `The server is busy (${f.code})`);
      this.flush();
    } else {
      this.fail(p, f.msg || `Refused (${f.code})`);
    }
  }
}
