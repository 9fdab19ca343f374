"""`iot-wallet`: IOTA for paying live access, and for the seller's addresses and withdrawals
(PyOTA against an IRI-API node).

Buyer:
    iot-wallet new-seed --seed-file john.seed
    iot-wallet faucet  --faucet http://127.0.0.1:14266 --seed-file john.seed --value 1000
    iot-wallet pay     --node ... --seed-file john.seed --order ORDER_ID \\
                       --api http://127.0.0.1:8000 --username john
                       (password from --password, $IOT_WALLET_PASSWORD or a prompt)
    iot-wallet pay     --node ... --seed-file john.seed --address ADDR --tag TAG --amount 10
    iot-wallet buy     --node ... --seed-file ann.seed --api http://127.0.0.1:8000 \
                       --product plug-1-live --hours 1 --username ann
                       (no account: the MQTT login is sealed in the payment; password from
                       $IOT_WALLET_MQTT_PASSWORD or a prompt)

Seller (the server never holds her seed):
    iot-wallet addresses --seed-file jane.seed --start 0 --count 1000 > addresses.txt
    iot-wallet sweep   --seed-file jane.seed --api http://127.0.0.1:8000 --to ADDRESS
                       (admin token from $BROKER_ADMIN_TOKEN)
    iot-wallet pool-keeper --seed-file jane.seed --api http://127.0.0.1:8000 \\
                       --low-water 20 --target 100   (keeps the deposit pool topped up)

The seed stays in its file (mode 0600) and is never printed.
"""

from __future__ import annotations

import argparse
import getpass
import logging
import os
import secrets
import stat
import sys
from collections.abc import Sequence
from pathlib import Path

from broker_auth.ledger import ternary
from wallet import payments, sealed_buy, seller
from wallet.pool_keeper import PoolKeeper

DEFAULT_NODE = os.environ.get("IOTA_NODE_URL", "http://127.0.0.1:14265")
DEFAULT_FAUCET = os.environ.get("IOTA_FAUCET_URL", "http://127.0.0.1:14266")


def write_new_seed(path: Path, force: bool = False) -> None:
    """A fresh random seed in a file only its owner can read; refuses to overwrite by default."""
    seed = "".join(secrets.choice(ternary.ALPHABET) for _ in range(81))
    flags = os.O_WRONLY | os.O_CREAT | (os.O_TRUNC if force else os.O_EXCL)
    try:
        fd = os.open(path, flags, 0o600)
    except FileExistsError:
        raise payments.WalletError(f"{path} exists; use --force to replace it") from None
    with os.fdopen(fd, "w") as f:
        f.write(seed + "\n")
    os.chmod(path, 0o600)  # O_CREAT's mode does not apply to an existing file


def read_seed(path: Path) -> str:
    try:
        text = path.read_text().strip()
        mode = path.stat().st_mode
    except OSError as exc:
        raise payments.WalletError(f"cannot read the seed file: {exc}") from None
    if len(text) != 81 or any(c not in ternary.ALPHABET for c in text):
        raise payments.WalletError(f"{path} does not hold an 81-tryte seed")
    if mode & (stat.S_IRWXG | stat.S_IRWXO):
        print(f"warning: {path} is readable by others; chmod 600 it", file=sys.stderr)
    return text


