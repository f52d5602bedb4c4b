#!/usr/bin/env python3
"""The abuse figures of BENCHMARKS.md: each attack of the hardening work against a
release fastim with default flags, with what it costs the server (RSS from
/proc/<pid>/status) and what it costs a bystander (latency).

    cargo build --release --bin fastim && python3 benches/abuse.py [attack ...]
    FASTIM_BIN=/path/to/other/fastim python3 benches/abuse.py chat   # another build

Attacks: chat pipeline partial upload sync login (all by default). Every
client talks to 127.0.0.1 only; every loop is bounded in time; the server is killed
at the end. Only the standard library is used.
"""

import base64
import json
import os
import shutil
import socket
import statistics
import struct
import subprocess
import sys
import tempfile
import threading
import time

BIN = os.environ.get("FASTIM_BIN") or os.path.join(
    os.path.dirname(__file__), "..", "target", "release", "fastim")
MIB = 1024 * 1024


class Server:
    def __init__(self, extra=(), wrapper=()):
        self.dir = tempfile.mkdtemp(prefix="fastim-abuse-")
        args = [*wrapper, BIN, "--listen", "127.0.0.1:0", "--data-dir", self.dir,
                "--resource-dir", os.path.join(self.dir, "resource"), *extra]
        self.proc = subprocess.Popen(args, stderr=subprocess.PIPE, text=True)
        for line in self.proc.stderr:
            if "listening on" in line:
                self.port = int(line.rsplit(":", 1)[1])
                break
        else:
            raise SystemExit("server did not start")
        self.log = []
        threading.Thread(target=lambda: self.log.extend(self.proc.stderr), daemon=True).start()

    def rss(self):
        with open(f"/proc/{self.proc.pid}/status") as f:
            for line in f:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1]) * 1024
        return 0

    def alive(self):
        return self.proc.poll() is None

    def stop(self):
        self.proc.kill()
        self.proc.wait()
        shutil.rmtree(self.dir, ignore_errors=True)


class RssWatch:
    """Samples RSS every 50 ms; .peak after .stop()."""

    def __init__(self, server):
        self.server, self.peak, self.run = server, server.rss(), True
        self.thread = threading.Thread(target=self._loop, daemon=True)
        self.thread.start()

    def _loop(self):
        while self.run and self.server.alive():
            self.peak = max(self.peak, self.server.rss())
            time.sleep(0.05)

    def stop(self):
        self.run = False
        self.thread.join()
        return self.peak


def http(port, method, path, body=b"", headers=(), timeout=10):
    s = socket.create_connection(("127.0.0.1", port), timeout=timeout)
    head = f"{method} {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n"
    for h in headers:
        head += h + "\r\n"
    if body:
        head += f"Content-Type: application/x-www-form-urlencoded\r\nContent-Length: {len(body)}\r\n"
    s.sendall(head.encode() + b"\r\n" + body)
    data = b""
    while True:
        chunk = s.recv(65536)
        if not chunk:
            break
        data += chunk
    s.close()
    head, _, body = data.partition(b"\r\n\r\n")
    return int(head[9:12] or 0), head.decode("latin-1"), body


def timed_get(port, path, headers=()):
    t = time.perf_counter()
    status, _, _ = http(port, "GET", path, headers=headers)
    return status, (time.perf_counter() - t) * 1000


def register(port, mobile):
    status, head, body = http(port, "POST", "/user/register",
                              f"mobile={mobile}&passwd=secret-pass-{mobile}&nickname=u{mobile}".encode())
    reply = json.loads(body)
    assert reply["code"] == 0, reply
    return reply["data"]["id"], reply["data"]["token"]


def befriend(port, token, mobile):
    _, _, body = http(port, "POST", "/contact/addfriend", f"dstname={mobile}".encode(),
                      [f"Cookie: fastim_token={token}"])
    assert json.loads(body)["code"] == 0, body


