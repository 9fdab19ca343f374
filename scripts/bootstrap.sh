#!/usr/bin/env bash
# One-shot set-up shared by `make run`, `make test` and `make bench`: Debian packages, the Python
# virtualenv, and FerretDB, Hornet and InfluxDB built from source at pinned versions. Every step
# is skipped when its result is already there, so a second run takes a second or two.
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$(pwd)

# mosquitto-dev, libmosquitto-dev and a C compiler build the broker's session-ownership plugin.
# prometheus brings promtool, which checks and unit-tests the alert rules (prometheus/);
# prometheus-alertmanager brings amtool, which checks the compose stack's alertmanager.yml.
APT_PACKAGES=(mosquitto mosquitto-clients mosquitto-dev libmosquitto-dev prometheus
    prometheus-alertmanager gcc libc6-dev make
    pkg-config docker-compose chromium ${EXTRA_APT_PACKAGES:-})
FERRETDB_VERSION=v1.24.2
HORNET_VERSION=v0.5.6
INFLUXDB_VERSION=v1.13.2
# Built for `make bench` only (the ingest benchmark's comparison), never used by the product.
TELEGRAF_VERSION=v1.37.2
TELEGRAF_TAGS="custom,inputs.mqtt_consumer,outputs.influxdb_v2,parsers.value,parsers.json"
# libflux pins Rust 1.83 in its rust-toolchain.toml, which is not installed here; this one is.
INFLUXDB_RUST_TOOLCHAIN=${INFLUXDB_RUST_TOOLCHAIN:-1.95.0}
PYTHON=${PYTHON:-python3.11}

log() { printf '[bootstrap] %s\n' "$*"; }

as_root() {
    if [ "$(id -u)" -eq 0 ]; then "$@"; else sudo "$@"; fi
}

