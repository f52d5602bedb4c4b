// The frame inspector (served with --inspector; PROTOCOL.md, "Frame inspector").
//
// A page's WebSocket API hides frames, so the server reports them: the page opens the
// feed (/inspector/feed), which answers with a token; then it opens its echo
// connection as /echo?trace=TOKEN, and the feed sends every frame of that connection,
// both ways, with the two handshake heads, as JSON. The page only draws them, and
// sends the feed's commands (a server ping, the next echo in fragments).

import { h } from '/ui.js';

const MAX_SHOWN = 300; // frame cards kept on the page; older ones are removed
const KEEPALIVE_MS = 20_000; // the feed closes after 60 s of silence

const $ = (id) => document.querySelector(`[data-testid="${id}"]`);
const list = $('frame-list');
const stateEl = $('echo-state');
const wsBase = `${location.protocol === 'https:' ? 'wss' : 'ws'}://${location.host}`;

let feed = null;
let echo = null;
let keepalive = null;
let wantEcho = true; // open an echo as soon as a token comes
let offeredDeflate = false; // the browser's request offered permessage-deflate
let deflateAgreed = false; // the server's 101 accepted it
const fragments = { client: 0, server: 0 }; // frames of the message in progress, per sender

// --- RFC 6455 names --------------------------------------------------------------------

const OPCODES = {
  0: ['continuation', '§5.4', 'continues a fragmented message'],
  1: ['text', '§5.6', 'first frame of a UTF-8 text message'],
  2: ['binary', '§5.6', 'first frame of a binary message'],
  8: ['close', '§5.5.1', 'starts or answers the closing handshake'],
  9: ['ping', '§5.5.2', 'asks the other side for a pong'],
  10: ['pong', '§5.5.3', 'answers a ping with its payload'],
};

const CLOSE_CODES = {
  1000: 'Normal Closure',
  1001: 'Going Away',
  1002: 'Protocol Error',
  1003: 'Unsupported Data',
  1005: 'No Status Received (never sent)',
  1006: 'Abnormal Closure (never sent)',
  1007: 'Invalid Payload Data',
  1008: 'Policy Violation',
  1009: 'Message Too Big',
  1010: 'Mandatory Extension',
  1011: 'Internal Error',
  1012: 'Service Restart',
  1013: 'Try Again Later',
  1014: 'Bad Gateway',
};

function closeMeaning(code) {
  if (CLOSE_CODES[code]) return CLOSE_CODES[code];
  if (code >= 3000 && code <= 3999) return 'registered for libraries and frameworks';
  if (code >= 4000 && code <= 4999) return 'private use, by agreement of the two ends';
  return 'not a valid code';
}

const hexPairs = (hex) => (hex || '').match(/../g) || [];
const spaced = (hex) => hexPairs(hex).join(' ');
const bits = (byte, n = 8) => byte.toString(2).padStart(n, '0');

// --- drawing ------------------------------------------------------------------------------

function setState(state, text) {
  stateEl.dataset.state = state;
  stateEl.textContent = text;
  $('insp-reconnect').disabled = state !== 'closed';
}

function add(el) {
  const nearBottom = window.innerHeight + window.scrollY >= document.body.scrollHeight - 80;
  list.append(el);
  while (list.children.length > MAX_SHOWN) list.firstElementChild.remove();
  if (nearBottom) el.scrollIntoView({ block: 'end' });
}

function note(text, kind = 'info') {
  add(h('li', { class: `insp-note ${kind}`, 'data-testid': 'insp-note', 'data-kind': kind, text }));
}

function sec(label) {
  return h('span', { class: 'sec', text: label });
}

function field(name, value, section, detail, testid) {
  return [
    h('dt', { text: name }),
    h('dd', { 'data-testid': testid }, h('span', { class: 'val', text: value }), detail ? h('span', { class: 'muted', text: ` ${detail}` }) : null),
    h('dd', { class: 'sec-cell' }, section ? sec(section) : null),
  ];
}

