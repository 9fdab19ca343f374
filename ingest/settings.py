"""Ingest worker configuration, read from the environment (names from the team contract)."""

from __future__ import annotations

import logging
import re
import socket
import sys
from typing import Literal, NamedTuple, Self

from pydantic import (
    Field,
    SecretStr,
    ValidationError,
    ValidationInfo,
    field_validator,
    model_validator,
)
from pydantic_settings import BaseSettings, SettingsConfigDict

_WINDOW_RE = re.compile(r"^(\d+)([smhd])$")
_UNIT_SECONDS = {"s": 1, "m": 60, "h": 3600, "d": 86400}


class Window(NamedTuple):
    """A moving-average window: its label as published (`1m`) and its length in seconds."""

    label: str
    seconds: float


def parse_window(text: str) -> Window:
    match = _WINDOW_RE.match(text.strip())
    if not match or int(match.group(1)) == 0:
        raise ValueError(f"bad window {text!r}: expected a positive number with s, m, h or d")
    return Window(text.strip(), float(int(match.group(1)) * _UNIT_SECONDS[match.group(2)]))


def parse_windows(text: str) -> tuple[Window, ...]:
    windows = tuple(parse_window(part) for part in text.split(",") if part.strip())
    if not windows:
        raise ValueError("INGEST_WINDOWS lists no window")
    if len({w.label for w in windows}) != len(windows):
        raise ValueError(f"INGEST_WINDOWS lists a window twice: {text!r}")
    return windows