def frame(opcode, payload, fin=True):
    mask = os.urandom(4)
    n = len(payload)
    head = bytes([(0x80 if fin else 0) | opcode])
    if n < 126:
        head += bytes([0x80 | n])
    elif n < 65536:
        head += bytes([0xFE]) + struct.pack(">H", n)
    else:
        head += bytes([0xFF]) + struct.pack(">Q", n)
    masked = bytes(b ^ mask[i % 4] for i, b in enumerate(payload)) if n < 4096 else payload
    if n >= 4096:  # big payloads: mask with a zero key to save time (still a valid mask)
        mask = b"\0\0\0\0"
    return head + mask + masked


class Ws:
    def __init__(self, port, path, timeout=10):
        self.s = socket.create_connection(("127.0.0.1", port), timeout=timeout)
        key = base64.b64encode(os.urandom(16)).decode()
        self.s.sendall((f"GET {path} HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\n"
                        f"Connection: Upgrade\r\nSec-WebSocket-Key: {key}\r\n"
                        "Sec-WebSocket-Version: 13\r\n\r\n").encode())
        self.buf = b""
        while b"\r\n\r\n" not in self.buf:
            chunk = self.s.recv(4096)
            if not chunk:
                raise ConnectionError("closed during handshake")
            self.buf += chunk
        head, _, self.buf = self.buf.partition(b"\r\n\r\n")
        assert head.startswith(b"HTTP/1.1 101"), head

    def _need(self, n):
        while len(self.buf) < n:
            chunk = self.s.recv(65536)
            if not chunk:
                raise ConnectionError("closed")
            self.buf += chunk

    def recv(self):
        self._need(2)
        op, n = self.buf[0] & 0x0F, self.buf[1] & 0x7F
        at = 2
        if n == 126:
            self._need(4)
            n, at = struct.unpack(">H", self.buf[2:4])[0], 4
        elif n == 127:
            self._need(10)
            n, at = struct.unpack(">Q", self.buf[2:10])[0], 10
        self._need(at + n)
        payload, self.buf = self.buf[at:at + n], self.buf[at + n:]
        return op, payload

    def send_json(self, value):
        self.s.sendall(frame(1, json.dumps(value).encode()))