/** The first two header bytes bit by bit, then the extended length and the key as bytes. */
function bitDiagram(r) {
  const bytes = hexPairs(r.header).map((x) => parseInt(x, 16));
  const b0 = bits(bytes[0]);
  const b1 = bits(bytes[1]);
  const group = (label, value, cls) =>
    h('div', { class: `bitgroup ${cls}` }, h('div', { class: 'bitcells' }, [...value].map((b) => h('span', { class: `bit b${b}`, text: b }))), h('div', { class: 'bitlabel', text: label }));
  const rows = [
    h(
      'div',
      { class: 'bitrow', 'data-testid': 'header-bits' },
      h('div', { class: 'bitbyte', title: 'byte 0' }, group('FIN', b0[0], 'g-fin'), group('RSV1', b0[1], 'g-rsv'), group('RSV2', b0[2], 'g-rsv'), group('RSV3', b0[3], 'g-rsv'), group(`opcode ${r.opcode}`, b0.slice(4), 'g-op')),
      h('div', { class: 'bitbyte', title: 'byte 1' }, group('MASK', b1[0], 'g-mask'), group(`len ${bytes[1] & 0x7f}`, b1.slice(1), 'g-len')),
    ),
  ];
  const extLen = r.length_form === '16-bit' ? 2 : r.length_form === '64-bit' ? 8 : 0;
  const byteRow = (label, hex, cls, testid) =>
    h('div', { class: `byterow ${cls}`, 'data-testid': testid }, h('span', { class: 'bytelabel', text: label }), hexPairs(hex).map((x) => h('span', { class: 'byte', text: x })));
  if (extLen) {
    rows.push(byteRow(`extended payload length (${r.length_form}) = ${r.payload_len}`, r.header.slice(4, 4 + extLen * 2), 'g-len', 'ext-len'));
  }
  if (r.masked) rows.push(byteRow('masking key', r.mask_key, 'g-mask', 'mask-bytes'));
  return h('div', { class: 'bits' }, rows);
}

function rsv1Meaning(r) {
  if (r.compressed && r.opcode === 0) return 'clear on a continuation: its message is compressed, as its first frame said';
  if (r.compressed) return 'compressed: this message is DEFLATE data (permessage-deflate)';
  if (r.rsv1) return 'set without an extension that defines it: a protocol error (1002)';
  if (deflateAgreed && !(r.opcode >= 8)) return 'not compressed: a message may go plain (short ones do)';
  return deflateAgreed ? 'control frames are never compressed' : 'no extension uses it on this connection';
}

