// The home pane: friends, groups and "me" tabs. On a phone it fills the screen and a
// chat replaces it; on a wide screen it stays on the left of the open chat.

import { NOTICE, noticeText } from '../groups.js';
import { h, avatar, icon, busy, formatShort } from '../ui.js';
import { key } from '../session.js';
import { CMD } from '../commands.js';
import { requestsSection, blockedCard } from './friends.js';

export const CATEGORIES = ['General', 'Hobbies', 'Industry', 'Lifestyle', 'Study & exams'];
const TITLES = { friends: 'Friends', groups: 'Groups', me: 'Me' };

/** The right end of a list row: time of the last message and the unread count. */
function rowSide(conv) {
  return h('span', { class: 'row-side' }, h('span', { class: 'row-time', text: formatShort(conv?.activity()) }), badge(conv?.unread));
}

function badge(n) {
  return n > 0 ? h('span', { class: 'badge', 'data-testid': 'unread-badge', text: n > 99 ? '99+' : String(n) }) : null;
}

/** One line of the last message, for the lists: the newest here, or the server's summary. */
function preview(session, conv) {
  // Delivered messages only: a message that failed to go out long ago is not news.
  const m = conv?.delivered().at(-1);
  const sum = conv?.summary;
  if (sum?.id && (!m || m.id < sum.id)) {
    const who = sum.userid === session.me.id ? 'You: ' : conv.cmd === CMD.GROUP ? `${session.users.get(sum.userid)?.nickname || ''}${session.users.has(sum.userid) ? ': ' : ''}` : '';
    return who + sum.preview;
  }
  if (!m) return '';
  if (m.media === NOTICE) return noticeText(m, session.me);
  const who = m.cmd === CMD.GROUP && m.userid !== session.me.id ? `${session.users.get(m.userid)?.nickname || ''}: ` : m.userid === session.me.id ? 'You: ' : '';
  return who + (m.recalled ? '[Recalled]' : m.media === 4 ? '[Picture]' : m.media === 3 ? '[Voice]' : (m.content || '').replace(/\s+/g, ' '));
}

export class HomeView {
  constructor(session, { onLogout }) {
    this.session = session;
    this.onLogout = onLogout;
    this.tab = 'friends';
    this.title = h('h1', { class: 'pane-title', 'data-testid': 'home-title' });
    this.body = h('div', { class: 'pane-body' });
    this.tabButtons = {};
    const nav = h('nav', { class: 'tabs', 'aria-label': 'Sections' });
    for (const [t, ic] of [['friends', 'chat'], ['groups', 'users'], ['me', 'user']]) {
      const b = h('a', { class: 'tab', href: `#/${t}`, 'data-testid': `tab-${t}` }, icon(ic), h('span', { class: 'tab-label', text: TITLES[t] }), h('span', { class: 'tab-badge' }));
      // Friends come and go live (contact events); groups may change on the server without
      // a message to us: a tap on a tab, even the current one, fetches the lists again.
      b.addEventListener('click', () => t !== 'me' && session.loadContacts());
      this.tabButtons[t] = b;
      nav.append(b);
    }
    this.headAction = h('a', { class: 'icon-btn head-action', 'data-testid': 'head-action' }, icon('plus'));
    this.el = h('aside', { class: 'side', 'data-testid': 'home' }, h('header', { class: 'pane-head' }, this.title, this.headAction), this.body, nav);
    // Re-render on changes; the me tab holds forms, so it is not redrawn under the user.
    // At most once a frame: a sync of 1,000 messages is one redraw, not 1,000.
    const redraw = () => {
      if (this.tab === 'me' || this.redrawing) return;
      this.redrawing = true;
      requestAnimationFrame(() => {
        this.redrawing = false;
        if (this.tab !== 'me') this.render();
      });
    };
    session.addEventListener('contacts', redraw);
    session.addEventListener('requests', redraw);
    session.addEventListener('unread', redraw);
    session.addEventListener('presence', redraw);
    session.addEventListener('messages', (e) => !e.detail.history && redraw());
    this.render(true);
  }

  setTab(tab) {
    if (tab === this.tab) return;
    this.tab = tab;
    this.render(true);
  }

  /** Contacts by last activity, newest first; those without messages keep their order. */
  byActivity(items, cmd) {
    const s = this.session;
    const rank = new Map();
    for (const x of items) {
      const c = s.convs.get(key(cmd, x.id));
      rank.set(x, [c?.activity() || 0, c?.newestId() || 0]);
    }
    return [...rank.keys()].sort((a, b) => {
      const [ta, ia] = rank.get(a);
      const [tb, ib] = rank.get(b);
      return tb - ta || ib - ia;
    });
  }

