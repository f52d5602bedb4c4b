// Login and registration. Both end with a logged-in session (the server sets the
// HttpOnly cookie), handed to app.js through `onLoggedIn(profile)`.

import * as api from '../api.js';
import { h, avatar, busy, toast } from '../ui.js';
import { uploadImage } from '../images.js';

const MOBILE = /^\+?[0-9]{5,20}$/; // PROTOCOL.md field rules: any country, not only China

// The server's password rule (PROTOCOL.md field rules), checked here so the form can say
// what is wrong before a round trip. The server also refuses the most common passwords;
// its list stays on the server, and its message is shown as it comes.
const PASSWORD_RULE = '8 to 128 characters, not your mobile number, not a common password.';

function passwordProblem(pw, mobile) {
  const chars = [...pw]; // characters, as the server counts them, not UTF-16 units
  const trimmed = pw.trim();
  if (chars.length < 8 || chars.length > 128) return 'The password must have 8 to 128 characters.';
  if (!trimmed) return 'The password must not be only spaces.';
  const cs = [...trimmed];
  if (cs.every((c) => c === cs[0])) return 'The password must not be one character repeated.';
  if (trimmed === mobile || trimmed === mobile.replace(/^\+/, '')) return 'The password must not be your mobile number.';
  return '';
}

function field(label, input, hint) {
  return h('label', { class: 'field' }, h('span', { class: 'field-label', text: label }), input, hint && h('span', { class: 'field-hint', text: hint }));
}

function errorLine(testid) {
  return h('p', { class: 'form-error', role: 'alert', 'data-testid': testid, hidden: true });
}

function showError(el, message) {
  el.textContent = message;
  el.hidden = !message;
}

function brand(subtitle) {
  return h('div', { class: 'brand' }, h('img', { src: '/img/icon.svg', alt: '', class: 'brand-logo' }), h('h1', { text: 'fastim' }), h('p', { class: 'brand-sub', text: subtitle }));
}

export function loginView({ onLoggedIn }) {
  const mobile = h('input', { type: 'tel', name: 'mobile', autocomplete: 'username', inputmode: 'tel', required: true, placeholder: 'e.g. 13800000000', 'data-testid': 'login-mobile' });
  const passwd = h('input', { type: 'password', name: 'password', autocomplete: 'current-password', required: true, placeholder: 'Password', 'data-testid': 'login-password' });
  const err = errorLine('login-error');
  const submit = h('button', { type: 'submit', class: 'btn primary block', 'data-testid': 'login-submit', text: 'Log in' });
  const form = h(
    'form',
    { class: 'card auth-card', 'data-testid': 'login-view', novalidate: true },
    brand('Log in to chat with your friends'),
    field('Mobile number', mobile),
    field('Password', passwd),
    err,
    submit,
    h('p', { class: 'auth-switch' }, 'No account yet? ', h('a', { href: '#/register', 'data-testid': 'goto-register', text: 'Create one' })),
  );
  form.addEventListener('submit', (ev) => {
    ev.preventDefault();
    const m = mobile.value.trim();
    if (!MOBILE.test(m)) return showError(err, 'Enter your mobile number: 5 to 20 digits, optionally starting with +.');
    if (!passwd.value) return showError(err, 'Enter your password.');
    showError(err, '');
    busy(submit, async () => {
      try {
        onLoggedIn(await api.login(m, passwd.value));
      } catch (e) {
        showError(err, e.message);
      }
    });
  });
  return { el: h('main', { class: 'auth' }, form), focus: () => mobile.focus() };
}

