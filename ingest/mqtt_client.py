"""paho-mqtt's Client with the two costs of the ingest path cut: per-message decoding and acks.

Profiled (py-spy, 2.2.0): two thirds of a worker's time was paho, of which
- building an MQTTMessage per PUBLISH: a Properties object parsed even when empty, the topic
  decoded twice for a debug log line, a topic-filter match for message_callback_add;
- one `ack()` per message: each queues a 4-byte packet and writes a byte to the socketpair that
  wakes the network thread, so a 1000-reading batch cost 1000 wake-ups and 1000 send() calls;
- reading: one packet per select() wake-up, in three recv() calls (command byte, length,
  body).

`LeanClient` decodes a QoS 0/1 PUBLISH itself when `on_raw_publish` is set (topic bytes, payload
bytes and mid, nothing else; QoS 2 and everything else go through paho), and `ack_many` queues
all of a batch's PUBACKs as one buffer: one wake-up, one send(); and it reads the socket 64 KiB
at a time, handing paho its small reads from that buffer and reading every packet the buffer
holds before going back to select(). These use paho internals (`_handle_publish`,
`_in_packet`, `_packet_queue`, `_sock_recv`, `_sock_close`), so the version is pinned in the
lock file and tests/ingest/test_mqtt_client.py checks them against a real broker.
"""

from __future__ import annotations

import struct
from collections.abc import Callable, Iterable

import paho.mqtt.client as mqtt
from paho.mqtt.enums import MQTTErrorCode

PUBACK = 0x40
_UNPACK_H = struct.Struct("!H").unpack_from
_PACK_PUBACK = struct.Struct("!BBH").pack

# (mid, qos, topic as bytes, payload): called on paho's network thread.
RawPublishHandler = Callable[[int, int, bytes, bytes], None]


def _varint(data: bytes | bytearray, pos: int) -> tuple[int, int]:
    """An MQTT variable byte integer at `pos`: (value, position after it)."""
    value = 0
    shift = 0
    while True:
        byte = data[pos]
        pos += 1
        value |= (byte & 0x7F) << shift
        if not byte & 0x80:
            return value, pos
        shift += 7
        if shift > 21:
            raise ValueError("malformed variable byte integer")


READ_SIZE = 65536


class LeanClient(mqtt.Client):
    on_raw_publish: RawPublishHandler | None = None
    _rbuf: bytes = b""
    _rpos: int = 0

    def _sock_recv(self, bufsize: int) -> bytes:
        if self._rpos < len(self._rbuf):
            end = self._rpos + bufsize
            chunk = self._rbuf[self._rpos : end]
            self._rpos += len(chunk)
            return chunk
        data = super()._sock_recv(max(bufsize, READ_SIZE))  # BlockingIOError when empty
        if len(data) <= bufsize:
            return data
        self._rbuf, self._rpos = data, bufsize
        return data[:bufsize]

    def loop_read(self, max_packets: int = 1) -> MQTTErrorCode:
        rc = super().loop_read(max_packets)
        # select() cannot see what is already buffered: read every whole packet held.
        while rc == MQTTErrorCode.MQTT_ERR_SUCCESS and self._rpos < len(self._rbuf):
            rc = super().loop_read(1)
        return rc

    def _sock_close(self) -> None:
        self._rbuf, self._rpos = b"", 0  # bytes of a closed connection mean nothing on the next
        super()._sock_close()

    def _handle_publish(self) -> MQTTErrorCode:
        handler = self.on_raw_publish
        header = self._in_packet["command"]
        qos = (header & 0x06) >> 1
        if handler is None or qos == 2 or self._protocol != mqtt.MQTTv5:
            return super()._handle_publish()
        packet = self._in_packet["packet"]
        (length,) = _UNPACK_H(packet, 0)
        topic = bytes(packet[2 : 2 + length])
        pos = 2 + length
        mid = 0
        if qos:
            (mid,) = _UNPACK_H(packet, pos)
            pos += 2
        props_len, pos = _varint(packet, pos)
        payload = bytes(packet[pos + props_len :])
        with self._in_callback_mutex:
            handler(mid, qos, topic, payload)
        if qos == 1 and not self._manual_ack:
            return self._send_puback(mid)
        return MQTTErrorCode.MQTT_ERR_SUCCESS

    def ack_many(self, mids: Iterable[int]) -> None:
        """PUBACK every mid (QoS 1, manual ack) as one write to the socket."""
        buffer = b"".join([_PACK_PUBACK(PUBACK, 2, mid) for mid in mids])
        if buffer:
            self._packet_queue(PUBACK, buffer, 0, 0)
