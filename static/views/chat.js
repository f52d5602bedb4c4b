// A conversation: one-to-one (cmd 10) or group (cmd 11). The message list is keyed
// (by the client ref when we sent it, else by server id), so a pending message turns
// into the acknowledged one in place, and new messages do not redraw the others.

import { h, avatar, icon, toast } from '../ui.js';
import { pictureBubble } from '../pictures.js';
import { key, MAX_TEXT } from '../session.js';
import { EMOJI } from '../emoji.js';
import { friendMenu } from './friends.js';
import { CMD } from '../commands.js';
import { layoutMessages, daySeparator, linkify, liveRegion, rovingPanel, enterIsNewline, timeOfDay } from './layout.js';
import { ComposeMode, attachMenu, changeSignature, editedMark, quoteBlock, recalledBubble } from './msgmenu.js';
import { NOTICE, removesMe } from '../groups.js';
import { noticeRow, groupInfoLink } from './groupinfo.js';

const NEAR_BOTTOM = 80; // px: "the reader is at the end", so new messages scroll into view
const NEAR_TOP = 120; // px: close enough to the top to fetch the older page

const STATUS_TEXT = {
  queued: 'Waiting for the connection…',
  uploading: 'Uploading…',
  sending: 'Sending…',
};

/** A short text that is only emoji is shown large, without a bubble. */
function isJumbo(text) {
  const t = text.trim();
  return t.length > 0 && [...t].length <= 8 && /^(?:\p{Extended_Pictographic}|\p{Emoji_Modifier}|\u200d|\ufe0f|\s)+$/u.test(t);
}

export class ChatView {
  /** `cmd` 10 or 11, `id` the peer's user id or the group id. */
  constructor(session, cmd, id, { backHref }) {
    this.session = session;
    this.k = key(cmd, id);
    this.cmd = cmd;
    this.id = id;
    this.rows = new Map(); // row key -> {el, sig}
    this.stick = true; // follow new messages (the list was at its end)
    this.listeners = [];

    this.title = h('h2', { class: 'chat-title', 'data-testid': 'chat-title' });
    this.subtitle = h('p', { class: 'chat-sub', 'data-testid': 'chat-sub' });
    this.headAvatar = h('span', { class: 'head-avatar' });
    const back = h('a', { class: 'icon-btn back', href: backHref, 'aria-label': 'Back', 'data-testid': 'chat-back' }, icon('back'));
    const head = h('header', { class: 'pane-head chat-head' }, back, this.headAvatar, h('div', { class: 'chat-titles' }, this.title, this.subtitle));
    // Remove friend, Block (views/friends.js); the chat closes after either.
    if (cmd === CMD.SINGLE && id !== session.me.id) head.append(friendMenu(session, id, () => (location.hash = backHref)));
    if (cmd === CMD.GROUP) head.append(groupInfoLink(id));

    this.top = h('div', { class: 'history-state', 'data-testid': 'history-state' });
    this.list = h('div', { class: 'msg-rows' });
    // Not a live region itself (older pages loaded on scroll would be read out): new
    // messages from others are announced through this.live. Focusable, to scroll by keys.
    this.live = liveRegion();
    this.scroller = h('div', { class: 'msgs', 'data-testid': 'message-list', role: 'region', 'aria-label': 'Messages', tabindex: 0 }, this.top, this.list);
    this.scroller.addEventListener('scroll', () => this.onScroll(), { passive: true });
    // The list gets shorter when the phone keyboard or the emoji panel opens, or the
    // window is resized: stay at the newest message if that is where the reader was.
    this.resize = new ResizeObserver(() => this.stick && this.scrollToEnd());
    this.resize.observe(this.scroller);

    // Shown when someone writes while the reader is scrolled up in the history.
    this.newPill = h('button', { type: 'button', class: 'new-pill', 'data-testid': 'new-messages', hidden: true, text: '↓ New messages' });
    this.newPill.addEventListener('click', () => {
      this.stick = true;
      this.scrollToEnd();
      this.newPill.hidden = true;
    });
    // "Alice is typing…", shown for the notice's ttl or until Alice's message arrives.
    this.typingLine = h('p', { class: 'typing-line', 'data-testid': 'typing', 'aria-live': 'polite' });
    this.el = h('section', { class: 'chat', 'data-testid': 'chat-view', 'data-key': this.k }, head, h('div', { class: 'msgs-wrap' }, this.scroller, this.newPill), this.typingLine, this.composer(), this.live.el);

    this.conv = session.conv(this.k);
    this.on(session, 'messages', (e) => e.detail.key === this.k && this.render(e.detail));
    this.on(session, 'users', () => this.render({ users: true }));
    this.on(session, 'contacts', () => this.renderHead());
    this.on(session, 'presence', () => this.renderHead());
    this.on(session, 'typing', (e) => e.detail.key === this.k && this.renderTyping());
    this.on(session, 'seen', (e) => (!e.detail.key || e.detail.key === this.k) && this.render({ seen: true }));
    session.open(this.k); // clears the unread count, loads the first history page
    if (cmd === CMD.GROUP) this.loadMembers();
    this.renderHead();
    this.render({ initial: true });
  }

