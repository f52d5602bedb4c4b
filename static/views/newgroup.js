// Create a group: icon (uploaded as soon as it is picked, so a refused picture is known
// before the form is sent), name, category and description.

import { h, avatar, busy, icon } from '../ui.js';
import { uploadImage } from '../images.js';
import { CATEGORIES } from './home.js';

export function newGroupView(session, { onCreated, backHref }) {
  let iconUrl = '';
  let uploading = null;
  const err = h('p', { class: 'form-error', role: 'alert', 'data-testid': 'group-error', hidden: true });
  const showError = (m) => {
    err.textContent = m;
    err.hidden = !m;
  };
  const preview = h('span', { class: 'avatar-preview', 'data-testid': 'group-icon-preview' }, avatar('', '+', 'newgroup', { size: 'xl', square: true }));
  const file = h('input', { type: 'file', accept: 'image/*', class: 'visually-hidden', 'data-testid': 'group-icon-file' });
  file.addEventListener('change', () => {
    const f = file.files[0];
    if (!f) return;
    preview.replaceChildren(avatar(URL.createObjectURL(f), '+', 'newgroup', { size: 'xl', square: true }));
    preview.classList.add('loading');
    showError('');
    iconUrl = '';
    const job = uploadImage(f)
      .then((url) => {
        if (uploading === job) iconUrl = url;
      })
      .catch((e) => {
        if (uploading !== job) return;
        showError(`The icon was not uploaded: ${e.message}`);
        preview.replaceChildren(avatar('', '+', 'newgroup', { size: 'xl', square: true }));
      })
      .finally(() => {
        if (uploading === job) {
          uploading = null;
          preview.classList.remove('loading');
        }
      });
    uploading = job;
  });
  const name = h('input', { type: 'text', maxlength: 30, required: true, placeholder: 'A unique name, 1 to 30 characters', 'data-testid': 'group-name' });
  const cate = h('select', { 'data-testid': 'group-cate' }, CATEGORIES.map((c, i) => h('option', { value: String(i), text: c })));
  const memo = h('textarea', { rows: 3, maxlength: 120, placeholder: 'What the group is about (optional)', 'data-testid': 'group-memo' });
  const submit = h('button', { type: 'submit', class: 'btn primary block', 'data-testid': 'group-submit', text: 'Create group' });

  const form = h(
    'form',
    { class: 'card form-card', novalidate: true },
    h('label', { class: 'avatar-pick', title: 'Choose an icon' }, preview, h('span', { class: 'avatar-pick-text', text: 'Group icon' }), file),
    h('label', { class: 'field' }, h('span', { class: 'field-label', text: 'Name' }), name),
    h('label', { class: 'field' }, h('span', { class: 'field-label', text: 'Category' }), cate),
    h('label', { class: 'field' }, h('span', { class: 'field-label', text: 'Description' }), memo),
    err,
    submit,
  );
  form.addEventListener('submit', (ev) => {
    ev.preventDefault();
    const n = name.value.trim();
    if (!n) return showError('Give the group a name.');
    if ([...n].length > 30) return showError('The name can have at most 30 characters.');
    showError('');
    busy(submit, async () => {
      try {
        if (uploading) await uploading;
        const g = await session.createGroup({ name: n, icon: iconUrl, cate: Number(cate.value), memo: memo.value.trim() });
        onCreated(g);
      } catch (e) {
        showError(e.message);
      }
    });
  });

  const el = h(
    'section',
    { class: 'detail-page', 'data-testid': 'newgroup-view' },
    h('header', { class: 'pane-head' }, h('a', { class: 'icon-btn back', href: backHref, 'aria-label': 'Back', 'data-testid': 'newgroup-back' }, icon('back')), h('h2', { class: 'pane-title', text: 'New group' })),
    h('div', { class: 'pane-body padded' }, form),
  );
  return { el, destroy() {}, focus: () => name.focus() };
}
