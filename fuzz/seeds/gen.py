#!/usr/bin/env python3
"""Writes the seed corpora: RFC 6455 §5.7 frames and valid upgrade requests.

Run from anywhere: python3 fuzz/seeds/gen.py. frames_valid takes structured
(`arbitrary`) input that has no inverse encoder, so it starts from an empty corpus.
"""
import os

HERE = os.path.dirname(os.path.abspath(__file__))
KEY = bytes([0x37, 0xFA, 0x21, 0x3D])  # the §5.7 masking key


def mask(payload, key=KEY):
    return bytes(b ^ key[i % 4] for i, b in enumerate(payload))


def frame(b0, payload, key=KEY):
    """A frame with first byte b0; masked unless key is None."""
    n = len(payload)
    m = 0x80 if key is not None else 0
    if n < 126:
        head = bytes([b0, m | n])
    elif n < 1 << 16:
        head = bytes([b0, m | 126]) + n.to_bytes(2, "big")
    else:
        head = bytes([b0, m | 127]) + n.to_bytes(8, "big")
    if key is None:
        return head + payload
    return head + key + mask(payload, key)


def write(target, name, data):
    d = os.path.join(HERE, target)
    os.makedirs(d, exist_ok=True)
    with open(os.path.join(d, name), "wb") as f:
        f.write(data)


# --- handshake: request heads -------------------------------------------------
RFC = (b"GET /chat HTTP/1.1\r\nHost: server.example.com\r\nUpgrade: websocket\r\n"
       b"Connection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n"
       b"Origin: http://example.com\r\nSec-WebSocket-Protocol: chat, superchat\r\n"
       b"Sec-WebSocket-Version: 13\r\n\r\n")
write("handshake", "rfc_4_1_upgrade", RFC)
write("handshake", "firefox_upgrade", RFC.replace(b"Connection: Upgrade", b"connection: keep-alive, Upgrade")
      .replace(b"Upgrade: websocket", b"upgrade: WebSocket"))
write("handshake", "version_8", RFC.replace(b"Version: 13", b"Version: 8"))
write("handshake", "plain_get", b"GET /echo?x=1 HTTP/1.0\r\nHost: a\r\n\r\n")

# --- frames: byte 0 = plan length - 1, then the plan (chunk sizes), then the stream
hello = b"Hello"
unmasked_5_7 = {
    "text_unmasked": frame(0x81, hello, None),
    "fragmented_unmasked": frame(0x01, b"Hel", None) + frame(0x80, b"lo", None),
    "ping_unmasked": frame(0x89, hello, None),
    "bin256_unmasked": frame(0x82, bytes(range(256)), None),
}
masked = {
    "text_masked": frame(0x81, hello),  # 81 85 37 fa 21 3d 7f 9f 4d 51 58, as in §5.7
    "pong_masked": frame(0x8A, hello),  # also from §5.7
    "fragmented_masked": frame(0x01, b"Hel") + frame(0x89, b"") + frame(0x80, b"lo"),
    "ping_masked": frame(0x89, hello),
    "bin256_masked": frame(0x82, bytes(range(256))),
    # §5.7's 64 KiB binary frame, header and the first 16 payload bytes only.
    "bin64k_header": bytes([0x82, 0xFF]) + (65536).to_bytes(8, "big") + KEY + b"\0" * 16,
    "utf8_split": frame(0x01, "κό".encode()[:3]) + frame(0x80, "κόσμε".encode()[3:]),
    "close_1000_bye": frame(0x81, hello) + frame(0x88, (1000).to_bytes(2, "big") + b"bye") + frame(0x81, hello),
    "close_empty": frame(0x88, b""),
}
assert masked["text_masked"] == bytes.fromhex("818537fa213d7f9f4d5158")
plans = {"whole": bytes([0, 0xFF]), "bytewise": bytes([0, 0]), "mixed": bytes([2, 2, 0, 9])}
for name, stream in {**unmasked_5_7, **masked}.items():
    for pname, plan in plans.items():
        write("frames", f"{name}_{pname}", plan + stream)
