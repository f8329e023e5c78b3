#!/usr/bin/env python3
"""Writes the seed corpus of every fuzz target into fuzz/corpus/<target>/seed-*.

The seeds are the examples of RFC 6455 and RFC 7692, real handshakes, and one input for each
abuse the server is tested against (see docs/SECURITY.md). The fuzzer grows the corpus from
them; `scripts/fuzz.sh` minimizes it again. Run this only to add seeds: `python3 fuzz/seeds.py`.
The input format of each target is documented on its check function in fuzz/src/lib.rs.
"""

import os
import struct
import zlib

ROOT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "corpus")
KEY = bytes([0x37, 0xFA, 0x21, 0x3D])


def write(target, name, data):
    d = os.path.join(ROOT, target)
    os.makedirs(d, exist_ok=True)
    with open(os.path.join(d, "seed-" + name), "wb") as f:
        f.write(data)


def frame(op, payload=b"", fin=True, mask=None, rsv1=False, length=None):
    b0 = (0x80 if fin else 0) | (0x40 if rsv1 else 0) | op
    n = len(payload) if length is None else length
    m = 0x80 if mask else 0
    if n < 126:
        head = bytes([b0, m | n])
    elif n < 65536:
        head = bytes([b0, m | 126]) + struct.pack(">H", n)
    else:
        head = bytes([b0, m | 127]) + struct.pack(">Q", n)
    if mask:
        payload = bytes(b ^ mask[i % 4] for i, b in enumerate(payload))
        head += mask
    return head + payload


def deflate(data, wbits=15, final=False):
    c = zlib.compressobj(6, zlib.DEFLATED, -wbits)
    out = c.compress(data) + c.flush(zlib.Z_FINISH if final else zlib.Z_SYNC_FLUSH)
    if out.endswith(b"\x00\x00\xff\xff"):
        out = out[:-4]
    return out


def close(code, reason=b""):
    return struct.pack(">H", code) + reason


# Streams a client sends (masked) and a server sends (unmasked), same content.
def streams(masked):
    k = KEY if masked else None
    return {
        "hello": frame(0x1, b"Hello", mask=k),
        "fragments": frame(0x1, b"Hel", fin=False, mask=k) + frame(0x0, b"lo", mask=k),
        "ping-between-fragments": frame(0x1, b"Hel", fin=False, mask=k)
        + frame(0x9, b"ping", mask=k)
        + frame(0x0, b"lo", mask=k),
        "ping-pong": frame(0x9, b"Hello", mask=k) + frame(0xA, b"Hello", mask=k),
        "binary-256": frame(0x2, bytes(range(256)), mask=k),
        "close-normal": frame(0x8, close(1000, b"bye"), mask=k),
        "close-empty": frame(0x8, b"", mask=k),
        "text-then-close": frame(0x1, "wörld".encode(), mask=k) + frame(0x8, close(1001), mask=k),
        "huge-length": frame(0x2, b"", mask=k, length=(1 << 63) - 1),
        "length-top-bit": frame(0x2, b"", mask=k)[:1] + bytes([0xFF if k else 0x7F]) + b"\x80" + b"\0" * 7,
        "ping-126": frame(0x9, b"p" * 126, mask=k),
        "fragmented-ping": frame(0x9, b"p", fin=False, mask=k),
        "data-inside-fragments": frame(0x1, b"a", fin=False, mask=k) + frame(0x2, b"b", mask=k),
        "lone-continuation": frame(0x0, b"x", mask=k),
        "close-1005": frame(0x8, close(1005), mask=k),
        "close-999": frame(0x8, close(999), mask=k),
        "close-5000": frame(0x8, close(5000), mask=k),
        "close-one-byte": frame(0x8, b"\x03", mask=k),
        "close-bad-utf8": frame(0x8, close(1000, b"\xff\xfe"), mask=k),
        "text-bad-utf8": frame(0x1, b"ok \xff", mask=k),
        "utf8-split-across-fragments": frame(0x1, "é".encode()[:1], fin=False, mask=k)
        + frame(0x0, "é".encode()[1:], mask=k),
        "reserved-opcode": frame(0x3, b"", mask=k),
        "rsv2": bytes([0xA1]) + frame(0x1, b"", mask=k)[1:],
        "compressed-hello": frame(0x1, bytes.fromhex("f248cdc9c90700"), mask=k, rsv1=True),
        "compressed-twice": frame(0x1, bytes.fromhex("f248cdc9c90700"), mask=k, rsv1=True)
        + frame(0x1, bytes.fromhex("f200110000"), mask=k, rsv1=True),
        "compressed-fragments": frame(0x2, deflate(b"abc" * 100)[:5], fin=False, mask=k, rsv1=True)
        + frame(0x0, deflate(b"abc" * 100)[5:], mask=k),
        "compressed-bomb": frame(0x2, deflate(bytes(1 << 20), 12), mask=k, rsv1=True),
        "ping-flood": b"".join(frame(0x9, b"%d" % i, mask=k) for i in range(100)),
        "small-message-flood": b"".join(frame(0x1, b"m%d" % i, mask=k) for i in range(100)),
    }