def _common(p: argparse.ArgumentParser, node: bool = True) -> None:
    p.add_argument("--seed-file", type=Path, required=True, help="file holding the seed")
    if node:
        p.add_argument("--node", default=DEFAULT_NODE, help="IRI API URL ($IOTA_NODE_URL)")


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="iot-wallet", description="Pay for live IoT data in IOTA.")
    sub = p.add_subparsers(dest="command", required=True)
    new = sub.add_parser("new-seed", help="create a random seed file (mode 0600)")
    _common(new, node=False)
    new.add_argument("--force", action="store_true", help="replace an existing file")
    _common(sub.add_parser("address", help="print the next unused address"))
    _common(sub.add_parser("balance", help="print the confirmed balance"))
    faucet = sub.add_parser("faucet", help="devnet only: fund the seed from the devnet faucet")
    _common(faucet)
    faucet.add_argument("--faucet", default=DEFAULT_FAUCET, help="faucet URL ($IOTA_FAUCET_URL)")
    faucet.add_argument("--value", type=int, required=True)
    addresses = sub.add_parser("addresses", help="seller: print deposit addresses (offline)")
    _common(addresses, node=False)
    addresses.add_argument("--start", type=int, default=0, help="first key index")
    addresses.add_argument("--count", type=int, default=100, help="how many")
    sweep = sub.add_parser("sweep", help="seller: move the value of closed addresses to one")
    _common(sweep)
    sweep.add_argument("--api", required=True, help="broker_auth URL, e.g. http://127.0.0.1:8000")
    sweep.add_argument("--to", required=True, help="the address that receives everything")
    sweep.add_argument("--mwm", type=int, help="min weight magnitude (default: $IOTA_MWM)")
    sweep.add_argument(
        "--max-index", type=int, default=100_000, help="highest key index searched for"
    )
    keeper = sub.add_parser(
        "pool-keeper", help="seller: keep broker_auth's deposit-address pool topped up"
    )
    _common(keeper, node=False)
    keeper.add_argument("--api", required=True, help="broker_auth URL, e.g. http://127.0.0.1:8000")
    keeper.add_argument("--low-water", type=int, default=20, help="top up below this many free")
    keeper.add_argument("--target", type=int, default=100, help="free addresses after a top-up")
    keeper.add_argument("--interval", type=float, default=10.0, help="seconds between checks")
    keeper.add_argument(
        "--start", type=int, default=0, help="first key index when no state file exists yet"
    )
    keeper.add_argument("--once", action="store_true", help="check and top up once, then exit")
    pay = sub.add_parser("pay", help="pay an order (--order) or an address and tag")
    _common(pay)
    pay.add_argument("--order", help="order id from broker_auth (needs --api and --username)")
    pay.add_argument("--api", help="broker_auth URL, e.g. http://127.0.0.1:8000")
    pay.add_argument("--username")
    pay.add_argument("--password", help="default: $IOT_WALLET_PASSWORD, else a prompt")
    pay.add_argument("--address", help="receiving address (81 or 90 trytes)")
    pay.add_argument("--tag", help="tag of the transfer (up to 27 trytes)")
    pay.add_argument("--amount", type=int, help="iota to send (overrides the order's amount)")
    pay.add_argument("--mwm", type=int, help="min weight magnitude (default: the node's)")
    pay.add_argument("--wait", action="store_true", help="wait until the transfer is confirmed")
    pay.add_argument("--timeout", type=float, default=60.0, help="seconds --wait waits")
    buy = sub.add_parser(
        "buy", help="buy live access without an account: quote, seal your MQTT login, pay, wait"
    )
    _common(buy)
    buy.add_argument("--api", required=True, help="broker_auth URL, e.g. http://127.0.0.1:8000")
    buy.add_argument("--product", required=True, help="product id")
    buy.add_argument("--hours", type=float, required=True)
    buy.add_argument("--username", required=True, help="the MQTT username you want")
    buy.add_argument(
        "--password-env",
        default="IOT_WALLET_MQTT_PASSWORD",
        metavar="VAR",
        help="environment variable holding the MQTT password (else a prompt)",
    )
    buy.add_argument("--mwm", type=int, help="min weight magnitude (default: the node's)")
    buy.add_argument("--timeout", type=float, default=600.0, help="seconds to wait for access")
    return p


def _buy(args: argparse.Namespace, seed: str) -> None:
    password = os.environ.get(args.password_env) or getpass.getpass(
        f"MQTT password for {args.username} (10 to 128 characters): "
    )
    bought = sealed_buy.buy(
        args.api,
        args.node,
        seed,
        args.product,
        args.hours,
        args.username,
        password,
        mwm=args.mwm,
        timeout=args.timeout,
    )
    print(f"quote {bought.quote_id}: paid {bought.amount_iota} iota (bundle {bought.bundle_hash})")
    print(f"MQTT login: username {bought.username}, the password you chose")
    print(f"access after {bought.seconds:.1f} s")