function frameCard(r) {
  const from = r.from; // 'client' or 'server'
  const [name, opSection, opMeaning] = OPCODES[r.opcode] || [r.opcode_name, '§5.2', 'reserved: a protocol error'];
  const control = r.opcode >= 8;
  // Fragments: a data frame with FIN=0 starts a message, continuations follow (§5.4).
  let fragNote = null;
  if (!control) {
    if (r.opcode !== 0) fragments[from] = r.fin ? 0 : 1;
    else fragments[from] += 1;
    if (r.opcode === 0) fragNote = `fragment ${fragments[from]} of a message${r.fin ? ', the last (FIN=1)' : ''}`;
    else if (!r.fin) fragNote = 'fragment 1 of a message: continuation frames follow';
    if (r.fin) fragments[from] = 0;
  }
  const fields = [
    ...field('FIN', r.fin ? '1' : '0', r.fin ? '§5.2' : '§5.4', r.fin ? 'final frame of its message' : 'more fragments follow', 'field-fin'),
    ...field('RSV1', r.rsv1 ? '1' : '0', r.rsv1 || deflateAgreed ? 'RFC 7692 §6' : '§5.2', rsv1Meaning(r), 'field-rsv1'),
    ...field('RSV2, RSV3', `${r.rsv2 ? 1 : 0}, ${r.rsv3 ? 1 : 0}`, '§5.2', 'reserved for extensions', 'field-rsv23'),
    ...field('opcode', `0x${r.opcode.toString(16)} ${name}`, opSection, opMeaning, 'field-opcode'),
    ...field('MASK', r.masked ? '1' : '0', '§5.3', from === 'client' ? 'a client masks every frame' : 'a server never masks', 'field-mask'),
    ...field('payload length', String(r.payload_len), '§5.2', `${r.length_form} form${r.length_form === '7-bit' ? ' (0-125)' : r.length_form === '16-bit' ? ' (126, then 16 bits)' : ' (127, then 64 bits)'}`, 'field-len'),
  ];
  if (r.masked) fields.push(...field('masking key', spaced(r.mask_key), '§5.3', 'payload byte i is XORed with key byte i mod 4', 'field-mask-key'));
  if (r.opcode === 8) {
    if (r.close_code != null) {
      fields.push(...field('close code', String(r.close_code), '§7.4', closeMeaning(r.close_code), 'close-code'));
      fields.push(...field('close reason', r.close_reason ? JSON.stringify(r.close_reason) : '(none)', '§5.5.1', '', 'close-reason'));
    } else {
      fields.push(...field('close code', '(none)', '§5.5.1', 'an empty close payload', 'close-code'));
    }
  }
  const shownNote = r.shown < r.payload_len ? ` (first ${r.shown} of ${r.payload_len} bytes)` : '';
  const payload =
    r.payload_len > 0
      ? h(
          'div',
          { class: 'payload' },
          r.masked ? h('div', { class: 'prow' }, h('span', { class: 'plabel', text: `masked, as sent${shownNote}` }), sec('§5.3'), h('code', { class: 'hex', 'data-testid': 'payload-masked', text: spaced(r.payload_masked) })) : null,
          h('div', { class: 'prow' }, h('span', { class: 'plabel', text: `${r.masked ? 'unmasked' : 'payload'}${r.masked ? '' : shownNote}` }), r.masked ? sec('§5.3') : null, h('code', { class: 'hex', 'data-testid': 'payload-hex', text: spaced(r.payload) })),
          r.compressed
            ? h('div', { class: 'prow' }, h('span', { class: 'plabel', text: 'text' }), sec('RFC 7692'), h('span', { class: 'muted', text: 'DEFLATE data: the receiver inflates it into the message' }))
            : r.opcode !== 8
              ? h('div', { class: 'prow' }, h('span', { class: 'plabel', text: 'as text' }), h('span', { class: 'ptext', 'data-testid': 'payload-text', text: r.text }))
              : null,
        )
      : h('p', { class: 'payload muted', text: 'no payload' });
  const who = from === 'client' ? 'browser → server' : 'server → browser';
  return h(
    'li',
    {
      class: `frame from-${from}${control ? ' control' : ''}`,
      'data-testid': 'frame',
      'data-from': from,
      'data-opcode': name,
      'data-fin': r.fin ? '1' : '0',
      'data-compressed': r.compressed ? '1' : '0',
      'data-seq': String(r.seq),
    },
    h(
      'div',
      { class: 'frame-head' },
      h('span', { class: `dir-chip from-${from}`, text: who }),
      h('span', { class: `op-chip op-${name}`, text: name }),
      h('span', { class: 'frame-sum', text: `${r.payload_len} byte${r.payload_len === 1 ? '' : 's'}${r.fin ? '' : ', FIN=0'}${r.compressed ? ', compressed' : ''}` }),
      h('span', { class: 'frame-seq muted', text: `#${r.seq}` }),
    ),
    fragNote ? h('p', { class: 'frag-note', 'data-testid': 'frag-note' }, sec('§5.4'), ` ${fragNote}`) : null,
    bitDiagram(r),
    h('dl', { class: 'fields' }, fields),
    payload,
  );
}

function handshakeCard(r) {
  const client = r.from === 'client';
  if (client) offeredDeflate = /^sec-websocket-extensions:.*permessage-deflate/im.test(r.head);
  else deflateAgreed = r.status === 101 && r.deflate;
  const title = client ? 'Opening handshake: the browser asks to upgrade' : `Opening handshake: the server answers ${r.status}`;
  let detail;
  if (client) {
    detail = 'GET with Upgrade: websocket and a random 16-byte Sec-WebSocket-Key, in base64 (§4.1). Cookie and Authorization headers show as [redacted].';
  } else if (r.status !== 101) {
    detail = 'Not 101: the connection does not become a WebSocket.';
  } else {
    detail = 'Sec-WebSocket-Accept is base64(SHA-1(key + "258EAFA5-E914-47DA-95CA-C5AB0DC85B11")) (§4.2.2). ';
    if (r.deflate) detail += 'permessage-deflate is accepted (RFC 7692): a message whose first frame has RSV1 set is compressed.';
    else if (offeredDeflate) detail += 'The browser offered permessage-deflate; the inspector declines it unless asked (the checkbox), so that payloads stay readable.';
  }
  return h(
    'li',
    { class: `frame handshake from-${r.from}`, 'data-testid': 'handshake', 'data-from': r.from },
    h('div', { class: 'frame-head' }, h('span', { class: `dir-chip from-${r.from}`, text: client ? 'browser → server' : 'server → browser' }), h('span', { class: 'op-chip op-http', text: 'HTTP' }), h('span', { class: 'frame-sum', text: title }), sec(client ? '§4.1' : '§4.2.2')),
    h('p', { class: 'frag-note muted', text: detail }),
    h('pre', { class: 'head-text', text: r.head.trimEnd() }),
  );
}