# frame / connection settings: bit 0 role (0 server, 1 client), then limits, bit 7 deflate.
for masked, role in ((True, 0), (False, 1)):
    for name, stream in streams(masked).items():
        deflate_on = 0x80 if name.startswith("compressed") else 0
        limits = 3 << 1  # 4 KiB frames, 64 KiB messages
        if name in ("compressed-bomb",):
            limits = 4 << 1  # 64 KiB frames, 1 MiB messages
        settings = role | limits | deflate_on
        side = "server" if masked else "client"
        write("frame", f"{side}-{name}", bytes([settings, 0x5A]) + stream)
        # Deflate parameters 0x66: 15-bit windows both ways with context takeover.
        write("connection", f"{side}-{name}", bytes([settings, 0x66, 0xA5]) + stream)

REQUEST = (
    b"GET /chat HTTP/1.1\r\n"
    b"Host: server.example.com\r\n"
    b"Upgrade: websocket\r\n"
    b"Connection: Upgrade\r\n"
    b"Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n"
    b"Origin: http://example.com\r\n"
    b"Sec-WebSocket-Protocol: chat, superchat\r\n"
    b"Sec-WebSocket-Version: 13\r\n\r\n"
)
write("handshake_request", "rfc6455", REQUEST)
write(
    "handshake_request",
    "deflate-offers",
    REQUEST.replace(
        b"\r\n\r\n",
        b"\r\nSec-WebSocket-Extensions: permessage-deflate; client_max_window_bits; "
        b"server_max_window_bits=10, permessage-deflate\r\n\r\n",
    ),
)
write(
    "handshake_request",
    "browser",
    b"GET /echo?token=abc HTTP/1.1\r\nHost: localhost:8080\r\nConnection: keep-alive, Upgrade\r\n"
    b"Pragma: no-cache\r\nUser-Agent: Mozilla/5.0\r\nUpgrade: websocket\r\n"
    b"Sec-WebSocket-Version: 13\r\nAccept-Encoding: gzip, deflate, br\r\n"
    b"Sec-WebSocket-Key: x3JJHMbDL1EzLkh9GBhXDw==\r\n"
    b"Sec-WebSocket-Extensions: permessage-deflate; client_max_window_bits\r\n\r\n",
)
write("handshake_request", "version-8", REQUEST.replace(b"Version: 13", b"Version: 8"))
write("handshake_request", "post", REQUEST.replace(b"GET", b"POST", 1))
write("handshake_request", "http10", REQUEST.replace(b"HTTP/1.1", b"HTTP/1.0", 1))
write("handshake_request", "no-key", REQUEST.replace(b"Sec-WebSocket-Key", b"X-Key"))
write("handshake_request", "many-headers", b"GET / HTTP/1.1\r\n" + b"X: y\r\n" * 80 + b"\r\n")
write("handshake_request", "slowloris-prefix", REQUEST[:60])
write("handshake_request", "tls-hello", bytes.fromhex("160301020001000100") + b"\r\n\r\n")