class IngestSettings(BaseSettings):
    model_config = SettingsConfigDict(extra="ignore", populate_by_name=True)

    mqtt_host: str = Field("127.0.0.1", alias="MQTT_HOST")
    mqtt_port: int = Field(1883, alias="MQTT_PORT")
    mqtt_keepalive_s: int = Field(30, alias="INGEST_MQTT_KEEPALIVE_S", ge=5)
    live_topic_prefix: str = Field("live", alias="LIVE_TOPIC_PREFIX")
    avg_topic_prefix: str = Field("avg", alias="AVG_TOPIC_PREFIX")

    mqtt_username: str = Field("svc.ingest", alias="INGEST_MQTT_USERNAME")
    mqtt_password: SecretStr = Field(SecretStr(""), alias="INGEST_MQTT_PASSWORD")
    # The broker reserves ids `<username>:...` to that user (mosquitto/plugin): an id without a
    # ':' gets `<INGEST_MQTT_USERNAME>:` in front. Fixed per worker across restarts (the session
    # must outlive the process); `{hostname}` is replaced by the host's name.
    client_id: str = Field("worker-{hostname}", alias="INGEST_CLIENT_ID", min_length=1)
    # Persistent session: the broker keeps our subscription and unacknowledged readings this long
    # while we are away (a week by default; at most 2**32-1 s).
    session_expiry_s: int = Field(7 * 86400, alias="INGEST_SESSION_EXPIRY_S", ge=0, le=2**32 - 1)
    # MQTT 5 Receive Maximum: how many unacknowledged readings the broker may send us. It is the
    # bound of our pending buffer, so it must exceed the batch size for batch acks to flow.
    receive_maximum: int = Field(5000, alias="INGEST_RECEIVE_MAXIMUM", ge=1, le=65535)

    # Several workers: a shared subscription `$share/<group>/live/+/+` spreads the readings over
    # them, and each forwards what the store accepted to INGEST_ACCEPTED_TOPIC, where the one
    # averager (`iot-averager`) owns the averages. One worker: plain subscription, own averages.
    averages_mode: Literal["local", "forward"] = Field("local", alias="INGEST_AVERAGES")
    share_group: str = Field("", alias="INGEST_SHARE_GROUP", pattern=r"^[A-Za-z0-9_-]*$")
    accepted_topic: str = Field("ingest/accepted", alias="INGEST_ACCEPTED_TOPIC", min_length=1)
    averager_client_id: str = Field("averager", alias="INGEST_AVERAGER_CLIENT_ID", min_length=1)
    averager_metrics_port: int = Field(9101, alias="INGEST_AVERAGER_METRICS_PORT", ge=0)
    # At start the averages' owner reads back the series active this long ago (ingest/rebuild.py).
    rebuild_lookback_s: float = Field(3600.0, alias="INGEST_REBUILD_LOOKBACK_S", ge=0)
    rebuild_timeout_s: float = Field(60.0, alias="INGEST_REBUILD_TIMEOUT_S", ge=0)

    influx_url: str = Field("http://127.0.0.1:8086", alias="INFLUX_URL")
    influx_token: SecretStr = Field(SecretStr(""), alias="INFLUX_TOKEN")
    # Read access for the rebuild at start (empty: INFLUX_TOKEN, when it may read).
    influx_read_token: SecretStr = Field(SecretStr(""), alias="INFLUX_READ_TOKEN")
    influx_org: str = Field("iot", alias="INFLUX_ORG")
    influx_bucket: str = Field("telemetry", alias="INFLUX_BUCKET")
    store_timeout_s: float = Field(10.0, alias="INGEST_STORE_TIMEOUT_S", gt=0)
    retry_max_s: float = Field(5.0, alias="INGEST_RETRY_MAX_S", gt=0)

    windows_text: str = Field("1m", alias="INGEST_WINDOWS")
    publish_interval_s: float = Field(5.0, alias="INGEST_PUBLISH_INTERVAL_S", gt=0)
    max_series: int = Field(10_000, alias="INGEST_MAX_SERIES", ge=1)
    max_points_per_series: int = Field(20_000, alias="INGEST_MAX_POINTS_PER_SERIES", ge=1)

    batch_size: int = Field(1000, alias="INGEST_BATCH_SIZE", ge=1)
    flush_interval_s: float = Field(0.5, alias="INGEST_FLUSH_INTERVAL_S", gt=0)
    shutdown_timeout_s: float = Field(10.0, alias="INGEST_SHUTDOWN_TIMEOUT_S", ge=0)

    max_payload_bytes: int = Field(4096, alias="INGEST_MAX_PAYLOAD_BYTES", ge=1)
    max_future_s: float = Field(300.0, alias="INGEST_MAX_FUTURE_S", ge=0)
    value_min: float = Field(-1e9, alias="INGEST_VALUE_MIN")
    value_max: float = Field(1e9, alias="INGEST_VALUE_MAX")
    reject_log_interval_s: float = Field(60.0, alias="INGEST_REJECT_LOG_INTERVAL_S", ge=0)

    metrics_host: str = Field("127.0.0.1", alias="INGEST_METRICS_HOST")
    metrics_port: int = Field(9102, alias="INGEST_METRICS_PORT", ge=0)
    log_level: str = Field("INFO", alias="INGEST_LOG_LEVEL")

    @field_validator("client_id", "averager_client_id")
    @classmethod
    def _own_client_id(cls, value: str, info: ValidationInfo) -> str:
        # Replicas of one compose service share their environment: `{hostname}` (the container's)
        # gives each its own client id, so each keeps its own persistent session.
        value = value.replace("{hostname}", socket.gethostname())
        return owned_client_id(str(info.data.get("mqtt_username", "")), value)

    @field_validator("windows_text")
    @classmethod
    def _check_windows(cls, value: str) -> str:
        parse_windows(value)
        return value

    @model_validator(mode="after")
    def _check_bounds(self) -> Self:
        if self.batch_size >= self.receive_maximum:
            raise ValueError("INGEST_BATCH_SIZE must be smaller than INGEST_RECEIVE_MAXIMUM")
        if self.value_min >= self.value_max:
            raise ValueError("INGEST_VALUE_MIN must be below INGEST_VALUE_MAX")
        return self

    @property
    def windows(self) -> tuple[Window, ...]:
        return parse_windows(self.windows_text)


def owned_client_id(username: str, client_id: str) -> str:
    """`client_id` in `username`'s namespace: `<username>:<id>` (the broker refuses others)."""
    owner, colon, _ = client_id.partition(":")
    if not colon:
        return f"{username}:{client_id}"
    if owner != username:
        raise ValueError(f"must be {username}:<id>: the broker reserves {owner}:... to {owner}")
    return client_id


def shown_client_id(client_id: str) -> str:
    """For logs: the owner and the start of the id, never all of it."""
    owner, _, rest = client_id.partition(":")
    return f"{owner}:{rest[:6]}…" if len(rest) > 6 else f"{owner}:{rest}"


def settings_for(program: str) -> IngestSettings | None:
    """The settings from the environment, logging set up; None (said on stderr) if invalid."""
    try:
        settings = IngestSettings()
    except ValidationError as exc:
        print(f"{program}: bad configuration:\n{exc}", file=sys.stderr)
        return None
    logging.basicConfig(
        level=settings.log_level.upper(),
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    return settings