  on(target, type, fn) {
    target.addEventListener(type, fn);
    this.listeners.push([target, type, fn]);
  }

  destroy() {
    for (const [t, type, fn] of this.listeners) t.removeEventListener(type, fn);
    this.resize.disconnect();
    this.session.close(this.k);
  }

  /** Group members: their profiles for the bubbles, their number for the header. */
  async loadMembers() {
    const rows = await this.session.loadMembers(this.id);
    if (!rows) return;
    this.memberIds = new Set(rows.map((r) => r.id));
    this.renderHead(rows.length);
  }

  renderHead(memberCount) {
    const s = this.session;
    if (this.cmd === CMD.SINGLE) {
      const u = s.friends.get(this.id) || s.users.get(this.id) || s.userNow(this.id);
      this.title.textContent = u?.nickname || `User ${this.id}`;
      this.subtitle.textContent = s.presenceText(this.id) || u?.memo || '';
      this.subtitle.dataset.presence = s.presence.get(this.id)?.online ? 'online' : 'offline';
      this.headAvatar.replaceChildren(avatar(u?.avatar, u?.nickname || '?', this.id, { size: 'sm' }));
    } else {
      const g = s.groups.get(this.id);
      this.title.textContent = g?.name || `Group ${this.id}`;
      if (memberCount) this.members = memberCount;
      this.subtitle.textContent = [this.members && `${this.members} member${this.members === 1 ? '' : 's'}`, g?.memo].filter(Boolean).join(' · ');
      this.headAvatar.replaceChildren(avatar(g?.icon, g?.name || '#', `g${this.id}`, { size: 'sm', square: true }));
    }
  }

  renderTyping() {
    const s = this.session;
    const names = s.typingIn(this.k).map((id) => (s.friends.get(id) || s.users.get(id))?.nickname || `User ${id}`);
    this.typingLine.textContent = names.length ? `${names.join(', ')} ${names.length === 1 ? 'is' : 'are'} typing…` : '';
  }

  // --- composer ----------------------------------------------------------------------

