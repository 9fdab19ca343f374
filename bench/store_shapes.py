"""What one command costs FerretDB (the embedded store of `make run`) as a collection grows.

FerretDB 1.24 on SQLite scans a collection for most filters. This measures, on a fresh FerretDB,
each command shape broker_auth sends, with STORE_SHAPES_SIZES documents (200 and 2,000) of
about 400 bytes in one collection, on random `_id`s, STORE_SHAPES_REPEAT times each (the median
and the mean). A compare-and-set (`update_one` on `_id` and one more field: an order's
`state_version`, the watch list's amounts, a grant's end) is the shape to watch: its cost grows
with every document the collection ever kept (bench/results/store_shapes.json).

It also races STORE_SHAPES_RACERS clients, each on its own connection, on one compare-and-set
of one document, STORE_SHAPES_RACES times: on FerretDB more than one of them "wins" (an update
is a read, then a write of the whole document), which is why broker_auth decides races with a
unique insert and gives each kind of record one writer.
"""

from __future__ import annotations

import os
import random
import statistics
import tempfile
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pymongo
from pymongo.collection import Collection

from bench import harness
from bench.common import write_result
from testing import procs

Doc = dict[str, Any]


def shapes(col: Collection[Doc]) -> dict[str, Callable[[int], object]]:
    """Each command shape, given a random existing document number."""
    return {
        "find_one {_id}": lambda i: col.find_one({"_id": f"o{i}"}),
        "update_one {_id} $set": lambda i: col.update_one({"_id": f"o{i}"}, {"$set": {"w": i}}),
        "update_one {_id, field} $set (compare-and-set)": lambda i: col.update_one(
            {"_id": f"o{i}", "v": 1}, {"$set": {"w": i}}
        ),
        "find_one_and_update {_id, field}": lambda i: col.find_one_and_update(
            {"_id": f"o{i}", "v": 1}, {"$set": {"w": i}}
        ),
        "delete_one {_id, field} (no match)": lambda i: col.delete_one({"_id": f"o{i}", "v": 2}),
        "find {field} (a scan)": lambda i: list(col.find({"n": i})),
    }


def measure(col: Collection[Doc], size: int, repeat: int, rng: random.Random) -> dict[str, Any]:
    col.drop()
    col.insert_many(
        [{"_id": f"o{i}", "v": 1, "state": "paid", "n": i, "x": "y" * 300} for i in range(size)]
    )
    figures: dict[str, Any] = {}
    for name, command in shapes(col).items():
        took = []
        for _ in range(repeat):
            started = time.perf_counter()
            command(rng.randrange(size))
            took.append(1000 * (time.perf_counter() - started))
        figures[name] = {
            "median_ms": round(statistics.median(took), 2),
            "mean_ms": round(statistics.fmean(took), 2),
        }
    return figures


def racing_compare_and_set(url: str, racers: int, rounds: int) -> dict[str, int]:
    """Rounds in which more than one of `racers` clients won one compare-and-set."""
    clients: list[pymongo.MongoClient[Doc]] = [pymongo.MongoClient(url) for _ in range(racers)]
    try:
        col = clients[0].bench.race
        col.drop()
        col.insert_many([{"_id": i, "v": 1} for i in range(rounds)])
        doubled = sum(_winners(clients, i) > 1 for i in range(rounds))
        return {"racers": racers, "rounds": rounds, "rounds_with_more_than_one_winner": doubled}
    finally:
        for c in clients:
            c.close()


def _winners(clients: list[pymongo.MongoClient[Doc]], doc_id: int) -> int:
    """How many clients, racing at once, moved document `doc_id` from v=1 to v=2."""
    go = threading.Barrier(len(clients))
    wins: list[int] = []

    def race(client: pymongo.MongoClient[Doc]) -> None:
        go.wait()
        wins.append(
            client.bench.race.update_one({"_id": doc_id, "v": 1}, {"$set": {"v": 2}}).modified_count
        )

    threads = [threading.Thread(target=race, args=(c,)) for c in clients]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return sum(wins)


def main() -> int:
    sizes = [int(n) for n in os.environ.get("STORE_SHAPES_SIZES", "200,2000").split(",")]
    repeat = int(os.environ.get("STORE_SHAPES_REPEAT", "30"))
    load = harness.LoadMonitor().start()
    rng = random.Random(1)
    with tempfile.TemporaryDirectory(prefix="bench-store-shapes-") as tmp:
        proc, port = procs.ferretdb(Path(tmp))
        client: pymongo.MongoClient[Doc] = pymongo.MongoClient(
            f"mongodb://127.0.0.1:{port}", serverSelectionTimeoutMS=20000
        )
        try:
            by_size = {str(n): measure(client.bench.shapes, n, repeat, rng) for n in sizes}
            race = racing_compare_and_set(
                f"mongodb://127.0.0.1:{port}",
                int(os.environ.get("STORE_SHAPES_RACERS", "4")),
                int(os.environ.get("STORE_SHAPES_RACES", "200")),
            )
        finally:
            client.close()
            proc.stop()
    write_result(
        "store_shapes",
        {
            "store": "FerretDB 1.24, SQLite",
            "document_bytes": 400,
            "repeat": repeat,
            "ms_by_collection_size": by_size,
            "racing_compare_and_set": race,
            "load": load.stop(),
        },
    )
    return 0
