"""`iot-broker-auth` / `python -m broker_auth`: run the API and its background tasks."""

from __future__ import annotations

import logging
import sys

from pydantic import ValidationError

from broker_auth.settings import Settings


def load_settings() -> Settings:
    """The settings from the environment; exits with status 2 naming what is wrong."""
    try:
        return Settings()
    except ValidationError as exc:
        # Name what is wrong without echoing values (some are secrets).
        for error in exc.errors():
            where = ".".join(str(p) for p in error.get("loc", ())) or "settings"
            print(f"broker_auth: configuration error: {where}: {error['msg']}", file=sys.stderr)
        raise SystemExit(2) from None


def configure_logging(level: str) -> None:
    logging.basicConfig(
        level=level.upper(),
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        stream=sys.stdout,
    )
    # pyota, urllib3 and the InfluxDB client are chatty at DEBUG and may log request bodies.
    for name in ("iota", "urllib3", "influxdb_client"):
        logging.getLogger(name).setLevel(logging.WARNING)


def main() -> None:
    settings = load_settings()
    configure_logging(settings.log_level)
    # Imported only once the configuration is known to be good: a refusal is immediate.
    import uvicorn

    from broker_auth.api.app import create_app

    uvicorn.run(
        create_app(settings),
        host=settings.api_host,
        port=settings.api_port,
        log_level=settings.log_level.lower(),
        proxy_headers=bool(settings.forwarded_allow_ips),
        forwarded_allow_ips=settings.forwarded_allow_ips or None,
        timeout_graceful_shutdown=10,
    )


if __name__ == "__main__":
    main()
