// Recall, edit and reply on the session's side (PROTOCOL.md, "Recall, edit and reply"):
// asking the server, and applying what it tells (cmd 16 and 17) to the messages held.
// The views never send frames themselves; session.js calls these from a few hooks.

import * as api from './api.js';
import { CMD, RECALL_WINDOW_MS, EDIT_WINDOW_MS } from './commands.js';

const QUOTE_CHARS = 100;

function newRef() {
  const b = crypto.getRandomValues(new Uint8Array(8));
  return `c${Date.now().toString(36)}${Array.from(b, (x) => x.toString(16).padStart(2, '0')).join('')}`;
}

/** Whether I may still recall `m` (mine, stored, not recalled, within the window). */
export function canRecall(session, m, now = Date.now()) {
  return m.userid === session.me.id && m.id > 0 && !m.recalled && now - (m.createat || 0) <= RECALL_WINDOW_MS;
}

/** Whether I may still edit `m` (mine, text, within the window). */
export function canEdit(session, m, now = Date.now()) {
  return m.userid === session.me.id && m.id > 0 && !m.recalled && m.media === 1 && now - (m.createat || 0) <= EDIT_WINDOW_MS;
}

/** A quote of `m` as a reply carries it, for the reply's own pending copy. */
export function quoteOf(m) {
  return { id: m.id, userid: m.userid, content: [...(m.content || '')].slice(0, QUOTE_CHARS).join(''), media: m.media, ...(m.recalled ? { recalled: true } : {}) };
}

/** Sends a change; false when there is no connection. The answer comes as an ack
 *  (ignored: the event that follows changes the message everywhere) or an error,
 *  which the session shows. */
function ask(session, frame) {
  return session.socket.send({ ...frame, ref: newRef() });
}

export const recall = (session, m) => ask(session, { cmd: CMD.RECALL, id: m.id });
export const edit = (session, m, content) => ask(session, { cmd: CMD.EDIT, id: m.id, content });

/** Applies a message's new state (an event, or a fresher copy from history) to the
 *  copy held and to the quotes of it; true if something changed. */
function apply(session, k, id, fields) {
  const c = session.convs.get(k);
  if (!c) return false;
  let changed = false;
  const m = c.byId.get(id);
  if (m) {
    for (const [f, v] of Object.entries(fields)) {
      if (m[f] !== v) {
        m[f] = v;
        changed = true;
      }
    }
  }
  for (const r of c.byId.values()) {
    if (r.quote?.id !== id) continue;
    const q = fields.recalled ? { ...r.quote, content: '', recalled: true } : { ...r.quote, content: [...(fields.content ?? r.quote.content)].slice(0, QUOTE_CHARS).join('') };
    if (q.content !== r.quote.content || q.recalled !== r.quote.recalled) {
      r.quote = q;
      changed = true;
    }
  }
  if (changed) session.emit('messages', { key: k, history: true, changed: id });
  return changed;
}

const RECALLED = { recalled: true, content: '', url: '', pic: '', memo: '', amount: 0 };

/** A `cmd` 16 or 17 from the server: live, or in a sync (`changed`). */
export function onChangeFrame(session, f) {
  const k = session.keyOf({ cmd: f.chat, userid: f.userid, dstid: f.dstid });
  if (f.cmd === CMD.RECALL) apply(session, k, f.id, RECALLED);
  else apply(session, k, f.id, { content: f.content, edited: f.edited });
}

/** A fresher copy `r` (a history row, a sync) of a message already held in
 *  conversation `k`: takes its recall, edit and quote. */
export function mergeCopy(session, k, r) {
  const m = session.convs.get(k)?.byId.get(r.id);
  if (!m || m.recalled) return;
  if (r.recalled) apply(session, k, r.id, RECALLED);
  // Only a newer edit: a copy read before the last live one must not undo it.
  else if (r.edited > (m.edited || 0)) apply(session, k, r.id, { content: r.content, edited: r.edited });
  if (r.quote?.recalled && m.quote && !m.quote.recalled) {
    m.quote = r.quote;
    session.emit('messages', { key: k, history: true, changed: r.id });
  }
}

/** After a reconnection to a server whose sync does not carry changes (no change
 *  log): what changed while away in the conversations shown, from their newest
 *  history page (such a sync only brings messages newer than the last id). */
export async function refreshChanged(session) {
  for (const c of session.convs.values()) {
    if (!c.historyLoaded) continue; // its history is read when it is opened
    let rows;
    try {
      rows = await api.history(c.cmd, c.dstid, undefined, 30); // session.js's PAGE
    } catch {
      continue; // the next reconnection tries again
    }
    for (const r of rows) if (c.byId.has(r.id)) mergeCopy(session, c.key, r);
  }
}
