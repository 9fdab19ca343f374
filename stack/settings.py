"""Where `make run` keeps its data and which ports it uses (overridable from the environment)."""

from __future__ import annotations

from pathlib import Path

from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict

from deploy.host import REPO_ROOT


class StackSettings(BaseSettings):
    model_config = SettingsConfigDict(extra="ignore")

    data_dir: Path = Field(REPO_ROOT / ".data", alias="IOT_DATA_DIR")
    mqtt_port: int = Field(1883, alias="MQTT_PORT")
    mqtt_tls_port: int = Field(8883, alias="MQTT_TLS_PORT")
    mqtt_ws_port: int = Field(9001, alias="MQTT_WS_PORT")
    api_port: int = Field(8000, alias="API_PORT")
    mongo_port: int = Field(27017, alias="FERRETDB_PORT")
    ferretdb_debug_port: int = Field(8089, alias="FERRETDB_DEBUG_PORT")
    # An external MongoDB replaces the embedded FerretDB when set.
    mongo_url: str | None = Field(None, alias="MONGO_URL")
    influx_port: int = Field(8086, alias="INFLUX_PORT")
    # influxd's backup/restore RPC listener, on loopback (its default 8088 is FerretDB's too).
    influx_rpc_port: int = Field(8087, alias="INFLUX_RPC_PORT")
    devnet_port: int = Field(14265, alias="DEVNET_PORT")
    faucet_port: int = Field(14266, alias="FAUCET_PORT")
    # Hornet's ZMQ event feed (loopback), which broker_auth's watcher listens to.
    devnet_zmq_port: int = Field(5556, alias="DEVNET_ZMQ_PORT")
    # Hornet's coordinator: whole seconds between milestones, 2**depth milestones in its tree
    # (depth 16: 65,536, 36 h at 2 s; built once, ~90 s on 2 cores).
    devnet_milestone_interval: int = Field(2, alias="DEVNET_MILESTONE_INTERVAL", ge=1)
    devnet_merkle_depth: int = Field(16, alias="DEVNET_MERKLE_DEPTH", ge=4, le=24)
    iota_mwm: int = Field(5, alias="IOTA_MWM", ge=1, le=14)
    # A directory with a prebuilt coordinator tree to share (the tests); empty: build one.
    devnet_merkle_cache: str = Field("", alias="DEVNET_MERKLE_CACHE")
    # The seller's deposit addresses: derived from .data/seller.seed, kept this many free.
    deposit_pool_target: int = Field(50, alias="DEPOSIT_POOL_TARGET", ge=1)
    # Scale-out (README "Scale-out"): N ingest workers behind one averager; N broker_auth
    # processes on API ports api_port, api_port + 1, ...
    ingest_workers: int = Field(1, alias="INGEST_WORKERS", ge=1, le=16)
    broker_auth_replicas: int = Field(1, alias="BROKER_AUTH_REPLICAS", ge=1, le=8)
    ingest_metrics_port: int = Field(9102, alias="INGEST_METRICS_PORT")
    ingest_averager_metrics_port: int = Field(9101, alias="INGEST_AVERAGER_METRICS_PORT")
    # Prometheus (loopback), scraping every process above and evaluating prometheus/alerts.yml.
    prometheus_port: int = Field(9090, alias="PROMETHEUS_PORT")
    # Hornet's Prometheus plugin (the node's metrics), scraped by the Prometheus above.
    devnet_prometheus_port: int = Field(9311, alias="DEVNET_PROMETHEUS_PORT")
    # iot-broker-metrics: Mosquitto's $SYS figures on /metrics (loopback), scraped as `mosquitto`.
    broker_metrics_port: int = Field(9234, alias="BROKER_METRICS_PORT")
    sim_rate_hz: float = Field(2.0, alias="SIM_RATE_HZ")
