// A group's info screen (#/groupinfo/<id>, from the group chat's header): the members
// with the owner marked; for the owner, rename, change the icon, remove a member and
// transfer ownership (each asked to confirm where it cannot be undone); leave for
// everyone. Also the centred line a group notice is shown as in the conversation.

import { h, avatar, busy, icon, toast } from '../ui.js';
import { uploadImage } from '../images.js';
import { CMD } from '../commands.js';
import { key } from '../session.js';
import { noticeText, removesMe, updateGroup, removeMember, transferGroup, leaveGroup } from '../groups.js';

/** A group notice in the conversation: a centred system line. */
export function noticeRow(m, me) {
  return h('div', { class: 'msg notice', 'data-testid': 'notice', 'data-id': m.id || null, role: 'note' }, h('span', { class: 'notice-text', 'data-testid': 'notice-text', text: noticeText(m, me) }));
}

/** The header button that opens the info screen of group `id`. */
export function groupInfoLink(id) {
  return h('a', { class: 'icon-btn head-action', href: `#/groupinfo/${id}`, 'aria-label': 'Group info', title: 'Group info', 'data-testid': 'group-info-open' }, icon('users'));
}

export class GroupInfoView {
  constructor(session, id, { backHref }) {
    this.session = session;
    this.id = id;
    this.listeners = [];
    this.members = [];
    this.err = h('p', { class: 'form-error', role: 'alert', 'data-testid': 'groupinfo-error', hidden: true });
    this.body = h('div', { class: 'pane-body padded' });
    this.title = h('h2', { class: 'pane-title', text: 'Group info' });
    this.el = h(
      'section',
      { class: 'detail-page', 'data-testid': 'groupinfo-view' },
      h('header', { class: 'pane-head' }, h('a', { class: 'icon-btn back', href: backHref, 'aria-label': 'Back', 'data-testid': 'groupinfo-back' }, icon('back')), this.title),
      this.body,
    );
    this.on(session, 'contacts', () => this.render());
    // A notice of this group: someone joined, left, was removed, or the owner changed.
    this.on(session, 'messages', (e) => {
      const m = e.detail.key === key(CMD.GROUP, id) && e.detail.id && !e.detail.history && session.conv(e.detail.key).byId.get(e.detail.id);
      if (m && !removesMe(m, session.me.id)) this.load();
    });
    this.load();
  }

  on(target, type, fn) {
    target.addEventListener(type, fn);
    this.listeners.push([target, type, fn]);
  }

  destroy() {
    for (const [t, type, fn] of this.listeners) t.removeEventListener(type, fn);
  }

  showError(m) {
    this.err.textContent = m;
    this.err.hidden = !m;
  }

  async load() {
    const rows = await this.session.loadMembers(this.id);
    if (rows) this.members = rows;
    this.render();
  }

