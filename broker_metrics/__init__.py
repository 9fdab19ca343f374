"""Mosquitto's `$SYS` figures for Prometheus: a small MQTT -> /metrics bridge."""
