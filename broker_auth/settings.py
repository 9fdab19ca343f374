"""broker_auth configuration, from the environment (names shared with the rest of the stack).

The service refuses to start without the secrets it cannot work without: the dynamic-security
admin password and (outside dev mode) the admin API token. It never holds a seed: deposit
addresses come from the seller (IOTA_DEPOSIT_ADDRESSES_FILE or POST /api/deposit-addresses).
"""

from __future__ import annotations

from typing import Self

from pydantic import Field, SecretStr, field_validator, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

MIN_ADMIN_TOKEN_LENGTH = 16
# tcp://host:port (a name, an IPv4 address or a [bracketed] IPv6 one) or ipc://path; or empty.
FEED_URL_PATTERN = r"^(tcp://([A-Za-z0-9.-]+|\[[0-9A-Fa-f:.]+\]):[0-9]{1,5}|ipc://\S+)?$"


class Settings(BaseSettings):
    model_config = SettingsConfigDict(extra="ignore", populate_by_name=True)

    # Store
    mongo_url: str = Field("mongodb://127.0.0.1:27017/", alias="MONGO_URL")
    mongo_db: str = Field("iot_broker", alias="MONGO_DB")
    mongo_timeout_s: float = Field(2.0, alias="MONGO_TIMEOUT_S", gt=0)

    # HTTP API
    api_host: str = Field("127.0.0.1", alias="API_HOST")
    api_port: int = Field(8000, alias="API_PORT", ge=0, le=65535)
    admin_token: SecretStr | None = Field(None, alias="BROKER_ADMIN_TOKEN")
    dev_mode: bool = Field(False, alias="BROKER_DEV_MODE")
    # Dev mode without a token: a random one is generated and written here (never logged).
    admin_token_file: str = Field(".broker-admin-token", alias="BROKER_ADMIN_TOKEN_FILE")
    log_level: str = Field("INFO", alias="LOG_LEVEL")
    # Behind a reverse proxy: the proxies whose X-Forwarded-For is trusted (comma list, or *),
    # so per-address login limits see the real client. Empty: the socket peer is the client.
    forwarded_allow_ips: str = Field("", alias="FORWARDED_ALLOW_IPS")

    # Broker (dynamic-security control client)
    mqtt_host: str = Field("127.0.0.1", alias="MQTT_HOST")
    mqtt_port: int = Field(1883, alias="MQTT_PORT", ge=1, le=65535)
    dynsec_admin_username: str = Field("svc.broker-admin", alias="DYNSEC_ADMIN_USERNAME")
    dynsec_admin_password: SecretStr = Field(SecretStr(""), alias="DYNSEC_ADMIN_PASSWORD")
    # Given: broker_auth creates the $SYS exporter's client (svc.metrics) with this password.
    broker_metrics_mqtt_password: SecretStr | None = Field(
        None, alias="BROKER_METRICS_MQTT_PASSWORD"
    )
    dynsec_timeout_s: float = Field(5.0, alias="DYNSEC_TIMEOUT_S", gt=0)
    # Replicas: the payments lease (infra/leader.py). Hand-over within LEASE_TTL_S after the holder
    # dies; a holder stops acting LEASE_SAFETY_S before the others may take over.
    lease_ttl_s: float = Field(5.0, alias="LEASE_TTL_S", gt=0)
    lease_safety_s: float = Field(1.0, alias="LEASE_SAFETY_S", ge=0)
    reconcile_interval_s: float = Field(60.0, alias="RECONCILE_INTERVAL_S", gt=0)
    live_topic_prefix: str = Field("live", alias="LIVE_TOPIC_PREFIX", pattern=r"^[a-z0-9_-]+$")

    # IOTA
    iota_node_url: str = Field("http://127.0.0.1:14265", alias="IOTA_NODE_URL")
    # One address a line (81 trytes, or 90 with checksum; # comments), loaded at every start.
    iota_deposit_addresses_file: str = Field("", alias="IOTA_DEPOSIT_ADDRESSES_FILE")
    deposit_pool_low_water: int = Field(20, alias="DEPOSIT_POOL_LOW_WATER", ge=0)
    node_timeout_s: float = Field(5.0, alias="NODE_TIMEOUT_S", gt=0)
    # The node's ZMQ event feed (Hornet's ZMQ plugin), e.g. tcp://127.0.0.1:5556: each new
    # solid milestone wakes the watcher at once; empty: the watcher polls only.
    iota_node_zmq_url: str = Field("", alias="IOTA_NODE_ZMQ_URL", pattern=FEED_URL_PATTERN)
    watcher_interval_s: float = Field(0.5, alias="WATCHER_INTERVAL_S", gt=0)
    watcher_max_backoff_s: float = Field(10.0, alias="WATCHER_MAX_BACKOFF_S", gt=0)
    stray_scan_interval_s: float = Field(30.0, alias="STRAY_SCAN_INTERVAL_S", gt=0)

    # Instant access (access/instant_access.py): a valid pending payment opens provisional
    # access at once, capped; 0 turns it off. The seller's worst case per buyer is
    # INSTANT_ACCESS_MAX_IOTA of value for at most INSTANT_ACCESS_MAX_S of access.
    instant_access_max_s: float = Field(600.0, alias="INSTANT_ACCESS_MAX_S", ge=0)
    instant_access_max_iota: int = Field(1000, alias="INSTANT_ACCESS_MAX_IOTA", ge=0)
    instant_access_confirm_s: float = Field(900.0, alias="INSTANT_ACCESS_CONFIRM_S", gt=0)

    # Orders
    order_payment_window_s: float = Field(3600.0, alias="ORDER_PAYMENT_WINDOW_S", gt=0)
    late_payment_window_s: float = Field(7 * 86400.0, alias="LATE_PAYMENT_WINDOW_S", ge=0)
    max_order_hours: float = Field(8760.0, alias="MAX_ORDER_HOURS", gt=0)
    # Deposit addresses are the seller's finite resource: a buyer holds at most this many
    # unpaid orders; an order never paid holds its address UNPAID_HOLD_S after its window.
    max_unpaid_orders: int = Field(3, alias="MAX_UNPAID_ORDERS", ge=1)
    # Sealed purchases (buying without an account): anonymous quotes held unpaid per client
    # address, and the seller's key pairs (made at first start; mode 0600).
    max_unpaid_quotes: int = Field(3, alias="MAX_UNPAID_QUOTES", ge=1)
    seller_key_file: str = Field(".seller-keys.json", alias="SELLER_KEY_FILE")
    # The smallest order a seller takes (an address held for dust is hers to decide).
    min_order_iota: int = Field(1, alias="MIN_ORDER_IOTA", ge=1)
    unpaid_hold_s: float = Field(86400.0, alias="UNPAID_HOLD_S", ge=0)
    # Order creation per buyer and per client address, in ORDER_WINDOW_S.
    order_max_per_buyer: int = Field(30, alias="ORDER_MAX_PER_BUYER", ge=1)
    order_max_per_ip: int = Field(60, alias="ORDER_MAX_PER_IP", ge=1)
    order_window_s: float = Field(600.0, alias="ORDER_WINDOW_S", gt=0)

    # Abuse limits, shared by the replicas in MongoDB (throttle.py)
    # Wrong passwords per (username, client address): that pair gets 429, nobody else.
    login_max_failures: int = Field(5, alias="LOGIN_MAX_FAILURES", ge=1)
    login_max_failures_per_ip: int = Field(20, alias="LOGIN_MAX_FAILURES_PER_IP", ge=1)
    login_window_s: float = Field(60.0, alias="LOGIN_WINDOW_S", gt=0)
    # Past this many wrong passwords for a username from anywhere, every login of it waits
    # LOGIN_SLOW_DELAY_S first: guessing slows down, the right password still gets in.
    login_slow_after: int = Field(10, alias="LOGIN_SLOW_AFTER", ge=1)
    login_slow_delay_s: float = Field(1.0, alias="LOGIN_SLOW_DELAY_S", ge=0, le=30)
    session_ttl_s: float = Field(12 * 3600.0, alias="SESSION_TTL_S", gt=0)
    signup_max_per_ip: int = Field(30, alias="SIGNUP_MAX_PER_IP", ge=1)
    signup_window_s: float = Field(3600.0, alias="SIGNUP_WINDOW_S", gt=0)
    max_body_bytes: int = Field(16384, alias="MAX_BODY_BYTES", ge=256)
    # The seller's address lists (up to 1,000 addresses a call; admin routes).
    max_import_body_bytes: int = Field(1 << 20, alias="MAX_IMPORT_BODY_BYTES", ge=256)

    # Business events (InfluxDB v2 write API)
    influx_url: str = Field("http://127.0.0.1:8086", alias="INFLUX_URL")
    influx_token: SecretStr = Field(SecretStr(""), alias="INFLUX_TOKEN")
    # To read each device's last reading time for the seller; empty: INFLUX_TOKEN.
    influx_read_token: SecretStr = Field(SecretStr(""), alias="INFLUX_READ_TOKEN")
    influx_org: str = Field("iot", alias="INFLUX_ORG")
    influx_bucket: str = Field("telemetry", alias="INFLUX_BUCKET")
    events_buffer: int = Field(10000, alias="EVENTS_BUFFER", ge=10)
    grants_active_interval_s: float = Field(10.0, alias="GRANTS_ACTIVE_INTERVAL_S", gt=0)
    # notify/<username> gets `grant_ending` this long before a grant ends.
    grant_ending_notice_s: float = Field(300.0, alias="GRANT_ENDING_NOTICE_S", ge=0)

    # Demo data for `make run`
    seed_demo: bool = Field(False, alias="SEED_DEMO")
    demo_device_password: SecretStr | None = Field(None, alias="DEMO_DEVICE_PASSWORD")

    @field_validator("broker_metrics_mqtt_password", mode="before")
    @classmethod
    def _empty_is_unset(cls, value: object) -> object:
        # `BROKER_METRICS_MQTT_PASSWORD=` in an env file means no exporter, not an empty password.
        return None if value == "" else value

    @model_validator(mode="after")
    def _required_secrets(self) -> Self:
        missing = []
        if not self.dynsec_admin_password.get_secret_value():
            missing.append("DYNSEC_ADMIN_PASSWORD")
        token = self.admin_token.get_secret_value() if self.admin_token else ""
        if not token and not self.dev_mode:
            missing.append("BROKER_ADMIN_TOKEN (or BROKER_DEV_MODE=true)")
        if self.seed_demo and not (
            self.demo_device_password and self.demo_device_password.get_secret_value()
        ):
            missing.append("DEMO_DEVICE_PASSWORD (required with SEED_DEMO=true)")
        if missing:
            raise ValueError("missing required settings: " + ", ".join(missing))
        if token and len(token) < MIN_ADMIN_TOKEN_LENGTH and not self.dev_mode:
            raise ValueError(
                f"BROKER_ADMIN_TOKEN must be at least {MIN_ADMIN_TOKEN_LENGTH} characters"
            )
        return self
