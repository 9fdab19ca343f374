"""`iot-sim`: simulated smart plugs publishing their power draw to `live/<device>/power`.

Examples:
  iot-sim --device plug-1                      # one plug at 2 Hz until Ctrl-C
  iot-sim --devices 200 --device-prefix bench- --rate 0 --count 50000 --json

Payload: JSON `{"value": <W>, "ts": <epoch seconds, ms resolution>, "unit": "W"}` at QoS 1.
Each device's timestamps strictly increase (by at least 1 ms), so no two readings of a series
share a time. Credentials: --username/--password, --password-file, or SIM_USERNAME/SIM_PASSWORD.
With --rate 0 the devices publish as fast as the connection goes (for benchmarks); many devices
share this one connection, so its user needs publish rights on all their topics. A single
device without --username logs in as device.<id>.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import random
import signal
import sys
import threading
import time
from pathlib import Path
from types import FrameType

from simulator.plug import SmartPlug
from simulator.publisher import Publisher

log = logging.getLogger("simulator")


def build_parser() -> argparse.ArgumentParser:
    env = os.environ.get
    p = argparse.ArgumentParser(
        prog="iot-sim", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.add_argument("--host", default=env("MQTT_HOST", "127.0.0.1"))
    p.add_argument("--port", type=int, default=int(env("MQTT_PORT", "1883")))
    p.add_argument("--topic-prefix", default=env("LIVE_TOPIC_PREFIX", "live"))
    p.add_argument(
        "--device", action="append", default=[], help="device id (repeatable), e.g. plug-1"
    )
    p.add_argument("--devices", type=int, default=0, help="simulate N devices <prefix>1..N")
    p.add_argument("--device-prefix", default="plug-", help="id prefix for --devices")
    p.add_argument("--sensor", default="power")
    p.add_argument(
        "--rate", type=float, default=2.0, help="readings per second per device (0: flat out)"
    )
    p.add_argument("--duration", type=float, default=0.0, help="stop after S seconds")
    p.add_argument("--count", type=int, default=0, help="stop after N readings (all devices)")
    p.add_argument("--username", default=env("SIM_USERNAME"))
    p.add_argument("--password", default=env("SIM_PASSWORD"))
    p.add_argument("--password-file", type=Path, help="read the password from this file")
    p.add_argument(
        "--client-id",
        default=None,
        help="MQTT client id (the broker accepts only `<username>:...`; default: random)",
    )
    p.add_argument(
        "--max-queue",
        type=int,
        default=5000,
        help="readings kept for retry until the broker acknowledges them; sampling pauses "
        "while full",
    )
    p.add_argument("--drain-timeout", type=float, default=30.0, help="seconds to wait at exit")
    p.add_argument("--seed", type=int, default=None)
    p.add_argument("--json", action="store_true", help="print the summary as one JSON line")
    p.add_argument(
        "--tally-seconds",
        action="store_true",
        help="add `acked_by_second` to the summary: acknowledged readings by the second of their "
        "ts (for benchmarks that find where readings went missing)",
    )
    return p


def device_ids(args: argparse.Namespace) -> list[str]:
    ids = list(args.device)
    ids += [f"{args.device_prefix}{i}" for i in range(1, args.devices + 1)]
    return ids or ["plug-1"]


class Device:
    __slots__ = ("last_ts", "plug", "topic")

    def __init__(self, topic: str, plug: SmartPlug) -> None:
        self.topic = topic
        self.plug = plug
        self.last_ts = 0.0

    def next_payload(self, now: float) -> bytes:
        ts = max(round(now, 3), round(self.last_ts + 0.001, 3))
        self.last_ts = ts
        return b'{"value": %.2f, "ts": %.3f, "unit": "W"}' % (self.plug.sample(now), ts)


def run(args: argparse.Namespace, stop: threading.Event) -> dict[str, object]:
    password = args.password
    if args.password_file:
        password = args.password_file.read_text().strip()
    rng = random.Random(args.seed)
    now = time.time()
    ids = device_ids(args)
    devices = [Device(f"{args.topic_prefix}/{d}/{args.sensor}", SmartPlug(rng, now)) for d in ids]
    # A lone device logs in as itself (the broker's ACL lets device.<id> publish its own topics).
    username = args.username or (f"device.{ids[0]}" if len(ids) == 1 else None)
    pub = Publisher(
        args.host,
        args.port,
        username,
        password,
        args.client_id,
        args.max_queue,
        tally_seconds=args.tally_seconds,
    )
    pub.start()
    while not pub.wait_connected(1.0):
        if stop.is_set():
            break
        log.info("waiting for the broker at %s:%d", args.host, args.port)
    started = time.time()
    deadline = started + args.duration if args.duration > 0 else float("inf")
    period = 1.0 / args.rate if args.rate > 0 else 0.0
    next_round = time.monotonic()
    rounds = 0
    while not stop.is_set():
        for dev in devices:
            if (args.count and pub.counts.sent >= args.count) or time.time() >= deadline:
                stop.set()
                break
            payload = dev.next_payload(time.time())
            if not pub.publish(dev.topic, payload, stop, int(dev.last_ts)):
                break
        rounds += 1
        if period and not stop.is_set():
            next_round += period
            delay = next_round - time.monotonic()
            if delay > 0:
                stop.wait(max(0.0, min(delay, deadline - time.time())))
            elif delay < -1.0:
                next_round = time.monotonic()  # far behind (e.g. the queue was full): no burst
    published_done = time.time()
    drained = pub.drain(args.drain_timeout)
    finished = time.time()
    pub.close()
    counts = pub.counts
    elapsed = max(published_done - started, 1e-9)
    return {
        "published": counts.acked,
        "sent": counts.sent,
        "refused": counts.refused,
        "unacked": counts.outstanding,
        "drained": drained,
        "devices": len(devices),
        "started_at": started,
        "finished_at": finished,
        "elapsed_s": round(finished - started, 3),
        "send_rate_per_s": round(counts.sent / elapsed, 1),
        **(
            {"acked_by_second": {str(k): v for k, v in sorted(counts.acked_by_second.items())}}
            if args.tally_seconds
            else {}
        ),
    }


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(
        level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    stop = threading.Event()

    def on_signal(_signum: int, _frame: FrameType | None) -> None:
        stop.set()

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    summary = run(args, stop)
    if args.json:
        print(json.dumps(summary), flush=True)
    else:
        print(
            f"iot-sim: published {summary['published']} readings from {summary['devices']} "
            f"device(s) in {summary['elapsed_s']} s ({summary['refused']} refused, "
            f"{summary['unacked']} unacknowledged)",
            flush=True,
        )
    return 0 if summary["unacked"] == 0 and summary["refused"] == 0 else 1


if __name__ == "__main__":
    sys.exit(main())
