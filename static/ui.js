// Small DOM helpers shared by the views. No framework: the app is a handful of views,
// and building elements with h() keeps every user-supplied string in textContent, so
// nothing a peer sends (nickname, memo, message text) is ever parsed as HTML.

/**
 * Creates an element. `props`: attributes (`class`, `data-testid`, `type`, …), except
 * `on*` functions (event listeners) and `text` (textContent). `children`: nodes or
 * strings (as text), arrays flattened, null/false skipped.
 */
export function h(tag, props = {}, ...children) {
  const el = document.createElement(tag);
  for (const [k, v] of Object.entries(props || {})) {
    if (v === null || v === undefined || v === false) continue;
    if (k.startsWith('on') && typeof v === 'function') el.addEventListener(k.slice(2), v);
    else if (k === 'text') el.textContent = v;
    else if (k in el && typeof v !== 'string') el[k] = v; // e.g. disabled, checked, value
    else el.setAttribute(k, v === true ? '' : String(v));
  }
  append(el, children);
  return el;
}

function append(el, children) {
  for (const c of children) {
    if (c === null || c === undefined || c === false) continue;
    if (Array.isArray(c)) append(el, c);
    else el.append(c instanceof Node ? c : document.createTextNode(String(c)));
  }
}

/** Icon paths after Feather icons (MIT licence), drawn as inline SVG: no icon font, no request. */
const ICONS = {
  back: '<polyline points="15 18 9 12 15 6"/>',
  chat: '<path d="M21 11.5a8.38 8.38 0 0 1-.9 3.8 8.5 8.5 0 0 1-7.6 4.7 8.38 8.38 0 0 1-3.8-.9L3 21l1.9-5.7a8.38 8.38 0 0 1-.9-3.8 8.5 8.5 0 0 1 4.7-7.6 8.38 8.38 0 0 1 3.8-.9h.5a8.48 8.48 0 0 1 8 8v.5z"/>',
  user: '<path d="M20 21v-2a4 4 0 0 0-4-4H8a4 4 0 0 0-4 4v2"/><circle cx="12" cy="7" r="4"/>',
  users: '<path d="M17 21v-2a4 4 0 0 0-4-4H5a4 4 0 0 0-4 4v2"/><circle cx="9" cy="7" r="4"/><path d="M23 21v-2a4 4 0 0 0-3-3.87"/><path d="M16 3.13a4 4 0 0 1 0 7.75"/>',
  smile: '<circle cx="12" cy="12" r="10"/><path d="M8 14s1.5 2 4 2 4-2 4-2"/><line x1="9" y1="9" x2="9.01" y2="9"/><line x1="15" y1="9" x2="15.01" y2="9"/>',
  image: '<rect x="3" y="3" width="18" height="18" rx="2" ry="2"/><circle cx="8.5" cy="8.5" r="1.5"/><polyline points="21 15 16 10 5 21"/>',
  camera: '<path d="M23 19a2 2 0 0 1-2 2H3a2 2 0 0 1-2-2V8a2 2 0 0 1 2-2h4l2-3h6l2 3h4a2 2 0 0 1 2 2z"/><circle cx="12" cy="13" r="4"/>',
  send: '<line x1="22" y1="2" x2="11" y2="13"/><polygon points="22 2 15 22 11 13 2 9 22 2"/>',
  plus: '<line x1="12" y1="5" x2="12" y2="19"/><line x1="5" y1="12" x2="19" y2="12"/>',
  retry: '<polyline points="23 4 23 10 17 10"/><path d="M20.49 15a9 9 0 1 1-2.12-9.36L23 10"/>',
  logout: '<path d="M9 21H5a2 2 0 0 1-2-2V5a2 2 0 0 1 2-2h4"/><polyline points="16 17 21 12 16 7"/><line x1="21" y1="12" x2="9" y2="12"/>',
  x: '<line x1="18" y1="6" x2="6" y2="18"/><line x1="6" y1="6" x2="18" y2="18"/>',
  more: '<circle cx="12" cy="5" r="1"/><circle cx="12" cy="12" r="1"/><circle cx="12" cy="19" r="1"/>',
};

