// What the client keeps on this device in IndexedDB, so that a reload (also offline)
// loses nothing that was not yet on the server: the outbox (messages not yet
// acknowledged, with the picture file of one not yet uploaded), the composer drafts,
// and what the app last knew (profile, contacts, the newest messages per conversation)
// to show while the server cannot be reached.
//
// One database, three object stores, every key prefixed with the user id:
//   outbox  key = ref             value = {uid, seq, ref, cmd, dstid, media, content, url, pic, file, status, error}
//   drafts  key = `${uid}:${conv}` value = the text
//   kv      key = `${uid}:${name}` value = anything structured-cloneable
// No library: a few promise wrappers around the IndexedDB requests. Every call resolves
// (to undefined on failure): IndexedDB may be missing or refuse (private browsing,
// quota), and the app then works as before, from memory only.

const DB_NAME = 'fastim';
const DB_VERSION = 1;
/** The outbox holds at most this many messages per user; the composer says so past it. */
export const MAX_OUTBOX = 300;

let opening = null;

function openDb() {
  if (!opening) {
    opening = new Promise((resolve) => {
      let req;
      try {
        req = indexedDB.open(DB_NAME, DB_VERSION);
      } catch {
        resolve(null);
        return;
      }
      req.onupgradeneeded = () => {
        const db = req.result;
        if (!db.objectStoreNames.contains('outbox')) db.createObjectStore('outbox', { keyPath: 'ref' }).createIndex('uid', 'uid');
        if (!db.objectStoreNames.contains('drafts')) db.createObjectStore('drafts');
        if (!db.objectStoreNames.contains('kv')) db.createObjectStore('kv');
      };
      req.onsuccess = () => {
        const db = req.result;
        db.onversionchange = () => db.close();
        resolve(db);
      };
      req.onerror = () => resolve(null);
      req.onblocked = () => resolve(null);
    });
  }
  return opening;
}

/** Runs `fn(store)` in a transaction on `name`; resolves to the last request's result. */
async function tx(name, mode, fn) {
  const db = await openDb();
  if (!db) return undefined;
  return new Promise((resolve) => {
    let t;
    let req;
    try {
      t = db.transaction(name, mode);
      req = fn(t.objectStore(name));
    } catch {
      // closed database, a value that cannot be cloned, a bad key: not kept
      resolve(undefined);
      return;
    }
    let result;
    if (req) req.onsuccess = () => (result = req.result);
    t.oncomplete = () => resolve(result);
    t.onerror = t.onabort = () => resolve(undefined);
  });
}

// --- the outbox -----------------------------------------------------------------------

/** Every queued message of user `uid`, in the order they were written. */
export async function outboxAll(uid) {
  const rows = (await tx('outbox', 'readonly', (s) => s.index('uid').getAll(uid))) || [];
  return rows.sort((a, b) => a.seq - b.seq);
}

export const outboxPut = (row) => tx('outbox', 'readwrite', (s) => s.put(row));
export const outboxDelete = (ref) => tx('outbox', 'readwrite', (s) => s.delete(ref));

// --- drafts and the rest --------------------------------------------------------------

export const draftGet = (uid, conv) => tx('drafts', 'readonly', (s) => s.get(`${uid}:${conv}`));
export function draftSet(uid, conv, text) {
  return tx('drafts', 'readwrite', (s) => (text ? s.put(text, `${uid}:${conv}`) : s.delete(`${uid}:${conv}`)));
}

export const kvGet = (uid, name) => tx('kv', 'readonly', (s) => s.get(`${uid}:${name}`));
export const kvSet = (uid, name, value) => tx('kv', 'readwrite', (s) => s.put(value, `${uid}:${name}`));

/** The user last logged in on this device (the profile shown when starting offline). */
export const lastUserGet = () => tx('kv', 'readonly', (s) => s.get('me'));
export const lastUserSet = (me) => tx('kv', 'readwrite', (s) => (me ? s.put(me, 'me') : s.delete('me')));

/** Logout: nothing of this user stays on the device. */
export async function forget(uid) {
  if (typeof IDBKeyRange === 'undefined') return;
  const range = IDBKeyRange.bound(`${uid}:`, `${uid}:\uffff`);
  await tx('drafts', 'readwrite', (s) => s.delete(range));
  await tx('kv', 'readwrite', (s) => s.delete(range));
  const rows = await outboxAll(uid);
  await tx('outbox', 'readwrite', (s) => {
    let last;
    for (const r of rows) last = s.delete(r.ref);
    return last;
  });
  await lastUserSet(null);
}
