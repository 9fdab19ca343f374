"""The $SYS exporter's configuration, from the environment."""

from __future__ import annotations

from pydantic import Field, SecretStr
from pydantic_settings import BaseSettings, SettingsConfigDict


class ExporterSettings(BaseSettings):
    model_config = SettingsConfigDict(extra="ignore")

    mqtt_host: str = Field("127.0.0.1", alias="MQTT_HOST")
    mqtt_port: int = Field(1883, alias="MQTT_PORT", ge=1, le=65535)
    # The login svc.metrics, which broker_auth creates (role svc-metrics: reads $SYS/broker/#
    # only) with the same password from its own environment.
    password: SecretStr = Field(alias="BROKER_METRICS_MQTT_PASSWORD")
    metrics_host: str = Field("127.0.0.1", alias="BROKER_METRICS_HOST")
    metrics_port: int = Field(9234, alias="BROKER_METRICS_PORT", ge=0, le=65535)
    log_level: str = Field("INFO", alias="BROKER_METRICS_LOG_LEVEL")