install_debian_packages() {
    local missing=()
    for pkg in "${APT_PACKAGES[@]}"; do
        dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q "install ok installed" || missing+=("$pkg")
    done
    if [ ${#missing[@]} -eq 0 ]; then return; fi
    log "installing Debian packages: ${missing[*]}"
    as_root apt-get update -qq
    # The packages' own services are not wanted: every process is started by this project.
    as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends \
        "${missing[@]}" >/dev/null
}

install_virtualenv() {
    local stamp=.venv/.requirements.sha256
    local want
    want=$(cat requirements.lock pyproject.toml compat/pysha3/pyproject.toml | sha256sum | cut -d' ' -f1)
    if [ -x .venv/bin/python ] && [ -f "$stamp" ] && [ "$(cat "$stamp")" = "$want" ]; then return; fi
    log "creating the virtualenv in .venv from requirements.lock (hashes checked)"
    [ -x .venv/bin/python ] || "$PYTHON" -m venv .venv
    # Every dependency pinned with its hashes (make lock writes the file); then the project and
    # the local pysha3 shim themselves, with the locked build tools (no unpinned build env).
    .venv/bin/python -m pip install -q --require-hashes --no-deps -r requirements.lock
    .venv/bin/python -m pip install -q --no-deps --no-build-isolation ./compat/pysha3 -e .
    echo "$want" > "$stamp"
}

install_session_plugin() {
    # Mosquitto's session-ownership plugin (mosquitto/plugin/), loaded by mosquitto.conf.template.
    local out=.tools/lib/mosquitto_session_ownership.so
    local stamp=.tools/lib/mosquitto_session_ownership.sha256
    local want
    want=$(cat mosquitto/plugin/session_ownership.c mosquitto/plugin/Makefile | sha256sum | cut -d' ' -f1)
    if [ -f "$out" ] && [ "$(cat "$stamp" 2>/dev/null)" = "$want" ]; then return; fi
    log "building the session-ownership plugin for Mosquitto"
    mkdir -p .tools/lib
    make -s -B -C mosquitto/plugin OUT="$ROOT/$out.tmp"
    mv "$out.tmp" "$out"
    echo "$want" > "$stamp"
}

install_ferretdb() {
    local bin=.tools/bin/ferretdb
    if [ -x "$bin" ] && "$bin" --version 2>/dev/null | grep -q "$FERRETDB_VERSION"; then return; fi
    log "building FerretDB $FERRETDB_VERSION (pure Go, SQLite backend; takes a few minutes once)"
    # `go install ...@version` cannot be used as is: it asks the proxy for the module's version
    # list (refused here) and the module zip lacks build/version/version.txt, which FerretDB's
    # init requires. So: download the module, add version.txt, build it as its own main module.
    local dir src
    dir=$(cd /tmp && GOFLAGS=-modcacherw go mod download -json "github.com/FerretDB/FerretDB@$FERRETDB_VERSION" \
        | "$PYTHON" -c 'import json,sys; print(json.load(sys.stdin)["Dir"])')
    src=$(mktemp -d)
    cp -r "$dir/." "$src/"
    chmod -R u+w "$src"
    echo "$FERRETDB_VERSION" > "$src/build/version/version.txt"
    mkdir -p .tools/bin
    (cd "$src" && CGO_ENABLED=0 GOFLAGS=-buildvcs=false go build -trimpath -o "$ROOT/$bin" ./cmd/ferretdb)
    rm -rf "$src"
}

install_hornet() {
    local bin=.tools/bin/hornet
    if [ -x "$bin" ] && [ "$(cat .tools/bin/hornet.version 2>/dev/null)" = "$HORNET_VERSION" ]; then return; fi
    log "building Hornet $HORNET_VERSION (the legacy IOTA node for the local tangle; takes a few minutes once)"
    # As for FerretDB: the proxy refuses the version list and the checksum database has no entry
    # for this module, so download the pinned version and build it as its own main module.
    local dir src
    dir=$(cd /tmp && GONOSUMDB=github.com/gohornet/hornet GOFLAGS=-modcacherw \
        go mod download -json "github.com/gohornet/hornet@$HORNET_VERSION" \
        | "$PYTHON" -c 'import json,sys; print(json.load(sys.stdin)["Dir"])')
    src=$(mktemp -d)
    cp -r "$dir/." "$src/"
    chmod -R u+w "$src"
    mkdir -p .tools/bin .tools/hornet
    (cd "$src" && CGO_ENABLED=0 GONOSUMDB=github.com/gohornet/hornet GOFLAGS="-mod=mod -buildvcs=false" \
        go build -trimpath -ldflags="-s -w -X github.com/gohornet/hornet/plugins/cli.AppVersion=${HORNET_VERSION#v}" \
        -o "$ROOT/$bin" .)
    # Hornet reads its node profiles from the working directory's profiles.json.
    cp "$src/profiles.json" .tools/hornet/profiles.json
    rm -rf "$src"
    echo "$HORNET_VERSION" > .tools/bin/hornet.version
}

install_influxdb() {
    local bin=.tools/bin/influxd
    if [ -x "$bin" ] && [ "$(cat .tools/bin/influxd.version 2>/dev/null)" = "$INFLUXDB_VERSION" ]; then return; fi
    log "building InfluxDB $INFLUXDB_VERSION with its Flux engine (Go + Rust; about 5 minutes once)"
    # The module's go.mod names a newer patch toolchain than the local Go 1.26: build with the
    # local one. libflux (Rust) is built by cargo through InfluxData's pkg-config wrapper, which
    # must come from the same module graph (it builds libflux inside the module cache, outside
    # the repository).
    local dir src work
    dir=$(cd /tmp && GOFLAGS=-modcacherw GOTOOLCHAIN=local \
        go mod download -json "github.com/influxdata/influxdb@$INFLUXDB_VERSION" \
        | "$PYTHON" -c 'import json,sys; print(json.load(sys.stdin)["Dir"])')
    work=$(mktemp -d)
    src="$work/influxdb"
    mkdir -p "$src" "$work/bin" .tools/bin
    cp -r "$dir/." "$src/"
    chmod -R u+w "$src"
    (
        cd "$src"
        export GOTOOLCHAIN=local GOFLAGS="-mod=mod -buildvcs=false -modcacherw"
        export RUSTUP_TOOLCHAIN="$INFLUXDB_RUST_TOOLCHAIN"
        go build -o "$work/bin/pkg-config" github.com/influxdata/pkg-config
        export PKG_CONFIG="$work/bin/pkg-config"
        go build -trimpath -ldflags "-s -w -X main.version=${INFLUXDB_VERSION#v}" \
            -o "$ROOT/$bin" ./cmd/influxd
    )
    rm -rf "$work"
    echo "$INFLUXDB_VERSION" > .tools/bin/influxd.version
}

install_telegraf() {
    local bin=.tools/bin/telegraf
    if [ -x "$bin" ] && [ "$(cat .tools/bin/telegraf.version 2>/dev/null)" = "$TELEGRAF_VERSION" ]; then return; fi
    log "building Telegraf $TELEGRAF_VERSION (benchmark only: mqtt_consumer, influxdb_v2, json)"
    local dir src
    dir=$(cd /tmp && GOFLAGS=-modcacherw GOTOOLCHAIN=local \
        go mod download -json "github.com/influxdata/telegraf@$TELEGRAF_VERSION" \
        | "$PYTHON" -c 'import json,sys; print(json.load(sys.stdin)["Dir"])')
    src=$(mktemp -d)
    cp -r "$dir/." "$src/"
    chmod -R u+w "$src"
    mkdir -p .tools/bin
    (cd "$src" && GOTOOLCHAIN=local GOFLAGS="-mod=mod -buildvcs=false -modcacherw" \
        go build -trimpath -ldflags "-s -w" -tags "$TELEGRAF_TAGS" -o "$ROOT/$bin" ./cmd/telegraf)
    rm -rf "$src"
    echo "$TELEGRAF_VERSION" > .tools/bin/telegraf.version
}

install_debian_packages
install_session_plugin
install_virtualenv
install_ferretdb
install_hornet
install_influxdb
if [ "${BOOTSTRAP_TELEGRAF:-0}" = 1 ]; then install_telegraf; fi
log "ready"
