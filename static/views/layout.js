// How a conversation is laid out: a separator where the day changes ("Today",
// "Yesterday", a date), runs of one sender's messages (one avatar, one name, one time per
// run), links in message text, and the live region that reads new messages out.
// Pure functions of the messages and the clock where possible, so that they can be
// checked on their own (tests/browser/run.mjs imports this module in the page).

import { h } from '../ui.js';
import { NOTICE } from '../groups.js';

/** Messages of one sender closer together than this make one run. */
export const RUN_GAP_MS = 5 * 60_000;

/** The local calendar day of `ms`, as a key ("2026-11-30"). */
export function dayKey(ms) {
  const d = new Date(ms);
  return `${d.getFullYear()}-${String(d.getMonth() + 1).padStart(2, '0')}-${String(d.getDate()).padStart(2, '0')}`;
}

let dayFormats = null;

/** "Today", "Yesterday", the weekday within the last week, else the date (with the year if not this one). */
export function dayLabel(ms, now = Date.now()) {
  dayFormats ||= {
    weekday: new Intl.DateTimeFormat([], { weekday: 'long' }),
    date: new Intl.DateTimeFormat([], { weekday: 'short', day: 'numeric', month: 'long' }),
    year: new Intl.DateTimeFormat([], { day: 'numeric', month: 'long', year: 'numeric' }),
  };
  const d = new Date(ms);
  const today = new Date(now);
  today.setHours(0, 0, 0, 0);
  const day = new Date(d);
  day.setHours(0, 0, 0, 0);
  // Whole days between the two midnights (rounded: a day can have 23 or 25 hours).
  const ago = Math.round((today - day) / 86400e3);
  if (ago === 0) return 'Today';
  if (ago === 1) return 'Yesterday';
  if (ago > 1 && ago < 7) return dayFormats.weekday.format(d);
  return d.getFullYear() === today.getFullYear() ? dayFormats.date.format(d) : dayFormats.year.format(d);
}

/** When a message was written; one still on its way counts as now. */
function when(m, now) {
  return m.createat || now;
}

/**
 * The layout of a list of messages (oldest first): for each, whether a day separator goes
 * before it (`day`: its label, else null), and whether it starts and ends a run of one
 * sender (`first`, `last`). A run breaks at another sender, a new day, a gap of
 * RUN_GAP_MS, and around a message that failed (its error line stays under it).
 */
export function layoutMessages(items, now = Date.now()) {
  const out = items.map(() => ({ day: null, first: true, last: true }));
  for (let i = 0; i < items.length; i++) {
    const m = items[i];
    const prev = items[i - 1];
    const t = when(m, now);
    const newDay = !prev || dayKey(when(prev, now)) !== dayKey(t);
    if (newDay) out[i].day = dayLabel(t, now);
    // A group notice ("Rita joined") is a line of its own, not the start of a run.
    const notice = prev?.media === NOTICE || m.media === NOTICE;
    const joined = prev && !newDay && !notice && prev.userid === m.userid && t - when(prev, now) < RUN_GAP_MS && prev.status !== 'failed' && m.status !== 'failed';
    if (joined) {
      out[i].first = false;
      out[i - 1].last = false;
    }
  }
  return out;
}

/** The separator before the first message of a day: a heading, to move by days with a screen reader. */
export function daySeparator(label) {
  return h('h3', { class: 'day-sep', 'data-testid': 'day-separator' }, h('span', { text: label }));
}

let clock = null;

/** The time of day of a message ("14:05"): the separator above it says which day. */
export function timeOfDay(ms) {
  if (!ms) return '';
  clock ||= new Intl.DateTimeFormat([], { hour: '2-digit', minute: '2-digit' });
  return clock.format(new Date(ms));
}

// http(s) URLs in text: up to whitespace or a character that cannot be in one unquoted.
const URL_RE = /\bhttps?:\/\/[^\s<>"'`]+/gi;

/**
 * A message's text as nodes: text, and links for the http and https URLs in it. Built as
 * DOM nodes (textContent, href), never as HTML: the text is the sender's. Links open in
 * a new tab, without telling the site where they came from (noopener noreferrer).
 */
export function linkify(text) {
  const nodes = [];
  let last = 0;
  for (const match of text.matchAll(URL_RE)) {
    let raw = match[0];
    // Punctuation that ends a sentence is not part of the address ("see https://x.org.");
    // a closing bracket only when it has no opening one in the URL.
    for (;;) {
      const end = raw.at(-1);
      if (/[.,;:!?]/.test(end)) raw = raw.slice(0, -1);
      else if ((end === ')' && !raw.includes('(')) || (end === ']' && !raw.includes('['))) raw = raw.slice(0, -1);
      else break;
    }
    let url;
    try {
      url = new URL(raw);
    } catch {
      continue;
    }
    if (url.protocol !== 'http:' && url.protocol !== 'https:') continue;
    if (match.index > last) nodes.push(document.createTextNode(text.slice(last, match.index)));
    nodes.push(h('a', { href: url.href, target: '_blank', rel: 'noopener noreferrer', class: 'msg-link', 'data-testid': 'msg-link', text: raw }));
    last = match.index + raw.length;
  }
  if (last < text.length) nodes.push(document.createTextNode(text.slice(last)));
  return nodes;
}

/**
 * A visually hidden polite live region: `say(text)` has screen readers read it once.
 * Only new messages from others go here; history loaded on scroll does not.
 */
export function liveRegion() {
  const el = h('div', { class: 'visually-hidden', 'aria-live': 'polite', 'aria-atomic': 'false', 'data-testid': 'chat-live' });
  return {
    el,
    say(text) {
      el.append(h('p', { text }));
      while (el.childElementCount > 3) el.firstElementChild.remove();
    },
  };
}

/**
 * The emoji panel as one tab stop: the focus moves inside with the arrow keys (by rows
 * of the grid as laid out), Home and End; Escape closes it (`onEscape`).
 */
export function rovingPanel(panel, { onEscape }) {
  const buttons = () => [...panel.querySelectorAll('button')];
  const setCurrent = (b) => {
    for (const x of buttons()) x.tabIndex = x === b ? 0 : -1;
  };
  const first = panel.querySelector('button');
  if (first) setCurrent(first);
  panel.addEventListener('focusin', (ev) => ev.target.closest('button') && setCurrent(ev.target.closest('button')));
  panel.addEventListener('keydown', (ev) => {
    if (ev.key === 'Escape') {
      ev.preventDefault();
      ev.stopPropagation();
      onEscape();
      return;
    }
    const all = buttons();
    const i = all.indexOf(document.activeElement);
    if (i < 0) return;
    const cols = Math.max(1, getComputedStyle(panel).gridTemplateColumns.split(' ').filter(Boolean).length);
    const to = { ArrowRight: i + 1, ArrowLeft: i - 1, ArrowDown: i + cols, ArrowUp: i - cols, Home: 0, End: all.length - 1 }[ev.key];
    if (to === undefined) return;
    ev.preventDefault();
    const b = all[Math.min(all.length - 1, Math.max(0, to))];
    setCurrent(b);
    b.focus();
  });
}

/**
 * Whether Enter makes a new line rather than sending: on phones (a coarse pointer, or a
 * narrow screen), where the send button is at hand and a keyboard's Enter is for lines.
 */
export function enterIsNewline() {
  return matchMedia('(pointer: coarse), (max-width: 759px)').matches;
}