  composer() {
    const newline = enterIsNewline();
    const input = h('textarea', { class: 'chat-input', rows: 1, placeholder: 'Message', 'data-testid': 'chat-input', enterkeyhint: newline ? 'enter' : 'send', 'aria-label': 'Message' });
    this.input = input;
    const send = h('button', { type: 'button', class: 'icon-btn send', 'aria-label': 'Send', 'data-testid': 'chat-send' }, icon('send'));
    const panelId = `emoji-${this.k.replace(/\W/g, '-')}`;
    const emojiBtn = h('button', { type: 'button', class: 'icon-btn', 'aria-label': 'Emoji', 'aria-expanded': 'false', 'aria-controls': panelId, 'data-testid': 'emoji-toggle' }, icon('smile'));
    const panel = h('div', { class: 'emoji-panel', id: panelId, role: 'toolbar', 'aria-label': 'Emoji', 'data-testid': 'emoji-panel', hidden: true });
    for (const e of EMOJI) {
      panel.append(h('button', { type: 'button', class: 'emoji', 'data-testid': 'emoji', text: e, 'aria-label': e }));
    }
    panel.addEventListener('click', (ev) => {
      const b = ev.target.closest('button.emoji');
      if (!b) return;
      // Insert at the caret, as a keyboard would; sending stays a separate tap.
      const { selectionStart: a = input.value.length, selectionEnd: z = a } = input;
      input.setRangeText(b.textContent, a, z, 'end');
      this.autosize();
      this.session.setDraft(this.k, input.value);
      // Picked with a mouse: typing goes on in the text (by keyboard, the focus stays in
      // the panel for the next one; on a phone the panel stands in for the keyboard).
      if (ev.detail > 0 && !matchMedia('(pointer: coarse)').matches) input.focus({ preventScroll: true });
    });
    const showPanel = (show) => {
      panel.hidden = !show;
      emojiBtn.setAttribute('aria-expanded', String(show));
      emojiBtn.classList.toggle('active', show);
      if (this.stick) this.scrollToEnd();
    };
    emojiBtn.addEventListener('click', () => {
      showPanel(panel.hidden);
      // Into the panel, where the arrow keys move (on a phone this also puts the keyboard away).
      if (!panel.hidden) panel.querySelector('button[tabindex="0"]')?.focus({ preventScroll: true });
    });
    // One tab stop, arrow keys inside; Escape closes it and gives the focus back.
    rovingPanel(panel, {
      onEscape: () => {
        showPanel(false);
        emojiBtn.focus();
      },
    });

    // Picture: the gallery everywhere, and the camera on touch devices
    // (capture="environment" opens the back camera on phones; CSS hides it elsewhere).
    const pick = (capture) => {
      const f = h('input', { type: 'file', accept: 'image/*', class: 'visually-hidden', 'data-testid': capture ? 'camera-input' : 'image-input', capture: capture ? 'environment' : null });
      f.addEventListener('change', () => {
        try {
          for (const file of f.files) this.session.sendImage(this.k, file);
        } catch (e) {
          toast(e.message); // the outbox is full
        }
        f.value = '';
        this.stick = true;
      });
      return f;
    };
    const gallery = h('label', { class: 'icon-btn', title: 'Send a picture', 'data-testid': 'image-button' }, icon('image'), pick(false));
    const camera = h('label', { class: 'icon-btn camera-only', title: 'Take a photo', 'data-testid': 'camera-button' }, icon('camera'), pick(true));

    const submit = () => {
      const text = input.value.replace(/\s+$/, '');
      if (!text.trim()) return;
      if ([...text].length > MAX_TEXT) {
        toast(`A message can have at most ${MAX_TEXT} characters (this one has ${[...text].length}).`);
        return;
      }
      this.stick = true;
      try {
        if (!this.compose.submit(text)) return;
      } catch (e) {
        toast(e.message); // the outbox is full
        return;
      }
      input.value = '';
      this.session.setDraft(this.k, '');
      this.autosize();
    };
    send.addEventListener('click', () => {
      submit();
      input.focus();
    });
    input.addEventListener('keydown', (ev) => {
      if (ev.key === 'Escape' && !panel.hidden) {
        ev.preventDefault();
        showPanel(false);
        return;
      }
      // Enter sends, Shift+Enter is a new line (on phones Enter is a new line, the button
      // sends); Enter that ends an IME composition (Chinese, Japanese input) only
      // confirms the characters.
      if (ev.key === 'Enter' && !ev.shiftKey && !ev.isComposing && ev.keyCode !== 229 && !enterIsNewline()) {
        ev.preventDefault();
        submit();
      }
    });
    input.addEventListener('input', () => {
      this.autosize();
      if (input.value.trim()) this.session.notifyTyping(this.k);
      this.session.setDraft(this.k, input.value); // kept on the device (store.js)
    });
    this.session.draft(this.k).then((t) => {
      if (t && !input.value) {
        input.value = t;
        this.autosize();
      }
    });

    this.compose = new ComposeMode(this);
    return h('footer', { class: 'composer' }, this.compose.el, h('div', { class: 'composer-bar' }, emojiBtn, gallery, camera, input, send), panel);
  }

