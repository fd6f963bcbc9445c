#!/usr/bin/env python3
"""Writes the seed inputs of every fuzz target into fuzz/corpus/<target>/seed-*.

Each target's input format is described at the top of its fuzz_targets/<target>.rs. Seeds are
deterministic; run again after changing a format. Usage: fuzz/seeds/make_seeds.py
"""
import json
import os
import struct

HERE = os.path.dirname(os.path.abspath(__file__))
FUZZ = os.path.dirname(HERE)
ROOT = os.path.dirname(FUZZ)
TESTDATA = os.path.join(ROOT, "ingest", "testdata")


def write(target, name, data):
    folder = os.path.join(FUZZ, "corpus", target)
    os.makedirs(folder, exist_ok=True)
    with open(os.path.join(folder, "seed-" + name), "wb") as f:
        f.write(data)


def read(path):
    with open(path, "rb") as f:
        return f.read()


def blobs(name):
    data = read(os.path.join(TESTDATA, name))
    sizes = [int(s) for s in read(os.path.join(TESTDATA, name + ".blobs")).split()]
    out, at = [], 0
    for size in sizes:
        out.append(data[at:at + size])
        at += size
    return out


# --- EBML / WebM -------------------------------------------------------------------------

def vint_size(n):
    for length in range(1, 9):
        if n < (1 << (7 * length)) - 1:
            return bytes([(1 << (8 - length)) | (n >> (8 * (length - 1)))]) + \
                (n & ((1 << (8 * (length - 1))) - 1)).to_bytes(length - 1, "big")
    raise ValueError(n)