export function icon(name, cls = '') {
  const span = document.createElement('span');
  span.className = `icon ${cls}`.trim();
  span.setAttribute('aria-hidden', 'true');
  // Constant markup from ICONS above, never user data.
  span.innerHTML = `<svg viewBox="0 0 24 24" fill="none" stroke="currentColor" stroke-width="2" stroke-linecap="round" stroke-linejoin="round">${ICONS[name]}</svg>`;
  return span;
}

/**
 * Only same-origin paths ("/resource/…") are loaded as images. A profile or message may
 * carry any URL; loading a third party's would tell it who reads the chat and when.
 */
export function safeImageUrl(url) {
  if (typeof url !== 'string') return null;
  if (url.startsWith('blob:')) return url; // our own local previews
  return /^\/(?!\/)[^\s\\]*$/.test(url) ? url : null;
}

/** Letter avatar colour: stable per id, from 8 classes (no inline styles: see the CSP in index.html). */
function colorClass(seed) {
  let n = 0;
  for (const ch of String(seed)) n = (n * 31 + ch.codePointAt(0)) >>> 0;
  return `av-c${n % 8}`;
}

/**
 * An avatar: the picture when there is a usable one, else the first letter of the name
 * on a colour. A picture that fails to load (e.g. fastIM's default /asset/images/user.jpg,
 * which this server does not have) falls back to the letter.
 */
export function avatar(url, name, seed, { square = false, size = '' } = {}) {
  const letter = ([...(name || '?').trim()][0] || '?').toUpperCase();
  const box = h('span', { class: `avatar ${square ? 'square' : ''} ${size} ${colorClass(seed ?? name)}`, 'data-testid': 'avatar' });
  box.append(h('span', { class: 'avatar-letter', text: letter }));
  const src = safeImageUrl(url);
  if (src) {
    const img = h('img', { alt: '', src, loading: 'lazy', decoding: 'async' });
    img.addEventListener('error', () => img.remove());
    box.append(img);
  }
  return box;
}

/** "14:05" today, "Mon 14:05" this week, "2024-03-02 14:05" otherwise. */
export function formatTime(ms) {
  if (!ms) return '';
  const d = new Date(ms);
  const now = new Date();
  const hm = d.toLocaleTimeString([], { hour: '2-digit', minute: '2-digit' });
  if (d.toDateString() === now.toDateString()) return hm;
  if (now - d < 6 * 86400e3 && now > d) return `${d.toLocaleDateString([], { weekday: 'short' })} ${hm}`;
  const pad = (n) => String(n).padStart(2, '0');
  return `${d.getFullYear()}-${pad(d.getMonth() + 1)}-${pad(d.getDate())} ${hm}`;
}

// --- toasts: every error reaches the user in words, not only the console ----------
let toastBox = null;
export function toast(message, kind = 'error', ms = 5000) {
  if (!toastBox) {
    toastBox = h('div', { class: 'toasts', 'aria-live': 'assertive' });
    document.body.append(toastBox);
  }
  const t = h('div', { class: `toast ${kind}`, role: kind === 'error' ? 'alert' : 'status', 'data-testid': 'toast', text: message });
  t.addEventListener('click', () => t.remove());
  toastBox.append(t);
  setTimeout(() => t.remove(), ms);
  while (toastBox.childElementCount > 3) toastBox.firstElementChild.remove();
}

/** Disables a button while `fn` runs, so a double tap does not submit twice. */
export async function busy(button, fn) {
  if (button.disabled) return;
  button.disabled = true;
  button.classList.add('busy');
  try {
    return await fn();
  } finally {
    button.disabled = false;
    button.classList.remove('busy');
  }
}

// Made once: toLocale*String builds a formatter per call, which a list of 1,000 rows feels.
let shortFormats = null;

/** For lists: the time today, the weekday this week, else the date. */
export function formatShort(ms) {
  if (!ms) return '';
  shortFormats ||= {
    time: new Intl.DateTimeFormat([], { hour: '2-digit', minute: '2-digit' }),
    weekday: new Intl.DateTimeFormat([], { weekday: 'short' }),
    date: new Intl.DateTimeFormat([], { month: 'numeric', day: 'numeric' }),
  };
  const d = new Date(ms);
  const now = new Date();
  if (d.toDateString() === now.toDateString()) return shortFormats.time.format(d);
  if (now - d < 6 * 86400e3 && now > d) return shortFormats.weekday.format(d);
  return shortFormats.date.format(d);
}