def pcts(ms):
    ms = sorted(ms)
    return ms[len(ms) // 2], ms[min(len(ms) - 1, int(len(ms) * 0.99))], ms[-1]


def writer(sock, data, seconds, repeat=True):
    """Writes `data` (over and over if `repeat`) for at most `seconds`; returns the
    bytes written. Writes block for at most 0.2 s: a server that stops reading holds
    the writer back, as TCP does."""
    sock.settimeout(0.2)
    end = time.time() + seconds
    sent = at = 0
    while time.time() < end:
        if at == len(data):
            if not repeat:
                break
            at = 0
        try:
            n = sock.send(data[at:at + (1 << 20)])
        except (socket.timeout, BlockingIOError):
            continue
        except OSError:
            break
        sent += n
        at += n
    return sent


def attack_chat():
    srv = Server()
    try:
        a, ta = register(srv.port, "13900000001")
        b, tb = register(srv.port, "13900000002")
        c, tc = register(srv.port, "13900000003")
        d, td = register(srv.port, "13900000004")
        befriend(srv.port, ta, "13900000002")
        befriend(srv.port, tc, "13900000004")
        flooder = Ws(srv.port, f"/chat?token={ta}")
        receiver = Ws(srv.port, f"/chat?token={tb}")
        bystander = Ws(srv.port, f"/chat?token={tc}")
        other = Ws(srv.port, f"/chat?token={td}")
        stop = threading.Event()
        def drain(sock):  # reads everything it gets, as fast as it comes
            sock.settimeout(0.5)
            while not stop.is_set():
                try:
                    if not sock.recv(1 << 20):
                        if not stop.is_set():
                            print("a reading client was closed by the server")
                        return
                except OSError:
                    pass

        for ws in (receiver, other):
            threading.Thread(target=drain, args=(ws.s,), daemon=True).start()
        batch = b"".join(frame(1, json.dumps({"cmd": 10, "dstid": b, "content": "x",
                                              "ref": str(i)}).encode()) for i in range(20000))
        base = srv.rss()
        watch = RssWatch(srv)
        t = threading.Thread(target=writer, args=(flooder.s, batch, 8), daemon=True)
        t.start()
        lat = []
        end = time.time() + 8
        n = 0
        while time.time() < end:
            n += 1
            t0 = time.perf_counter()
            bystander.send_json({"cmd": 10, "dstid": d, "content": "hello", "ref": f"b{n}"})
            while True:
                op, p = bystander.recv()
                if op == 1 and json.loads(p).get("ref") == f"b{n}":
                    break
            lat.append((time.perf_counter() - t0) * 1000)
            time.sleep(0.1)
        t.join()
        peak = watch.stop()
        stop.set()
        p50, p99, mx = pcts(lat)
        print(f"chat flood (one user pipelining cmd 10, 8 s): RSS +{(peak - base) / MIB:.1f} MiB; "
              f"bystander ack p50 {p50:.2f} ms, p99 {p99:.2f} ms, max {mx:.2f} ms ({len(lat)} samples)")
    finally:
        srv.stop()


def attack_pipeline():
    srv = Server()
    try:
        s = socket.create_connection(("127.0.0.1", srv.port))
        s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        req = b"GET /emoji.js HTTP/1.1\r\nHost: x\r\n\r\n" * 60000
        base = srv.rss()
        watch = RssWatch(srv)
        t = threading.Thread(target=writer, args=(s, req, 5, False), daemon=True)
        t.start()
        time.sleep(1)
        lat = [timed_get(srv.port, "/")[1] for _ in range(50)]
        t.join()
        peak = watch.stop()
        p50, p99, mx = pcts(lat)
        print(f"60,000 pipelined GETs, never read: RSS +{(peak - base) / MIB:.1f} MiB; "
              f"another client's GET / p50 {p50:.2f} ms, p99 {p99:.2f} ms")
        s.close()
    finally:
        srv.stop()


def attack_partial():
    srv = Server()
    try:
        base = srv.rss()
        clients = []
        big = 16 * MIB
        head = bytes([0x82, 0xFF]) + struct.pack(">Q", big) + b"\0\0\0\0"
        chunk = b"\0" * MIB
        for _ in range(40):
            ws = Ws(srv.port, "/echo")
            ws.s.sendall(head)
            for _ in range(15):
                ws.s.sendall(chunk)
            ws.s.sendall(chunk[:-1])
            clients.append(ws)
        sent = time.time()
        peak = srv.rss()
        closed = []
        for ws in clients:
            ws.s.settimeout(60)
            try:
                while ws.s.recv(65536):
                    pass
            except OSError:
                pass
            closed.append(time.time() - sent)
        time.sleep(0.5)
        after = srv.rss()
        print(f"40 stalled 16 MiB partial frames: RSS +{(peak - base) / MIB:.0f} MiB while held; "
              f"closed {min(closed):.1f}-{max(closed):.1f} s after the last byte; "
              f"RSS +{(after - base) / MIB:.0f} MiB after")
    finally:
        srv.stop()


def upload_head(token, length):
    return (f"POST /attach/upload HTTP/1.1\r\nHost: x\r\nCookie: fastim_token={token}\r\n"
            f"Content-Type: multipart/form-data; boundary=xyz\r\nContent-Length: {length}\r\n\r\n").encode()


def attack_upload():
    srv = Server()
    try:
        base = srv.rss()
        socks = []
        t0 = time.time()
        for _ in range(60):
            s = socket.create_connection(("127.0.0.1", srv.port), timeout=5)
            s.sendall(upload_head("bogus", 10_000_000) + b"-")
            socks.append(s)
        statuses, times = [], []
        for s in socks:
            try:
                statuses.append(s.recv(12)[9:12].decode())
            except OSError:
                statuses.append("none")
            times.append(time.time() - t0)
        print(f"60 uploads with a bogus cookie: statuses {sorted(set(statuses))}, all answered "
              f"within {max(times):.2f} s; RSS +{(srv.rss() - base) / MIB:.1f} MiB")
    finally:
        srv.stop()
    if not shutil.which("prlimit"):
        print("prlimit missing: skipping the address-space attack")
        return
    srv = Server(wrapper=("prlimit", f"--as={1024 * MIB}", "--"))
    try:
        _, token = register(srv.port, "13900000005")
        socks = []
        for _ in range(150):
            s = socket.create_connection(("127.0.0.1", srv.port), timeout=5)
            s.sendall(upload_head(token, 10 * MIB))
            socks.append(s)
        time.sleep(2)
        ok = srv.alive() and timed_get(srv.port, "/")[0] == 200
        print(f"150 upload heads of 10 MiB under prlimit --as=1G: server "
              f"{'alive and serving' if ok else 'DEAD'}")
    finally:
        srv.stop()


def me_latencies(port, token, n):
    """`n` calls of /user/me, one every 20 ms, while an attack runs."""
    out = []
    for _ in range(n):
        out.append(timed_get(port, "/user/me", [f"Cookie: fastim_token={token}"])[1])
        time.sleep(0.02)
    return out


def attack_sync():
    srv = Server()
    try:
        _, ta = register(srv.port, "13900000001")
        _, tc = register(srv.port, "13900000003")
        ws = Ws(srv.port, f"/chat?token={ta}")
        flood = b"".join(frame(1, b'{"cmd":20,"id":0}') for _ in range(20000))
        synced = []
        t = threading.Thread(
            target=lambda: (synced.append(writer(ws.s, flood, 2, repeat=False)), ws.s.close()),
            daemon=True)
        t.start()
        lat = me_latencies(srv.port, tc, 100)
        t.join()
        p50, p99, mx = pcts(lat)
        frames = synced[0] // len(frame(1, b'{"cmd":20,"id":0}'))
        print(f"20,000 sync frames ({frames} written) then close: "
              f"another user's /user/me p50 {p50:.2f} ms, "
              f"p99 {p99:.2f} ms, max {mx:.2f} ms")
    finally:
        srv.stop()


def attack_login():
    srv = Server()
    try:
        _, tc = register(srv.port, "13900000003")
        register(srv.port, "13900000009")
        statuses = []
        lock = threading.Lock()

        def burst():
            for _ in range(20):
                st, _, _ = http(srv.port, "POST", "/user/login", b"mobile=13900000009&passwd=wrong-one")
                with lock:
                    statuses.append(st)

        threads = [threading.Thread(target=burst) for _ in range(10)]
        for t in threads:
            t.start()
        lat = me_latencies(srv.port, tc, 100)
        for t in threads:
            t.join()
        p50, p99, mx = pcts(lat)
        print(f"200-login burst: {statuses.count(429)} answered 429, {statuses.count(200)} checked; "
              f"another user's /user/me p50 {p50:.2f} ms, p99 {p99:.2f} ms")
    finally:
        srv.stop()
    # One account, from many addresses' worth of budget: the per-address limit lifted
    # so that only the per-account limit speaks.
    srv = Server(["--login-per-minute", "0"])
    try:
        register(srv.port, "13900000009")
        checks = []
        end = time.time() + 65
        while time.time() < end:
            st, _, body = http(srv.port, "POST", "/user/login", b"mobile=13900000009&passwd=wrong-one")
            if st != 429:
                checks.append(time.time())
            time.sleep(0.05)
        most = max(sum(1 for c in checks if t <= c < t + 60) for t in checks)
        print(f"failing logins against one account for 65 s: {len(checks)} password checks, "
              f"at most {most} in any minute")
    finally:
        srv.stop()


ATTACKS = {"chat": attack_chat, "pipeline": attack_pipeline, "partial": attack_partial,
           "upload": attack_upload, "sync": attack_sync, "login": attack_login}

if __name__ == "__main__":
    for name in sys.argv[1:] or ATTACKS:
        ATTACKS[name]()
