# The project's own image: broker_auth (iot-broker-auth), the ingest worker (iot-ingest), the
# $SYS exporter (iot-broker-metrics), the simulator (iot-sim), the devnet (iot-devnet: Hornet and its faucet) and the compose `init` step
# (python -m deploy.compose_init) all run from it.
# No secret is baked in: everything comes from the environment at run time (see .env.example).
# Plain Dockerfile syntax (no BuildKit-only features), so any `docker build` can build it.

# --- Hornet 0.5.6, the devnet's node (the compose `dev` profile), as scripts/bootstrap.sh builds it
FROM golang:1.22-bookworm AS hornet
ENV CGO_ENABLED=0 GONOSUMDB=github.com/gohornet/hornet GOFLAGS="-mod=mod -buildvcs=false"
RUN dir=$(go mod download -json github.com/gohornet/hornet@v0.5.6 \
        | sed -n 's/^[[:space:]]*"Dir": "\(.*\)",$/\1/p') \
    && cp -r "$dir" /src && chmod -R u+w /src && cd /src \
    && go build -trimpath \
        -ldflags='-s -w -X github.com/gohornet/hornet/plugins/cli.AppVersion=0.5.6' \
        -o /out/hornet . \
    && cp profiles.json /out/profiles.json

# --- build: a virtualenv with the project and its dependencies ---------------------------------
FROM python:3.11-slim AS build
ENV PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1
# A compiler for dependencies without a wheel for the target platform (safe-pysha3 on some arches).
RUN apt-get update \
    && apt-get install -y --no-install-recommends build-essential \
    && rm -rf /var/lib/apt/lists/*
RUN python -m venv /opt/venv
ENV PATH=/opt/venv/bin:$PATH
WORKDIR /src
COPY compat/pysha3 compat/pysha3
COPY pyproject.toml README.md requirements-prod.lock ./
COPY ingest ingest
COPY simulator simulator
COPY devnet devnet
COPY broker_auth broker_auth
COPY broker_metrics broker_metrics
COPY wallet wallet
COPY stack stack
COPY deploy deploy
# Every dependency from requirements-prod.lock, hashes checked (no dev tools); then the project
# and the local `pysha3` shim (PyOTA 2.1.0 checks that a distribution of that name is installed,
# and the real one does not build on 3.11) with the locked build tools.
RUN pip install --require-hashes --no-deps -r requirements-prod.lock \
    && pip install --no-deps --no-build-isolation ./compat/pysha3 .
# Non-Python files inside the packages (the web portal's static files) are not declared as
# package data, so a regular install leaves them out: copy them next to the installed modules.
RUN find ingest simulator devnet broker_auth wallet stack deploy -type f \
        ! -name '*.py' ! -name '*.pyc' ! -path '*/__pycache__/*' \
        -exec install -D -m 644 '{}' '/opt/venv/lib/python3.11/site-packages/{}' ';'

# --- runtime -------------------------------------------------------------------------------------
FROM python:3.11-slim
ENV PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    PATH=/opt/venv/bin:$PATH
COPY --from=build /opt/venv /opt/venv
COPY --from=hornet /out/hornet /usr/local/bin/hornet
COPY --from=hornet /out/profiles.json /opt/hornet/profiles.json
ENV HORNET_PROFILES=/opt/hornet/profiles.json
# An unprivileged user. /var/lib/iot holds the named volumes (devnet data); it is created here so
# a fresh volume mounted there starts out owned by that user.
RUN groupadd --system --gid 10001 app \
    && useradd --system --uid 10001 --gid app --home-dir /var/lib/iot --no-create-home \
        --shell /usr/sbin/nologin app \
    && install -d -o app -g app -m 750 /var/lib/iot /var/lib/iot/devnet /var/lib/iot/seller
USER app
WORKDIR /var/lib/iot
# broker_auth's API and portal, the ingest worker's and the $SYS exporter's metrics, the devnet
# node and faucet.
EXPOSE 8000 9102 9234 14265 14266
CMD ["iot-broker-auth"]
