"""A TCP proxy between one broker_auth process and Mosquitto that sees, holds or drops what
broker_auth sends to the dynamic-security control topic.

It reads the client-to-broker stream as MQTT packets (fixed header, remaining length), so it
can act on whole packets while the stream stays valid:

- `hold_after(marker)`: forward the next control command containing `marker`, then hold
  everything the process sends (its answers still flow) until `release()`: a deterministic
  pause between two of its commands.
- `dropping = True`: control commands are lost while the connection stays up (a broker that
  does not answer; no reconnection, so no reconciliation after a reconnect).
- `commands`: every control command forwarded, to check what a process wrote.
"""

from __future__ import annotations

import contextlib
import json
import socket
import threading
from typing import Any

CONTROL_TOPIC = b"$CONTROL/dynamic-security/v1"
PUBLISH = 3


def _read_exact(sock: socket.socket, n: int) -> bytes | None:
    buf = bytearray()
    while len(buf) < n:
        chunk = sock.recv(n - len(buf))
        if not chunk:
            return None
        buf += chunk
    return bytes(buf)


def read_packet(sock: socket.socket) -> bytes | None:
    """One whole MQTT packet (fixed header included), or None at end of stream."""
    first = _read_exact(sock, 1)
    if first is None:
        return None
    header = bytearray(first)
    length = 0
    for shift in range(0, 28, 7):
        b = _read_exact(sock, 1)
        if b is None:
            return None
        header += b
        length |= (b[0] & 0x7F) << shift
        if not b[0] & 0x80:
            break
    body = _read_exact(sock, length) if length else b""
    if body is None:
        return None
    return bytes(header) + body


def control_payload(packet: bytes) -> bytes | None:
    """The payload of a PUBLISH to the control topic (QoS 0, as broker_auth sends), else None."""
    if packet[0] >> 4 != PUBLISH:
        return None
    i = 1
    while packet[i] & 0x80:
        i += 1
    i += 1
    topic_len = int.from_bytes(packet[i : i + 2], "big")
    topic = packet[i + 2 : i + 2 + topic_len]
    if topic != CONTROL_TOPIC:
        return None
    i += 2 + topic_len
    if (packet[0] >> 1) & 0x03:
        i += 2  # packet identifier (QoS > 0)
    # MQTT 5 properties: a variable byte integer length, then the properties.
    props_len, shift = 0, 0
    while True:
        b = packet[i]
        i += 1
        props_len |= (b & 0x7F) << shift
        shift += 7
        if not b & 0x80:
            break
    return packet[i + props_len :]


class ControlProxy:
    def __init__(self, upstream_port: int) -> None:
        self.upstream_port = upstream_port
        self._listener = socket.create_server(("127.0.0.1", 0))
        self.port: int = self._listener.getsockname()[1]
        self._cond = threading.Condition()
        self._holding = False
        self._hold_marker: bytes | None = None
        self.held = threading.Event()
        self.dropping = False
        self.dropped = 0
        self.commands: list[dict[str, Any]] = []
        self._sockets: list[socket.socket] = []
        self._closed = False
        threading.Thread(target=self._accept, name="control-proxy", daemon=True).start()

    # -- control ---------------------------------------------------------------------------
    def hold_after(self, marker: bytes) -> None:
        with self._cond:
            self.held.clear()
            self._hold_marker = marker

    def release(self) -> None:
        with self._cond:
            self._holding = False
            self._hold_marker = None
            self._cond.notify_all()

    def close(self) -> None:
        self._closed = True
        self.release()
        with contextlib.suppress(OSError):
            self._listener.close()
        for s in list(self._sockets):
            with contextlib.suppress(OSError):
                s.close()

    # -- plumbing --------------------------------------------------------------------------
    def _accept(self) -> None:
        while not self._closed:
            try:
                client, _ = self._listener.accept()
            except OSError:
                return
            try:
                upstream = socket.create_connection(("127.0.0.1", self.upstream_port), timeout=2)
                upstream.settimeout(None)
            except OSError:
                client.close()  # the broker is down: the process sees a refused connection
                continue
            self._sockets += [client, upstream]
            threading.Thread(target=self._down, args=(upstream, client), daemon=True).start()
            threading.Thread(target=self._up, args=(client, upstream), daemon=True).start()

    def _down(self, src: socket.socket, dst: socket.socket) -> None:
        try:
            while chunk := src.recv(65536):
                dst.sendall(chunk)
        except OSError:
            pass
        self._shut(src, dst)

    def _up(self, src: socket.socket, dst: socket.socket) -> None:
        try:
            while (packet := read_packet(src)) is not None:
                payload = control_payload(packet)
                with self._cond:
                    while self._holding and not self._closed:
                        self._cond.wait(0.1)
                    if payload is not None and self.dropping:
                        self.dropped += 1
                        continue
                    trigger = (
                        payload is not None
                        and self._hold_marker is not None
                        and self._hold_marker in payload
                    )
                    if payload is not None:
                        with contextlib.suppress(ValueError):
                            self.commands.extend(json.loads(payload).get("commands", []))
                dst.sendall(packet)
                if trigger:
                    with self._cond:
                        self._holding = True
                        self._hold_marker = None
                        self.held.set()
        except (OSError, IndexError):
            pass
        self._shut(src, dst)

    @staticmethod
    def _shut(a: socket.socket, b: socket.socket) -> None:
        for s in (a, b):
            with contextlib.suppress(OSError):
                s.shutdown(socket.SHUT_RDWR)
