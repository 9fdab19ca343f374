"""`iot-broker-metrics`: serve Mosquitto's `$SYS` figures on /metrics for Prometheus."""

from __future__ import annotations

import logging
import signal
import sys
import threading
from types import FrameType

from prometheus_client import REGISTRY, start_http_server
from pydantic import ValidationError

from broker_metrics.exporter import SysExporter
from broker_metrics.settings import ExporterSettings

log = logging.getLogger("broker_metrics")


def main() -> int:
    try:
        settings = ExporterSettings()
    except ValidationError as exc:
        print(f"iot-broker-metrics: bad configuration:\n{exc}", file=sys.stderr)
        return 2
    logging.basicConfig(
        level=settings.log_level.upper(),
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    exporter = SysExporter(settings)
    REGISTRY.register(exporter)
    start_http_server(settings.metrics_port, addr=settings.metrics_host)
    log.info(
        "Mosquitto $SYS of %s:%d on http://%s:%d/metrics",
        settings.mqtt_host,
        settings.mqtt_port,
        settings.metrics_host,
        settings.metrics_port,
    )
    exporter.start()
    stop = threading.Event()

    def on_signal(_signum: int, _frame: FrameType | None) -> None:
        stop.set()

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    stop.wait()
    exporter.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
