// Helpers for run.mjs: a server process we can kill and restart, a small PNG encoder,
// and waiting on the page without @playwright/test (playwright-core has no `expect`).

import { spawn } from 'node:child_process';
import { createInterface } from 'node:readline';
import { deflateSync } from 'node:zlib';

/** Polls `fn` until it returns a truthy value; throws `what` on timeout. */
export async function until(what, fn, timeout = 10_000, every = 50) {
  const end = Date.now() + timeout;
  let last;
  for (;;) {
    try {
      last = await fn();
      if (last) return last;
    } catch (e) {
      last = e;
    }
    if (Date.now() > end) throw new Error(`timed out after ${timeout} ms waiting for ${what} (last: ${last instanceof Error ? last.message : JSON.stringify(last)})`);
    await new Promise((r) => setTimeout(r, every));
  }
}

export function assert(cond, message) {
  if (!cond) throw new Error(`assertion failed: ${message}`);
}

/**
 * A fastim process run by this script (for the restart scenario). `start()` waits for
 * "listening on ADDR" in its log; `kill(signal)` waits for the exit.
 */
export class ServerProcess {
  constructor(bin, args) {
    this.bin = bin;
    this.args = args;
    this.child = null;
    this.addr = null;
    this.log = [];
  }

  start(listen = '127.0.0.1:0') {
    return new Promise((resolve, reject) => {
      const child = spawn(this.bin, ['--listen', listen, ...this.args], { stdio: ['ignore', 'ignore', 'pipe'], env: { ...process.env, RUST_LOG: 'info' } });
      this.child = child;
      const timer = setTimeout(() => reject(new Error(`server did not listen within 15 s:\n${this.log.slice(-20).join('\n')}`)), 15_000);
      child.on('error', (e) => {
        clearTimeout(timer);
        reject(e);
      });
      child.on('exit', (code, sig) => {
        clearTimeout(timer);
        this.exited = { code, sig };
        reject(new Error(`server exited (${code ?? sig}) before listening:\n${this.log.slice(-20).join('\n')}`));
      });
      createInterface({ input: child.stderr }).on('line', (line) => {
        this.log.push(line);
        if (this.log.length > 500) this.log.shift();
        const m = line.match(/listening on (\S+)/);
        if (m) {
          clearTimeout(timer);
          this.addr = m[1];
          resolve(m[1]);
        }
      });
    });
  }

  async kill(signal = 'SIGKILL') {
    const child = this.child;
    if (!child || child.exitCode !== null || child.signalCode !== null) return;
    const exited = new Promise((r) => child.once('exit', r));
    child.kill(signal);
    const t = setTimeout(() => child.kill('SIGKILL'), 5000);
    await exited;
    clearTimeout(t);
  }
}

// --- a PNG, made here so the test needs no file ----------------------------------------
const CRC_TABLE = Array.from({ length: 256 }, (_, n) => {
  let c = n;
  for (let k = 0; k < 8; k++) c = c & 1 ? 0xedb88320 ^ (c >>> 1) : c >>> 1;
  return c >>> 0;
});
function crc32(buf) {
  let c = 0xffffffff;
  for (const b of buf) c = CRC_TABLE[(c ^ b) & 0xff] ^ (c >>> 8);
  return (c ^ 0xffffffff) >>> 0;
}
function chunk(type, data) {
  const len = Buffer.alloc(4);
  len.writeUInt32BE(data.length);
  const td = Buffer.concat([Buffer.from(type, 'ascii'), data]);
  const crc = Buffer.alloc(4);
  crc.writeUInt32BE(crc32(td));
  return Buffer.concat([len, td, crc]);
}

/** An RGB PNG of `w`×`h`: a diagonal gradient with a stripe, so it is visibly a picture. */
export function makePng(w, h, seed = 0) {
  const raw = Buffer.alloc((w * 3 + 1) * h);
  for (let y = 0; y < h; y++) {
    raw[y * (w * 3 + 1)] = 0; // filter: none
    for (let x = 0; x < w; x++) {
      const o = y * (w * 3 + 1) + 1 + x * 3;
      const stripe = Math.abs(x - y) < h / 8;
      raw[o] = stripe ? 255 : (x * 255) / w;
      raw[o + 1] = stripe ? 200 : (y * 255) / h;
      raw[o + 2] = stripe ? 40 : (seed * 70 + 120) % 256;
    }
  }
  const ihdr = Buffer.alloc(13);
  ihdr.writeUInt32BE(w, 0);
  ihdr.writeUInt32BE(h, 4);
  ihdr[8] = 8; // bit depth
  ihdr[9] = 2; // colour type RGB
  return Buffer.concat([Buffer.from([0x89, 0x50, 0x4e, 0x47, 0x0d, 0x0a, 0x1a, 0x0a]), chunk('IHDR', ihdr), chunk('IDAT', deflateSync(raw)), chunk('IEND', Buffer.alloc(0))]);
}