// --- the feed and the echo ----------------------------------------------------------

function onFeed(r) {
  switch (r.type) {
    case 'token':
      if (wantEcho) openEcho(r.token);
      break;
    case 'handshake':
      add(handshakeCard(r));
      break;
    case 'frame':
      add(frameCard(r));
      break;
    case 'dropped':
      note(`${r.frames} frames are not shown: they came faster than this page could take them.`, 'warn');
      break;
    case 'closed':
      note('The TCP connection is closed (§7.1.1: the server closes it first).', 'info');
      break;
    case 'ok':
      note(r.msg, 'ok');
      break;
    case 'error':
      note(r.msg, 'error');
      break;
    default:
      break;
  }
}

function openFeed() {
  setState('connecting', 'Connecting to the inspector feed…');
  feed = new WebSocket(`${wsBase}/inspector/feed`);
  feed.onmessage = (e) => onFeed(JSON.parse(e.data));
  feed.onclose = (e) => {
    clearInterval(keepalive);
    setState('closed', `The inspector feed closed (${e.code}${e.reason ? `: ${e.reason}` : ''}). Reload the page to start again.`);
    $('insp-reconnect').disabled = true;
  };
  keepalive = setInterval(() => command({ cmd: 'keepalive' }), KEEPALIVE_MS);
}

function command(c) {
  if (feed && feed.readyState === WebSocket.OPEN) feed.send(JSON.stringify(c));
}

function openEcho(token) {
  wantEcho = false;
  fragments.client = fragments.server = 0;
  const deflate = $('insp-deflate').checked ? '&deflate=1' : '';
  setState('connecting', 'Opening the echo connection…');
  echo = new WebSocket(`${wsBase}/echo?trace=${encodeURIComponent(token)}${deflate}`);
  echo.onopen = () => setState('open', `Open: ws://${location.host}/echo${echo.extensions ? ` (extensions: ${echo.extensions})` : ''}`);
  echo.onmessage = (e) => {
    const text = typeof e.data === 'string' ? e.data : `(${e.data.size} bytes of binary)`;
    note(`The page's onmessage got the echo: ${JSON.stringify(text)}`, 'local');
  };
  echo.onclose = (e) => {
    setState('closed', `Closed: code ${e.code} (${closeMeaning(e.code)})${e.reason ? `, reason ${JSON.stringify(e.reason)}` : ''}${e.wasClean ? '' : ', not cleanly'}.`);
    echo = null;
  };
}

function echoOpen() {
  if (echo && echo.readyState === WebSocket.OPEN) return true;
  note('The echo connection is not open: start a new one.', 'error');
  return false;
}

$('send-form').addEventListener('submit', (e) => {
  e.preventDefault();
  const input = $('insp-input');
  if (!echoOpen()) return;
  const text = input.value;
  echo.send(text);
  note(`The page called ws.send(${JSON.stringify(text)})`, 'local');
  input.value = '';
  input.focus();
});

$('insp-fragment').addEventListener('click', () => {
  const size = Number($('insp-frag-size').value);
  if (!Number.isInteger(size) || size < 1) {
    note('The fragment size is a whole number of bytes, 1 or more.', 'error');
    return;
  }
  if (echoOpen()) command({ cmd: 'fragment', size });
});

$('insp-ping').addEventListener('click', () => {
  if (echoOpen()) command({ cmd: 'ping', payload: $('insp-ping-payload').value });
});

$('insp-close').addEventListener('click', () => {
  if (!echoOpen()) return;
  const code = Number($('insp-close-code').value);
  const reason = $('insp-close-reason').value;
  try {
    echo.close(code, reason);
    setState('closing', `Closing: the browser sent its close frame (${code}) and waits for the server's.`);
  } catch (err) {
    note(`The browser refused: ${err.message}`, 'error');
  }
});

$('insp-reconnect').addEventListener('click', () => {
  wantEcho = true;
  command({ cmd: 'token' });
});

$('insp-clear').addEventListener('click', () => list.replaceChildren());

openFeed();
