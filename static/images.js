// Pictures before upload. Phone cameras produce photos of several MB (or HEIC, which the
// server refuses): a picture that is big, or of a type the server does not take, is
// redrawn as a JPEG of at most 2048 px when the browser can decode it. Small PNG, JPEG,
// GIF (animations) and WebP files go as they are.

import { MAX_UPLOAD, upload, uploadPicture } from './api.js';
import { picField } from './pictures.js';

const ACCEPTED = ['image/png', 'image/jpeg', 'image/gif', 'image/webp'];
const KEEP_BELOW = 3 * 1024 * 1024;
const MAX_SIDE = 2048;

/** Resolves to a Blob to upload (the file itself or a JPEG re-encoding). */
export async function prepareImage(file) {
  const accepted = ACCEPTED.includes(file.type);
  if (accepted && (file.size <= KEEP_BELOW || (file.type === 'image/gif' && file.size <= MAX_UPLOAD))) return file;
  let bitmap;
  try {
    bitmap = await createImageBitmap(file);
  } catch {
    return file; // cannot decode here: let the server judge it and show its answer
  }
  const scale = Math.min(1, MAX_SIDE / Math.max(bitmap.width, bitmap.height));
  const canvas = document.createElement('canvas');
  canvas.width = Math.round(bitmap.width * scale);
  canvas.height = Math.round(bitmap.height * scale);
  canvas.getContext('2d').drawImage(bitmap, 0, 0, canvas.width, canvas.height);
  bitmap.close?.();
  const blob = await new Promise((resolve) => canvas.toBlob(resolve, 'image/jpeg', 0.85));
  if (!blob) return file;
  if (!accepted) return blob; // e.g. HEIC: the JPEG is the only thing the server takes
  return blob.size < file.size ? blob : file;
}

/** A file name for the upload, with the extension of what is actually sent. */
export function uploadName(blob, original) {
  const ext = { 'image/png': 'png', 'image/jpeg': 'jpg', 'image/gif': 'gif', 'image/webp': 'webp' }[blob.type];
  const base = (original || 'image').replace(/\.[^.]*$/, '') || 'image';
  return ext ? `${base}.${ext}` : original || 'image';
}

/** Prepares and uploads a picture; resolves to its URL on this server. */
export async function uploadImage(file) {
  const blob = await prepareImage(file);
  return upload(blob, uploadName(blob, file.name));
}

/** Prepares and uploads a picture for a message; resolves to its `url` and `pic` (the thumbnail). */
export async function uploadChatImage(file) {
  const blob = await prepareImage(file);
  const reply = await uploadPicture(blob, uploadName(blob, file.name));
  return { url: reply.data, pic: picField(reply) };
}
