// The message menu of a conversation (Reply, Edit, Recall), the quoted preview of a
// reply, the "Message recalled" and "edited" marks, and the composer's "Replying to …"
// / "Editing" bar. chat.js calls these from a few hooks; the protocol side is in
// ../msgchanges.js.

import { h, icon, toast } from '../ui.js';
import { canEdit, canRecall, edit, quoteOf, recall } from '../msgchanges.js';

const LONG_PRESS_MS = 500;

/** What a quote or the reply bar says of a message. */
function gist(q) {
  if (q.recalled) return 'Message recalled';
  if (q.media === 4) return '[picture]';
  if (q.media === 3) return '[voice message]';
  return q.content || '';
}

function nameOf(session, id) {
  if (id === session.me.id) return 'You';
  return (session.friends.get(id) || session.users.get(id))?.nickname || `User ${id}`;
}

/** The quoted preview above a reply's text; clicking it shows the original when loaded. */
export function quoteBlock(session, m) {
  if (!m.reply) return null;
  const q = m.quote;
  const el = h(
    'button',
    { type: 'button', class: `quote ${q?.recalled ? 'recalled' : ''}`, 'data-testid': 'msg-quote', 'data-reply': m.reply },
    h('span', { class: 'quote-who', text: q ? nameOf(session, q.userid) : '' }),
    h('span', { class: 'quote-text', 'data-testid': 'msg-quote-text', text: q ? gist(q) : 'Original message no longer available' }),
  );
  el.addEventListener('click', () => {
    const target = el.closest('.msg-rows')?.querySelector(`[data-testid="message"][data-id="${m.reply}"]`);
    if (!target) return;
    target.scrollIntoView({ block: 'center', behavior: 'smooth' });
    target.classList.add('flash');
    setTimeout(() => target.classList.remove('flash'), 1200);
  });
  return el;
}

/** The bubble of a recalled message. */
export function recalledBubble() {
  return h('div', { class: 'bubble recalled' }, h('span', { class: 'msg-recalled', 'data-testid': 'msg-recalled', text: 'Message recalled' }));
}

/** "edited", for the meta line. */
export function editedMark(m) {
  if (!m.edited || m.recalled) return null;
  return h('span', { class: 'msg-edited', 'data-testid': 'msg-edited', title: `Edited ${new Date(m.edited).toLocaleString()}`, text: 'edited' });
}

/** What the signature of a row needs, so a change redraws it. */
export function changeSignature(m) {
  return [m.recalled, m.edited, m.content, m.reply, m.quote?.content, m.quote?.recalled].join('|');
}

let open = null; // the menu shown, if any

function closeMenu() {
  if (!open) return;
  const { el, anchor, onDoc, place } = open;
  open = null;
  el.remove();
  document.removeEventListener('pointerdown', onDoc, true);
  window.removeEventListener('resize', place);
  anchor?.setAttribute('aria-expanded', 'false');
}

/** Opens the menu of message `m` in `view` at (x, y), or under `anchor`. */
function openMenu(view, m, { anchor, x, y }) {
  closeMenu();
  const s = view.session;
  const items = [];
  const item = (testid, label, fn, danger = false) => {
    const b = h('button', { type: 'button', role: 'menuitem', class: `menu-item ${danger ? 'danger' : ''}`, 'data-testid': testid, text: label });
    b.addEventListener('click', fn);
    items.push(b);
    return b;
  };
  const el = h('div', { class: 'msg-menu', role: 'menu', 'data-testid': 'msg-menu', 'aria-label': 'Message actions' });
  if (!m.recalled) {
    item('msg-reply', 'Reply', () => {
      closeMenu();
      view.compose.reply(m);
    });
  }
  if (canEdit(s, m)) {
    item('msg-edit', 'Edit', () => {
      closeMenu();
      view.compose.edit(m);
    });
  }
  if (canRecall(s, m)) {
    item(
      'msg-recall',
      'Recall',
      () => {
        // Confirm in place: the menu becomes the question.
        const yes = h('button', { type: 'button', role: 'menuitem', class: 'menu-item danger', 'data-testid': 'msg-recall-confirm', text: 'Recall for everyone' });
        const no = h('button', { type: 'button', role: 'menuitem', class: 'menu-item', 'data-testid': 'msg-recall-cancel', text: 'Cancel' });
        yes.addEventListener('click', () => {
          closeMenu();
          if (!recall(s, m)) toast('Not connected: try again when the connection is back.');
        });
        no.addEventListener('click', closeMenu);
        items.length = 0;
        items.push(yes, no);
        el.replaceChildren(h('p', { class: 'menu-question', text: 'Recall this message? Nobody will see it any more.' }), yes, no);
        yes.focus();
      },
      true,
    );
  }
  if (!items.length) {
    el.append(h('p', { class: 'menu-question', text: 'Nothing to do with this message.' }));
  }
  el.append(...items);
  el.addEventListener('keydown', (ev) => {
    const i = items.indexOf(document.activeElement);
    if (ev.key === 'Escape') {
      ev.preventDefault();
      const a = open?.anchor;
      closeMenu();
      a?.focus();
    } else if (ev.key === 'ArrowDown' || ev.key === 'ArrowUp') {
      ev.preventDefault();
      const n = items.length;
      items[(i + (ev.key === 'ArrowDown' ? 1 : n - 1)) % n]?.focus();
    } else if (ev.key === 'Tab') {
      closeMenu();
    }
  });
  document.body.append(el);
  // Placed by the anchor or the pointer, kept inside the window (again when it resizes).
  const place = () => {
    const r = anchor?.isConnected ? anchor.getBoundingClientRect() : { left: x, right: x, top: y, bottom: y };
    const w = el.offsetWidth;
    const hgt = el.offsetHeight;
    const left = Math.max(8, Math.min(window.innerWidth - w - 8, (anchor ? r.right : r.left) - (anchor ? w : 0)));
    const top = r.bottom + hgt + 8 > window.innerHeight ? Math.max(8, r.top - hgt - 4) : r.bottom + 4;
    el.style.left = `${left}px`;
    el.style.top = `${top}px`;
  };
  place();
  const onDoc = (ev) => !el.contains(ev.target) && ev.target !== anchor && closeMenu();
  document.addEventListener('pointerdown', onDoc, true);
  window.addEventListener('resize', place);
  open = { el, anchor, onDoc, place };
  anchor?.setAttribute('aria-expanded', 'true');
  items[0]?.focus();
}

