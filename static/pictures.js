// Pictures in chat: the thumbnail in the message list, the original in a viewer.
//
// An upload's reply names a thumbnail (`thumb`, at most 320 px on the long side) and its
// size. A picture message carries the original in `url`, as fastIM's did, and the
// thumbnail in `pic` (fastIM's preview field) as "/resource/<name>#w=320&h=240": the
// fragment is never sent to the server, and gives the size before the picture arrives,
// so the list does not jump. Messages without `pic` (other clients, pictures sent before
// thumbnails existed) show the original, scaled down by the page.

import { h, icon, safeImageUrl } from './ui.js';

/** The `pic` of a message, from an upload reply. */
export function picField(reply) {
  if (typeof reply.thumb !== 'string' || !reply.thumb) return '';
  const w = Number(reply.thumbwidth);
  const hgt = Number(reply.thumbheight);
  return w > 0 && hgt > 0 ? `${reply.thumb}#w=${w}&h=${hgt}` : reply.thumb;
}

/** `{src, width, height}` of a message's `pic`, or null if it has none we may load. */
export function parsePic(pic) {
  const safe = safeImageUrl(pic);
  if (!safe || safe.startsWith('blob:')) return null;
  const [src, fragment = ''] = safe.split('#');
  const params = new URLSearchParams(fragment);
  const side = (v) => (/^\d{1,5}$/.test(v || '') && Number(v) > 0 ? Number(v) : null);
  const width = side(params.get('w'));
  const height = side(params.get('h'));
  return { src, width: width && height ? width : null, height: width && height ? height : null };
}

/**
 * The bubble of a picture message, or null when it has no picture this page may load.
 * `alt` describes it; `onLoad` runs when the shown picture has decoded.
 */
export function pictureBubble(m, { alt = 'Picture', onLoad } = {}) {
  const local = safeImageUrl(m.localUrl); // our own upload, already decoded here
  const thumb = parsePic(m.pic);
  const url = safeImageUrl(m.url);
  const original = url && !url.startsWith('blob:') ? url : null;
  const src = local || thumb?.src || original;
  if (!src) return null;
  const img = h('img', {
    src,
    alt,
    width: thumb?.width,
    height: thumb?.height,
    'data-testid': 'msg-image',
    'data-thumb': !local && thumb && src === thumb.src ? '' : null,
    decoding: 'async',
  });
  if (onLoad) img.addEventListener('load', onLoad);
  img.addEventListener('error', () => {
    // A missing thumbnail falls back to the original, once; then it is gone.
    if (original && img.getAttribute('src') !== original) {
      img.removeAttribute('data-thumb');
      img.src = original;
    } else {
      open.replaceWith(h('span', { class: 'img-broken', text: 'Picture not available' }));
    }
  });
  const open = h('button', { type: 'button', class: 'pic-open', title: 'Open the picture', 'data-testid': 'msg-image-open' }, img);
  open.addEventListener('click', () => openViewer(original || src, { alt, opener: open }));
  return h('div', { class: 'bubble image' }, open);
}

/**
 * Shows `src` full size over the page, in a modal dialog: Escape, the close button or a
 * click anywhere closes it, and the focus goes back to `opener`.
 */
export function openViewer(src, { alt = 'Picture', opener = null } = {}) {
  const img = h('img', { src, alt, class: 'viewer-img', 'data-testid': 'viewer-image', decoding: 'async' });
  const close = h('button', { type: 'button', class: 'viewer-close', 'aria-label': 'Close the picture', title: 'Close (Esc)', 'data-testid': 'viewer-close' }, icon('x'));
  const dlg = h('dialog', { class: 'viewer', 'data-testid': 'viewer', 'aria-label': alt }, close, img);
  close.addEventListener('click', () => dlg.close());
  dlg.addEventListener('click', (e) => {
    if (e.target !== close && !close.contains(e.target)) dlg.close();
  });
  dlg.addEventListener('close', () => {
    dlg.remove();
    opener?.focus({ preventScroll: true });
  });
  document.body.append(dlg);
  dlg.showModal(); // Escape closes a modal dialog; the page behind it is inert
  close.focus();
  return dlg;
}
