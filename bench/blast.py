"""The benchmark's publisher: MQTT 3.1.1 QoS 1 PUBLISH packets encoded before the clock starts,
then written to the broker over a few connections as fast as TCP takes them.

A Python MQTT client costs ~1 CPU-s per 10k readings (it was the bottleneck of every consumer)
and `mosquitto_pub -l` sends one line at a time (~8 messages/s per process here); this costs
only the kernel's send()s. Each connection's packet ids are unique (at most 65,535 readings per
connection), so no id is reused while in flight. Done when every PUBACK has arrived.

    python -m bench.blast PORT USERNAME PREFIX READINGS DEVICES CONNECTIONS   (password: env
    BENCH_PUB_PASSWORD)

Prints `{"started_at", "acked_at", "published", "cpu_s"}` as JSON. Readings are JSON
`{"value": v, "ts": ms}` on `live/<PREFIX><device>/power`, each with its own millisecond.
"""

from __future__ import annotations

import json
import os
import socket
import struct
import sys
import threading
import time

CONNECT, PUBLISH_QOS1, PUBACK = 0x10, 0x32, 0x40


def _remaining(length: int) -> bytes:
    out = bytearray()
    while True:
        byte, length = length % 128, length // 128
        out.append(byte | (0x80 if length else 0))
        if not length:
            return bytes(out)


def _string(value: bytes) -> bytes:
    return struct.pack("!H", len(value)) + value


def connect_packet(client_id: str, username: str, password: str) -> bytes:
    body = _string(b"MQTT") + bytes([4, 0xC2]) + struct.pack("!H", 60)  # user+pass, clean
    body += _string(client_id.encode()) + _string(username.encode()) + _string(password.encode())
    return bytes([CONNECT]) + _remaining(len(body)) + body


def publish_packet(topic: bytes, payload: bytes, packet_id: int) -> bytes:
    body = _string(topic) + struct.pack("!H", packet_id) + payload
    return bytes([PUBLISH_QOS1]) + _remaining(len(body)) + body


def readings(prefix: str, n: int, devices: int) -> list[tuple[bytes, bytes]]:
    per = n // devices
    base = int(time.time() * 1000) - per - 60_000
    out = []
    for i in range(per):
        for d in range(devices):
            payload = f'{{"value": {(i * 31 + d) % 977 / 4}, "ts": {base + i}}}'.encode()
            out.append((f"live/{prefix}{d}/power".encode(), payload))
    return out


def main(argv: list[str]) -> int:
    port, username, prefix = int(argv[0]), argv[1], argv[2]
    n, devices, connections = int(argv[3]), int(argv[4]), int(argv[5])
    password = os.environ["BENCH_PUB_PASSWORD"]
    messages = readings(prefix, n, devices)
    shares = [messages[k::connections] for k in range(connections)]
    if max(len(s) for s in shares) > 65_535:
        raise SystemExit("more than 65,535 readings on one connection: add connections")
    buffers = [
        b"".join(publish_packet(t, p, i + 1) for i, (t, p) in enumerate(share)) for share in shares
    ]
    socks = []
    for k in range(connections):
        sock = socket.create_connection(("127.0.0.1", port))
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        sock.sendall(connect_packet(f"{username}:blast-{prefix}{k}", username, password))
        connack = sock.recv(4)
        if len(connack) < 4 or connack[3] != 0:
            raise SystemExit(f"broker refused the connection: {connack!r}")
        socks.append(sock)
    acked_at = [0.0] * connections

    def read_acks(k: int) -> None:
        want = 4 * len(shares[k])
        got = 0
        while got < want:
            chunk = socks[k].recv(65536)
            if not chunk:
                raise SystemExit("connection closed before every PUBACK")
            got += len(chunk)
        acked_at[k] = time.time()

    readers = [threading.Thread(target=read_acks, args=(k,)) for k in range(connections)]
    cpu_before = time.process_time()
    started = time.time()
    for r in readers:
        r.start()
    senders = [
        threading.Thread(target=s.sendall, args=(b,)) for s, b in zip(socks, buffers, strict=True)
    ]
    for s in senders:
        s.start()
    for t in (*senders, *readers):
        t.join()
    cpu = time.process_time() - cpu_before
    for sock in socks:
        sock.sendall(bytes([0xE0, 0]))  # DISCONNECT
        sock.close()
    print(
        json.dumps(
            {
                "started_at": started,
                "acked_at": max(acked_at),
                "published": len(messages),
                "cpu_s": cpu,
            }
        ),
        flush=True,
    )
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
