#!/usr/bin/env bash
# Print a `.env` for the Docker Compose stack: .env.example with every `change-me` placeholder
# replaced by a random secret (32 letters and digits).
#
#   deploy/gen-env.sh > .env && chmod 600 .env          # production
#   deploy/gen-env.sh --dev > .env && chmod 600 .env    # devnet/demo: SEED_DEMO=true
# Either way, derive the deposit addresses from your own seed (see DEPOSIT_ADDRESSES_FILE).
set -euo pipefail
cd "$(dirname "$0")/.."

dev=false
case "${1:-}" in
    --dev) dev=true ;;
    "") ;;
    *) echo "usage: $0 [--dev] > .env" >&2; exit 64 ;;
esac

# Read a fixed amount of randomness and keep the wanted characters (no early-closed pipes).
random_chars() { # alphabet length
    local out=""
    while [ "${#out}" -lt "$2" ]; do
        out+=$(head -c 4096 /dev/urandom | LC_ALL=C tr -dc "$1")
    done
    printf '%s' "${out:0:$2}"
}

while IFS= read -r line || [ -n "$line" ]; do
    case "$line" in
        [A-Z]*=change-me*) printf '%s=%s\n' "${line%%=*}" "$(random_chars 'A-Za-z0-9' 32)" ;;
        SEED_DEMO=*) if $dev; then echo "SEED_DEMO=true"; else printf '%s\n' "$line"; fi ;;
        *) printf '%s\n' "$line" ;;
    esac
done < .env.example
