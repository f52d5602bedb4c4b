// The service worker: keeps the web client's own files (the "app shell": index.html, the
// modules, the style sheet, the icon) so that the app opens without a network; what it
// then shows comes from IndexedDB (store.js) until the server can be reached.
//
//   - Network first: online, every shell file comes from the server as before (revalidated
//     with its ETag, so an update is seen at once) and the copy here is refreshed; only when
//     the server cannot be reached is the kept copy served.
//   - Only the files listed in SHELL, and the page itself for navigations. Never the API
//     (/user/, /contact/, /message/, /attach/: private data), never /resource/ uploads,
//     never the /chat socket (a service worker does not see WebSockets anyway).
//   - The cache is named with VERSION; a new worker removes every other fastim cache when
//     it activates. Change VERSION when SHELL changes.

const VERSION = 'v3';
const CACHE = `fastim-shell-${VERSION}`;
const SHELL = [
  '/',
  '/style.css',
  '/img/icon.svg',
  '/app.js',
  '/api.js',
  '/commands.js',
  '/emoji.js',
  '/groups.js',
  '/images.js',
  '/msgchanges.js',
  '/pictures.js',
  '/session.js',
  '/socket.js',
  '/store.js',
  '/ui.js',
  '/views/auth.js',
  '/views/chat.js',
  '/views/friends.js',
  '/views/groupinfo.js',
  '/views/home.js',
  '/views/layout.js',
  '/views/msgmenu.js',
  '/views/newgroup.js',
];
const SHELL_PATHS = new Set(SHELL);

self.addEventListener('install', (event) => {
  event.waitUntil(
    caches
      .open(CACHE)
      .then((cache) => cache.addAll(SHELL.map((p) => new Request(p, { cache: 'no-cache' }))))
      .then(() => self.skipWaiting()),
  );
});

self.addEventListener('activate', (event) => {
  event.waitUntil(
    caches
      .keys()
      .then((names) => Promise.all(names.filter((n) => n.startsWith('fastim-shell-') && n !== CACHE).map((n) => caches.delete(n))))
      .then(() => self.clients.claim()),
  );
});

/** The cache key of a request this worker answers, or null to leave it to the network. */
function shellKey(request) {
  if (request.method !== 'GET') return null;
  const url = new URL(request.url);
  if (url.origin !== self.location.origin) return null;
  if (request.mode === 'navigate') return url.pathname === '/' || url.pathname === '/index.html' ? '/' : null;
  return SHELL_PATHS.has(url.pathname) && !url.search ? url.pathname : null;
}

self.addEventListener('fetch', (event) => {
  const k = shellKey(event.request);
  if (!k) return;
  event.respondWith(
    (async () => {
      const cache = await caches.open(CACHE);
      try {
        const response = await fetch(event.request);
        if (response.ok && response.type === 'basic') cache.put(k, response.clone());
        return response;
      } catch (e) {
        const kept = await cache.match(k);
        if (kept) return kept;
        throw e;
      }
    })(),
  );
});
