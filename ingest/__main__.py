"""`iot-ingest` / `python -m ingest`: run the ingest worker until SIGTERM or SIGINT."""

from __future__ import annotations

import logging
import signal
import sys
from types import FrameType

from prometheus_client import start_http_server

from ingest.settings import settings_for, shown_client_id
from ingest.store import InfluxStore
from ingest.worker import IngestWorker

log = logging.getLogger("ingest")


def main() -> int:
    settings = settings_for("iot-ingest")
    if settings is None:
        return 2
    start_http_server(settings.metrics_port, addr=settings.metrics_host)
    log.info(
        "ingest worker: broker %s:%d as %s (client id %s), store %s bucket %s, windows %s, "
        "metrics on :%d",
        settings.mqtt_host,
        settings.mqtt_port,
        settings.mqtt_username,
        shown_client_id(settings.client_id),
        settings.influx_url,
        settings.influx_bucket,
        ",".join(w.label for w in settings.windows),
        settings.metrics_port,
    )
    worker = IngestWorker(settings, InfluxStore(settings))

    def on_signal(signum: int, _frame: FrameType | None) -> None:
        log.info("%s received: flushing, acknowledging, disconnecting", signal.Signals(signum).name)
        worker.stop()

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    worker.run()
    log.info("ingest worker stopped")
    return 0


if __name__ == "__main__":
    sys.exit(main())
