#!/usr/bin/env node
// Browser tests of fastim's web client (static/), in Debian's Chromium driven by
// playwright-core. Run by tests/browser.rs (`cargo test --test browser`), or by hand:
//
//   node tests/browser/run.mjs --url http://127.0.0.1:8080 \
//        [--server-bin target/debug/fastim --data-dir /tmp/x] [--screenshots target/screenshots]
//
// --url          a running server (scenarios 1, 2, 3, 5 use it);
// --server-bin   the fastim binary: the restart scenarios (4, 11) run their own server with it,
//                on --data-dir, so that it can kill it and start it again on the same
//                port and data; without it scenario 4 is skipped.
// --static-dir D the servers of scenarios 4 and 11 serve the client from D, not the binary
//                (to try edits of static/ without a rebuild).
// --only N,M     run only these scenarios (they build on each other: 2 needs 1, …).
// --many-token   the session token of a user with 1,000 friends, each with a message
//                (tests/browser.rs seeds it): scenario 8 times the rendering of their list.
// --spki B64     the server's TLS public key (SHA-256 of its SPKI, base64), for an
//                https:// --url with a self-signed certificate: Chromium trusts it with
//                --ignore-certificate-errors-spki-list (and nothing else); the API calls
//                made from node need NODE_EXTRA_CA_CERTS=<the certificate file>.
//
// Every page is also watched for uncaught errors, Content-Security-Policy refusals and
// requests leaving 127.0.0.1: any of these fails the run. Exit status 0 = all passed.

import { mkdirSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { parseArgs } from 'node:util';
import { chromium } from 'playwright-core';
import { ServerProcess, assert, makePng, until } from './lib.mjs';
import { axeRun, describe } from './a11y.mjs';

const { values: opt } = parseArgs({
  options: {
    url: { type: 'string' },
    'server-bin': { type: 'string' },
    'data-dir': { type: 'string' },
    screenshots: { type: 'string', default: 'target/screenshots' },
    only: { type: 'string' },
    'time-limit': { type: 'string', default: '240' },
    'many-token': { type: 'string' },
    spki: { type: 'string' },
    'static-dir': { type: 'string' },
  },
});
if (!opt.url) {
  console.error('usage: run.mjs --url http://HOST:PORT [--server-bin PATH --data-dir DIR] [--screenshots DIR]');
  process.exit(2);
}
const BASE = opt.url.replace(/\/$/, '');
const HTTPS = BASE.startsWith('https://');
const SHOTS = opt.screenshots;
mkdirSync(SHOTS, { recursive: true });
const only = opt.only ? new Set(opt.only.split(',').map(Number)) : null;

const PHONE = { width: 390, height: 844 };
const DESKTOP = { width: 1280, height: 800 };
const T = 10_000; // default wait for something to show up

const problems = []; // page errors, CSP refusals, external requests: fail the run
const pages = new Map(); // name -> page, for failure screenshots
const consoleLog = [];
let restartServer = null;

// A hard limit of our own, below the Rust side's, so that we still clean up and report.
const deadline = setTimeout(
  async () => {
    console.error(`run.mjs: time limit of ${opt['time-limit']} s reached`);
    await failureDump('timeout');
    await restartServer?.kill();
    process.exit(3);
  },
  Number(opt['time-limit']) * 1000,
);
deadline.unref();

const browser = await chromium.launch({
  executablePath: process.env.CHROMIUM || '/usr/bin/chromium',
  headless: true,
  timeout: 30_000,
  args: [
    '--headless', '--no-sandbox', '--disable-gpu', '--disable-quic', '--no-first-run', '--disable-background-networking', '--disable-component-update', '--disable-sync',
    ...(opt.spki ? [`--ignore-certificate-errors-spki-list=${opt.spki}`] : []),
  ],
});

// --- helpers ------------------------------------------------------------------------------

/** The arguments of the servers that scenarios 4 and 11 start, kill and restart. */
function ownServerArgs() {
  const args = ['--data-dir', opt['data-dir'], '--resource-dir', join(opt['data-dir'], 'resource')];
  return opt['static-dir'] ? [...args, '--static-dir', opt['static-dir']] : args;
}

const run = Date.now().toString().slice(-7);
let mobileSeq = 0;
const newMobile = () => `+86139${run}${mobileSeq++}`;

function watch(page, name) {
  pages.set(name, page);
  page.setDefaultTimeout(T);
  page.on('pageerror', (e) => problems.push(`${name}: uncaught error in the page: ${e.message}`));
  page.on('console', (m) => {
    const text = m.text();
    consoleLog.push(`[${name}] console.${m.type()}: ${text}`);
    if (/Content Security Policy|Refused to (load|connect|execute|apply)/.test(text)) problems.push(`${name}: CSP refusal: ${text}`);
  });
  page.on('request', (r) => {
    const u = new URL(r.url());
    if (!['blob:', 'data:'].includes(u.protocol) && u.hostname !== '127.0.0.1') problems.push(`${name}: request outside 127.0.0.1: ${r.url()}`);
  });
}

// The Sec-WebSocket-Extensions answer of each page's /chat handshakes, from the
// DevTools protocol (a page's WebSocket object does not show it).
const chatExtensions = new Map(); // page name -> [extensions header of each /chat handshake]
const chatReceived = new Map(); // page name -> [each text message received on /chat, parsed]
const chatUrls = new Map(); // page name -> [URL of each /chat socket]

async function watchHandshakes(page, name) {
  const cdp = await page.context().newCDPSession(page);
  await cdp.send('Network.enable');
  const chatSockets = new Set();
  cdp.on('Network.webSocketCreated', (e) => {
    if (new URL(e.url).pathname !== '/chat') return;
    chatSockets.add(e.requestId);
    if (!chatUrls.has(name)) chatUrls.set(name, []);
    chatUrls.get(name).push(e.url);
  });
  cdp.on('Network.webSocketHandshakeResponseReceived', (e) => {
    if (!chatSockets.has(e.requestId)) return;
    const headers = e.response.headers || {};
    const ext = Object.entries(headers).find(([k]) => k.toLowerCase() === 'sec-websocket-extensions');
    if (!chatExtensions.has(name)) chatExtensions.set(name, []);
    chatExtensions.get(name).push(ext ? ext[1] : '');
  });
  cdp.on('Network.webSocketFrameReceived', (e) => {
    if (!chatSockets.has(e.requestId) || e.response.opcode !== 1) return;
    if (!chatReceived.has(name)) chatReceived.set(name, []);
    try {
      chatReceived.get(name).push(JSON.parse(e.response.payloadData));
    } catch {
      // not JSON: nothing the checks below look at
    }
  });
}

async function newUser(name, { phone = true } = {}) {
  const ctx = await browser.newContext(phone ? { viewport: PHONE, isMobile: true, hasTouch: true } : { viewport: DESKTOP });
  const page = await ctx.newPage();
  watch(page, name);
  await watchHandshakes(page, name);
  return { name, ctx, page };
}

const tid = (page, id) => page.getByTestId(id);
const message = (page, text) => tid(page, 'message-list').getByTestId('message').filter({ hasText: text });

/** Screenshots at phone and at desktop size; returns the page to the size it had. */
async function shoot(page, name) {
  const before = page.viewportSize();
  for (const [label, size] of [['phone', PHONE], ['desktop', DESKTOP]]) {
    await page.setViewportSize(size);
    await page.waitForTimeout(200);
    await page.screenshot({ path: join(SHOTS, `${name}-${label}.png`) });
  }
  await page.setViewportSize(before);
  await page.waitForTimeout(100);
}

/** Registers through the API (fast setup when the form itself is not under test). */
async function apiRegister(user, base, nickname, extra = {}) {
  const mobile = newMobile();
  const r = await user.ctx.request.post(`${base}/user/register`, { data: { mobile, passwd: 'secret-pw', nickname, ...extra } });
  const body = await r.json();
  assert(body.code === 0, `register ${nickname}: ${JSON.stringify(body)}`);
  Object.assign(user, { mobile, password: 'secret-pw', nickname, id: body.data.id });
  return body.data;
}

/** `P` asks `Q` to be friends and `Q` accepts, through the API. */
async function apiBefriend(P, Q, base) {
  const asked = await (await P.ctx.request.post(`${base}/contact/addfriend`, { data: { dstname: Q.mobile } })).json();
  assert(asked.code === 0 && asked.data.status === 'requested', `${P.nickname} asks ${Q.nickname}: ${JSON.stringify(asked)}`);
  const ok = await (await Q.ctx.request.post(`${base}/contact/accept`, { data: { dstid: P.id } })).json();
  assert(ok.code === 0, `${Q.nickname} accepts ${P.nickname}: ${JSON.stringify(ok)}`);
}

/** Types and sends with the button (on a phone, Enter makes a new line). */
async function sendText(page, text) {
  await tid(page, 'chat-input').fill(text);
  await tid(page, 'chat-send').click();
}

/** Waits until the message with `text` is shown on `page` as acknowledged. */
async function expectSent(page, text) {
  const m = message(page, text).last();
  await m.waitFor();
  await until(`"${text}" acknowledged`, async () => (await m.getAttribute('data-status')) === 'sent');
}

async function expectImageRendered(img) {
  await img.waitFor();
  await until('the picture decoded', () => img.evaluate((el) => el.complete && el.naturalWidth > 0));
}

async function openFriendsTab(page) {
  await tid(page, 'tab-friends').click();
  await tid(page, 'home-title').filter({ hasText: 'Friends' }).waitFor();
}

async function failureDump(tag) {
  for (const [name, page] of pages) {
    try {
      await page.screenshot({ path: join(SHOTS, `failure-${tag}-${name}.png`), timeout: 3000 });
    } catch {
      // page already closed
    }
  }
  console.error(consoleLog.slice(-40).join('\n'));
  if (problems.length) console.error(`page problems:\n${problems.join('\n')}`);
  if (restartServer) console.error(`restart-scenario server log (tail):\n${restartServer.log.slice(-15).join('\n')}`);
}

// --- scenarios --------------------------------------------------------------------------

const A = await newUser('A', { phone: true });
const B = await newUser('B', { phone: false });
let C;
let group;

async function scenario1() {
  // A registers through the form, with an avatar; B too, without one.
  await A.page.goto(BASE);
  await tid(A.page, 'login-view').waitFor();
  await shoot(A.page, '01-login');
  await tid(A.page, 'goto-register').click();
  await tid(A.page, 'register-view').waitFor();
  await tid(A.page, 'reg-avatar-file').setInputFiles({ name: 'me.png', mimeType: 'image/png', buffer: makePng(96, 96, 1) });
  await expectImageRendered(tid(A.page, 'reg-avatar-img'));
  Object.assign(A, { mobile: newMobile(), password: 'pass word+1', nickname: 'Alice' });
  await tid(A.page, 'reg-mobile').fill(A.mobile);
  await tid(A.page, 'reg-password').fill(A.password);
  await tid(A.page, 'reg-password2').fill(A.password);
  await tid(A.page, 'reg-nickname').fill(A.nickname);
  await tid(A.page, 'reg-sex-W').check();
  await tid(A.page, 'reg-memo').fill('Likes tea and long walks');
  await shoot(A.page, '02-register');
  await tid(A.page, 'reg-submit').click();
  await tid(A.page, 'home').waitFor();
  const meA = await (await A.ctx.request.get(`${BASE}/user/me`)).json();
  assert(meA.data.avatar.startsWith('/resource/'), `A's avatar was uploaded and saved: ${meA.data.avatar}`);
  assert(meA.data.memo === 'Likes tea and long walks' && meA.data.sex === 'W', `A's memo and sex saved: ${JSON.stringify(meA.data)}`);
  A.id = meA.data.id;
  if (HTTPS) {
    // Served over the server's own TLS: the page is https, the session cookie Secure.
    assert((await A.page.evaluate(() => location.protocol)) === 'https:', 'the page is served over https');
    const token = (await A.ctx.cookies(BASE)).find((c) => c.name === 'fastim_token');
    assert(token && token.secure && token.httpOnly, `the session cookie is Secure and HttpOnly: ${JSON.stringify(token)}`);
    // A service worker needs a certificate the browser trusts; whether Chromium takes this
    // one or not, the app works the same (a refused registration is caught).
    const worker = await A.page.evaluate(async () => {
      const reg = await navigator.serviceWorker.getRegistration().catch(() => null);
      return reg ? 'registered' : 'not registered';
    });
    console.log(`# https: the service worker is ${worker}`);
  }

  await B.page.goto(`${BASE}/#/register`);
  Object.assign(B, { mobile: newMobile(), password: 'hunter22', nickname: 'Bob' });
  await tid(B.page, 'reg-mobile').fill(B.mobile);
  await tid(B.page, 'reg-password').fill(B.password);
  await tid(B.page, 'reg-password2').fill(B.password);
  await tid(B.page, 'reg-nickname').fill(B.nickname);
  await tid(B.page, 'reg-sex-M').check();
  await tid(B.page, 'reg-submit').click();
  await tid(B.page, 'home').waitFor();
  B.id = (await (await B.ctx.request.get(`${BASE}/user/me`)).json()).data.id;

  // A asks B by mobile number; B, on the friends list, sees the request come and
  // accepts it; both are friends without a reload.
  await openFriendsTab(B.page);
  await tid(A.page, 'tab-me').click();
  await tid(A.page, 'addfriend-input').fill(B.mobile);
  await tid(A.page, 'addfriend-submit').click();
  await tid(A.page, 'addfriend-result').filter({ hasText: 'Request sent to Bob' }).waitFor();
  const request = tid(B.page, 'request-item').filter({ hasText: 'Alice' });
  await request.waitFor();
  await request.getByTestId('request-accept').click();
  await openFriendsTab(A.page);
  await tid(A.page, 'friend-item').filter({ hasText: 'Bob' }).waitFor();
  const aliceRow = tid(B.page, 'friend-item').filter({ hasText: 'Alice' });
  await aliceRow.waitFor();
  await until('the request left B\'s list', async () => (await tid(B.page, 'request-item').count()) === 0);

  // A writes to B; B, on the list, gets an unread count; opening the chat clears it.
  await tid(A.page, 'friend-item').filter({ hasText: 'Bob' }).click();
  await tid(A.page, 'chat-title').filter({ hasText: 'Bob' }).waitFor();
  await sendText(A.page, 'Hello Bob!');
  await expectSent(A.page, 'Hello Bob!');
  // Chromium offers permessage-deflate on every socket; the server accepts it (RFC 7692).
  await until('A\'s /chat handshake negotiated permessage-deflate', () =>
    (chatExtensions.get('A') || []).some((ext) => ext.startsWith('permessage-deflate')),
  );
  if (HTTPS) {
    await until("A's /chat socket is wss://", () => (chatUrls.get('A') || []).some((u) => u.startsWith('wss://')));
  }
  await aliceRow.getByTestId('unread-badge').filter({ hasText: '1' }).waitFor();
  await aliceRow.click();
  await message(B.page, 'Hello Bob!').waitFor();
  assert((await message(B.page, 'Hello Bob!').getAttribute('class')).includes('theirs'), "A's message is on the left for B");
  assert((await message(A.page, 'Hello Bob!').getAttribute('class')).includes('mine'), 'own message on the right');
  await until('the unread badge cleared', async () => (await aliceRow.getByTestId('unread-badge').count()) === 0);
  // B opened the chat, so the server tells A that Bob has read it.
  await until('A sees "seen" on her message', async () => (await message(A.page, 'Hello Bob!').getByTestId('msg-seen').getAttribute('data-seen')) === 'true');

  // Presence: they became friends while both were online, so each was told the other's
  // state; B sees Alice online in the list and in the chat's header.
  await until('B sees Alice online in the list', async () => (await aliceRow.getByTestId('presence').getAttribute('data-online')) === 'true');
  await tid(B.page, 'chat-sub').filter({ hasText: 'online' }).waitFor();
  // Typing: Alice types, B sees it; her message ends it. (A notice goes at most once a
  // second per conversation, and Alice typed her first message less than a second ago.)
  await A.page.waitForTimeout(1100);
  await tid(A.page, 'chat-input').fill('Are you there?');
  await tid(B.page, 'typing').filter({ hasText: 'Alice is typing…' }).waitFor();
  await tid(A.page, 'chat-send').click();
  await message(B.page, 'Are you there?').waitFor();
  await until("Alice's message ends her typing", async () => (await tid(B.page, 'typing').textContent()) === '');

  // B answers with an emoji from the panel (Unicode text, media 1).
  await tid(B.page, 'emoji-toggle').click();
  await tid(B.page, 'emoji-panel').waitFor();
  await tid(B.page, 'emoji').filter({ hasText: '😂' }).click();
  await tid(B.page, 'emoji').filter({ hasText: '👍' }).click();
  await tid(B.page, 'chat-send').click();
  await expectSent(B.page, '😂👍');
  await message(A.page, '😂👍').waitFor();
  await tid(B.page, 'emoji-toggle').click();

  // A sends a picture; B sees it decoded.
  await tid(A.page, 'image-input').setInputFiles({ name: 'photo.png', mimeType: 'image/png', buffer: makePng(320, 200, 2) });
  const mine = tid(A.page, 'message').filter({ has: A.page.getByTestId('msg-image') }).last();
  await until('the picture acknowledged', async () => (await mine.getAttribute('data-status')) === 'sent');
  const img = tid(B.page, 'message-list').getByTestId('msg-image').last();
  await expectImageRendered(img);
  assert((await img.getAttribute('src')).startsWith('/resource/'), 'the picture is served from /resource/');
  assert(await tid(A.page, 'camera-button').isVisible(), 'the camera button is shown on a touch screen');
  assert(!(await tid(B.page, 'camera-button').isVisible()), 'no camera button on a desktop');
  await sendText(B.page, 'Nice picture! Where was that taken? It looks like somewhere by the sea, with that light.');
  await message(A.page, 'Nice picture!').waitFor();
  await expectImageRendered(tid(A.page, 'message-list').getByTestId('msg-image').last());
  await shoot(A.page, '04-chat');
  await tid(A.page, 'chat-back').click();
  await tid(A.page, 'friend-list').waitFor();
}

async function scenario7() {
  // A sends a large picture: chat shows its thumbnail (at most 320 px, its size known
  // before it loads), and a click or a tap opens the original in the viewer.
  await tid(A.page, 'friend-item').filter({ hasText: 'Bob' }).click();
  await tid(A.page, 'chat-title').filter({ hasText: 'Bob' }).waitFor();
  const shown = tid(B.page, 'message-list').getByTestId('msg-image');
  const before = await shown.count();
  await tid(A.page, 'image-input').setInputFiles({ name: 'wide.png', mimeType: 'image/png', buffer: makePng(1600, 1000, 5) });
  const img = shown.nth(before);
  await expectImageRendered(img);
  const t = await img.evaluate((el) => ({ src: el.getAttribute('src'), w: el.naturalWidth, h: el.naturalHeight, aw: el.getAttribute('width'), ah: el.getAttribute('height'), thumb: el.hasAttribute('data-thumb'), alt: el.alt }));
  assert(t.thumb && /^\/resource\/[0-9a-f]{64}\.jpg$/.test(t.src), `B is shown the thumbnail: ${JSON.stringify(t)}`);
  assert(Math.max(t.w, t.h) <= 320 && t.w === 320 && t.h === 200, `the thumbnail is 320 x 200: ${JSON.stringify(t)}`);
  assert(t.aw === '320' && t.ah === '200', `width and height are given, so the list does not jump: ${JSON.stringify(t)}`);
  assert(t.alt === 'Picture from Alice', `alt text: ${t.alt}`);
  await shoot(B.page, '11-picture-thumbnail');

  // A click opens the original; the focus is on the close button; Escape closes and the
  // focus returns to the picture.
  const opener = tid(B.page, 'msg-image-open').nth(before);
  await opener.click();
  const viewer = tid(B.page, 'viewer');
  await viewer.waitFor();
  const full = tid(B.page, 'viewer-image');
  await expectImageRendered(full);
  const o = await full.evaluate((el) => ({ src: el.getAttribute('src'), w: el.naturalWidth, h: el.naturalHeight, alt: el.alt }));
  assert(/^\/resource\/[0-9a-f]{64}\.png$/.test(o.src) && o.w === 1600 && o.h === 1000, `the viewer shows the original: ${JSON.stringify(o)}`);
  assert(o.alt === 'Picture from Alice', `the viewer's alt text: ${o.alt}`);
  const focused = () => B.page.evaluate(() => document.activeElement?.getAttribute('data-testid'));
  assert((await focused()) === 'viewer-close', `the close button has the focus: ${await focused()}`);
  await shoot(B.page, '12-picture-viewer');
  await B.page.keyboard.press('Escape');
  await until('Escape closes the viewer', async () => (await viewer.count()) === 0);
  assert((await focused()) === 'msg-image-open', `the focus is back on the picture: ${await focused()}`);
  // By keyboard alone: Enter on the picture opens it, Enter on the close button closes it.
  await B.page.keyboard.press('Enter');
  await viewer.waitFor();
  await B.page.keyboard.press('Enter');
  await until('the close button closes the viewer', async () => (await viewer.count()) === 0);

  // A, on a phone: a tap on their own picture opens it; the button closes it.
  const mine = tid(A.page, 'msg-image-open').last();
  await until('the picture acknowledged', async () => (await tid(A.page, 'message').last().getAttribute('data-status')) === 'sent');
  await mine.tap();
  await tid(A.page, 'viewer').waitFor();
  await expectImageRendered(tid(A.page, 'viewer-image'));
  await shoot(A.page, '13-picture-viewer-own');
  await tid(A.page, 'viewer-close').tap();
  await until('the close button closes the viewer', async () => (await tid(A.page, 'viewer').count()) === 0);

  // A message without a thumbnail (fastIM's client, pictures stored before thumbnails)
  // falls back to the original. Sent by B from a socket of its own, as another client would.
  const sent = await B.page.evaluate(
    ([url, to]) =>
      new Promise((resolve, reject) => {
        const ws = new WebSocket(`${location.origin.replace(/^http/, 'ws')}/chat`);
        ws.onopen = () => ws.send(JSON.stringify({ cmd: 10, dstid: to, media: 4, url, ref: 'no-thumb' }));
        ws.onmessage = (e) => {
          const f = JSON.parse(e.data);
          if (f.ref === 'no-thumb') {
            ws.close();
            resolve(f);
          }
        };
        ws.onerror = () => reject(new Error('socket error'));
      }),
    [o.src, A.id],
  );
  assert(sent.cmd === 21, `the message without pic was stored: ${JSON.stringify(sent)}`);
  const fallback = tid(A.page, 'message-list').locator(`[data-testid=message][data-id="${sent.id}"]`).getByTestId('msg-image');
  await expectImageRendered(fallback);
  const f = await fallback.evaluate((el) => ({ src: el.getAttribute('src'), thumb: el.hasAttribute('data-thumb'), w: el.naturalWidth }));
  assert(f.src === o.src && !f.thumb && f.w === 1600, `the original is shown without a thumbnail: ${JSON.stringify(f)}`);
  await shoot(A.page, '14-picture-fallback');
  await tid(A.page, 'chat-back').click();
  await tid(A.page, 'friend-list').waitFor();
}

async function scenario2() {
  // C: a third user, who is nobody's friend.
  C = await newUser('C', { phone: false });
  await apiRegister(C, BASE, 'Carol', { memo: 'New here' });
  // C gets no member list, so the names of senders who are not C's friends must come
  // from /user/find (fastIM's client called it, but the route did not exist: bug 16).
  await C.ctx.route('**/contact/members*', (r) => r.fulfill({ json: { code: 0, msg: '', rows: [], total: 0 } }));
  const finds = new Set();
  C.page.on('request', (r) => r.url().includes('/user/find') && finds.add(new URL(r.url()).searchParams.get('id')));
  await C.page.goto(BASE);
  await tid(C.page, 'home').waitFor();

  // A creates a group with an icon and a category.
  group = { name: `Tea lovers ${run}` };
  await tid(A.page, 'tab-me').click();
  await tid(A.page, 'me-card').waitFor();
  await shoot(A.page, '07-me');
  await tid(A.page, 'goto-newgroup').click();
  await tid(A.page, 'newgroup-view').waitFor();
  await tid(A.page, 'group-icon-file').setInputFiles({ name: 'icon.png', mimeType: 'image/png', buffer: makePng(64, 64, 3) });
  await tid(A.page, 'group-name').fill(group.name);
  await tid(A.page, 'group-cate').selectOption('1');
  await tid(A.page, 'group-memo').fill('Green, black, oolong');
  await until('the icon uploaded', async () => !(await tid(A.page, 'group-icon-preview').evaluate((el) => el.classList.contains('loading'))));
  await shoot(A.page, '08-new-group');
  await tid(A.page, 'group-submit').click();
  await tid(A.page, 'chat-title').filter({ hasText: group.name }).waitFor();
  group.id = Number((await tid(A.page, 'chat-view').getAttribute('data-key')).split(':')[1]);
  const groups = await (await A.ctx.request.get(`${BASE}/contact/loadcommunity`)).json();
  const g = groups.rows.find((r) => r.id === group.id);
  assert(g && g.cate === 1 && g.icon.startsWith('/resource/') && g.memo === 'Green, black, oolong', `group saved: ${JSON.stringify(g)}`);

  // B and C join by name.
  for (const U of [B, C]) {
    await U.page.goto(`${BASE}/#/me`);
    await tid(U.page, 'joingroup-input').fill(group.name);
    await tid(U.page, 'joingroup-submit').click();
    await tid(U.page, 'joingroup-result').filter({ hasText: 'You joined' }).waitFor();
    await tid(U.page, 'tab-groups').click();
    await tid(U.page, 'group-item').filter({ hasText: group.name }).click();
    await tid(U.page, 'chat-title').filter({ hasText: group.name }).waitFor();
  }

  // Everyone sees everyone's messages with the sender's name, friends or not.
  await sendText(A.page, 'Welcome to the group!');
  await expectSent(A.page, 'Welcome to the group!');
  for (const U of [B, C]) {
    const m = message(U.page, 'Welcome to the group!');
    await m.waitFor();
    await m.getByTestId('msg-sender').filter({ hasText: 'Alice' }).waitFor();
  }
  // B and C have the group open: they read it, and A counts them.
  await until('A sees "Seen by 2"', async () => (await message(A.page, 'Welcome to the group!').getByTestId('msg-seen').textContent()) === 'Seen by 2');
  await sendText(C.page, 'Hi all, Carol here 👋');
  await expectSent(C.page, 'Carol here');
  for (const U of [A, B]) await message(U.page, 'Carol here').getByTestId('msg-sender').filter({ hasText: 'Carol' }).waitFor();
  await sendText(B.page, 'Hi Carol! Oolong is the best.');
  for (const U of [A, C]) await message(U.page, 'Oolong is the best').getByTestId('msg-sender').filter({ hasText: 'Bob' }).waitFor();
  assert((await message(A.page, 'Welcome to the group!').count()) === 1, 'no echo of own group message');
  assert(finds.has(String(A.id)) && finds.has(String(B.id)), `C looked the senders up with /user/find: ${[...finds]}`);
  await shoot(A.page, '05-group-chat');

  // fastIM bug 17: a 1:1 message shows only in the chat with its sender. C befriends A
  // and writes while A has the chat with B open.
  await A.page.goto(`${BASE}/#/chat/10/${B.id}`);
  await message(A.page, 'Hello Bob!').waitFor();
  await apiBefriend(C, A, BASE);
  await C.page.goto(`${BASE}/#/chat/10/${A.id}`);
  await tid(C.page, 'chat-title').filter({ hasText: 'Alice' }).waitFor();
  await sendText(C.page, 'Psst, Alice, private question');
  await expectSent(C.page, 'private question');
  await A.page.waitForTimeout(700);
  assert((await message(A.page, 'private question').count()) === 0, "C's message is not shown in the chat with B");
  await tid(A.page, 'chat-back').click();
  const carolRow = tid(A.page, 'friend-item').filter({ hasText: 'Carol' });
  await carolRow.getByTestId('unread-badge').filter({ hasText: '1' }).waitFor();
  await shoot(A.page, '03-friends');
  await carolRow.click();
  await message(A.page, 'private question').waitFor();
}

async function scenario3() {
  // A reload keeps the session (cookie) and the history (server), older pages on scroll.
  await B.page.goto(`${BASE}/#/chat/10/${A.id}`);
  for (let i = 1; i <= 34; i++) await sendText(B.page, `filler ${i}`);
  await expectSent(B.page, 'filler 34');
  await A.page.goto(`${BASE}/#/chat/10/${B.id}`);
  await A.page.reload();
  await tid(A.page, 'chat-title').filter({ hasText: 'Bob' }).waitFor();
  await message(A.page, 'filler 34').waitFor();
  assert((await message(A.page, 'Hello Bob!').count()) === 0, 'only the newest page is loaded at first');
  // Scroll to the top: the older page comes in, with the picture and the first message.
  await until('the older page loaded', async () => {
    await tid(A.page, 'message-list').evaluate((el) => (el.scrollTop = 0));
    return (await message(A.page, 'Hello Bob!').count()) === 1;
  });
  await expectImageRendered(tid(A.page, 'message-list').getByTestId('msg-image').last());
  await message(A.page, '😂👍').waitFor();
  await tid(A.page, 'history-state').filter({ hasText: 'Start of the conversation' }).waitFor();
  const ids = await tid(A.page, 'message').evaluateAll((els) => els.map((e) => Number(e.dataset.id)));
  assert(ids.every((id, i) => i === 0 || id > ids[i - 1]), `messages in id order without duplicates: ${ids}`);

  // A second device of Alice's: its first sync asks for everything as one batch
  // message (cmd 25), which the server compresses as a whole (tests/browser.rs reads
  // the server's metrics afterwards), and the whole history is there.
  const A2 = await newUser('A2', { phone: false });
  await A2.page.goto(`${BASE}/`);
  await tid(A2.page, 'login-mobile').fill(A.mobile);
  await tid(A2.page, 'login-password').fill(A.password);
  await tid(A2.page, 'login-submit').click();
  await until('the second device synced in one batch', async () =>
    (chatReceived.get('A2') || []).some((f) => f.cmd === 25 && (f.messages || []).length >= 35),
  );
  const batch = chatReceived.get('A2').find((f) => f.cmd === 25);
  assert(
    batch.messages.some((m) => m.content === 'filler 34') && batch.more === false,
    `the batch holds the newest message: ${JSON.stringify(batch).slice(0, 200)}`,
  );
  assert(
    (chatExtensions.get('A2') || []).some((ext) => ext.startsWith('permessage-deflate')),
    'the second device negotiated permessage-deflate',
  );
  await A2.page.goto(`${BASE}/#/chat/10/${B.id}`);
  await message(A2.page, 'filler 34').waitFor();
  await A2.ctx.close();
}

async function scenario5() {
  // Errors from the API are shown in words.
  const E = await newUser('E', { phone: true });
  await E.page.goto(BASE);
  await tid(E.page, 'login-mobile').fill(A.mobile);
  await tid(E.page, 'login-password').fill('not the password');
  await tid(E.page, 'login-submit').click();
  await tid(E.page, 'login-error').filter({ hasText: 'wrong mobile number or password' }).waitFor();
  await tid(E.page, 'goto-register').click();
  await tid(E.page, 'reg-mobile').fill(A.mobile);
  await tid(E.page, 'reg-nickname').fill('Eve');
  // The password rule: the form's own check first, then the server's list of common ones.
  for (const [weak, said] of [['1234567', '8 to 128 characters'], ['Password1', 'most common passwords']]) {
    await tid(E.page, 'reg-password').fill(weak);
    await tid(E.page, 'reg-password2').fill(weak);
    await tid(E.page, 'reg-submit').click();
    await tid(E.page, 'reg-error').filter({ hasText: said }).waitFor();
  }
  await tid(E.page, 'reg-password').fill('whatever1');
  await tid(E.page, 'reg-password2').fill('whatever2');
  await tid(E.page, 'reg-submit').click();
  await tid(E.page, 'reg-error').filter({ hasText: 'not the same' }).waitFor();
  await tid(E.page, 'reg-password2').fill('whatever1');
  await tid(E.page, 'reg-submit').click();
  await tid(E.page, 'reg-error').filter({ hasText: 'already registered' }).waitFor();
  await shoot(E.page, '10-register-error');
  // Then a login with the right password works.
  await tid(E.page, 'goto-login').click();
  await tid(E.page, 'login-mobile').fill(A.mobile);
  await tid(E.page, 'login-password').fill(A.password);
  await tid(E.page, 'login-submit').click();
  await tid(E.page, 'home').waitFor();

  // Application errors in the app: already friends; a file that is not a picture.
  await B.page.goto(`${BASE}/#/me`);
  await tid(B.page, 'addfriend-input').fill(A.mobile);
  await tid(B.page, 'addfriend-submit').click();
  await tid(B.page, 'addfriend-result').filter({ hasText: 'already friends' }).waitFor();
  await B.page.goto(`${BASE}/#/chat/10/${A.id}`);
  await tid(B.page, 'image-input').setInputFiles({ name: 'notes.png', mimeType: 'image/png', buffer: Buffer.from('just some text, not a PNG') });
  await tid(B.page, 'msg-error').filter({ hasText: 'Upload failed' }).waitFor();
  await tid(B.page, 'msg-retry').waitFor();
  await shoot(B.page, '09-failed-upload');

  // Logout revokes the session: the old cookie no longer works.
  const [cookie] = (await E.ctx.cookies()).filter((c) => c.name === 'fastim_token');
  await E.page.goto(`${BASE}/#/me`);
  await tid(E.page, 'logout').click();
  await tid(E.page, 'login-view').waitFor();
  const r = await fetch(`${BASE}/user/me`, { headers: { Cookie: `fastim_token=${cookie.value}` } });
  assert(r.status === 401, `the token is revoked after logout (got ${r.status})`);
  await E.ctx.close();
  pages.delete('E');
}

async function scenario4() {
  // The server goes away while chats are open, and comes back on the same port and data.
  const srv = new ServerProcess(opt['server-bin'], ownServerArgs());
  restartServer = srv;
  const addr = await srv.start();
  const base = `http://${addr}`;
  const P = await newUser('P', { phone: true });
  const Q = await newUser('Q', { phone: false });
  await apiRegister(P, base, 'Pat');
  await apiRegister(Q, base, 'Quinn');
  await apiBefriend(P, Q, base);
  await P.page.goto(`${base}/#/chat/10/${Q.id}`);
  await Q.page.goto(`${base}/#/chat/10/${P.id}`);
  await sendText(P.page, 'before the restart');
  await message(Q.page, 'before the restart').waitFor();

  await srv.kill('SIGKILL');
  for (const U of [P, Q]) await tid(U.page, 'conn-banner').filter({ hasText: 'Reconnecting' }).waitFor();
  // Written while the server is down: waits in the outbox.
  await sendText(P.page, 'written while offline');
  await until('the offline message queued', async () => (await message(P.page, 'written while offline').getAttribute('data-status')) === 'queued');
  await shoot(P.page, '06-reconnecting');
  const queuedRef = await message(P.page, 'written while offline').getAttribute('data-ref');

  await srv.start(addr);
  for (const U of [P, Q]) await tid(U.page, 'conn-banner').waitFor({ state: 'hidden', timeout: 20_000 });
  await expectSent(P.page, 'written while offline');
  assert((await message(P.page, 'written while offline').getAttribute('data-ref')) === queuedRef, 'sent with the ref it was given when typed');
  await message(Q.page, 'written while offline').waitFor();
  await sendText(Q.page, 'after the restart');
  await message(P.page, 'after the restart').waitFor();

  // A graceful stop (SIGTERM: close 1001) and a message sent while P is away, caught up by sync.
  await srv.kill('SIGTERM');
  await tid(P.page, 'conn-banner').waitFor();
  await P.page.close();
  await srv.start(addr);
  await tid(Q.page, 'conn-banner').waitFor({ state: 'hidden', timeout: 20_000 });
  // P is away: Q's header says when P was last seen (stored at the stop, read at the start).
  await tid(Q.page, 'chat-sub').filter({ hasText: 'last seen' }).waitFor();
  await sendText(Q.page, 'while you were away');
  await expectSent(Q.page, 'while you were away');
  P.page = await P.ctx.newPage();
  watch(P.page, 'P');
  await P.page.goto(`${base}/#/friends`);
  await tid(P.page, 'friend-item').filter({ hasText: 'Quinn' }).getByTestId('unread-badge').filter({ hasText: '1' }).waitFor();
  await tid(P.page, 'friend-item').filter({ hasText: 'Quinn' }).click();
  await message(P.page, 'while you were away').waitFor();
  const texts = await tid(P.page, 'msg-text').allTextContents();
  for (const t of ['before the restart', 'written while offline', 'after the restart', 'while you were away']) {
    assert(texts.filter((x) => x === t).length === 1, `"${t}" shown once after the restarts: ${JSON.stringify(texts)}`);
  }
  await srv.kill('SIGTERM');
  restartServer = null;
}

async function scenario11() {
  // A bad network: the browser offline, a server that stops answering, one killed, a
  // reload without a network. Every message is one bubble (by its ref) from the moment it
  // is typed, is sent with the ref it got then, and reaches the other side once.
  const srv = new ServerProcess(opt['server-bin'], ownServerArgs());
  restartServer = srv;
  const addr = await srv.start();
  const base = `http://${addr}`;
  const R = await newUser('R', { phone: true });
  const S = await newUser('S', { phone: false });
  await apiRegister(R, base, 'Rosa');
  await apiRegister(S, base, 'Sam');
  await apiBefriend(R, S, base);
  const stranger = await newUser('X', { phone: false });
  await apiRegister(stranger, base, 'Xena');
  await stranger.ctx.close();
  pages.delete('X');

  // A refusal for good (403: not a friend) is shown with the reason and not sent again.
  // Watches R's message list at every change: a text shown twice at the same time, even
  // for a moment (this scenario's texts are all different), is a duplicate bubble.
  await R.ctx.addInitScript(() => {
    window.fastimDuplicates = [];
    new MutationObserver(() => {
      const texts = [...document.querySelectorAll('[data-testid=message] [data-testid=msg-text]')].map((e) => e.textContent);
      const dup = texts.find((t, i) => texts.indexOf(t) !== i);
      if (dup && !window.fastimDuplicates.includes(dup)) window.fastimDuplicates.push(dup);
    }).observe(document, { childList: true, subtree: true });
  });
  const noDuplicates = async (when) => {
    const d = await R.page.evaluate(() => window.fastimDuplicates);
    assert(d.length === 0, `no message shown twice, even for a moment (${when}): ${JSON.stringify(d)}`);
  };
  await R.page.goto(`${base}/#/chat/10/${stranger.id}`);
  await sendText(R.page, 'to a stranger');
  const refused = message(R.page, 'to a stranger');
  await until('the refusal shown', async () => (await refused.getAttribute('data-status')) === 'failed');
  assert((await refused.getByTestId('msg-error').textContent()).includes('friends'), `the reason: ${await refused.getByTestId('msg-error').textContent()}`);
  await shoot(R.page, '21-refused');
  await refused.getByTestId('msg-discard').click();
  await until('the refused message deleted', async () => (await refused.count()) === 0);

  await S.page.goto(`${base}/#/chat/10/${R.id}`);

  // A busy server (cmd 22 with 503, put in by a route on the socket of a second device of
  // R's): the message waits, is sent again with its ref by itself, and arrives once.
  const R2 = await newUser('R2', { phone: false });
  await R2.ctx.request.post(`${base}/user/login`, { data: { mobile: R.mobile, passwd: R.password } });
  let busy = 0;
  await R2.page.routeWebSocket(/\/chat$/, (ws) => {
    const server = ws.connectToServer();
    ws.onMessage((m) => {
      const f = typeof m === 'string' ? JSON.parse(m) : null;
      if (f && f.cmd === 10 && f.content === 'to a busy server' && busy++ === 0) {
        ws.send(JSON.stringify({ cmd: 22, ref: f.ref, code: 503, msg: 'the server is busy' }));
        return;
      }
      server.send(m);
    });
    server.onMessage((m) => ws.send(m));
  });
  await R2.page.goto(`${base}/#/chat/10/${S.id}`);
  await sendText(R2.page, 'to a busy server');
  await message(R2.page, 'to a busy server').getByTestId('msg-status').filter({ hasText: 'the server is busy. Trying again' }).waitFor();
  await expectSent(R2.page, 'to a busy server');
  assert(busy === 2, `refused once, then sent again by itself: ${busy} tries`);
  await message(S.page, 'to a busy server').waitFor();
  await R2.ctx.close();
  pages.delete('R2');

  await R.page.goto(`${base}/#/chat/10/${S.id}`);
  await sendText(R.page, 'before the bad network');
  await expectSent(R.page, 'before the bad network');
  await message(S.page, 'before the bad network').waitFor();
  await until('the service worker controls the page', () => R.page.evaluate(() => Boolean(navigator.serviceWorker.controller)));

  const banner = tid(R.page, 'conn-banner');
  const bubbleRef = async (text) => {
    await message(R.page, text).waitFor();
    return message(R.page, text).getAttribute('data-ref');
  };
  /** One bubble for the text on R's side, with `ref`, acknowledged; one on S's side. */
  const onceOnBothSides = async (text, ref) => {
    await expectSent(R.page, text);
    await message(S.page, text).waitFor({ timeout: 15_000 });
    await R.page.waitForTimeout(500); // a second copy, if any, would be in by now
    assert((await message(R.page, text).count()) === 1, `"${text}" is one bubble for R`);
    assert((await R.page.locator(`[data-testid=message][data-ref="${ref}"]`).count()) === 1, `one bubble with ref ${ref}`);
    assert((await message(R.page, text).getAttribute('data-ref')) === ref, `"${text}" kept its ref`);
    assert((await message(S.page, text).count()) === 1, `"${text}" reached S once`);
  };

  // 1. The browser goes offline: the banner says so at once.
  let t0 = Date.now();
  await R.ctx.setOffline(true);
  await until('the offline banner', async () => (await banner.isVisible()) && (await banner.getAttribute('data-state')) === 'offline', 3000, 20);
  const offlineMs = Date.now() - t0;
  await sendText(R.page, 'typed while offline');
  const ref1 = await bubbleRef('typed while offline');
  await until('queued', async () => (await message(R.page, 'typed while offline').getAttribute('data-status')) === 'queued');
  await banner.filter({ hasText: '1 message waiting' }).waitFor();
  await shoot(R.page, '18-offline-pending');
  assert((await message(S.page, 'typed while offline').count()) === 0, 'nothing reached S while R was offline');
  t0 = Date.now();
  await R.ctx.setOffline(false);
  await banner.waitFor({ state: 'hidden' });
  const backMs = Date.now() - t0;
  await onceOnBothSides('typed while offline', ref1);

  // 2. The server stops answering (SIGSTOP) with the connection open, as a dead network
  //    path looks: a message sent then makes the client probe, and it notices in seconds.
  srv.child.kill('SIGSTOP');
  t0 = Date.now();
  await sendText(R.page, 'sent into silence');
  const ref2 = await bubbleRef('sent into silence');
  await until('the banner after the probe', () => banner.isVisible(), 4000, 20);
  const probeMs = Date.now() - t0;
  assert((await banner.getAttribute('data-state')) === 'reconnecting', 'reconnecting, not offline');
  await shoot(R.page, '19-reconnecting-pending');
  // The server wakes up: it reads the frame from the old connection and stores it; the
  // client resends it on a new one with the same ref; the server answers with the same id.
  srv.child.kill('SIGCONT');
  await banner.waitFor({ state: 'hidden', timeout: 20_000 });
  await onceOnBothSides('sent into silence', ref2);

  // 3. The server is killed: a message written meanwhile goes out after the restart.
  await srv.kill('SIGKILL');
  await banner.filter({ hasText: 'Reconnecting' }).waitFor();
  await sendText(R.page, 'written while the server was down');
  const ref3 = await bubbleRef('written while the server was down');
  await srv.start(addr);
  await banner.waitFor({ state: 'hidden', timeout: 20_000 });
  await onceOnBothSides('written while the server was down', ref3);

  // A picture whose upload does not reach the server (connected otherwise) is retried by
  // itself, and sent once.
  let aborted = 0;
  await R.ctx.route('**/attach/upload', (route) => (aborted++ === 0 ? route.abort('connectionreset') : route.continue()));
  await tid(R.page, 'image-input').setInputFiles({ name: 'retry.png', mimeType: 'image/png', buffer: makePng(120, 90, 6) });
  const retried = R.page.locator('[data-testid=message]').filter({ has: R.page.getByTestId('msg-image') }).last();
  await retried.getByTestId('msg-status').filter({ hasText: 'Upload failed' }).waitFor();
  await until('the picture uploaded on the second try', async () => (await retried.getAttribute('data-status')) === 'sent');
  assert(aborted === 2, `two upload attempts: ${aborted}`);
  await R.ctx.unroute('**/attach/upload');
  await until('S got the retried picture', async () => (await tid(S.page, 'message-list').getByTestId('msg-image').count()) === 1);

  // 4. Offline again, a message and a picture queued, a draft typed, then a reload with
  //    no network and no server at all: the service worker opens the app, the device's
  //    outbox and draft are there, and everything goes out once the server is back.
  await R.ctx.setOffline(true);
  await banner.filter({ hasText: 'offline' }).waitFor();
  await sendText(R.page, 'queued across a reload');
  const ref4 = await bubbleRef('queued across a reload');
  await tid(R.page, 'image-input').setInputFiles({ name: 'offline.png', mimeType: 'image/png', buffer: makePng(200, 120, 4) });
  const pictures = R.page.locator('[data-testid=message]').filter({ has: R.page.getByTestId('msg-image') });
  await until('the picture queued', async () => (await pictures.last().getAttribute('data-status')) === 'queued');
  const ref5 = await pictures.last().getAttribute('data-ref');
  await tid(R.page, 'chat-input').fill('a draft, not sent');
  await R.page.waitForTimeout(300); // IndexedDB writes are quick, but not synchronous
  await noDuplicates('before the reload');
  await srv.kill('SIGKILL');
  const fromWorker = [];
  R.page.on('response', (r) => r.fromServiceWorker() && fromWorker.push(new URL(r.url()).pathname));
  await R.page.reload();
  await tid(R.page, 'chat-title').filter({ hasText: 'Sam' }).waitFor();
  assert(fromWorker.includes('/') && fromWorker.includes('/app.js'), `the page came from the service worker: ${fromWorker}`);
  // Offline or reconnecting (the reloaded page may be told it has a network: the server
  // is away either way).
  await banner.filter({ hasText: '2 messages waiting' }).waitFor();
  const reloadedState = await banner.getAttribute('data-state');
  assert(['offline', 'reconnecting'].includes(reloadedState), `the banner after the reload: ${reloadedState}`);
  assert((await message(R.page, 'queued across a reload').getAttribute('data-ref')) === ref4, 'the queued message kept its ref');
  assert((await R.page.locator(`[data-testid=message][data-ref="${ref5}"]`).count()) === 1, 'the queued picture is there');
  await expectImageRendered(R.page.locator(`[data-testid=message][data-ref="${ref5}"]`).getByTestId('msg-image'));
  await until('the draft is back', async () => (await tid(R.page, 'chat-input').inputValue()) === 'a draft, not sent');
  await message(R.page, 'before the bad network').waitFor(); // kept on the device
  await shoot(R.page, '20-offline-reload');
  await srv.start(addr);
  await R.ctx.setOffline(false);
  await banner.waitFor({ state: 'hidden', timeout: 20_000 });
  await onceOnBothSides('queued across a reload', ref4);
  const picture = R.page.locator(`[data-testid=message][data-ref="${ref5}"]`);
  await until('the picture uploaded and acknowledged', async () => (await picture.getAttribute('data-status')) === 'sent', 15_000);
  await until('S got the queued picture', async () => (await tid(S.page, 'message-list').getByTestId('msg-image').count()) === 2);
  await expectImageRendered(tid(S.page, 'message-list').getByTestId('msg-image').last());
  assert((await tid(R.page, 'chat-input').inputValue()) === 'a draft, not sent', 'the draft stays a draft');

  await noDuplicates('after the reload');
  // No duplicates anywhere: R's bubbles by ref, S's by id, the server's history.
  const refs = await tid(R.page, 'message').evaluateAll((els) => els.map((e) => e.dataset.ref || `id${e.dataset.id}`));
  assert(new Set(refs).size === refs.length, `R shows each message once: ${refs}`);
  const ids = await tid(S.page, 'message').evaluateAll((els) => els.map((e) => e.dataset.id));
  assert(new Set(ids).size === ids.length && ids.length === 8, `S shows eight messages, each once: ${ids}`);
  const history = await (await R.ctx.request.get(`${base}/message/history?cmd=10&dstid=${S.id}&limit=50`)).json();
  const texts = history.rows.map((m) => m.content || m.url);
  for (const t of ['to a busy server', 'before the bad network', 'typed while offline', 'sent into silence', 'written while the server was down', 'queued across a reload']) {
    assert(texts.filter((x) => x === t).length === 1, `the server stored "${t}" once: ${JSON.stringify(texts)}`);
  }
  assert(history.rows.length === 8, `eight messages stored: ${JSON.stringify(texts)}`);
  console.log(`# offline noticed in ${offlineMs} ms (offline event); a silent server noticed ${probeMs} ms after sending (probe); back online and connected in ${backMs} ms`);
  assert(offlineMs <= 3000 && probeMs <= 3500, 'offline noticed within 3 s');
  await srv.kill('SIGTERM');
  restartServer = null;
  await R.ctx.close();
  await S.ctx.close();
  pages.delete('R');
  pages.delete('S');
}

/** Screenshots at phone and desktop size with `target` scrolled into view at each size. */
async function shootAt(page, name, target) {
  const before = page.viewportSize();
  for (const [label, size] of [['phone', PHONE], ['desktop', DESKTOP]]) {
    await page.setViewportSize(size);
    await page.waitForTimeout(200);
    if (target) await target.evaluate((el) => el.scrollIntoView({ block: 'start' }));
    else await page.evaluate(() => window.scrollTo(0, 0));
    await page.waitForTimeout(100);
    await page.screenshot({ path: join(SHOTS, `${name}-${label}.png`) });
  }
  await page.setViewportSize(before);
}

async function scenario6() {
  // The frame inspector (--inspector): the page's own /echo connection, frame by frame.
  const I = await newUser('I', { phone: false });
  const page = I.page;
  await page.goto(`${BASE}/inspector/`);
  await tid(page, 'echo-state').filter({ hasText: 'Open' }).waitFor();
  await tid(page, 'handshake').filter({ hasText: 'GET /echo?trace=' }).waitFor();
  await tid(page, 'handshake').filter({ hasText: 'HTTP/1.1 101 Switching Protocols' }).waitFor();
  const frames = (from, opcode) => page.locator(`[data-testid=frame][data-from=${from}][data-opcode=${opcode}]`);
  const hexBytes = async (loc) => (await loc.textContent()).trim().split(/\s+/).map((x) => parseInt(x, 16));

  // A typed message: masked by the browser with a key the page shows, unmasked to what was typed.
  const typed = 'Hello, frames ✓';
  await tid(page, 'insp-input').fill(typed);
  await tid(page, 'insp-send').click();
  const sent = frames('client', 'text').last();
  await sent.waitFor();
  assert((await sent.getByTestId('payload-text').textContent()) === typed, 'the unmasked text is what was typed');
  const keyText = (await sent.getByTestId('field-mask-key').locator('.val').textContent()).trim();
  assert(/^[0-9a-f]{2}( [0-9a-f]{2}){3}$/.test(keyText), `a masking key is shown: ${keyText}`);
  const key = keyText.split(' ').map((x) => parseInt(x, 16));
  const masked = await hexBytes(sent.getByTestId('payload-masked'));
  const clear = await hexBytes(sent.getByTestId('payload-hex'));
  const utf8 = [...new TextEncoder().encode(typed)];
  assert(JSON.stringify(clear) === JSON.stringify(utf8), `the unmasked bytes are the UTF-8 of the text: ${clear}`);
  assert(JSON.stringify(masked.map((b, i) => b ^ key[i % 4])) === JSON.stringify(utf8), 'masked XOR key is the payload (§5.3)');
  assert((await sent.getByTestId('field-mask').locator('.val').textContent()) === '1', 'MASK=1 on the browser frame');
  assert((await sent.getByTestId('field-len').locator('.val').textContent()) === String(utf8.length), 'the payload length is shown');
  const echoed = frames('server', 'text').last();
  await echoed.waitFor();
  assert((await echoed.getByTestId('payload-text').textContent()) === typed, 'the server echoes the text');
  assert((await echoed.getByTestId('field-mask').locator('.val').textContent()) === '0', 'MASK=0 on the server frame');
  assert((await echoed.getByTestId('header-bits').textContent()).startsWith('1FIN0RSV10RSV20RSV30001opcode 1'), 'the header bit by bit');

  // The next echo in fragments of 4 bytes: a text frame with FIN=0, then continuations.
  await tid(page, 'insp-frag-size').fill('4');
  await tid(page, 'insp-fragment').click();
  await tid(page, 'insp-note').filter({ hasText: 'fragments of 4 bytes' }).waitFor();
  await tid(page, 'insp-input').fill('in pieces!');
  await tid(page, 'insp-send').click();
  await frames('server', 'continuation').nth(1).waitFor();
  const first = frames('server', 'text').last();
  assert((await first.getAttribute('data-fin')) === '0', 'the first fragment has FIN=0');
  assert((await first.getByTestId('payload-text').textContent()) === 'in p', 'the first fragment holds 4 bytes');
  const last = frames('server', 'continuation').last();
  assert((await last.getAttribute('data-fin')) === '1', 'the last fragment has FIN=1');
  assert((await last.getByTestId('payload-text').textContent()) === 's!', `the last fragment: ${await last.getByTestId('payload-text').textContent()}`);
  await tid(page, 'insp-note').filter({ hasText: 'onmessage got the echo: "in pieces!"' }).waitFor();

  // The server pings; the browser answers with a pong the page could never send itself.
  await tid(page, 'insp-ping').click();
  const pong = frames('client', 'pong').last();
  await pong.waitFor();
  await frames('server', 'ping').last().waitFor();
  assert((await pong.getByTestId('payload-text').textContent()) === 'are you there?', 'the pong carries the ping payload');
  await shootAt(page, '07-inspector', null);
  await shootAt(page, '08-inspector-ping', frames('server', 'ping').last());

  // The closing handshake, both close frames with code and reason.
  await tid(page, 'insp-close-code').fill('4000');
  await tid(page, 'insp-close-reason').fill('bye now');
  await tid(page, 'insp-close').click();
  const closeC = frames('client', 'close').last();
  await closeC.waitFor();
  assert((await closeC.getByTestId('close-code').locator('.val').textContent()) === '4000', 'the browser close code');
  assert((await closeC.getByTestId('close-reason').locator('.val').textContent()) === '"bye now"', 'the browser close reason');
  const closeS = frames('server', 'close').last();
  await closeS.waitFor();
  assert((await closeS.getByTestId('close-code').locator('.val').textContent()) === '4000', 'the server echoes the code');
  await tid(page, 'insp-note').filter({ hasText: 'TCP connection is closed' }).waitFor();
  await tid(page, 'echo-state').filter({ hasText: 'Closed: code 4000' }).waitFor();
  await shootAt(page, '09-inspector-closed', closeC);

  // A new connection on a new token, with permessage-deflate: Chromium compresses what it
  // sends, and RSV1 marks the message (RFC 7692).
  await tid(page, 'insp-deflate').check();
  await tid(page, 'insp-reconnect').click();
  await tid(page, 'echo-state').filter({ hasText: 'permessage-deflate' }).waitFor();
  await until('a second handshake', async () => (await tid(page, 'handshake').count()) === 4);
  await tid(page, 'handshake').filter({ hasText: 'permessage-deflate is accepted' }).waitFor();
  await tid(page, 'insp-input').fill('squeeze me');
  await tid(page, 'insp-send').click();
  await tid(page, 'insp-note').filter({ hasText: 'onmessage got the echo: "squeeze me"' }).waitFor();
  const squeezed = frames('client', 'text').last();
  assert((await squeezed.getAttribute('data-compressed')) === '1', 'the browser compressed its message');
  assert((await squeezed.getByTestId('field-rsv1').locator('.val').textContent()) === '1', 'RSV1 is set');
  await shootAt(page, '10-inspector-deflate', tid(page, 'handshake').last());
  await I.ctx.close();
  pages.delete('I');
}

async function scenario8() {
  // B is on the list; A writes; B's badge and preview come live, and a second device of
  // B's, with nothing in its localStorage, gets the same count from the server.
  // (Side by side, a tab keeps the open conversation, which would read the messages as
  // they come: B starts again on the list alone.)
  await B.page.goto(`${BASE}/#/friends`);
  await B.page.reload();
  const aliceRow = tid(B.page, 'friend-item').filter({ hasText: 'Alice' });
  await aliceRow.waitFor();
  await A.page.goto(`${BASE}/#/chat/10/${B.id}`);
  await tid(A.page, 'chat-title').filter({ hasText: 'Bob' }).waitFor();
  await sendText(A.page, 'Are you reading this?');
  await expectSent(A.page, 'Are you reading this?');
  await sendText(A.page, 'Second one');
  await expectSent(A.page, 'Second one');
  await aliceRow.getByTestId('unread-badge').filter({ hasText: '2' }).waitFor();
  await aliceRow.getByTestId('row-preview').filter({ hasText: 'Second one' }).waitFor();
  const B2 = await newUser('B2', { phone: true });
  const login = await (await B2.ctx.request.post(`${BASE}/user/login`, { data: { mobile: B.mobile, passwd: B.password } })).json();
  assert(login.code === 0, `B logs in on a second device: ${JSON.stringify(login)}`);
  await B2.page.goto(`${BASE}/#/friends`);
  const aliceRow2 = tid(B2.page, 'friend-item').filter({ hasText: 'Alice' });
  await aliceRow2.getByTestId('unread-badge').filter({ hasText: '2' }).waitFor();
  const first = await tid(B2.page, 'friend-item').first().getAttribute('data-id');
  assert(first === String(A.id), 'the friend with the newest message comes first');
  const sent = message(A.page, 'Second one').getByTestId('msg-seen');
  assert((await sent.getAttribute('data-seen')) === 'false', 'not seen yet');
  await shoot(B2.page, '15-unread-list');
  // B opens the chat on the first device: the second device's badge clears, A sees "seen".
  await aliceRow.click();
  await message(B.page, 'Second one').waitFor();
  await until('the badge cleared on the other device', async () => (await aliceRow2.getByTestId('unread-badge').count()) === 0);
  await until('A sees "seen"', async () => (await sent.getAttribute('data-seen')) === 'true');
  assert((await sent.textContent()).includes('Seen'), 'the tick says Seen');
  await shoot(A.page, '16-seen');
  const rows = await (await B2.ctx.request.get(`${BASE}/contact/conversations`)).json();
  const row = rows.rows.find((r) => r.cmd === 10 && r.dstid === A.id);
  assert(row && row.unread === 0 && row.preview === 'Second one', `the server has it read: ${JSON.stringify(row)}`);
  await B2.ctx.close();
  pages.delete('B2');
  await B.page.goto(`${BASE}/#/friends`);

  if (!opt['many-token']) return;
  // 1,000 conversations: the list is built from the server's, sorted by last activity.
  const M = await newUser('M', { phone: false });
  await M.ctx.addCookies([{ name: 'fastim_token', value: opt['many-token'], url: BASE }]);
  const t0 = Date.now();
  await M.page.goto(`${BASE}/#/friends`);
  await until('1,000 friends listed with their unread counts', async () => (await tid(M.page, 'unread-badge').count()) >= 1000, 20_000);
  const shown = Date.now() - t0;
  // Both from the same render (read together: the list may be drawn again meanwhile).
  const [renderMs, buildMs] = await tid(M.page, 'home').evaluate((el) => [Number(el.dataset.renderMs), Number(el.dataset.buildMs)]);
  const firstName = await tid(M.page, 'friend-name').first().textContent();
  assert(firstName === 'friend 999', `the newest conversation first: ${firstName}`);
  console.log(`# 1,000 conversations: list rendered in ${renderMs} ms (${buildMs} ms building it, the rest in the DOM and layout); page to full list ${shown} ms`);
  assert(renderMs <= 200, `the list of 1,000 renders in at most 200 ms (${renderMs} ms)`);
  await shoot(M.page, '17-thousand');
  await M.ctx.close();
  pages.delete('M');
}

/** Sends chat frames from `page`'s origin on a socket of its own, each after the last's ack. */
async function socketSend(page, frames) {
  return page.evaluate(
    (list) =>
      new Promise((resolve, reject) => {
        const ws = new WebSocket(`${location.origin.replace(/^http/, 'ws')}/chat`);
        const acks = [];
        const tag = `seed-${Date.now()}-${Math.random().toString(36).slice(2)}`; // refs are idempotency keys: a new one per message
        const next = () => {
          if (acks.length === list.length) {
            ws.close();
            resolve(acks);
          } else ws.send(JSON.stringify({ ...list[acks.length], ref: `${tag}-${acks.length}` }));
        };
        ws.onopen = next;
        ws.onmessage = (e) => {
          const f = JSON.parse(e.data);
          if (f.ref !== `${tag}-${acks.length}`) return;
          if (f.cmd !== 21) reject(new Error(`not stored: ${e.data}`));
          acks.push(f);
          next();
        };
        ws.onerror = () => reject(new Error('socket error'));
      }),
    frames,
  );
}

async function scenario12() {
  // Users of its own, set up through the API: this scenario runs alone (--only 12).
  const X = await newUser('X', { phone: false });
  const Y = await newUser('Y', { phone: true });
  const report = [];
  const failures = [];
  // axe on the page as it is, in the light and the dark scheme.
  const shootBoth = async (page, name) => {
    for (const scheme of ['light', 'dark']) {
      await page.emulateMedia({ colorScheme: scheme });
      await shoot(page, `${name}-${scheme}`);
    }
    await page.emulateMedia({ colorScheme: 'light' });
  };
  const focused = (page) => page.evaluate(() => document.activeElement?.getAttribute('data-testid'));
  const audit = async (page, screen) => {
    for (const scheme of ['light', 'dark']) {
      await page.emulateMedia({ colorScheme: scheme });
      await page.waitForTimeout(80);
      const { violations, failing } = await axeRun(page);
      report.push(`  ${screen}, ${scheme}: ${violations.length ? violations.map((v) => `${v.id} [${v.impact}] x${v.nodes.length}`).join(', ') : 'no violations'}`);
      if (failing.length) failures.push(`  ${screen}, ${scheme}:\n${describe(failing)}`);
    }
    await page.emulateMedia({ colorScheme: 'light' });
  };

  await X.page.goto(BASE);
  await tid(X.page, 'login-view').waitFor();
  await audit(X.page, 'login');
  await shootBoth(X.page, '30-login');
  await X.page.goto(`${BASE}/#/register`);
  await tid(X.page, 'register-view').waitFor();
  await audit(X.page, 'register');

  await apiRegister(X, BASE, 'Xavier', { memo: 'Reads everything twice' });
  await apiRegister(Y, BASE, 'Yvonne');
  await apiBefriend(X, Y, BASE);
  const made = await (await X.ctx.request.post(`${BASE}/contact/createcommunity`, { data: { name: `Layout ${run}`, cate: 2, memo: 'Short and sweet' } })).json();
  assert(made.code === 0, `X creates a group: ${JSON.stringify(made)}`);
  const gid = made.data.id;
  const joined = await (await Y.ctx.request.post(`${BASE}/contact/joincommunity`, { data: { dstid: gid } })).json();
  assert(joined.code === 0, `Y joins: ${JSON.stringify(joined)}`);

  // A conversation: runs of one sender, a link and a javascript: text that is no link.
  await Y.page.goto(`${BASE}/#/friends`);
  await tid(Y.page, 'home').waitFor();
  await X.page.goto(`${BASE}/#/friends`);
  await X.page.reload(); // the register form was open: start again, logged in
  await tid(X.page, 'home').waitFor();
  const text = (content) => ({ cmd: 10, dstid: X.id, media: 1, content });
  await socketSend(Y.page, [text('Morning!'), text('Are you around?'), text('Read this: https://example.org/guide?x=1&y=2 then javascript:alert(1) or www.example.org')]);
  await socketSend(X.page, [{ cmd: 10, dstid: Y.id, media: 1, content: 'Yes, reading it now' }, { cmd: 10, dstid: Y.id, media: 1, content: 'Looks good' }]);
  await socketSend(Y.page, [{ cmd: 11, dstid: gid, media: 1, content: 'Hello group' }]);
  await socketSend(X.page, [{ cmd: 11, dstid: gid, media: 1, content: 'Hi Yvonne' }]);

  await X.page.reload();
  await tid(X.page, 'friend-item').filter({ hasText: 'Yvonne' }).waitFor();
  await audit(X.page, 'home, friends');
  await tid(X.page, 'tab-groups').click();
  await tid(X.page, 'group-item').first().waitFor();
  await audit(X.page, 'home, groups');
  await tid(X.page, 'tab-me').click();
  await tid(X.page, 'me-card').waitFor();
  await audit(X.page, 'home, me (profile)');

  await X.page.goto(`${BASE}/#/chat/10/${Y.id}`);
  await message(X.page, 'Looks good').waitFor();
  await audit(X.page, 'conversation 1:1');

  // Day separator and runs: Y's three messages are one run (one avatar, one time), then X's two.
  const rows = await tid(X.page, 'message-list').evaluate((list) =>
    [...list.querySelectorAll('[data-testid=day-separator], [data-testid=message]')].map((el) =>
      el.dataset.testid === 'day-separator'
        ? { sep: el.textContent }
        : { text: el.querySelector('[data-testid=msg-text]')?.textContent, run: el.dataset.run, avatar: !!el.querySelector('[data-testid=avatar]'), time: !!el.querySelector('[data-testid=msg-time]'), who: el.querySelector('[data-testid=msg-who]')?.textContent },
    ),
  );
  const shape = JSON.stringify(rows);
  assert(rows[0].sep === 'Today' && rows.filter((r) => r.sep).length === 1, `one "Today" separator first: ${shape}`);
  const [y1, y2, y3, x1, x2] = rows.slice(1);
  assert(y1.run === 'first' && y1.avatar && !y1.time, `Y's run starts with her avatar, without a time: ${shape}`);
  assert(y2.run === 'more' && !y2.avatar && !y2.time && y3.run === 'more' && !y3.avatar && y3.time, `one avatar and one time for Y's run: ${shape}`);
  assert(x1.run === 'first' && !x1.time && x2.run === 'more' && x2.time, `X's own two messages are a run: ${shape}`);
  assert(x1.who === 'You: ' && y2.who === 'Yvonne: ', `own messages are announced as "You:", others' by name: ${shape}`);
  // The short conversation sits at the bottom, by the composer.
  const gap = await tid(X.page, 'message-list').evaluate((list) => list.getBoundingClientRect().bottom - [...list.querySelectorAll('[data-testid=message]')].at(-1).getBoundingClientRect().bottom);
  assert(gap >= 0 && gap < 40, `the last message is at the bottom of the list (${gap} px above its end)`);

  // Links: http(s) only, as <a> with rel noopener noreferrer; javascript: and www. stay text.
  const linked = message(X.page, 'Read this');
  const links = await linked.locator('a').evaluateAll((as) => as.map((a) => ({ href: a.getAttribute('href'), text: a.textContent, rel: a.rel, target: a.target })));
  assert(links.length === 1 && links[0].href === 'https://example.org/guide?x=1&y=2' && links[0].text === 'https://example.org/guide?x=1&y=2', `one link, to the URL in the text: ${JSON.stringify(links)}`);
  assert(links[0].rel.split(' ').includes('noopener') && links[0].rel.split(' ').includes('noreferrer') && links[0].target === '_blank', `the link opens safely: ${JSON.stringify(links)}`);
  assert((await linked.getByTestId('msg-text').textContent()).includes('javascript:alert(1) or www.example.org'), 'the javascript: text is shown as text');
  // The day logic, in the page (the server stamps messages itself: no message here is from another day).
  const days = await X.page.evaluate(async () => {
    const { dayLabel, layoutMessages, linkify } = await import('/views/layout.js');
    const now = new Date(2026, 2, 10, 9, 30).getTime(); // a Tuesday
    const at = (d, hh, mm) => new Date(2026, 2, d, hh, mm).getTime();
    const msgs = [
      { userid: 1, createat: at(1, 10, 0) },
      { userid: 1, createat: at(9, 23, 58) },
      { userid: 1, createat: at(10, 0, 1) }, // after midnight: a new day, a new run
      { userid: 1, createat: at(10, 0, 4) },
      { userid: 2, createat: at(10, 0, 5) },
      { userid: 2, createat: at(10, 0, 30) }, // 26 minutes later: a new run
      { userid: 3, media: 100, createat: at(10, 0, 31) }, // "Carol joined": a line of its own
      { userid: 3, createat: at(10, 0, 31) }, // her first message starts her run
    ];
    return {
      labels: [dayLabel(at(10, 0, 0), now), dayLabel(at(9, 12, 0), now), dayLabel(at(6, 12, 0), now), dayLabel(at(1, 12, 0), now), dayLabel(new Date(2025, 11, 24).getTime(), now)],
      layout: layoutMessages(msgs, now).map((p) => `${p.day || ''}|${p.first ? 'F' : '-'}${p.last ? 'L' : '-'}`),
      js: linkify('javascript:alert(1) https://a.example/x). done').map((n) => n.nodeName + ':' + n.textContent),
    };
  });
  const want = { weekday: new Intl.DateTimeFormat([], { weekday: 'long' }).format(new Date(2026, 2, 6)) };
  assert(days.labels[0] === 'Today' && days.labels[1] === 'Yesterday' && days.labels[2] === want.weekday && /1/.test(days.labels[3]) && /2025/.test(days.labels[4]), `day labels: ${JSON.stringify(days.labels)}`);
  assert(JSON.stringify(days.layout) === JSON.stringify([`${days.labels[3]}|FL`, 'Yesterday|FL', 'Today|F-', '|-L', '|FL', '|FL', '|FL', '|FL']), `days and runs: ${JSON.stringify(days.layout)}`);
  assert(JSON.stringify(days.js) === JSON.stringify(['#text:javascript:alert(1) ', 'A:https://a.example/x', '#text:). done']), `links end before punctuation: ${JSON.stringify(days.js)}`);

  // The emoji panel: one tab stop, arrow keys inside, Escape closes it and the focus returns.
  await tid(X.page, 'emoji-toggle').click();
  await tid(X.page, 'emoji-panel').waitFor();
  const stops = await tid(X.page, 'emoji-panel').evaluate((p) => [...p.querySelectorAll('button')].filter((b) => b.tabIndex >= 0).length);
  assert(stops === 1, `the emoji panel is one tab stop (${stops})`);
  assert((await focused(X.page)) === 'emoji', `the focus moves into the panel: ${await focused(X.page)}`);
  await X.page.keyboard.press('Shift+Tab');
  await X.page.keyboard.press('Tab');
  assert((await focused(X.page)) === 'emoji', `Tab comes back to the same emoji: ${await focused(X.page)}`);
  await X.page.keyboard.press('ArrowRight');
  await X.page.keyboard.press('ArrowDown');
  const second = await X.page.evaluate(() => [...document.querySelectorAll('[data-testid=emoji]')].indexOf(document.activeElement));
  const cols = await tid(X.page, 'emoji-panel').evaluate((p) => getComputedStyle(p).gridTemplateColumns.split(' ').length);
  assert(second === 1 + cols, `arrows move by one and by a row (${second}, ${cols} columns)`);
  await audit(X.page, 'emoji panel');
  await X.page.keyboard.press('Escape');
  assert(await tid(X.page, 'emoji-panel').isHidden(), 'Escape closes the emoji panel');
  assert((await focused(X.page)) === 'emoji-toggle', `the focus is back on the emoji button: ${await focused(X.page)}`);
  // Picked with the mouse, the emoji goes into the text and the typing goes on there;
  // Escape in the text closes the panel too.
  await tid(X.page, 'emoji-toggle').click();
  const pick = await tid(X.page, 'emoji').nth(2).textContent();
  await tid(X.page, 'emoji').nth(2).click();
  await X.page.keyboard.type('!');
  assert((await focused(X.page)) === 'chat-input' && (await tid(X.page, 'chat-input').inputValue()) === `${pick}!`, `typing goes on in the text: ${await tid(X.page, 'chat-input').inputValue()}`);
  await X.page.keyboard.press('Escape');
  assert(await tid(X.page, 'emoji-panel').isHidden(), 'Escape in the text closes the emoji panel');
  await tid(X.page, 'chat-input').fill('');

  await shootBoth(X.page, '31-chat'); // the chat again: a phone-sized window shows one pane
  await X.page.goto(`${BASE}/#/chat/10/${Y.id}`);
  await tid(X.page, 'chat-view').waitFor();
  // Side by side, the tabs change the list only: the conversation stays open.
  const key = await tid(X.page, 'chat-view').getAttribute('data-key');
  for (const t of ['groups', 'me', 'friends']) {
    await tid(X.page, `tab-${t}`).click();
    await tid(X.page, 'home-title').filter({ hasText: { groups: 'Groups', me: 'Me', friends: 'Friends' }[t] }).waitFor();
    assert((await tid(X.page, 'chat-view').getAttribute('data-key')) === key && (await tid(X.page, 'chat-view').isVisible()), `the conversation stays open on the ${t} tab`);
  }

  // A new message from Y is read out; what the history brings is not.
  await socketSend(Y.page, [text('One more thing')]);
  await message(X.page, 'One more thing').waitFor();
  await until('the new message is announced', async () => (await tid(X.page, 'chat-live').textContent()).includes('Yvonne: One more thing'));
  // Made narrow on the list, the window shows one pane: the kept conversation closes.
  await X.page.setViewportSize(PHONE);
  await until('the kept conversation closed on a narrow window', async () => (await tid(X.page, 'chat-view').count()) === 0);
  await X.page.setViewportSize(DESKTOP);
  await X.page.goto(`${BASE}/#/chat/10/${Y.id}`);
  await X.page.reload();
  await message(X.page, 'One more thing').waitFor();
  await X.page.waitForTimeout(300);
  assert((await tid(X.page, 'chat-live').textContent()) === '', `history is not announced: ${await tid(X.page, 'chat-live').textContent()}`);
  await X.page.goto(`${BASE}/#/chat/11/${gid}`);
  await message(X.page, 'Hi Yvonne').waitFor();
  await audit(X.page, 'conversation, group');
  await shootBoth(X.page, '32-group');
  // On a desktop, Shift+Enter makes a new line and Enter sends.
  await tid(X.page, 'chat-input').fill('first line');
  await tid(X.page, 'chat-input').press('Shift+Enter');
  await tid(X.page, 'chat-input').pressSequentially('second line');
  await tid(X.page, 'chat-input').press('Enter');
  await expectSent(X.page, 'second line');
  assert((await message(X.page, 'second line').getByTestId('msg-text').textContent()) === 'first line\nsecond line', 'Shift+Enter made a new line, Enter sent');
  assert((await tid(X.page, 'chat-input').inputValue()) === '', 'the composer is empty after sending');
  await X.page.goto(`${BASE}/#/newgroup`);
  await tid(X.page, 'newgroup-view').waitFor();
  await audit(X.page, 'new group');

  // A picture, and the viewer.
  await X.page.goto(`${BASE}/#/chat/10/${Y.id}`);
  await message(X.page, 'Looks good').waitFor();
  await tid(X.page, 'image-input').setInputFiles({ name: 'p.png', mimeType: 'image/png', buffer: makePng(200, 120, 4) });
  await expectImageRendered(tid(X.page, 'message-list').getByTestId('msg-image').last());
  // By keyboard: the picture is a button; the viewer is a dialog with the focus inside.
  const unreachable = await tid(X.page, 'message-list').evaluate((list) => [...list.querySelectorAll('[data-testid=msg-image]')].filter((img) => !img.closest('button')?.matches(':not([disabled])[tabindex="0"], :not([disabled]):not([tabindex])')).length);
  assert(unreachable === 0, `every picture in the conversation is in a button the keyboard reaches (${unreachable} not)`);
  await tid(X.page, 'msg-image-open').last().focus();
  await X.page.keyboard.press('Enter');
  await expectImageRendered(tid(X.page, 'viewer-image'));
  assert((await focused(X.page)) === 'viewer-close', `the focus moves into the viewer: ${await focused(X.page)}`);
  assert((await tid(X.page, 'viewer').evaluate((d) => d.open && d.matches(':modal'))), 'the viewer is a modal dialog');
  await audit(X.page, 'picture viewer');
  await shootBoth(X.page, '33-viewer');
  await X.page.keyboard.press('Escape');
  await until('Escape closes the viewer', async () => (await tid(X.page, 'viewer').count()) === 0);
  assert((await focused(X.page)) === 'msg-image-open', `the focus is back on the picture: ${await focused(X.page)}`);

  // Y, on a phone.
  await Y.page.goto(`${BASE}/#/chat/10/${X.id}`);
  await message(Y.page, 'Looks good').waitFor();
  await audit(Y.page, 'conversation 1:1, phone');
  // On a phone, Enter makes a new line; the button sends.
  const input = tid(Y.page, 'chat-input');
  await input.fill('line one');
  await input.press('Enter');
  await input.pressSequentially('line two');
  assert((await input.inputValue()) === 'line one\nline two', `Enter made a new line: ${JSON.stringify(await input.inputValue())}`);
  assert((await message(Y.page, 'line one').count()) === 0, 'Enter did not send');
  await tid(Y.page, 'chat-send').click();
  await expectSent(Y.page, 'line two');
  assert((await message(Y.page, 'line two').getByTestId('msg-text').textContent()) === 'line one\nline two', 'sent as two lines');
  await Y.page.goto(`${BASE}/#/me`);
  await tid(Y.page, 'me-card').waitFor();
  await shootBoth(Y.page, '34-me');

  console.log(`# axe (serious and critical fail; minor and moderate listed):\n${report.join('\n')}`);
  assert(!failures.length, `axe found serious or critical violations:\n${failures.join('\n')}`);
  await X.ctx.close();
  await Y.ctx.close();
  pages.delete('X');
  pages.delete('Y');
}

async function scenario10() {
  // A (phone) and B (desktop) in their chat. A sends; B sees it.
  await A.page.goto(`${BASE}/#/chat/10/${B.id}`);
  await tid(A.page, 'chat-title').filter({ hasText: 'Bob' }).waitFor();
  await B.page.goto(`${BASE}/#/chat/10/${A.id}`);
  await tid(B.page, 'chat-title').filter({ hasText: 'Alice' }).waitFor();
  await sendText(A.page, 'Lunch at noon?');
  await expectSent(A.page, 'Lunch at noon?');
  await message(B.page, 'Lunch at noon?').waitFor();
  const id = await message(A.page, 'Lunch at noon?').last().getAttribute('data-id');

  // A edits it from the "⋯" button, by keyboard; B sees the new text and "edited" live.
  const more = message(A.page, 'Lunch at noon?').last().getByTestId('msg-menu-button');
  await more.focus();
  await A.page.keyboard.press('Enter');
  await tid(A.page, 'msg-menu').waitFor();
  assert((await tid(A.page, 'msg-menu').getByTestId('msg-recall').count()) === 1, 'recall offered for my new message');
  await until('the menu has the keyboard focus', () => A.page.evaluate(() => document.activeElement?.dataset.testid === 'msg-reply'));
  await shoot(A.page, '25-message-menu');
  await A.page.keyboard.press('ArrowDown');
  await A.page.keyboard.press('Enter'); // Edit
  await tid(A.page, 'compose-bar').filter({ hasText: 'Editing message' }).waitFor();
  assert((await tid(A.page, 'chat-input').inputValue()) === 'Lunch at noon?', 'the composer holds the text to edit');
  await tid(A.page, 'chat-input').fill('Lunch at one?');
  await tid(A.page, 'chat-send').click(); // a phone: Enter is a new line
  const onB = tid(B.page, 'message-list').locator(`[data-testid="message"][data-id="${id}"]`);
  await onB.getByTestId('msg-edited').waitFor();
  assert((await onB.getByTestId('msg-text').textContent()) === 'Lunch at one?', 'B sees the edited text');
  await message(A.page, 'Lunch at one?').getByTestId('msg-edited').waitFor();
  assert(await tid(A.page, 'compose-bar').isHidden(), 'the edit bar closes once sent');

  // A recalls it (with a confirmation); both sides show "Message recalled", live.
  await message(A.page, 'Lunch at one?').getByTestId('msg-menu-button').click();
  await tid(A.page, 'msg-recall').click();
  await tid(A.page, 'msg-recall-confirm').click();
  await onB.getByTestId('msg-recalled').filter({ hasText: 'Message recalled' }).waitFor();
  const onA = tid(A.page, 'message-list').locator(`[data-testid="message"][data-id="${id}"]`);
  await onA.getByTestId('msg-recalled').waitFor();
  assert((await onB.getByTestId('msg-text').count()) === 0, 'nothing of the text is left on B');

  // B replies to a message of A's (right-click menu on the desktop); A sees the quote.
  await sendText(A.page, 'Which place, then?');
  await expectSent(A.page, 'Which place, then?');
  const original = message(B.page, 'Which place, then?').first();
  await original.waitFor();
  await original.getByTestId('msg-text').click({ button: 'right' });
  await tid(B.page, 'msg-menu').waitFor();
  assert((await tid(B.page, 'msg-menu').getByTestId('msg-recall').count()) === 0, "no recall of someone else's message");
  await tid(B.page, 'msg-reply').click();
  await tid(B.page, 'compose-bar').filter({ hasText: 'Replying to Alice' }).waitFor();
  await shoot(B.page, '26-replying-to');
  await sendText(B.page, 'The usual one');
  await expectSent(B.page, 'The usual one');
  const reply = message(A.page, 'The usual one');
  await reply.getByTestId('msg-quote').filter({ hasText: 'Which place, then?' }).waitFor();
  assert((await reply.getByTestId('msg-quote').textContent()).includes('You'), 'A sees her own message quoted');
  await shoot(A.page, '27-reply-quote');
  // A long press on a touch screen (A is on a phone) opens the same menu; Escape closes it.
  const theirs = reply.getByTestId('msg-text');
  const box = await theirs.boundingBox();
  await theirs.dispatchEvent('pointerdown', { pointerType: 'touch', isPrimary: true, clientX: box.x + 5, clientY: box.y + 5 });
  await tid(A.page, 'msg-menu').waitFor();
  assert((await tid(A.page, 'msg-edit').count()) === 0, "no edit of someone else's message");
  await A.page.keyboard.press('Escape');
  await until('Escape closes the menu', async () => (await tid(A.page, 'msg-menu').count()) === 0);

  // A device that was away (B reloads) gets the same from history: recalled, quote.
  await B.page.reload();
  await tid(B.page, 'chat-title').filter({ hasText: 'Alice' }).waitFor();
  await tid(B.page, 'message-list').locator(`[data-testid="message"][data-id="${id}"]`).getByTestId('msg-recalled').waitFor();
  await message(B.page, 'The usual one').getByTestId('msg-quote').filter({ hasText: 'Which place, then?' }).waitFor();

  // A device that missed the live event (its socket drops recall frames, as one that
  // was away would) and already holds the message shows it recalled once it opens
  // the conversation and reads its history.
  const B3 = await newUser('B3', { phone: true });
  await B3.page.routeWebSocket(/\/chat$/, (ws) => {
    const server = ws.connectToServer();
    server.onMessage((msg) => typeof msg === 'string' && msg.startsWith('{"cmd":16,') || ws.send(msg));
    ws.onMessage((msg) => server.send(msg));
  });
  const login = await (await B3.ctx.request.post(`${BASE}/user/login`, { data: { mobile: B.mobile, passwd: B.password } })).json();
  assert(login.code === 0, `B logs in on a third device: ${JSON.stringify(login)}`);
  await B3.page.goto(`${BASE}/#/friends`);
  const aliceOn3 = tid(B3.page, 'friend-item').filter({ hasText: 'Alice' });
  await aliceOn3.waitFor();
  await sendText(A.page, 'Soon gone');
  await expectSent(A.page, 'Soon gone');
  await aliceOn3.getByTestId('row-preview').filter({ hasText: 'Soon gone' }).waitFor();
  const gone = await message(A.page, 'Soon gone').getAttribute('data-id');
  await message(A.page, 'Soon gone').getByTestId('msg-menu-button').click();
  await tid(A.page, 'msg-recall').click();
  await tid(A.page, 'msg-recall-confirm').click();
  await tid(B.page, 'message-list').locator(`[data-testid="message"][data-id="${gone}"]`).getByTestId('msg-recalled').waitFor();
  await aliceOn3.click();
  await tid(B3.page, 'message-list').locator(`[data-testid="message"][data-id="${gone}"]`).getByTestId('msg-recalled').waitFor();
  assert((await message(B3.page, 'Soon gone').count()) === 0, 'the device that missed the event shows nothing of it');
  await B3.ctx.close();
  pages.delete('B3');

  // A device that was away while messages it shows were edited and recalled learns
  // both from the sync it makes on reconnecting (the change log), without reading the
  // history again.
  await sendText(A.page, 'Plan A');
  await expectSent(A.page, 'Plan A');
  await sendText(B.page, 'Noted'); // so that each of A's has its own "⋯"
  await expectSent(B.page, 'Noted');
  await sendText(A.page, 'Plan B');
  await expectSent(A.page, 'Plan B');
  await message(B.page, 'Plan B').waitFor();
  const planA = await message(A.page, 'Plan A').getAttribute('data-id');
  const planB = await message(A.page, 'Plan B').getAttribute('data-id');
  const reread = [];
  const onRequest = (r) => r.url().includes('/message/history') && reread.push(r.url());
  B.page.on('request', onRequest);
  await B.ctx.setOffline(true);
  await tid(B.page, 'conn-banner').waitFor();
  await message(A.page, 'Plan B').getByTestId('msg-menu-button').click();
  await tid(A.page, 'msg-edit').click();
  await tid(A.page, 'chat-input').fill('Plan B, at two');
  await tid(A.page, 'chat-send').click();
  await message(A.page, 'Plan B, at two').getByTestId('msg-edited').waitFor();
  await message(A.page, 'Plan A').getByTestId('msg-menu-button').click();
  await tid(A.page, 'msg-recall').click();
  await tid(A.page, 'msg-recall-confirm').click();
  await tid(A.page, 'message-list').locator(`[data-testid="message"][data-id="${planA}"]`).getByTestId('msg-recalled').waitFor();
  await B.page.waitForTimeout(300);
  assert((await message(B.page, 'Plan B, at two').count()) === 0, 'B, offline, has not seen the edit');
  await B.ctx.setOffline(false);
  await tid(B.page, 'conn-banner').waitFor({ state: 'hidden', timeout: 20_000 });
  const planBOnB = tid(B.page, 'message-list').locator(`[data-testid="message"][data-id="${planB}"]`);
  await planBOnB.getByTestId('msg-edited').waitFor();
  assert((await planBOnB.getByTestId('msg-text').textContent()) === 'Plan B, at two', 'B has the edit from its sync');
  await tid(B.page, 'message-list').locator(`[data-testid="message"][data-id="${planA}"]`).getByTestId('msg-recalled').waitFor();
  assert((await message(B.page, 'Plan A').count()) === 0, 'B shows nothing of the recalled text');
  await shoot(B.page, '23-changes-after-reconnecting');
  B.page.off('request', onRequest);
  assert(reread.length === 0, `no history read again on reconnecting: ${reread}`);

  await tid(A.page, 'chat-back').click();
  await B.page.goto(`${BASE}/#/friends`);
}

async function scenario9() {
  // Carol (nobody's friend but Alice's, scenario 2) asks Bob by mobile number in the
  // app; Bob's page shows the request live; he accepts; both lists change without a
  // reload or a tap on a tab; Carol writes to Bob.
  const [R, S] = [C, B];
  await S.page.goto(`${BASE}/#/friends`);
  await tid(S.page, 'friend-item').filter({ hasText: 'Alice' }).waitFor();
  await R.page.goto(`${BASE}/#/me`);
  await tid(R.page, 'addfriend-input').fill(S.mobile);
  await tid(R.page, 'addfriend-submit').click();
  await tid(R.page, 'addfriend-result').filter({ hasText: 'Request sent to Bob' }).waitFor();
  await R.page.goto(`${BASE}/#/friends`);
  await tid(R.page, 'outgoing-item').filter({ hasText: 'Bob' }).waitFor();
  let request = tid(S.page, 'request-item').filter({ hasText: 'Carol' });
  await request.waitFor();
  await tid(S.page, 'tab-friends').getByTestId('requests-badge').filter({ hasText: '1' }).waitFor();
  // Carol withdraws it: it leaves Bob's list live; she asks again.
  await tid(R.page, 'outgoing-item').filter({ hasText: 'Bob' }).getByTestId('request-cancel').click();
  await until("the withdrawn request left Bob's list", async () => (await request.count()) === 0);
  await tid(R.page, 'tab-me').click();
  await tid(R.page, 'addfriend-input').fill(S.mobile);
  await tid(R.page, 'addfriend-submit').click();
  await tid(R.page, 'addfriend-result').filter({ hasText: 'Request sent to Bob' }).waitFor();
  await openFriendsTab(R.page);
  await tid(R.page, 'outgoing-item').filter({ hasText: 'Bob' }).waitFor();
  request = tid(S.page, 'request-item').filter({ hasText: 'Carol' });
  await request.waitFor();
  await shoot(S.page, '35-friend-request');
  await shoot(R.page, '36-request-sent');
  assert((await tid(S.page, 'friend-item').filter({ hasText: 'Carol' }).count()) === 0, 'not a friend before Bob accepts');
  await request.getByTestId('request-accept').click();
  // Live on both sides: no reload, no tap on a tab.
  await tid(S.page, 'friend-item').filter({ hasText: 'Carol' }).waitFor();
  await tid(R.page, 'friend-item').filter({ hasText: 'Bob' }).waitFor();
  await until('the request left both lists', async () => (await tid(S.page, 'requests').count()) === 0 && (await tid(R.page, 'requests').count()) === 0);
  assert((await tid(S.page, 'requests-badge').count()) === 0, 'no request badge once answered');
  await tid(R.page, 'friend-item').filter({ hasText: 'Bob' }).click();
  await sendText(R.page, 'Thanks for accepting!');
  await expectSent(R.page, 'Thanks for accepting!');
  await tid(S.page, 'friend-item').filter({ hasText: 'Carol' }).getByTestId('row-preview').filter({ hasText: 'Thanks for accepting!' }).waitFor();

  // Bob blocks Carol from the chat's menu, confirming first; Carol's list loses Bob
  // live, and she cannot ask again.
  await tid(S.page, 'friend-item').filter({ hasText: 'Carol' }).click();
  await message(S.page, 'Thanks for accepting!').waitFor();
  // Remove asks first, and Cancel keeps the friend; a click elsewhere closes the menu.
  await tid(S.page, 'friend-menu').click();
  await tid(S.page, 'friend-remove').click();
  await tid(S.page, 'confirm-remove').filter({ hasText: 'Remove Carol from your friends?' }).waitFor();
  await tid(S.page, 'friend-cancel').click();
  await tid(S.page, 'friend-menu-panel').waitFor({ state: 'hidden' });
  await tid(S.page, 'friend-menu').click();
  await tid(S.page, 'friend-menu-panel').waitFor();
  await tid(S.page, 'chat-title').click();
  await tid(S.page, 'friend-menu-panel').waitFor({ state: 'hidden' });
  assert((await tid(S.page, 'friend-item').filter({ hasText: 'Carol' }).count()) === 1, 'Cancel kept the friend');
  await tid(S.page, 'friend-menu').click();
  await tid(S.page, 'friend-block').click();
  await tid(S.page, 'confirm-block').filter({ hasText: 'Block Carol?' }).waitFor();
  await shoot(S.page, '37-confirm-block');
  await tid(S.page, 'friend-confirm').click();
  await until("Carol left Bob's friends", async () => (await tid(S.page, 'friend-item').filter({ hasText: 'Carol' }).count()) === 0);
  await until("Bob left Carol's friends", async () => (await tid(R.page, 'friend-item').filter({ hasText: 'Bob' }).count()) === 0);
  const again = await (await R.ctx.request.post(`${BASE}/contact/addfriend`, { data: { dstname: S.mobile } })).json();
  assert(again.code === -1 && /cannot send a friend request/.test(again.msg), `a blocked user cannot ask again: ${JSON.stringify(again)}`);
  // The blocked list on the me tab; unblocking empties it.
  await S.page.goto(`${BASE}/#/me`);
  const blockedRow = tid(S.page, 'blocked-item').filter({ hasText: 'Carol' });
  await blockedRow.waitFor();
  await shoot(S.page, '38-blocked-list');
  await blockedRow.getByTestId('unblock').click();
  await tid(S.page, 'blocked-empty').waitFor();
}

async function scenario13() {
  // Three new users (so this runs alone too): O owns a group that M and R joined. O
  // renames it and removes R on the group info screen; M sees the notices and the new
  // name live; R's page loses the group.
  const O = await newUser('O', { phone: true });
  const M = await newUser('M13', { phone: false });
  const R = await newUser('R', { phone: true });
  await apiRegister(O, BASE, 'Olga');
  await apiRegister(M, BASE, 'Max');
  await apiRegister(R, BASE, 'Rita');
  const name = `Book club ${run}`;
  const created = await (await O.ctx.request.post(`${BASE}/contact/createcommunity`, { data: { name, memo: 'One book a month' } })).json();
  assert(created.code === 0, `group created: ${JSON.stringify(created)}`);
  const gid = created.data.id;
  for (const U of [M, R]) {
    const j = await (await U.ctx.request.post(`${BASE}/contact/joincommunity`, { data: { dstid: gid } })).json();
    assert(j.code === 0, `${U.nickname} joined: ${JSON.stringify(j)}`);
  }
  for (const U of [O, M, R]) {
    await U.page.goto(`${BASE}/#/chat/${11}/${gid}`);
    await tid(U.page, 'chat-title').filter({ hasText: name }).waitFor();
  }
  // The joins are in the history as centred notices.
  await tid(M.page, 'notice').filter({ hasText: 'Rita joined' }).waitFor();
  await sendText(R.page, 'Hello book club');
  await expectSent(R.page, 'Hello book club');
  await message(M.page, 'Hello book club').waitFor();

  // O opens the group info from the chat header: members, the owner marked.
  await tid(O.page, 'group-info-open').click();
  await tid(O.page, 'groupinfo-view').waitFor();
  await until('three members listed', async () => (await tid(O.page, 'member').count()) === 3);
  const ownerRow = tid(O.page, 'member').filter({ has: O.page.getByTestId('owner-tag') });
  assert((await ownerRow.count()) === 1 && (await ownerRow.getAttribute('data-id')) === String(O.id), 'the owner is marked');
  // M (not the owner) sees no management controls.
  await tid(M.page, 'group-info-open').click();
  await until("M's member list", async () => (await tid(M.page, 'member').count()) === 3);
  assert((await tid(M.page, 'member-remove').count()) === 0 && (await tid(M.page, 'groupinfo-rename').count()) === 0, 'a member gets no owner controls');
  // (The back link is for phones; on a desktop the group list is beside it.)
  await M.page.evaluate((g) => (location.hash = `#/chat/11/${g}`), gid);
  await tid(M.page, 'chat-view').waitFor();

  // O renames the group.
  const renamed = `Readers ${run}`;
  await tid(O.page, 'groupinfo-rename-input').fill(renamed);
  await tid(O.page, 'groupinfo-rename').click();
  await tid(O.page, 'groupinfo-name').filter({ hasText: renamed }).waitFor();
  await tid(M.page, 'notice').filter({ hasText: `Olga renamed the group to “${renamed}”` }).waitFor();
  await tid(M.page, 'chat-title').filter({ hasText: renamed }).waitFor();

  // O changes the icon (uploaded, then set); M's header shows it.
  await tid(O.page, 'groupinfo-icon-file').setInputFiles({ name: 'club.png', mimeType: 'image/png', buffer: makePng(64, 64, 5) });
  await tid(M.page, 'notice').filter({ hasText: 'Olga changed the group icon' }).waitFor();
  await until("M's header shows the new icon", async () => ((await tid(M.page, 'chat-view').locator('.head-avatar img').getAttribute('src').catch(() => '')) || '').startsWith('/resource/'));

  // O removes R (after confirming).
  O.page.once('dialog', (d) => d.accept());
  await tid(O.page, 'member').filter({ hasText: 'Rita' }).getByTestId('member-remove').click();
  await until('R gone from the member list', async () => (await tid(O.page, 'member').count()) === 2);
  await tid(M.page, 'notice').filter({ hasText: 'Rita was removed by Olga' }).waitFor();
  await tid(M.page, 'chat-sub').filter({ hasText: '2 members' }).waitFor();
  // R's page: the group's chat closes and the group is no longer listed.
  await until("R's chat closed", async () => (await R.page.evaluate(() => location.hash)) === '#/groups');
  await tid(R.page, 'home').waitFor();
  await until("R's group list lost the group", async () => (await tid(R.page, 'group-item').count()) === 0);
  await tid(R.page, 'toast').filter({ hasText: `You were removed from “${renamed}”` }).waitFor();
  const toasts = await tid(R.page, 'toast').allTextContents();
  assert(toasts.length === 1, `R is told once, and nothing fails after the removal: ${JSON.stringify(toasts)}`);
  // M's list has the new name, with the notice as its preview.
  await shoot(M.page, '40-group-notices');
  await shoot(O.page, '41-group-info');
  await shoot(R.page, '42-removed');
  await M.page.evaluate(() => (location.hash = '#/groups'));
  const row = tid(M.page, 'group-item').filter({ hasText: renamed });
  await row.waitFor();
  await row.getByTestId('row-preview').filter({ hasText: 'Rita was removed by Olga' }).waitFor();
  // O hands the group to M: the owner mark moves, O's controls go, M is told.
  O.page.once('dialog', (d) => d.accept());
  await tid(O.page, 'member').filter({ hasText: 'Max' }).getByTestId('member-transfer').click();
  await until("Max marked as the owner on O's screen", async () => (await tid(O.page, 'member').filter({ has: O.page.getByTestId('owner-tag') }).getAttribute('data-id')) === String(M.id));
  assert((await tid(O.page, 'member-remove').count()) === 0 && (await tid(O.page, 'groupinfo-rename').count()) === 0, 'the old owner has no owner controls');
  await M.page.evaluate((g) => (location.hash = `#/chat/11/${g}`), gid);
  await tid(M.page, 'notice').filter({ hasText: 'Olga made you the owner' }).waitFor();
  for (const U of [O, M, R]) {
    await U.ctx.close();
    pages.delete(U.name);
  }
}

// --- the run ------------------------------------------------------------------------------

const scenarios = [
  [1, 'two users register, become friends, exchange text, emoji and a picture', scenario1],
  [7, 'a picture shows as its thumbnail and opens full size; one without a thumbnail shows the original', scenario7],
  [2, 'a group of three chats; 1:1 messages stay in their own chat', scenario2],
  [3, 'history survives a reload and pages back on scroll', scenario3],
  [5, 'API errors are shown in words; logout revokes the session', scenario5],
  [6, 'the frame inspector shows the page\'s own frames: mask, fragments, ping/pong, close', scenario6],
  [8, 'unread counts from the server on every device, "seen", a list of 1,000', scenario8],
  [9, 'a friend request accepted live; block from the chat menu and unblock', scenario9],
  [10, 'recall and edit seen by the other side, reply with quote', scenario10],
  [13, 'group owner renames, removes a member, transfers the group; notices live', scenario13],
  [4, 'server killed and restarted: reconnecting banner, outbox, sync', scenario4],
  [11, 'a bad network: offline, server killed, reload offline', scenario11],
  [12, 'layout and accessibility: axe on every screen, light and dark', scenario12],
];
let passed = 0;
let failed = 0;
let skipped = 0;
for (const [n, name, fn] of scenarios) {
  if ((only && !only.has(n)) || ((n === 4 || n === 11) && !opt['server-bin'])) {
    console.log(`skip ${n} - ${name}`);
    skipped++;
    continue;
  }
  const t0 = Date.now();
  try {
    await fn();
    const bad = problems.splice(0);
    if (bad.length) throw new Error(bad.join('\n'));
    console.log(`ok ${n} - ${name} (${((Date.now() - t0) / 1000).toFixed(1)} s)`);
    passed++;
  } catch (e) {
    console.log(`not ok ${n} - ${name} (${((Date.now() - t0) / 1000).toFixed(1)} s)\n  ${String(e.stack || e).replace(/\n/g, '\n  ')}`);
    failed++;
    await failureDump(`s${n}`);
    break; // the scenarios build on each other
  }
}
await restartServer?.kill();
await browser.close();
console.log(`browser: ${passed} passed, ${failed} failed, ${skipped} skipped`);
writeFileSync(join(SHOTS, 'README.txt'), 'Screenshots from tests/browser/run.mjs (phone 390x844 and desktop 1280x800).\n');
process.exit(failed ? 1 : 0);
