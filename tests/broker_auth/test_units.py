"""Pure parts of broker_auth: amounts, topic filters, passwords, throttling, settings."""

from __future__ import annotations

import pytest
from iota import Address

from broker_auth.accounts import passwords
from broker_auth.billing.order_record import status_of
from broker_auth.billing.orders import amount_for, new_tag
from broker_auth.infra.clock import utcnow
from broker_auth.ledger import ternary
from broker_auth.ledger.iri import IriLedger
from broker_auth.schemas import check_topic_filter


@pytest.mark.parametrize(
    ("price", "hours", "amount"),
    [(500, 0.1, 50), (500, 0.3, 150), (3, 0.1, 1), (7, 1 / 3, 3), (1, 1e-9, 1), (10, 2.5, 25)],
)
def test_amount_for(price: int, hours: float, amount: int) -> None:
    assert amount_for(price, hours) == amount


@pytest.mark.parametrize("good", ["live/#", "live/a/+", "live/+/x/#", "live/a b/c"])
def test_valid_filters(good: str) -> None:
    assert check_topic_filter(good) == good


@pytest.mark.parametrize("bad", ["", "#a", "a/#/b", "a+/b", "$SYS/#", "a\x00", "x" * 300])
def test_invalid_filters(bad: str) -> None:
    with pytest.raises(ValueError):
        check_topic_filter(bad)


def test_passwords_are_salted_and_checked() -> None:
    a, b = passwords.hash_password("secret-value-1"), passwords.hash_password("secret-value-1")
    assert a != b and "secret-value-1" not in a
    assert passwords.verify_password("secret-value-1", a)
    assert not passwords.verify_password("secret-value-2", a)
    assert not passwords.verify_password("secret-value-1", "garbage")
    assert not passwords.verify_password("secret-value-1", "md5$1$2$3$4$5")


def test_tags_are_27_trytes() -> None:
    tag = new_tag()
    assert len(tag) == 27 and set(tag) <= set(ternary.ALPHABET)


def test_order_status() -> None:
    now = utcnow()
    assert status_of(0, 0, now, now) == "expired"
    assert status_of(0, 0, now, now.replace(year=now.year - 1)) == "pending"
    assert status_of(5, 0, now, now) == "unconfirmed"
    assert status_of(5, 5, now, now) == "confirmed"


def test_deposit_address_checks_of_the_ledger_seam() -> None:
    ledger = IriLedger("http://127.0.0.1:9")  # no call reaches the node
    raw = "B" * 80 + "9"
    with_checksum = str(Address(raw.encode()).with_valid_checksum())
    assert ledger.check_address(raw) is None and ledger.check_address(with_checksum) is None
    broken = with_checksum[:-1] + ("A" if with_checksum[-1] != "A" else "B")
    assert "checksum" in str(ledger.check_address(broken))
    assert "last trit" in str(ledger.check_address("B" * 80 + "M"))
    assert "81 trytes" in str(ledger.check_address("b" * 81))
    assert "81 trytes" in str(ledger.check_address("B" * 82))