export function registerView({ onLoggedIn }) {
  let avatarFile = null;
  const preview = h('span', { class: 'avatar-preview', 'data-testid': 'reg-avatar-preview' }, avatar('', '+', 'new', { size: 'xl' }));
  const fileInput = h('input', { type: 'file', accept: 'image/*', class: 'visually-hidden', 'data-testid': 'reg-avatar-file' });
  fileInput.addEventListener('change', () => {
    const f = fileInput.files[0];
    if (!f) return;
    avatarFile = f;
    preview.replaceChildren(avatar(URL.createObjectURL(f), nickname.value || '?', 'new', { size: 'xl' }));
    preview.querySelector('img')?.setAttribute('data-testid', 'reg-avatar-img');
  });
  const mobile = h('input', { type: 'tel', inputmode: 'tel', autocomplete: 'username', required: true, placeholder: 'e.g. 13800000000', 'data-testid': 'reg-mobile' });
  const pw = h('input', { type: 'password', autocomplete: 'new-password', required: true, placeholder: 'At least 8 characters', 'data-testid': 'reg-password' });
  const pw2 = h('input', { type: 'password', autocomplete: 'new-password', required: true, placeholder: 'Once more', 'data-testid': 'reg-password2' });
  const nickname = h('input', { type: 'text', autocomplete: 'nickname', maxlength: 20, required: true, placeholder: 'How friends see you', 'data-testid': 'reg-nickname' });
  const sexM = h('input', { type: 'radio', name: 'sex', value: 'M', 'data-testid': 'reg-sex-M' });
  const sexW = h('input', { type: 'radio', name: 'sex', value: 'W', 'data-testid': 'reg-sex-W' });
  const memo = h('textarea', { rows: 2, maxlength: 140, placeholder: 'A few words about you (optional)', 'data-testid': 'reg-memo' });
  const err = errorLine('reg-error');
  const submit = h('button', { type: 'submit', class: 'btn primary block', 'data-testid': 'reg-submit', text: 'Create account' });

  const form = h(
    'form',
    { class: 'card auth-card', 'data-testid': 'register-view', novalidate: true },
    brand('Create your account'),
    h('label', { class: 'avatar-pick', title: 'Choose a profile picture' }, preview, h('span', { class: 'avatar-pick-text', text: 'Profile picture' }), fileInput),
    field('Mobile number', mobile),
    field('Password', pw, PASSWORD_RULE),
    field('Confirm password', pw2),
    field('Nickname', nickname),
    h(
      'fieldset',
      { class: 'field sex' },
      h('legend', { class: 'field-label', text: 'Sex' }),
      h('label', { class: 'radio' }, sexM, ' Male'),
      h('label', { class: 'radio' }, sexW, ' Female'),
    ),
    field('About you', memo),
    err,
    submit,
    h('p', { class: 'auth-switch' }, 'Already registered? ', h('a', { href: '#/login', 'data-testid': 'goto-login', text: 'Log in' })),
  );

  form.addEventListener('submit', (ev) => {
    ev.preventDefault();
    const m = mobile.value.trim();
    const nick = nickname.value.trim();
    const problem =
      (!MOBILE.test(m) && 'Mobile number: 5 to 20 digits, optionally starting with +.') ||
      passwordProblem(pw.value, m) ||
      (pw.value !== pw2.value && 'The two passwords are not the same.') ||
      (!nick && 'Choose a nickname.') ||
      ([...nick].length > 20 && 'The nickname can have at most 20 characters.');
    if (problem) return showError(err, problem);
    showError(err, '');
    busy(submit, async () => {
      let me;
      try {
        me = await api.register({
          mobile: m,
          passwd: pw.value,
          nickname: nick,
          sex: sexM.checked ? 'M' : sexW.checked ? 'W' : '',
          memo: memo.value.trim(),
        });
      } catch (e) {
        return showError(err, e.message);
      }
      // Uploads need a session, so the picture goes up once the account exists.
      if (avatarFile) {
        try {
          const url = await uploadImage(avatarFile);
          me = await api.updateMe({ avatar: url });
        } catch (e) {
          toast(`Your account was created, but the picture was not saved: ${e.message}`);
        }
      }
      onLoggedIn(me);
    });
  });
  return { el: h('main', { class: 'auth' }, form), focus: () => mobile.focus() };
}
