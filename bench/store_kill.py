"""Does the store keep what it acknowledged when it is killed? InfluxDB 1.13 under SIGKILL.

Each round: a writer sends batches of points with influxdb-client's synchronous API (exactly
as the ingest worker does) as fast as the store answers; after a random 0.2-1.5 s, influxd gets
SIGKILL; it is started again on the same data, and every point of the batches it answered 204
is looked for. `lost` = acknowledged points not found. A batch cut short by the kill (no answer)
is not counted: the worker would retry it.

This is the measurement behind dropping the ingest worker's replay window, which was there
because VictoriaMetrics 1.79 lost ~10 s of acknowledged samples on SIGKILL.

Environment: BENCH_STORE_KILL_ROUNDS (default 20), BENCH_STORE_KILL_BATCH (100 points).
"""

from __future__ import annotations

import os
import random
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

from influxdb_client.client.influxdb_client import InfluxDBClient
from influxdb_client.client.write_api import SYNCHRONOUS

from bench.common import write_result
from ingest.store import _PRECISION as MS
from testing import procs


class Writer(threading.Thread):
    def __init__(self, store: procs.InfluxHandle, series: str, batch: int) -> None:
        super().__init__(daemon=True)
        self.store, self.series, self.batch = store, series, batch
        self.acked = 0
        self.error: Exception | None = None
        self.stop = threading.Event()

    def run(self) -> None:
        client = InfluxDBClient(
            url=self.store.url, token=self.store.credentials.writer_token, org="iot"
        )
        write = client.write_api(write_options=SYNCHRONOUS)
        base = int(time.time() * 1000) - 3_600_000
        i = 0
        try:
            while not self.stop.is_set():
                lines = [
                    f"reading,device={self.series},sensor=kill value={i + k} {base + i + k}"
                    for k in range(self.batch)
                ]
                write.write(bucket="telemetry", record=lines, write_precision=MS)
                i += self.batch
                self.acked = i
        except Exception as exc:  # the kill: the batch in flight has no answer
            self.error = exc
        finally:
            client.close()  # type: ignore[no-untyped-call]


def main() -> int:
    rounds = int(os.environ.get("BENCH_STORE_KILL_ROUNDS", "20"))
    batch = int(os.environ.get("BENCH_STORE_KILL_BATCH", "100"))
    per_round: list[dict[str, Any]] = []
    with tempfile.TemporaryDirectory(prefix="bench-store-kill-") as tmp:
        store = procs.influx(Path(tmp) / "influxdb")
        try:
            for r in range(rounds):
                writer = Writer(store, f"k{r}", batch)
                writer.start()
                time.sleep(random.uniform(0.2, 1.5))
                store.proc.kill()
                writer.join(10)
                acked = writer.acked
                if acked == 0:
                    raise RuntimeError(f"nothing written before the kill: {writer.error!r}")
                store.proc.start()
                stored = len(store.reader().points("reading", "value", device=f"k{r}"))
                per_round.append({"acked": acked, "stored": stored, "lost": max(0, acked - stored)})
        finally:
            store.proc.stop()
    acked = sum(x["acked"] for x in per_round)
    lost = sum(x["lost"] for x in per_round)
    figures = {
        "store": "InfluxDB 1.13.2 (wal-fsync-delay 0s)",
        "rounds": rounds,
        "batch_points": batch,
        "acknowledged_points": acked,
        "lost_acknowledged_points": lost,
        "rounds_with_loss": sum(1 for x in per_round if x["lost"]),
        "per_round": per_round,
    }
    write_result("store_kill", figures)
    return 0 if lost == 0 else 1