  autosize() {
    this.input.style.height = 'auto';
    this.input.style.height = `${Math.min(this.input.scrollHeight, 132)}px`;
  }

  focus() {
    // Not on touch screens: the keyboard would cover the conversation just opened.
    if (!matchMedia('(pointer: coarse)').matches) this.input.focus({ preventScroll: true });
  }

  // --- messages --------------------------------------------------------------------

  onScroll() {
    const s = this.scroller;
    this.stick = s.scrollHeight - s.scrollTop - s.clientHeight < NEAR_BOTTOM;
    if (this.stick) this.newPill.hidden = true;
    if (s.scrollTop < NEAR_TOP) this.session.loadOlder(this.k);
  }

  scrollToEnd() {
    this.scroller.scrollTop = this.scroller.scrollHeight;
  }

  rowKey(m) {
    return m.ref ? `r${m.ref}` : `i${m.id}`;
  }

  render(detail = {}) {
    const c = this.conv;
    // A message from someone who was not a member when we looked: someone joined.
    if (this.memberIds && detail.id && !detail.history) {
      const m = c.byId.get(detail.id);
      if (m && !this.memberIds.has(m.userid)) {
        this.memberIds.add(m.userid); // ask once per newcomer
        this.loadMembers();
      }
    }
    // A group notice: someone joined, left or was removed; count the members again.
    const fresh = detail.id && !detail.history && c.byId.get(detail.id);
    if (this.memberIds && fresh?.media === NOTICE && !removesMe(fresh, this.session.me.id)) this.loadMembers();
    const s = this.scroller;
    const firstBefore = this.list.firstElementChild;
    const topBefore = firstBefore?.offsetTop;
    const scrollBefore = s.scrollTop;

    this.renderTop();
    const items = c.items();
    // Day separators and runs of one sender (static/views/layout.js): a separator is a
    // row of its own; where a message sits in its run is part of its signature.
    const places = layoutMessages(items);
    const entries = [];
    items.forEach((m, n) => {
      const at = places[n];
      if (at.day) entries.push({ k: `day:${this.rowKey(m)}`, sig: at.day, make: () => daySeparator(at.day) });
      entries.push({ k: this.rowKey(m), sig: `${this.signature(m)}|${at.first}|${at.last}`, make: () => this.messageRow(m, at) });
    });
    const seen = new Set();
    let i = 0;
    for (const { k, sig, make } of entries) {
      seen.add(k);
      let row = this.rows.get(k);
      if (!row) {
        row = { el: make(), sig };
        this.rows.set(k, row);
      } else if (row.sig !== sig) {
        const fresh = make();
        row.el.replaceWith(fresh);
        row.el = fresh;
        row.sig = sig;
      }
      const at = this.list.children[i];
      if (at !== row.el) this.list.insertBefore(row.el, at || null);
      i++;
    }
    for (const [k, row] of this.rows) {
      if (!seen.has(k)) {
        row.el.remove();
        this.rows.delete(k);
      }
    }

    this.announce(detail);
    if (detail.initial || this.stick) {
      this.scrollToEnd();
    } else if (detail.id && !detail.history && c.byId.get(detail.id)?.userid !== this.session.me.id) {
      this.newPill.hidden = false;
    } else if (firstBefore && firstBefore.isConnected && topBefore !== undefined) {
      // Older messages went in above: keep the one that was on screen where it was.
      s.scrollTop = scrollBefore + (firstBefore.offsetTop - topBefore);
    }
    // A first page that does not fill the screen: fetch more until it does.
    if (c.historyLoaded && c.hasMore && !c.loading && s.scrollHeight <= s.clientHeight + NEAR_TOP) {
      queueMicrotask(() => this.session.loadOlder(this.k));
    }
  }

