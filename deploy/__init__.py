"""Deployment: the Docker Compose stack's one-shot `init` step (`python -m deploy.compose_init`)
and what it writes for Mosquitto (the dynamic-security bootstrap file, TLS material);
`gen-env.sh` prints a `.env` for it. `make run` (stack/) writes the same files with these modules.
"""