def _pay(args: argparse.Namespace, seed: str) -> None:
    if args.order:
        if not (args.api and args.username):
            raise payments.WalletError("--order needs --api and --username")
        password = (
            args.password
            or os.environ.get("IOT_WALLET_PASSWORD")
            or getpass.getpass(f"password for {args.username}: ")
        )
        order = payments.fetch_order(args.api, args.order, args.username, password)
        address, tag = str(order["address"]), str(order["tag"])
        amount = args.amount if args.amount is not None else int(str(order["amount_iota"]))
        print(f"order {args.order}: {amount} iota to {address} with tag {tag}")
    else:
        if not (args.address and args.tag and args.amount is not None):
            raise payments.WalletError("give --order, or --address, --tag and --amount")
        address, tag, amount = args.address, args.tag, args.amount
    result = payments.pay(args.node, seed, address, tag, amount, min_weight_magnitude=args.mwm)
    print(f"bundle {result.bundle_hash}")
    print(f"tail {result.tail_hash}")
    print(f"sent {result.amount} iota in {result.seconds:.2f} s")
    if args.wait:
        waited = payments.wait_confirmed(args.node, result.tail_hash, timeout=args.timeout)
        print(f"confirmed after {waited:.2f} s")


def _sweep(args: argparse.Namespace, seed: str) -> None:
    token = os.environ.get("BROKER_ADMIN_TOKEN", "")
    if not token:
        raise payments.WalletError("set BROKER_ADMIN_TOKEN (the admin token of broker_auth)")
    result = seller.sweep(
        args.node,
        seed,
        args.api,
        token,
        args.to,
        index_cache=args.seed_file.with_name(args.seed_file.name + ".index"),
        max_index=args.max_index,
        mwm=args.mwm,
    )
    for bundle in result.bundles:
        print(f"bundle {bundle}")
    for address, why in result.skipped:
        print(f"skipped {address}: {why}")
    print(f"swept {len(result.swept)} closed address(es): {result.value} iota to {args.to}")


def _pool_keeper(args: argparse.Namespace, seed: str) -> None:
    token = os.environ.get("BROKER_ADMIN_TOKEN", "")
    if not token:
        raise payments.WalletError("set BROKER_ADMIN_TOKEN (the admin token of broker_auth)")
    keeper = PoolKeeper(
        seed, args.seed_file, args.api, token, args.low_water, args.target, args.start
    )
    if args.once:
        result = keeper.top_up_once()
        print(f"{result.free_before} free; {result.added} added; next index {result.next_index}")
        return
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s")
    keeper.run(args.interval)


def main(argv: Sequence[str] | None = None) -> None:
    args = parser().parse_args(argv)
    try:
        if args.command == "new-seed":
            write_new_seed(args.seed_file, args.force)
            print(f"new seed written to {args.seed_file} (mode 0600); keep it secret")
            return
        seed = read_seed(args.seed_file)
        if args.command == "address":
            print(payments.next_address(args.node, seed))
        elif args.command == "balance":
            state = payments.scan_seed(args.node, seed)
            print(f"confirmed {state.total} iota (spendable {state.spendable})")
        elif args.command == "buy":
            _buy(args, seed)
        elif args.command == "faucet":
            credit = payments.fund_from_faucet(args.faucet, args.node, seed, args.value)
            print(f"credited {credit.value} iota to {credit.address}")
            print(f"address balance {credit.balance}")
            print(f"bundle {credit.bundle_hash}")
        elif args.command == "pay":
            _pay(args, seed)
        elif args.command == "addresses":
            cache = args.seed_file.with_name(args.seed_file.name + ".index")
            for address in seller.derive_addresses(seed, args.start, args.count, cache):
                print(address)
        elif args.command == "sweep":
            _sweep(args, seed)
        elif args.command == "pool-keeper":
            _pool_keeper(args, seed)
    except payments.WalletError as exc:
        print(f"iot-wallet: {exc}", file=sys.stderr)
        sys.exit(1)


if __name__ == "__main__":
    main()