  /** A new message from someone else is read out (not history, not a sync's backlog). */
  announce(detail) {
    if (!detail.id || detail.history || this.session.syncing) return;
    const m = this.conv.byId.get(detail.id);
    if (!m || m.userid === this.session.me.id || this.announced === m.id) return;
    this.announced = m.id;
    const who = this.sender(m)?.nickname || 'Someone';
    const what = m.media === 4 ? 'sent a picture' : m.media === 3 ? 'sent a voice message' : m.content || '';
    this.live.say(`${who}: ${what}`);
  }

  renderTop() {
    const c = this.conv;
    let content;
    if (c.loading) content = h('span', { class: 'muted', text: 'Loading earlier messages…' });
    else if (c.historyError && this.session.connState !== 'online' && c.items().length) {
      // Away from the server: what the device kept is shown; the rest comes when back.
      content = h('span', { class: 'muted', 'data-testid': 'history-offline', text: 'Offline: showing what this device kept.' });
    } else if (c.historyError) {
      const retry = h('button', { type: 'button', class: 'link', text: 'Try again', 'data-testid': 'history-retry' });
      retry.addEventListener('click', () => this.session.loadOlder(this.k));
      content = h('span', { class: 'error-text' }, `Could not load the history: ${c.historyError} `, retry);
    } else if (c.historyLoaded && !c.hasMore) {
      content = h('span', { class: 'muted', text: c.items().length ? 'Start of the conversation' : 'No messages yet. Say hello!' });
    }
    this.top.replaceChildren(content || '');
  }

  sender(m) {
    return m.userid === this.session.me.id ? this.session.me : this.session.users.get(m.userid) || this.session.userNow(m.userid);
  }

  /** For my sent messages: whether the friend has read it, or how many members have. */
  seenBy(m) {
    const s = this.session;
    if (m.userid !== s.me.id || m.pending || !m.id) return null;
    if (this.cmd === CMD.SINGLE) return this.id === s.me.id ? null : this.conv.seen >= m.id ? 1 : 0;
    let n = 0;
    for (const [user, read] of this.conv.reads) if (user !== s.me.id && read >= m.id) n++;
    return n;
  }

  signature(m) {
    const u = this.cmd === CMD.GROUP ? this.sender(m) : null;
    return [m.id, m.status, m.error, m.url, u?.nickname, u?.avatar, this.seenBy(m), changeSignature(m)].join('|');
  }

