"""The local tangle is real Hornet 0.5.6: its own genesis and coordinator, nothing outside."""

from __future__ import annotations

import json
import stat
import time

import pytest
from iota import Address, Iota, ProposedTransaction, Tag, Transaction
from iota.crypto.types import Seed

from broker_auth.ledger import ternary
from devnet.hornet import genesis_address
from testing import procs
from testing.addresses import random_address
from testing.scrape import scrape_metrics
from tests.devnet.conftest import Node
from tests.devnet_fixture import TEST_MWM, start_devnet
from wallet import payments


def test_node_is_hornet_synced_with_its_own_coordinator(node: Node) -> None:
    info = node.ok("getNodeInfo")
    assert info["appName"] == "HORNET" and info["appVersion"] == "0.5.6"
    assert info["isSynced"] and info["neighbors"] == 0
    config = json.loads((node.net.data_dir / "config.json").read_text())
    assert info["coordinatorAddress"] == config["coordinator"]["address"]
    first = node.milestone_index()
    time.sleep(2.5)
    assert node.milestone_index() >= first + 1  # 1 s milestones


def test_genesis_holds_the_supply_and_its_seed_is_private(node: Node) -> None:
    seed_file = node.net.genesis_seed_file
    assert stat.S_IMODE(seed_file.stat().st_mode) == 0o600
    genesis = (node.net.data_dir / "snapshot.csv").read_text().strip().split(";")
    assert genesis[0] == genesis_address(seed_file.read_text().strip())
    assert int(genesis[1]) == ternary.SUPPLY
    for proc in (node.net.node, node.net.faucet):
        assert seed_file.read_text().strip() not in proc.log_text()


def test_everything_that_reaches_outside_is_off(node: Node) -> None:
    config = json.loads((node.net.data_dir / "config.json").read_text())
    assert set(config["node"]["disablePlugins"]) >= {"Autopeering", "CLI", "Dashboard", "WarpSync"}
    assert config["snapshots"]["local"]["downloadURLs"] == []
    assert config["network"]["autopeering"]["entryNodes"] == []
    assert json.loads((node.net.data_dir / "peering.json").read_text())["peers"] == []
    for key in ("httpAPI", "zmq", "prometheus", "profiling", "dashboard"):
        section = config[key]
        assert isinstance(section, dict)
        assert str(section["bindAddress"]).startswith("127.0.0.1:"), key
    log = node.net.node.log_text()
    assert "The following plugins are disabled: Autopeering CLI Dashboard" in log


def test_the_node_requires_its_minimum_weight_magnitude(node: Node) -> None:
    api = Iota(node.url)
    tx = ProposedTransaction(address=Address(random_address().encode()), value=0, tag=Tag(b"MWM"))
    with pytest.raises(ValueError, match="MinWeightMagnitude"):
        api.send_transfer([tx], depth=3, min_weight_magnitude=14)
    sent = api.send_transfer([tx], depth=3, min_weight_magnitude=TEST_MWM)
    assert sent["bundle"].hash


def test_faucet_sends_a_real_confirmed_transfer(node: Node) -> None:
    address = random_address()
    r = node.faucet(address, 1234)
    assert r.status_code == 200, r.text
    answer = r.json()
    assert answer["address"] == address and answer["value"] == 1234 and answer["balance"] == 1234
    assert node.ok("getBalances", addresses=[address])["balances"] == ["1234"]
    states = node.ok("getInclusionStates", transactions=[answer["transaction"]], tips=[])
    assert states["states"] == [True]
    # A real signed bundle: pyota validates it.
    bundle = Iota(node.url).get_bundles(answer["transaction"])["bundles"][0]
    assert str(bundle.hash) == answer["bundle"] and len(bundle) >= 3


def test_faucet_batches_concurrent_requests(node: Node) -> None:
    import concurrent.futures

    before = scrape_metrics(f"{node.net.faucet_url}/metrics")
    addresses = [random_address() for _ in range(6)]
    with concurrent.futures.ThreadPoolExecutor(6) as pool:
        answers = list(pool.map(lambda a: node.faucet(a, 10), addresses))
    assert [a.status_code for a in answers] == [200] * 6
    balances = node.ok("getBalances", addresses=addresses)["balances"]
    assert balances == ["10"] * 6
    assert len({a.json()["bundle"] for a in answers}) < 6  # shared rounds
    # Prometheus sees the credits: 6 more sent, 60 more iota, nothing queued, rounds timed.
    after = scrape_metrics(f"{node.net.faucet_url}/metrics")
    sent = 'devnet_faucet_credits_total{outcome="sent"}'
    assert after[sent] - before.get(sent, 0) == 6
    assert after["devnet_faucet_iota_sent_total"] - before["devnet_faucet_iota_sent_total"] == 60
    assert after["devnet_faucet_queue_depth"] == 0
    failed = 'devnet_faucet_credits_total{outcome="failed"}'
    assert after[failed] == before[failed]
    assert after["devnet_faucet_round_seconds_count"] > before["devnet_faucet_round_seconds_count"]
    assert after["devnet_faucet_balance_iota"] > 0


