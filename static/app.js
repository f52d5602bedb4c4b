// Entry point: finds out whether the visitor is logged in (/user/me: the session cookie
// is HttpOnly, so the page cannot read it), then routes by the URL hash:
//   #/login  #/register                    logged out
//   #/friends  #/groups  #/me              home tabs
//   #/chat/10/<user id>  #/chat/11/<group id>  #/groupinfo/<group id>  #/newgroup   the detail pane
// On a phone the detail pane replaces the home pane; from 760 px wide both are shown.
// Hash routes need nothing from the server beyond index.html, and the back button works.
//
// Offline: sw.js (registered below) keeps the app's own files, so a reload without a
// network still opens the app; the profile, contacts, outbox and drafts kept on the device
// (store.js) let it start as the user last logged in, with the "offline" banner, and send
// what waits once the server can be reached again.

import * as api from './api.js';
import * as store from './store.js';
import { h, icon, toast } from './ui.js';
import { Session } from './session.js';
import { loginView, registerView } from './views/auth.js';
import { HomeView } from './views/home.js';
import { ChatView } from './views/chat.js';
import { newGroupView } from './views/newgroup.js';
import { GroupInfoView } from './views/groupinfo.js';
import { CMD } from './commands.js';

const root = document.getElementById('app');
let session = null; // the logged-in state, null when logged out
let shell = null; // {el, home, detail, banner} while logged in
let detail = null; // the view in the detail pane
let detailRoute = '';
let lastTab = 'friends';

api.setUnauthorizedHandler(() => {
  if (session) endSession('Your session has ended. Please log in again.');
});