/** The "⋯" button of a stored message's row, and right-click and long-press on it. */
export function attachMenu(view, row, m) {
  if (!(m.id > 0) || m.pending || m.recalled) return null;
  const btn = h('button', { type: 'button', class: 'msg-more', 'aria-label': 'Message actions', 'aria-haspopup': 'menu', 'aria-expanded': 'false', 'data-testid': 'msg-menu-button', text: '⋯' });
  btn.addEventListener('click', (ev) => {
    ev.stopPropagation();
    if (open?.anchor === btn) closeMenu();
    else openMenu(view, m, { anchor: btn });
  });
  row.addEventListener('contextmenu', (ev) => {
    if (ev.target.closest('a')) return; // a link keeps the browser's menu
    ev.preventDefault();
    openMenu(view, m, { x: ev.clientX, y: ev.clientY });
  });
  let timer = null;
  let start = null;
  const cancel = () => {
    clearTimeout(timer);
    timer = null;
  };
  row.addEventListener('pointerdown', (ev) => {
    if (ev.pointerType !== 'touch') return;
    start = [ev.clientX, ev.clientY];
    timer = setTimeout(() => {
      timer = null;
      openMenu(view, m, { x: start[0], y: start[1] });
    }, LONG_PRESS_MS);
  });
  row.addEventListener('pointermove', (ev) => {
    if (timer && start && Math.hypot(ev.clientX - start[0], ev.clientY - start[1]) > 10) cancel();
  });
  row.addEventListener('pointerup', cancel);
  row.addEventListener('pointercancel', cancel);
  return btn;
}

/**
 * The composer's reply or edit state: a bar above the input ("Replying to Alice: …" or
 * "Editing message", with a cancel button), and what the next submit does.
 */
export class ComposeMode {
  constructor(view) {
    this.view = view;
    this.mode = null; // {kind: 'reply' | 'edit', m}
    this.label = h('span', { class: 'compose-label', 'data-testid': 'compose-label' });
    this.preview = h('span', { class: 'compose-preview', 'data-testid': 'compose-preview' });
    const cancel = h('button', { type: 'button', class: 'icon-btn compose-cancel', 'aria-label': 'Cancel', 'data-testid': 'compose-cancel' }, icon('x'));
    cancel.addEventListener('click', () => {
      if (this.mode?.kind === 'edit') view.input.value = '';
      this.clear();
      view.input.focus();
    });
    this.el = h('div', { class: 'compose-bar', 'data-testid': 'compose-bar', hidden: true }, h('div', { class: 'compose-what' }, this.label, this.preview), cancel);
  }

  reply(m) {
    this.mode = { kind: 'reply', m };
    this.label.textContent = `Replying to ${nameOf(this.view.session, m.userid)}`;
    this.preview.textContent = gist(quoteOf(m));
    this.show();
  }

  edit(m) {
    this.mode = { kind: 'edit', m };
    this.label.textContent = 'Editing message';
    this.preview.textContent = m.content;
    this.view.input.value = m.content;
    this.view.autosize();
    this.show();
  }

  show() {
    this.el.hidden = false;
    this.view.input.focus();
    if (this.view.stick) this.view.scrollToEnd();
  }

  clear() {
    this.mode = null;
    this.el.hidden = true;
  }

  /** Sends `text` as the mode says (a reply, an edit, or a plain message). */
  submit(text) {
    const s = this.view.session;
    const mode = this.mode;
    if (mode?.kind === 'edit') {
      if (text !== mode.m.content && !edit(s, mode.m, text)) {
        toast('Not connected: try again when the connection is back.');
        return false;
      }
    } else if (mode?.kind === 'reply') {
      s.sendText(this.view.k, text, { reply: mode.m.id, quote: quoteOf(mode.m) });
    } else {
      s.sendText(this.view.k, text);
    }
    this.clear();
    return true;
  }
}
