"""`make run`'s console (stack/console.py): what reaches the terminal, and that following the
log files survives rotation and half-written lines."""

from __future__ import annotations

import os
from pathlib import Path

from stack.console import Console, Follower, RecordFilter, is_own

T = "2026-12-05 21:15:56,729"


def test_own_services_only() -> None:
    assert all(is_own(p) for p in ("broker_auth", "broker_auth-1", "ingest-0", "averager"))
    assert not any(is_own(p) for p in ("hornet", "mosquitto", "ferretdb", "influxdb"))


def test_errors_always_warnings_once_up_with_their_tracebacks() -> None:
    f = RecordFilter("broker_auth")
    lines = [
        f"{T} INFO broker_auth.service: broker_auth started",
        f"{T} WARNING broker_auth.infra.events: store unavailable",
        f"{T} ERROR broker_auth.billing.watcher: boom",
        "Traceback (most recent call last):",
        '  File "x.py", line 1',
        f"{T} INFO broker_auth.x: calm again",
        "a stray continuation of an INFO record",
    ]
    assert [f.keep(x) for x in lines] == [False, False, True, True, True, False, False]
    f.warnings = True
    assert f.keep(f"{T} WARNING broker_auth.infra.events: store unavailable")


def test_supervisord_news_of_a_process_that_died() -> None:
    f = RecordFilter("supervisord")
    assert f.keep("2026-12-05 21:15:56,729 INFO exited: hornet (exit status 1; not expected)")
    assert f.keep("2026-12-05 21:15:56,729 INFO gave up: hornet entered FATAL state")
    assert not f.keep("2026-12-05 21:15:56,729 INFO spawned: 'hornet' with pid 12")
    assert not f.keep("2026-12-05 21:15:56,729 INFO success: hornet entered RUNNING state")
    assert not f.keep(
        "2026-12-05 22:28:33,173 CRIT Server 'unix_http_server' running without any HTTP"
        " authentication checking"
    )


def test_follower_reads_whole_lines_through_rotation(tmp_path: Path) -> None:
    log = tmp_path / "x.log"
    follower = Follower(log)
    assert follower.new_lines() == []  # not there yet
    log.write_text("one\ntw")
    assert follower.new_lines() == ["one"]
    with open(log, "a") as f:
        f.write("o\nthree\n")
    assert follower.new_lines() == ["two", "three"]
    os.rename(log, tmp_path / "x.log.1")  # supervisord rotates: a new file under the name
    log.write_text("four\n")
    assert follower.new_lines() == ["four"]
    log.write_text("")  # truncated
    assert follower.new_lines() == []
    log.write_text("five\n")
    assert follower.new_lines() == ["five"]


def test_console_prints_prefixed_news_only_from_our_services(tmp_path: Path) -> None:
    (tmp_path / "broker_auth.log").write_text(f"{T} ERROR old run: not news\n")
    shown: list[str] = []
    console = Console(tmp_path, ["broker_auth", "hornet", "ingest-0"], shown.append)
    with open(tmp_path / "broker_auth.log", "a") as f:
        f.write(f"{T} WARNING broker_auth.x: starting up\n{T} ERROR broker_auth.x: real\n")
    (tmp_path / "hornet.log").write_text(f"{T} ERROR hornet: not ours\n")
    (tmp_path / "ingest-0.log").write_text(f"{T} INFO ingest: fine\n")
    console.show_new()
    assert shown == [f"broker_auth | {T} ERROR broker_auth.x: real"]
    console.stack_is_up()
    with open(tmp_path / "ingest-0.log", "a") as f:
        f.write(f"{T} WARNING ingest.worker: store refused a batch\n")
    console.show_new()
    assert shown[-1] == f"ingest-0    | {T} WARNING ingest.worker: store refused a batch"