  render(full = false) {
    if (this.tab === 'me' && !full && this.body.childElementCount) return;
    const started = performance.now();
    this.title.textContent = TITLES[this.tab];
    // "+" in the header: add a friend (on the me tab) or create a group.
    this.headAction.hidden = this.tab === 'me';
    this.headAction.href = this.tab === 'groups' ? '#/newgroup' : '#/me';
    this.headAction.setAttribute('aria-label', this.tab === 'groups' ? 'Create a group' : 'Add a friend');
    this.headAction.title = this.headAction.getAttribute('aria-label');
    for (const [t, b] of Object.entries(this.tabButtons)) {
      b.classList.toggle('active', t === this.tab);
      if (t === this.tab) b.setAttribute('aria-current', 'page');
      else b.removeAttribute('aria-current');
    }
    this.renderTabBadges();
    const scroll = this.body.scrollTop;
    const list = this.tab === 'friends' ? this.friendsList() : this.tab === 'groups' ? this.groupsList() : this.mePanel();
    this.el.dataset.buildMs = (performance.now() - started).toFixed(1);
    this.body.replaceChildren(list);
    this.body.scrollTop = scroll;
    // How long the list took to build, for the tests' figures.
    this.el.dataset.renderMs = (performance.now() - started).toFixed(1);
  }

  renderTabBadges() {
    let f = 0;
    let g = 0;
    for (const c of this.session.convs.values()) {
      if (c.cmd === CMD.SINGLE) f += c.unread;
      else g += c.unread;
    }
    // Unread messages first; else the friend requests waiting for an answer, in blue.
    const asks = this.session.incoming.size;
    const requests = asks > 0 && h('span', { class: 'badge info', 'data-testid': 'requests-badge', title: 'Friend requests', text: String(asks) });
    this.tabButtons.friends.querySelector('.tab-badge').replaceChildren(badge(f) || requests || '');
    this.tabButtons.groups.querySelector('.tab-badge').replaceChildren(badge(g) || '');
    document.title = f + g > 0 ? `(${f + g}) fastim` : 'fastim';
  }

  emptyState(text, actionText, href) {
    return h('div', { class: 'empty', 'data-testid': 'empty' }, h('p', { text }), actionText && h('a', { class: 'btn', href, text: actionText }));
  }

  friendsList() {
    const s = this.session;
    const requests = requestsSection(s);
    const withRequests = (el) => (requests ? h('div', {}, requests, el) : el);
    if (!s.contactsLoaded) return withRequests(this.emptyState(s.contactsError || 'Loading…'));
    if (!s.friends.size) return withRequests(this.emptyState('No friends yet. Add one by their mobile number.', 'Add a friend', '#/me'));
    const ul = h('ul', { class: 'list', 'data-testid': 'friend-list' });
    for (const f of this.byActivity(s.friends.values(), CMD.SINGLE)) {
      const conv = s.convs.get(key(CMD.SINGLE, f.id));
      const last = preview(s, conv);
      ul.append(
        h(
          'li',
          {},
          h(
            'a',
            { class: `row ${s.openKey === key(CMD.SINGLE, f.id) ? 'current' : ''}`, href: `#/chat/${CMD.SINGLE}/${f.id}`, 'data-testid': 'friend-item', 'data-id': f.id },
            h('span', { class: 'row-avatar' }, avatar(f.avatar, f.nickname, f.id), h('span', { class: `presence-dot ${s.presence.get(f.id)?.online ? 'on' : ''}`, 'data-testid': 'presence', 'data-online': String(Boolean(s.presence.get(f.id)?.online)), title: s.presenceText(f.id) })),
            h('span', { class: 'row-main' }, h('span', { class: 'row-title', 'data-testid': 'friend-name', text: f.nickname }), h('span', { class: 'row-sub', 'data-testid': 'row-preview', text: last || f.memo || '\u00a0' })),
            rowSide(conv),
          ),
        ),
      );
    }
    return requests ? h('div', {}, requests, h('h2', { class: 'list-head', text: 'Friends' }), ul) : ul;
  }

