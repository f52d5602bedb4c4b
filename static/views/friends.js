// Friendship by consent (PROTOCOL.md "Routes", "Contact events"): the requests at the
// top of the friends list, the blocked users on the me tab, and the Remove / Block
// menu of a one-to-one chat. Everything here follows the session's `requests`,
// `contacts` and `blocked` events, which the socket's contact events (cmd 30) raise:
// nothing waits for a reload or a tap on a tab.

import { h, avatar, icon, busy, toast, formatShort } from '../ui.js';

/** A small button that runs `fn`, showing a failure as a toast. */
function action(label, cls, testid, fn) {
  const b = h('button', { type: 'button', class: `btn small ${cls}`, 'data-testid': testid, text: label });
  b.addEventListener('click', (ev) => {
    ev.preventDefault();
    ev.stopPropagation();
    busy(b, async () => {
      try {
        await fn();
      } catch (e) {
        toast(e.message);
      }
    });
  });
  return b;
}

function personRow(user, sub, testid, ...buttons) {
  return h(
    'li',
    {},
    h(
      'div',
      { class: 'row person', 'data-testid': testid, 'data-id': user.id },
      avatar(user.avatar, user.nickname, user.id),
      h('span', { class: 'row-main' }, h('span', { class: 'row-title', 'data-testid': `${testid}-name`, text: user.nickname || `#${user.id}` }), h('span', { class: 'row-sub', text: sub })),
      buttons.length ? h('span', { class: 'row-actions' }, buttons) : null,
    ),
  );
}

/**
 * Requests waiting for me (Accept / Decline) and mine waiting for an answer, newest
 * first; null when there are none.
 */
export function requestsSection(session) {
  const incoming = [...session.incoming.values()].sort((a, b) => b.createat - a.createat);
  const outgoing = [...session.outgoing.values()].sort((a, b) => b.createat - a.createat);
  if (!incoming.length && !outgoing.length) return null;
  const box = h('div', { class: 'requests', 'data-testid': 'requests' });
  if (incoming.length) {
    const ul = h('ul', { class: 'list', 'data-testid': 'request-list' });
    for (const r of incoming) {
      const id = r.user.id;
      ul.append(
        personRow(
          r.user,
          'wants to be friends',
          'request-item',
          // The new friend shows in the friends list at once.
          action('Accept', 'primary', 'request-accept', () => session.acceptRequest(id)),
          action('Decline', '', 'request-decline', () => session.declineRequest(id)),
        ),
      );
    }
    box.append(h('h2', { class: 'list-head', text: `Friend requests (${incoming.length})` }), ul);
  }
  if (outgoing.length) {
    const ul = h('ul', { class: 'list', 'data-testid': 'outgoing-list' });
    for (const r of outgoing) {
      const id = r.user.id;
      ul.append(personRow(r.user, `request sent · ${formatShort(r.createat)}`, 'outgoing-item', action('Withdraw', '', 'request-cancel', () => session.cancelRequest(id))));
    }
    box.append(h('h2', { class: 'list-head', text: 'Waiting for an answer' }), ul);
  }
  return box;
}

/** The me tab's card of users I blocked, each with Unblock; it keeps itself current. */
export function blockedCard(session) {
  const list = h('ul', { class: 'list inset', 'data-testid': 'blocked-list' });
  const card = h('section', { class: 'card', 'data-testid': 'blocked-card' }, h('h2', { class: 'card-title', text: 'Blocked users' }), list);
  const render = () => {
    const rows = [...session.blocked.values()].sort((a, b) => b.createat - a.createat);
    if (!session.blockedLoaded) {
      list.replaceChildren(h('li', { class: 'muted small-note', text: 'Loading…' }));
      return;
    }
    if (!rows.length) {
      list.replaceChildren(h('li', { class: 'muted small-note', 'data-testid': 'blocked-empty', text: 'Nobody. A blocked user cannot message you, ask you again, or see when you are online.' }));
      return;
    }
    list.replaceChildren(...rows.map((r) => personRow(r.user, `since ${formatShort(r.createat)}`, 'blocked-item', action('Unblock', '', 'unblock', () => session.unblock(r.user.id)))));
  };
  session.addEventListener('blocked', render);
  // The me tab is built anew each time it is shown: drop the listener of the old card.
  card.dispose = () => session.removeEventListener('blocked', render);
  render();
  session.loadBlocked();
  return card;
}

/**
 * The "⋮" menu of a one-to-one chat's header: Remove friend and Block, each asking
 * to confirm first. `onGone` runs after either (the chat can close).
 */
export function friendMenu(session, id, onGone) {
  const btn = h('button', { type: 'button', class: 'icon-btn', 'aria-label': 'Friend options', 'aria-haspopup': 'true', 'aria-expanded': 'false', 'data-testid': 'friend-menu' }, icon('more'));
  const panel = h('div', { class: 'menu', role: 'menu', 'data-testid': 'friend-menu-panel', hidden: true });
  const wrap = h('div', { class: 'menu-wrap' }, btn, panel);
  // A tap elsewhere closes it (listened to only while it is open).
  const outside = (e) => !wrap.contains(e.target) && close();
  const close = () => {
    panel.hidden = true;
    btn.setAttribute('aria-expanded', 'false');
    document.removeEventListener('pointerdown', outside);
  };
  const choices = () => {
    const name = session.friends.get(id)?.nickname || session.users.get(id)?.nickname || 'this user';
    const confirm = (question, yes, testid, run) => {
      const ok = action(yes, 'danger', 'friend-confirm', async () => {
        await run();
        close();
        onGone?.();
      });
      const no = action('Cancel', '', 'friend-cancel', async () => close());
      panel.replaceChildren(h('p', { class: 'menu-question', 'data-testid': testid, text: question }), h('div', { class: 'menu-buttons' }, no, ok));
    };
    const item = (label, testid, fn) => {
      const b = h('button', { type: 'button', class: 'menu-item', role: 'menuitem', 'data-testid': testid, text: label });
      b.addEventListener('click', fn);
      return b;
    };
    panel.replaceChildren(
      session.friends.has(id) &&
        item('Remove friend', 'friend-remove', () => confirm(`Remove ${name} from your friends? You can no longer message each other.`, 'Remove', 'confirm-remove', () => session.removeFriend(id))),
      item('Block', 'friend-block', () => confirm(`Block ${name}? They cannot message you, ask you again, or see when you are online. They are not told.`, 'Block', 'confirm-block', () => session.block(id))),
    );
  };
  btn.addEventListener('click', () => {
    if (!panel.hidden) return close();
    choices();
    panel.hidden = false;
    btn.setAttribute('aria-expanded', 'true');
    document.addEventListener('pointerdown', outside);
  });
  wrap.addEventListener('keydown', (e) => e.key === 'Escape' && close());

  return wrap;
}
