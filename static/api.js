// The HTTP API (PROTOCOL.md, "HTTP API"). The session travels in the HttpOnly cookie
// that /user/register and /user/login set, so no token is handled in JavaScript.
//
// Bodies are sent as JSON: the form encoding that fastIM's client used reads `+` as a
// literal plus (encodeURI), which URLSearchParams would get wrong for spaces.

/** An error to show as it is: `message` is a sentence for the user. */
export class ApiError extends Error {
  constructor(message, { status = 0, code = -1 } = {}) {
    super(message);
    this.status = status; // HTTP status; 0 when the server could not be reached
    this.code = code;
  }
}

/** Called on every 401, i.e. the session is gone; app.js sends the user to the login view. */
let onUnauthorized = () => {};
export function setUnauthorizedHandler(fn) {
  onUnauthorized = fn;
}

async function request(path, init, { quiet401 = false } = {}) {
  let res;
  try {
    res = await fetch(path, { credentials: 'same-origin', cache: 'no-store', ...init });
  } catch {
    throw new ApiError('Cannot reach the server. Check your connection and try again.');
  }
  let body = null;
  try {
    body = await res.json();
  } catch {
    // Not JSON (a proxy's error page, an empty reply): fall through to the status.
  }
  if (res.status === 401) {
    if (!quiet401) onUnauthorized();
    throw new ApiError(body?.msg || 'Please log in.', { status: 401, code: 401 });
  }
  if (!body || typeof body !== 'object') {
    throw new ApiError(`The server answered ${res.status} ${res.statusText || ''}`.trim(), { status: res.status });
  }
  if (!res.ok || body.code !== 0) {
    throw new ApiError(body.msg || `The server answered ${res.status}`, { status: res.status, code: body.code });
  }
  return body;
}

/** POST with a JSON body of fields; resolves to the whole envelope. */
export function post(path, fields = {}, opts) {
  return request(
    path,
    { method: 'POST', headers: { 'Content-Type': 'application/json' }, body: JSON.stringify(fields) },
    opts,
  );
}

/** GET with query fields (the read-only routes). */
export function get(path, fields = {}, opts) {
  const q = Object.entries(fields)
    .filter(([, v]) => v !== undefined && v !== null && v !== '')
    .map(([k, v]) => `${encodeURIComponent(k)}=${encodeURIComponent(v)}`)
    .join('&');
  return request(q ? `${path}?${q}` : path, { method: 'GET' }, opts);
}

// --- the routes the client uses ------------------------------------------------

export const login = (mobile, passwd) => post('/user/login', { mobile, passwd }).then((r) => r.data);
export const register = (fields) => post('/user/register', fields).then((r) => r.data);
export const logout = () => post('/user/logout', {}, { quiet401: true });
/** Who is logged in; a 401 here is the normal "not logged in" answer, not an event. */
export const me = () => get('/user/me', {}, { quiet401: true }).then((r) => r.data);
export const updateMe = (fields) => post('/user/update', fields).then((r) => r.data);
export const findUser = (id) => get('/user/find', { id }).then((r) => r.data);
export const friends = () => get('/contact/loadfriend').then((r) => r.rows || []);
export const groups = () => get('/contact/loadcommunity').then((r) => r.rows || []);
/** Friends and groups by last activity, with the last message, unread count and read markers. */
export const conversations = () => get('/contact/conversations').then((r) => r.rows || []);
export const members = (dstid) => get('/contact/members', { dstid }).then((r) => r.rows || []);
/** Asks to be friends: `data.status` is "requested", or "friends" when they had asked too. */
export const addFriend = (dstname) => post('/contact/addfriend', { dstname });
/** `{incoming, outgoing}`: lists of `{user, createat}`. */
export const requests = () => get('/contact/requests').then((r) => r.data || { incoming: [], outgoing: [] });
export const accept = (dstid) => post('/contact/accept', { dstid });
export const decline = (dstid) => post('/contact/decline', { dstid });
export const cancelRequest = (dstid) => post('/contact/cancelrequest', { dstid });
export const removeFriend = (dstid) => post('/contact/removefriend', { dstid });
export const block = (dstid) => post('/contact/block', { dstid });
export const unblock = (dstid) => post('/contact/unblock', { dstid });
export const blocked = () => get('/contact/blocked').then((r) => r.rows || []);
export const createGroup = (fields) => post('/contact/createcommunity', fields).then((r) => r.data);
export const joinGroup = (dstname) => post('/contact/joincommunity', { dstname });
export const history = (cmd, dstid, before, limit) =>
  get('/message/history', { cmd, dstid, before, limit }).then((r) => r.rows || []);

/** The upload limit of /attach/upload (10 MiB); checked here to fail before sending. */
export const MAX_UPLOAD = 10 * 1024 * 1024;

/**
 * Uploads an image (`multipart/form-data`, field `file`); resolves to its URL
 * ("/resource/<sha256>.<ext>"). The server accepts PNG, JPEG, GIF and WebP up to 10 MiB.
 */
export async function upload(file, name = file.name || 'image') {
  return (await uploadPicture(file, name)).data;
}

/** Like upload(), resolving to the whole reply: `data`, and `thumb`, `thumbwidth`, `thumbheight`. */
export async function uploadPicture(file, name = file.name || 'image') {
  if (file.size > MAX_UPLOAD) throw new ApiError('This picture is larger than 10 MB.', { status: 413 });
  const form = new FormData();
  form.append('file', file, name);
  const body = await request('/attach/upload', { method: 'POST', body: form });
  if (typeof body.data !== 'string') throw new ApiError('The upload did not return a picture address.');
  return body;
}