RESPONSE = (
    b"HTTP/1.1 101 Switching Protocols\r\n"
    b"Upgrade: websocket\r\n"
    b"Connection: Upgrade\r\n"
    b"Sec-WebSocket-Accept: s3pPLMBiTxaQ9kYGzzhZRbK+xOo=\r\n"
)
write("handshake_response", "rfc6455", RESPONSE + b"Sec-WebSocket-Protocol: chat\r\n\r\n")
write("handshake_response", "with-frame", RESPONSE + b"\r\n\x81\x05Hello")
for i, ext in enumerate(
    [
        b"permessage-deflate",
        b"permessage-deflate; server_max_window_bits=12; client_max_window_bits=12",
        b"permessage-deflate; server_no_context_takeover; client_no_context_takeover",
        b"permessage-deflate; client_max_window_bits=9; server_max_window_bits=8",
        b"permessage-deflate; client_max_window_bits",
        b"x-webkit-deflate-frame",
    ]
):
    write("handshake_response", f"deflate-{i}", RESPONSE + b"Sec-WebSocket-Extensions: " + ext + b"\r\n\r\n")
write("handshake_response", "forbidden", b"HTTP/1.1 403 Forbidden\r\nContent-Length: 10\r\n\r\nforbidden\n")
write("handshake_response", "wrong-accept", RESPONSE.replace(b"s3pP", b"AAAA") + b"\r\n")

for i, header in enumerate(
    [
        b"permessage-deflate",
        b"permessage-deflate; client_max_window_bits",
        b"permessage-deflate; server_no_context_takeover; client_no_context_takeover; "
        b"server_max_window_bits=10; client_max_window_bits=12",
        b"permessage-deflate; bogus, permessage-deflate; server_max_window_bits=9",
        b'x-foo; a="1", permessage-deflate; client_max_window_bits="15"',
        b"permessage-deflate; server_max_window_bits=08",
        b" , a; b=\"1\\0\" ,, c ",
    ]
):
    write("extensions", f"offer-{i}", bytes([i * 37 % 256, i * 91 % 256]) + header)

# inflate settings: bits 0-2 window (9 + n % 7; 6 is 15 bits), bit 3 no context takeover,
# bits 4-5 limit (0, 1000, 64 KiB, 1 MiB), bits 6-7 level.
W15 = 6
write("inflate", "rfc7692-hello", bytes([W15 | (1 << 4), 0x11]) + bytes.fromhex("f248cdc9c90700"))
write("inflate", "rfc7692-stored", bytes([W15 | (1 << 4), 0x22]) + bytes.fromhex("000500faff48656c6c6f00"))
write("inflate", "rfc7692-two-blocks", bytes([W15 | (1 << 4), 0x33]) + bytes.fromhex("f24805000000ffffcac9c90700"))
write("inflate", "rfc7692-bfinal", bytes([W15 | (1 << 4), 0x44]) + bytes.fromhex("f348cdc9c907000000"))
write("inflate", "bomb", bytes([W15 | (3 << 4), 0x55]) + deflate(bytes(4 << 20)))
write("inflate", "bomb-1000", bytes([W15 | (1 << 4), 0x66]) + deflate(bytes(1 << 20)))
write("inflate", "text-9-bits", bytes([0 | (2 << 4) | 0x08, 0x77]) + deflate(b"the quick brown fox " * 50, 9))
write("inflate", "garbage", bytes([W15 | (2 << 4), 0x88]) + b"\xff\xff\xff\xff")