  /** `at`: where it sits in its run of one sender (layoutMessages in layout.js). */
  messageRow(m, at = { first: true, last: true }) {
    const s = this.session;
    if (m.media === NOTICE) return noticeRow(m, s.me);
    const mine = m.userid === s.me.id;
    const status = m.pending ? m.status : 'sent';
    const row = h('div', {
      class: `msg ${mine ? 'mine' : 'theirs'} ${status} ${at.first ? 'run-first' : 'run-more'} ${at.last ? 'run-last' : ''}`,
      'data-run': at.first ? 'first' : 'more',
      'data-testid': 'message',
      'data-id': m.id || null,
      'data-ref': m.ref || null,
      'data-status': status,
      'data-sender': m.userid,
    });
    const u = mine ? s.me : this.cmd === CMD.GROUP ? this.sender(m) : s.friends.get(m.userid) || s.users.get(m.userid) || this.sender(m);
    // One avatar and one name for a run; the others keep the avatar's room.
    if (!mine) row.append(at.first ? avatar(u?.avatar, u?.nickname || '?', m.userid, { size: 'sm' }) : h('span', { class: 'avatar-gap', 'aria-hidden': 'true' }));

    const body = h('div', { class: 'msg-body' });
    const named = !mine && this.cmd === CMD.GROUP && at.first;
    if (named) body.append(h('span', { class: 'msg-sender', 'data-testid': 'msg-sender', text: u?.nickname || '…' }));
    // Who wrote it, for screen readers, where the screen shows it by place alone.
    const who = mine ? 'You: ' : named ? '' : `${u?.nickname || 'Someone'}: `;

    let bubble;
    if (m.recalled) {
      bubble = recalledBubble();
    } else if (m.media === 4 && (m.localUrl || m.url || m.pic)) {
      const alt = mine ? 'Your picture' : `Picture from ${u?.nickname || 'someone'}`;
      bubble = pictureBubble(m, { alt, onLoad: () => this.stick && this.scrollToEnd() });
      bubble ||= h('div', { class: 'bubble' }, h('span', { class: 'muted', text: '[a picture from another site, not shown]' }));
    } else if (m.media === 3) {
      bubble = h('div', { class: 'bubble' }, h('span', { class: 'muted', text: '[voice message: not supported here]' }));
    } else {
      const text = m.content || '';
      bubble = h('div', { class: `bubble ${isJumbo(text) ? 'jumbo' : ''}` }, h('span', { class: 'msg-text', 'data-testid': 'msg-text' }, linkify(text)));
    }
    if (who && !bubble.classList.contains('image')) bubble.prepend(h('span', { class: 'visually-hidden', 'data-testid': 'msg-who', text: who }));
    body.append(...[m.recalled ? null : quoteBlock(s, m), bubble].filter(Boolean));

    const meta = h('div', { class: 'msg-meta' });
    if (status === 'failed') {
      const retry = h('button', { type: 'button', class: 'retry', 'data-testid': 'msg-retry' }, icon('retry'), ' Retry');
      retry.addEventListener('click', () => s.retry(m.ref));
      const drop = h('button', { type: 'button', class: 'retry', 'data-testid': 'msg-discard', text: 'Delete' });
      drop.addEventListener('click', () => s.discard(m.ref));
      meta.append(h('span', { class: 'msg-error', 'data-testid': 'msg-error', text: `Not sent: ${m.error || 'error'}` }), retry, drop);
    } else if (STATUS_TEXT[status]) {
      // Waiting to try again after an error the server (or the network) may get over.
      const text = status === 'queued' && m.error ? `${m.error}. Trying again…` : STATUS_TEXT[status];
      meta.append(h('span', { class: 'msg-status', 'data-testid': 'msg-status', text }));
    } else if (!at.last) {
      // Within a run: the time (and the ticks) go under its last message only.
      row.append(body);
      return row;
    } else {
      const t = h('time', { 'data-testid': 'msg-time', text: timeOfDay(m.createat) });
      if (m.createat) {
        t.dateTime = new Date(m.createat).toISOString();
        t.title = new Date(m.createat).toLocaleString();
      }
      meta.append(...[t, editedMark(m)].filter(Boolean));
      const seen = this.seenBy(m);
      if (this.cmd === CMD.SINGLE && seen !== null) {
        meta.append(h('span', { class: `ticks ${seen ? 'seen' : ''}`, 'data-testid': 'msg-seen', 'data-seen': String(Boolean(seen)), title: seen ? 'Seen' : 'Sent', text: seen ? '✓✓ Seen' : '✓' }));
      } else if (seen) {
        meta.append(h('span', { class: 'ticks seen', 'data-testid': 'msg-seen', 'data-seen': 'true', text: `Seen by ${seen}` }));
      }
    }
    const more = attachMenu(this, row, m);
    if (more) meta.append(more);
    body.append(meta);
    row.append(body);
    return row;
  }
}
