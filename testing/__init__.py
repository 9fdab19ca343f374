"""The harness that tests and benchmarks share; never imported by the product.

- `procs`: free ports, waiting, one real process (`Proc`) and the embedded roles (Mosquitto,
  InfluxDB, FerretDB, Hornet + faucet) on free ports, configured as `make run` configures them;
- `broker_auth`: broker_auth as a real process and a client of its API;
- `devices`: a device publishing readings; `mqtt`: MQTT clients and waiting for live access;
- `influx`, `scrape`: reading back the store and Prometheus pages; `addresses`: IOTA addresses.
"""