  groupsList() {
    const s = this.session;
    if (!s.contactsLoaded) return this.emptyState(s.contactsError || 'Loading…');
    if (!s.groups.size) return this.emptyState('You are in no group yet. Join one by its name, or create one.', 'Join or create a group', '#/me');
    const ul = h('ul', { class: 'list', 'data-testid': 'group-list' });
    for (const g of this.byActivity(s.groups.values(), CMD.GROUP)) {
      const conv = s.convs.get(key(CMD.GROUP, g.id));
      ul.append(
        h(
          'li',
          {},
          h(
            'a',
            { class: `row ${s.openKey === key(CMD.GROUP, g.id) ? 'current' : ''}`, href: `#/chat/${CMD.GROUP}/${g.id}`, 'data-testid': 'group-item', 'data-id': g.id },
            avatar(g.icon, g.name, `g${g.id}`, { square: true }),
            h(
              'span',
              { class: 'row-main' },
              h('span', { class: 'row-title' }, h('span', { 'data-testid': 'group-name', text: g.name }), h('span', { class: 'tag', text: CATEGORIES[g.cate] || `#${g.cate}` })),
              h('span', { class: 'row-sub', 'data-testid': 'row-preview', text: preview(s, conv) || g.memo || '\u00a0' }),
            ),
            rowSide(conv),
          ),
        ),
      );
    }
    return ul;
  }

  /** An input with a button and a result line under it (for add friend, join group). */
  action({ label, placeholder, type = 'text', button, testid, run }) {
    const input = h('input', { type, placeholder, 'data-testid': `${testid}-input`, inputmode: type === 'tel' ? 'tel' : null });
    const btn = h('button', { type: 'submit', class: 'btn primary', 'data-testid': `${testid}-submit`, text: button });
    const out = h('p', { class: 'form-note', 'data-testid': `${testid}-result`, role: 'status', hidden: true });
    const form = h('form', { class: 'action', novalidate: true }, h('label', { class: 'field-label', text: label }), h('div', { class: 'action-row' }, input, btn), out);
    form.addEventListener('submit', (ev) => {
      ev.preventDefault();
      const v = input.value.trim();
      if (!v) {
        out.hidden = false;
        out.className = 'form-note error';
        out.textContent = `${label}: please fill it in.`;
        return;
      }
      busy(btn, async () => {
        try {
          const msg = await run(v);
          out.className = 'form-note ok';
          out.textContent = msg;
          input.value = '';
        } catch (e) {
          out.className = 'form-note error';
          out.textContent = e.message;
        }
        out.hidden = false;
      });
    });
    return form;
  }

  mePanel() {
    const s = this.session;
    const me = s.me;
    const sex = { M: 'Male', W: 'Female' }[me.sex];
    const card = h(
      'section',
      { class: 'card me-card', 'data-testid': 'me-card' },
      avatar(me.avatar, me.nickname, me.id, { size: 'xl' }),
      h(
        'div',
        { class: 'me-info' },
        h('h2', { 'data-testid': 'me-nickname', text: me.nickname }),
        h('p', { class: 'muted', text: [me.mobile, sex].filter(Boolean).join(' · ') }),
        me.memo && h('p', { class: 'me-memo', text: me.memo }),
      ),
    );
    const addFriend = this.action({
      label: 'Add a friend',
      placeholder: 'Mobile number',
      type: 'tel',
      button: 'Add',
      testid: 'addfriend',
      run: async (mobile) => {
        const r = await s.addFriend(mobile);
        const who = r.data?.user?.nickname || r.data?.nickname;
        if (r.data?.status === 'requested') return `Request sent to ${who || mobile}. They become your friend once they accept.`;
        return who ? `${who} is now your friend.` : r.msg || 'Friend added.';
      },
    });
    const join = this.action({
      label: 'Join a group',
      placeholder: 'Exact group name',
      button: 'Join',
      testid: 'joingroup',
      run: async (name) => {
        const r = await s.joinGroup(name);
        return r.data?.name ? `You joined ${r.data.name}.` : r.msg || 'You joined the group.';
      },
    });
    this.blockedCard?.dispose();
    this.blockedCard = blockedCard(s);
    const logout = h('button', { type: 'button', class: 'btn danger block', 'data-testid': 'logout' }, icon('logout'), ' Log out');
    logout.addEventListener('click', () => busy(logout, () => this.onLogout()));
    return h(
      'div',
      { class: 'me', 'data-testid': 'me-panel' },
      card,
      h('section', { class: 'card' }, addFriend),
      h('section', { class: 'card' }, join, h('a', { class: 'btn block', href: '#/newgroup', 'data-testid': 'goto-newgroup' }, icon('plus'), ' Create a group')),
      this.blockedCard,
      logout,
    );
  }
}