@pytest.mark.parametrize(
    "body",
    [
        b"not json",
        b"{}",
        b'{"address": "ABC", "value": 1}',
        b'{"address": "' + b"M" * 81 + b'", "value": 1}',  # last trit not 0
        b'{"address": "' + b"A" * 81 + b'", "value": 0}',
        b'{"address": "' + b"A" * 81 + b'", "value": -5}',
        b'{"address": "' + b"A" * 81 + b'", "value": "many"}',
    ],
)
def test_bad_faucet_requests_are_400(node: Node, body: bytes) -> None:
    import httpx

    r = httpx.post(
        f"{node.net.faucet_url}/faucet",
        content=body,
        headers={"Content-Type": "application/json"},
        timeout=10,
    )
    assert r.status_code == 400, r.text
    assert "detail" in r.json()


def test_killed_node_restarts_with_its_ledger(tmp_path_factory: pytest.TempPathFactory) -> None:
    net = start_devnet(tmp_path_factory.mktemp("devnet-kill"), crash_safe=True)
    try:
        seed = Seed.random()
        payments.fund_from_faucet(net.faucet_url, net.url, seed, 500)
        address = payments.scan_seed(net.url, seed).used[0]
        for _ in range(2):
            net.node.kill()
            net.node.start()
            assert Iota(net.url).get_balances([address])["balances"] == [500]
        payments.fund_from_faucet(net.faucet_url, net.url, seed, 1)
        assert payments.balance(net.url, seed) == 501
    finally:
        net.stop()


def test_stopped_single_node_resumes_its_coordinator(
    tmp_path_factory: pytest.TempPathFactory,
) -> None:
    net = start_devnet(tmp_path_factory.mktemp("devnet-stop"))
    try:
        address = random_address()
        assert net.faucet.running()
        r = Node(net).faucet(address, 77)
        assert r.status_code == 200, r.text
        before = procs.iota_node_info(net.url)["latestMilestoneIndex"]
        net.node.restart()  # SIGTERM: a clean stop, then the same coordinator goes on
        assert Node(net).ok("getBalances", addresses=[address])["balances"] == ["77"]
        time.sleep(2.5)
        assert int(str(procs.iota_node_info(net.url)["latestMilestoneIndex"])) > int(str(before))
    finally:
        net.stop()


def test_faucet_never_signs_twice_with_one_genesis_key(
    tmp_path_factory: pytest.TempPathFactory,
) -> None:
    import threading

    import httpx

    net = start_devnet(tmp_path_factory.mktemp("devnet-faucet-cut"), crash_safe=True)
    try:
        answers: list[int] = []

        def ask(tries: int = 1) -> None:
            status = 0  # no answer at all
            for _ in range(tries):  # a client retries while the node resynchronises (503)
                try:
                    status = httpx.post(
                        f"{net.faucet_url}/faucet",
                        json={"address": random_address(), "value": 9},
                        timeout=180,
                    ).status_code
                except httpx.HTTPError:
                    continue
                if status == 200:
                    break
            answers.append(status)

        first = threading.Thread(target=ask)
        first.start()
        time.sleep(0.3)  # the round is signed and being sent or confirmed
        net.node.kill()
        time.sleep(1.5)
        net.node.start()
        first.join(200)
        for _ in range(3):  # later rounds go on from the next genesis address
            ask(tries=5)
        assert answers[-3:] == [200, 200, 200], answers
        # Every spend from any genesis address belongs to one bundle per address.
        seed = net.genesis_seed_file.read_text().strip()
        from iota.crypto.addresses import AddressGenerator
        from iota.crypto.types import Seed

        api = Iota(net.url)
        for address in AddressGenerator(Seed(seed.encode()), 2).get_addresses(0, 6):
            hashes = api.find_transactions(addresses=[address])["hashes"]
            spends = (
                {
                    str(tx.bundle_hash)
                    for tx in (
                        Transaction.from_tryte_string(t) for t in api.get_trytes(hashes)["trytes"]
                    )
                    if tx.value < 0
                }
                if hashes
                else set()
            )
            assert len(spends) <= 1, (str(address), spends)
    finally:
        net.stop()