def el(element_id, body):
    id_bytes = element_id.to_bytes((element_id.bit_length() + 7) // 8, "big")
    return id_bytes + vint_size(len(body)) + body


UNKNOWN = bytes([0x01, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF])


def webm(video=True):
    header = el(0x1A45DFA3, el(0x4282, b"webm") + el(0x4287, b"\x04") + el(0x4285, b"\x02"))
    tracks = b""
    if video:
        tracks += el(0xAE, el(0xD7, b"\x01") + el(0x83, b"\x01") + el(0x86, b"V_VP8"))
    tracks += el(0xAE, el(0xD7, b"\x02") + el(0x83, b"\x02") + el(0x86, b"A_OPUS"))
    segment = el(0x1549A966, el(0x2AD7B1, b"\x0f\x42\x40")) + el(0x1654AE6B, tracks)

    def block(track, key, payload):
        return el(0xA3, bytes([0x80 | track, 0, 0, 0x80 if key else 0]) + payload)

    def cluster(blocks, sized=False):
        body = el(0xE7, b"\x00") + b"".join(blocks)
        if sized:
            return el(0x1F43B675, body)
        return bytes([0x1F, 0x43, 0xB6, 0x75]) + UNKNOWN + body

    clusters = [
        cluster([block(2, True, b"opus"), block(1, True, b"key-frame-1")]),
        cluster([block(2, True, b"opus"), block(1, False, b"inter")], sized=True),
        cluster([block(1, True, b"key-frame-2"), el(0xA0, el(0xA1, b"\x81\x00\x00\x00g"))]),
    ]
    if not video:
        clusters = [cluster([block(2, True, b"opus")]) for _ in range(3)]
    return header + bytes([0x18, 0x53, 0x80, 0x67]) + UNKNOWN + segment + b"".join(clusters)


# --- MP4 -----------------------------------------------------------------------------------

def box(kind, body):
    return struct.pack(">I", 8 + len(body)) + kind + body


def mp4():
    head = box(b"ftyp", b"isom\x00\x00\x02\x00isomiso6mp41") + box(b"moov", box(b"mvhd", b"\x00" * 100))
    fragment = box(b"moof", box(b"mfhd", b"\x00" * 8)) + box(b"mdat", b"media" * 4)
    large = struct.pack(">I", 1) + b"mdat" + struct.pack(">Q", 16 + 6) + b"large!"
    return head + fragment + box(b"styp", b"msdh") + fragment + box(b"moof", b"") + large


def scanner_input(flags, sizes, data):
    return bytes([flags, len(sizes)]) + b"".join(struct.pack(">H", s) for s in sizes) + data


def container_scanner():
    for name in ("chromium-vp8-opus.webm", "chromium-avc1-opus.mp4"):
        parts = blobs(name)
        short = name.split(".")[-1]
        # The real recording, cut where the browser cut it.
        write("container_scanner", f"chromium-{short}",
              scanner_input(0x10, [min(len(p), 65535) for p in parts], b"".join(parts)))
        # Its first two blobs, cut in 1000-byte blobs, tight bounds, a late subscriber.
        write("container_scanner", f"chromium-{short}-head-tight",
              scanner_input(0x20 | 0x40 | 0x05, [1000], b"".join(parts[:2])[:24000]))
    synthetic = {"webm": webm(), "webm-audio": webm(video=False), "mp4": mp4()}
    for short, data in synthetic.items():
        write("container_scanner", f"synthetic-{short}", scanner_input(0x30, [0], data))
        write("container_scanner", f"synthetic-{short}-bytewise", scanner_input(0x10, [1], data))
        write("container_scanner", f"synthetic-{short}-tight", scanner_input(0x3F, [7, 3], data))


# --- RTMP ----------------------------------------------------------------------------------

HANDSHAKE = 1 + 1536 + 1536


def rtmp_connection():
    capture = read(os.path.join(HERE, "ffmpeg-publish.c2s"))
    chunks = capture[HANDSHAKE:]
    unpublish = chunks.find(b"FCUnpublish") - 64
    publish_end = chunks.find(b"\x02\x00\x0d@setDataFrame") - 12
    seeds = {
        # mode: answer | 0x08 handshake by the harness | 0x10 subscriber | 0x20 kill
        # (`connect` must be answered before what follows reaches rml_rtmp, which drops
        # commands of a connection it has not accepted: ffmpeg waits for the answer.)
        "ffmpeg-granted-subscribed": bytes([0x18, 4]) + chunks,
        "ffmpeg-granted-16-byte-reads": bytes([0x18, 1]) + chunks,
        "ffmpeg-granted-uneven-reads": bytes([0x18, 7]) + chunks,
        "ffmpeg-one-read": bytes([0x18, 0]) + chunks,
        "ffmpeg-invalid-key": bytes([0x09, 4]) + chunks,
        "ffmpeg-no-capacity": bytes([0x0A, 4]) + chunks[:publish_end],
        "ffmpeg-granted-later": bytes([0x1B, 4]) + chunks,
        "ffmpeg-never-answered": bytes([0x0C, 4]) + chunks[:publish_end],
        "ffmpeg-killed": bytes([0x38, 4]) + chunks[:unpublish],
        "ffmpeg-short": bytes([0x18, 4]) + chunks[:2048],
        "ffmpeg-with-its-handshake": bytes([0x10, 4]) + capture,
    }
    for name, data in seeds.items():
        write("rtmp_connection", name, data)
    # The lean chunk reader: the same chunk stream, raw, in reads of various sizes.
    for name, reads in {"one-read": [0], "1-byte-reads": [1], "mixed-reads": [7, 128, 4096, 3]}.items():
        write("rtmp_chunks", f"ffmpeg-{name}",
              bytes([0, len(reads)]) + b"".join(struct.pack(">H", r) for r in reads) + chunks)


# --- WebSocket -----------------------------------------------------------------------------

def step(op, payload=b"", length=None):
    n = len(payload) if length is None else length
    return bytes([op]) + struct.pack(">H", n) + payload


def frame(opcode, payload):
    """A client frame (masked with a zero key, so the payload reads as is)."""
    head = bytes([0x80 | opcode])
    n = len(payload)
    if n < 126:
        head += bytes([0x80 | n])
    elif n < 65536:
        head += bytes([0x80 | 126]) + struct.pack(">H", n)
    else:
        head += bytes([0x80 | 127]) + struct.pack(">Q", n)
    return head + b"\x00\x00\x00\x00" + payload


def ws_publish():
    webm_data = b"".join(blobs("chromium-vp8-opus.webm"))[:24000]
    mp4_data = b"".join(blobs("chromium-avc1-opus.mp4"))[:16000]

    def messages(data, piece=4000):
        out = step(1, b"h") + step(2, b"ping")
        for at in range(0, len(data), piece):
            out += step(0, data[at:at + piece])
        return out + step(1, b"h") + step(4, length=1000)

    write("ws_publish", "webm-granted-subscribed", bytes([0x10]) + messages(webm_data))
    write("ws_publish", "mp4-granted-subscribed", bytes([0x10]) + messages(mp4_data, 3000))
    write("ws_publish", "synthetic-webm-killed", bytes([0x30]) + messages(webm(), 50))
    write("ws_publish", "synthetic-mp4-granted-later", bytes([0x13]) + messages(mp4(), 64))
    write("ws_publish", "invalid-key", bytes([0x01]) + messages(webm(), 100))
    write("ws_publish", "silent-then-idle",
          bytes([0x10]) + step(0, webm()) + step(5, length=25) + step(1, b"h") + step(5, length=70))
    write("ws_publish", "frame-too-large",
          bytes([0x10]) + step(0, webm()) + step(6, b"\x1f\x43\xb6\x75", length=2048))
    write("ws_publish", "text-and-garbage",
          bytes([0x10]) + step(1, b"hello") + step(0, b"\x00" * 64) + step(3, b"pong"))
    raw = frame(0x1, b"h") + frame(0x9, b"p")
    for at in range(0, len(webm_data), 4000):
        raw += frame(0x2, webm_data[at:at + 4000])
    raw += frame(0x8, b"\x03\xe8")
    write("ws_publish", "raw-frames-webm", bytes([0x18]) + raw)
    fragmented = bytes([0x02, 0x80 | 4]) + b"\x00" * 4 + webm()[:4] + \
        bytes([0x80, 0x80 | 126]) + struct.pack(">H", len(webm()) - 4) + b"\x00" * 4 + webm()[4:]
    write("ws_publish", "raw-fragmented-message", bytes([0x18]) + fragmented)
    write("ws_publish", "raw-unmasked-frame", bytes([0x18]) + bytes([0x82, 4]) + b"abcd")
    write("ws_publish", "raw-huge-length", bytes([0x18]) + bytes([0x82, 0xFF]) + b"\x7f" + b"\xff" * 7)


# --- JSON messages -------------------------------------------------------------------------

SID = "0123456789abcdef0123456789abcdef"


def control_json():
    job = {
        "stream_id": SID, "channel": "demo", "ingest_id": "ingest-1", "source": "RTMP",
        "options": {"resolutions": ["Original", {"Sized": {"width": 640, "height": 360, "fps": 30, "kbps": 800}}],
                    "record": True, "previews": {"width": 256, "height": 144, "interval_seconds": 2}},
        "media_url": "http://10.0.0.1:8080/internal/media/" + SID, "reconnect_window_ms": 5000,
    }
    available = {"stream_id": SID, "channel": "demo", "stream_type": "HLS-LIVE", "resolution": "640x360-30",
                 "index_file": "hls/demo/x/640x360-30/live.m3u8", "master_index_file": "hls/demo/x/master.m3u8",
                 "start_time": 12.5}
    messages = [
        (0, {"channel": "demo", "key": "k", "user_ip": "192.0.2.1", "ingest_id": "ingest-1", "source": "WS"}),
        (1, {"stream_id": SID, "encoder_id": "encoder-1"}),
        (2, {"InvalidKey": "nope"}),
        (2, "NoCapacity"),
        (3, job),
        (4, dict(job, type="start")),
        (4, {"type": "stop", "stream_id": SID}),
        (4, {"type": "resume", "stream_id": SID, "ingest_id": "ingest-2", "source": "WS", "media_url": None}),
        (5, {"type": "kill", "channel": "demo", "stream_id": None}),
        (6, dict(available, type="available")),
        (6, {"type": "closed", "stream_id": SID, "channel": "demo", "encoder_id": "encoder-1"}),
        (7, job["options"]),
        (8, "RTMP"),
        (9, "IMG-PREVIEW"),
        (10, SID),
        (11, {"Sized": {"width": 640, "height": 360, "fps": None, "kbps": None}}),
        (12, {"width": 256, "height": 144, "interval_seconds": 2}),
        (13, {"sub": "ingest", "node": "ingest-1", "iat": 1700000000, "exp": 1700000120}),
        (14, {"granted": {"stream_id": SID, "encoder_id": "encoder-1"}}),
        (14, {"refused": "AlreadyPublishing"}),
        (15, {"channel": "demo", "stream_id": SID}),
        (16, {"kind": "encoder", "id": "encoder-1", "capacity": -1}),
        (16, {"kind": "ingest", "id": "ingest-1", "ip": "10.0.0.1", "port": 1935, "ssl": False,
              "server_type": "RTMP", "internal_url": "http://10.0.0.1:8080"}),
        (17, {"id": "encoder-1", "capacity": 4}),
        (18, {"id": "ingest-1", "ip": "::1", "port": 8443, "ssl": True, "server_type": "WS"}),
        (19, {"id": "encoder-1", "capacity": 4, "load": 2}),
        (20, {"stream_id": SID, "channel": "demo", "ingest_id": "ingest-1", "encoder_id": "encoder-1",
              "source": "RTMP", "options": job["options"], "started_at_ms": 1700000000000, "publishing": True,
              "key_hash": "ab" * 32, "publisher_left_at_ms": 0}),
        (21, {"event": {"event_id": "e" * 32, "channel": "demo", "stream_id": SID,
                        "kind": {"type": "available", "stream_type": "HLS-VOD", "resolution": "r",
                                 "index_file": "i", "master_index_file": None, "start_time": 0.1}},
              "attempts": 3, "queued_at_ms": 1}),
        (22, {"event_id": "e" * 32, "channel": "demo", "stream_id": SID, "kind": {"type": "closed"}}),
        (23, {"width": 1280, "height": 720, "fps": 29.97}),
    ]
    for i, (selector, message) in enumerate(messages):
        write("control_json", f"{selector:02}-{i:02}", bytes([selector]) + json.dumps(message).encode())


# --- Grammars ------------------------------------------------------------------------------

def resolution():
    sources = [(1280, 720, 30.0), (1279, 720, 29.97), (720, 1280, 60.0), (320, 180, 1000.0), (1, 1, 0.0)]
    headers = [b"ORIGINAL", b"1280x720-30~2500, 640x360, bad, ORIGINAL,640x360",
               b"1920x1080,1280x720", b"640x480-15~400", b"426x240-30~400,  ,x,8192x8192-240~500000",
               b"\xff"]
    for i, (w, h, fps) in enumerate(sources):
        for j, header in enumerate(headers):
            write("resolution", f"{i}-{j}", struct.pack("<IId", w, h, fps) + header)


def previews_ids():
    seeds = [(0, b"256x144, 2"), (0, b"1920X1080,86400"), (0, b" "), (1, b"Demo_1-a"), (4, b"a/b"),
             (7, b"x" * 130), (2, SID.encode()), (2, SID.upper().encode())]
    for i, (selector, text) in enumerate(seeds):
        write("previews_ids", f"{i}", bytes([selector]) + text)


if __name__ == "__main__":
    container_scanner()
    rtmp_connection()
    ws_publish()
    control_json()
    resolution()
    previews_ids()