function startSession(me) {
  if (session) session.stop();
  session = new Session(me);
  session.addEventListener('error', (e) => toast(e.detail.message));
  session.addEventListener('expired', () => endSession('Your session has ended. Please log in again.'));
  session.addEventListener('conn', () => showConn());
  session.addEventListener('outbox', () => showConn());
  // Removed from a group, or left it on another device: its screens close.
  session.addEventListener('group-gone', (e) => {
    const { id, name, removed } = e.detail;
    if (detailRoute === `#/chat/${CMD.GROUP}/${id}` || detailRoute === `#/groupinfo/${id}`) location.hash = '#/groups';
    if (removed) toast(`You were removed from “${name || 'a group'}”.`, 'error', 4000);
  });
  session.start();
  shell = null;
  lastTab = 'friends';
  if (/^#\/(login|register)?$/.test(location.hash) || !location.hash) location.hash = '#/friends';
  route();
}

function endSession(message) {
  if (session) session.stop();
  session = null;
  shell = null;
  closeDetail();
  if (message) toast(message);
  if (location.hash !== '#/login') location.hash = '#/login';
  else route();
}

async function logout() {
  if (session) store.forget(session.me.id); // nothing of the user stays on this device
  try {
    await api.logout();
  } catch (e) {
    // The token is revoked only if the server heard us: say so, but log out locally anyway.
    if (e.status !== 401) toast(`Logged out here, but the server could not be told: ${e.message}`);
  }
  endSession();
}

/** The connection banner: visible whenever the chat connection is down. */
function showConn() {
  if (!shell || !session) return;
  const state = session.connState;
  const down = state === 'reconnecting' || state === 'offline';
  shell.banner.hidden = !down;
  shell.banner.dataset.state = state;
  root.classList.toggle('offline', down);
  const n = session.outboxCount();
  const waiting = n ? ` ${n} message${n === 1 ? '' : 's'} waiting to be sent.` : '';
  const full = n >= store.MAX_OUTBOX ? ` The outbox is full (${store.MAX_OUTBOX}).` : '';
  shell.bannerText.textContent = (state === 'offline' ? 'You are offline.' : 'Connection lost. Reconnecting…') + waiting + full;
}

function buildShell() {
  const home = new HomeView(session, { onLogout: logout });
  const detailPane = h('main', { class: 'detail' });
  const bannerText = h('span', { text: 'Connection lost. Reconnecting…' });
  const banner = h('div', { class: 'conn-banner', role: 'status', 'data-testid': 'conn-banner', hidden: true }, h('span', { class: 'spinner', 'aria-hidden': 'true' }), bannerText);
  const el = h('div', { class: 'shell-wrap' }, banner, h('div', { class: 'shell' }, home.el, detailPane));
  shell = { el, home, detailPane, banner, bannerText };
  root.replaceChildren(el);
  showConn();
}

function closeDetail() {
  if (detail) detail.destroy();
  detail = null;
  detailRoute = '';
}

function placeholder() {
  return {
    el: h('div', { class: 'placeholder', 'data-testid': 'placeholder' }, icon('chat', 'big'), h('p', { text: 'Choose a friend or a group to start chatting.' })),
    destroy() {},
  };
}

function setDetail(routeKey, make) {
  if (detailRoute === routeKey && detail) return;
  closeDetail();
  detail = make();
  detailRoute = routeKey;
  shell.detailPane.replaceChildren(detail.el);
  detail.focus?.();
}

function route() {
  const hash = location.hash || '#/';
  const parts = hash.replace(/^#\/?/, '').split('/');
  if (!session) {
    closeDetail();
    const view = parts[0] === 'register' ? registerView({ onLoggedIn: startSession }) : loginView({ onLoggedIn: startSession });
    if (parts[0] !== 'register' && parts[0] !== 'login') history.replaceState(null, '', '#/login');
    root.replaceChildren(view.el);
    document.title = 'fastim';
    view.focus();
    return;
  }
  if (!shell) buildShell();
  const [page, a, b] = parts;
  let open = false;
  if (page === 'chat' && (a === String(CMD.SINGLE) || a === String(CMD.GROUP)) && /^\d+$/.test(b || '')) {
    const cmd = Number(a);
    lastTab = cmd === CMD.SINGLE ? 'friends' : 'groups';
    setDetail(hash, () => new ChatView(session, cmd, Number(b), { backHref: `#/${lastTab}` }));
    open = true;
  } else if (page === 'groupinfo' && /^\d+$/.test(a || '')) {
    lastTab = 'groups';
    setDetail(hash, () => new GroupInfoView(session, Number(a), { backHref: `#/chat/${CMD.GROUP}/${a}` }));
    open = true;
  } else if (page === 'newgroup') {
    lastTab = 'me';
    setDetail(hash, () =>
      newGroupView(session, {
        backHref: '#/me',
        onCreated: (g) => {
          toast(`Group “${g.name}” created.`, 'ok', 3000);
          location.hash = `#/chat/${CMD.GROUP}/${g.id}`;
        },
      }),
    );
    open = true;
  } else {
    lastTab = ['friends', 'groups', 'me'].includes(page) ? page : 'friends';
    if (page !== lastTab) history.replaceState(null, '', `#/${lastTab}`);
    // Side by side (wide screens), a tab changes the list only: the open conversation stays.
    const sideBySide = matchMedia('(min-width: 760px)').matches;
    if (!(sideBySide && detail && detailRoute !== 'placeholder')) setDetail('placeholder', placeholder);
  }
  shell.home.setTab(lastTab);
  shell.home.render(); // the open conversation is highlighted in the list on wide screens
  root.classList.toggle('detail-open', open);
}

window.addEventListener('hashchange', route);
// From side by side to one pane (a window made narrow, a tablet turned): a conversation
// kept open behind the list would read the messages nobody sees. Route again.
matchMedia('(min-width: 760px)').addEventListener('change', (e) => !e.matches && session && shell && route());

async function boot() {
  try {
    startSession(await api.me());
  } catch (e) {
    if (e.status === 401) {
      store.lastUserSet(null);
      route();
      return;
    }
    // The server cannot be reached: start as the user last logged in here, from what the
    // device kept; the socket connects when it can (and a 401 then ends the session).
    const kept = !e.status && (await store.lastUserGet());
    if (kept) {
      startSession(kept);
      return;
    }
    // The server is unreachable or broken: say so, and offer to try again.
    const retry = h('button', { type: 'button', class: 'btn primary', 'data-testid': 'boot-retry', text: 'Try again' });
    retry.addEventListener('click', () => {
      root.replaceChildren(h('div', { class: 'boot', text: 'Loading…' }));
      boot();
    });
    root.replaceChildren(h('div', { class: 'boot', 'data-testid': 'boot-error' }, h('p', { text: `fastim cannot start: ${e.message}` }), retry));
  }
}

/** The service worker that keeps the app's files for offline starts (sw.js). Over https
 *  with a certificate the browser does not trust, registration fails: harmless. */
function registerWorker() {
  if (!('serviceWorker' in navigator)) return;
  navigator.serviceWorker.register('/sw.js', { scope: '/' }).catch(() => {
    // no offline start on this origin; everything else works
  });
}

registerWorker();
boot();