  render() {
    const s = this.session;
    const g = s.groups.get(this.id);
    if (!g) {
      this.body.replaceChildren(h('p', { class: 'muted', text: 'You are not a member of this group.' }));
      return;
    }
    const owner = g.ownerid === s.me.id;
    const parts = [];
    parts.push(
      h(
        'div',
        { class: 'card group-card' },
        this.iconPicker(g, owner),
        h('div', { class: 'group-card-text' }, h('h3', { class: 'group-card-name', 'data-testid': 'groupinfo-name', text: g.name }), g.memo ? h('p', { class: 'muted', text: g.memo }) : null),
      ),
    );
    if (owner) parts.push(this.renameForm(g));
    parts.push(this.err);
    const list = h('ul', { class: 'list member-list', 'data-testid': 'groupinfo-members' });
    for (const m of this.members) {
      const isOwner = m.role === 'owner';
      const actions = [];
      if (owner && m.id !== s.me.id) {
        const remove = h('button', { type: 'button', class: 'btn small danger', 'data-testid': 'member-remove', text: 'Remove' });
        remove.addEventListener('click', () => this.act(remove, `Remove ${m.nickname} from “${g.name}”?`, () => removeMember(this.id, m.id)));
        const transfer = h('button', { type: 'button', class: 'btn small', 'data-testid': 'member-transfer', text: 'Make owner' });
        transfer.addEventListener('click', () => this.act(transfer, `Make ${m.nickname} the owner of “${g.name}”? You will stay a member but can no longer manage the group.`, () => transferGroup(this.id, m.id)));
        actions.push(transfer, remove);
      }
      list.append(
        h(
          'li',
          { class: 'row member-row', 'data-testid': 'member', 'data-id': m.id, 'data-role': m.role },
          avatar(m.avatar, m.nickname, m.id, { size: 'sm' }),
          h('span', { class: 'row-main' }, h('span', { class: 'row-title' }, h('span', { 'data-testid': 'member-name', text: m.id === s.me.id ? `${m.nickname} (you)` : m.nickname }), isOwner ? h('span', { class: 'tag owner', 'data-testid': 'owner-tag', text: 'Owner' }) : null)),
          actions.length ? h('span', { class: 'member-actions' }, actions) : null,
        ),
      );
    }
    parts.push(h('h3', { class: 'section-title', text: `${this.members.length} member${this.members.length === 1 ? '' : 's'}` }), list);
    const leave = h('button', { type: 'button', class: 'btn danger block', 'data-testid': 'group-leave', text: 'Leave group' });
    const others = this.members.length > 1;
    const leaveQ = owner && others ? `Leave “${g.name}”? The member who joined first will own it (to choose someone else, make them owner first).` : `Leave “${g.name}”?`;
    leave.addEventListener('click', () =>
      this.act(leave, leaveQ, async () => {
        await leaveGroup(this.id);
        s.groups.delete(this.id);
        s.emit('contacts');
        location.hash = '#/groups';
      }),
    );
    parts.push(leave);
    this.body.replaceChildren(...parts);
  }

  /** Asks `question`, then runs `fn` with `button` busy; errors are shown here. */
  act(button, question, fn) {
    if (!confirm(question)) return;
    this.showError('');
    busy(button, async () => {
      try {
        await fn();
      } catch (e) {
        this.showError(e.message);
      }
    });
  }

  iconPicker(g, owner) {
    const img = avatar(g.icon, g.name, `g${g.id}`, { size: 'xl', square: true });
    if (!owner) return h('span', { class: 'avatar-preview' }, img);
    const preview = h('span', { class: 'avatar-preview', 'data-testid': 'groupinfo-icon' }, img);
    const file = h('input', { type: 'file', accept: 'image/*', class: 'visually-hidden', 'data-testid': 'groupinfo-icon-file' });
    file.addEventListener('change', async () => {
      const f = file.files[0];
      if (!f) return;
      preview.classList.add('loading');
      this.showError('');
      try {
        const url = await uploadImage(f);
        const updated = await updateGroup(this.id, { icon: url });
        this.session.groups.set(updated.id, updated);
        this.session.emit('contacts');
      } catch (e) {
        this.showError(`The icon was not changed: ${e.message}`);
      } finally {
        preview.classList.remove('loading');
      }
    });
    return h('label', { class: 'avatar-pick', title: 'Change the icon' }, preview, h('span', { class: 'avatar-pick-text', text: 'Change icon' }), file);
  }

  renameForm(g) {
    const name = h('input', { type: 'text', maxlength: 30, value: g.name, 'aria-label': 'Group name', 'data-testid': 'groupinfo-rename-input' });
    const save = h('button', { type: 'submit', class: 'btn primary', 'data-testid': 'groupinfo-rename', text: 'Rename' });
    const form = h('form', { class: 'inline-form', novalidate: true }, name, save);
    form.addEventListener('submit', (ev) => {
      ev.preventDefault();
      const n = name.value.trim();
      if (!n) return this.showError('Give the group a name.');
      if ([...n].length > 30) return this.showError('The name can have at most 30 characters.');
      if (n === g.name) return;
      this.showError('');
      busy(save, async () => {
        try {
          const updated = await updateGroup(this.id, { name: n });
          this.session.groups.set(updated.id, updated);
          this.session.emit('contacts');
          toast('Group renamed.', 'ok', 2000);
        } catch (e) {
          this.showError(e.message);
        }
      });
    });
    return form;
  }
}
