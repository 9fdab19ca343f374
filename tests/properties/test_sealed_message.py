"""The sealed message (protocol v1) as pure functions: what opens, and why the rest does not."""

from __future__ import annotations

import base64
import hmac
import json
import secrets

from hypothesis import given, settings
from hypothesis import strategies as st
from iota import TryteString
from nacl.public import PrivateKey, SealedBox

from broker_auth.ledger.ternary import ALPHABET
from broker_auth.sealed import claims, message
from broker_auth.sealed.keys import SellerKeys
from broker_auth.sealed.message import Credentials, Refused

KEY = PrivateKey.generate()
KEYS = SellerKeys([KEY])
QUOTE, ADDRESS, SECRET = "a" * 32, "B" * 81, "the-quote-secret"


def creds(**changes: str) -> Credentials:
    fields = {
        "quote_id": QUOTE,
        "address": ADDRESS,
        "secret": SECRET,
        "username": "ann",
        "password": "a long password",
    }
    return Credentials(**{**fields, **changes})


WANTED = claims.secret_hash(SECRET)


def read(trytes: str) -> Credentials | Refused:
    # The comparison broker_auth uses (sealed/claims.py), not a stand-in.
    return message.read(
        trytes,
        KEYS.open,
        QUOTE,
        ADDRESS,
        lambda s: hmac.compare_digest(claims.secret_hash(s), WANTED),
    )


def in_transaction(trytes: str) -> str:
    """As the node returns a transaction's message: padded with 9s to 2187 trytes."""
    return trytes.ljust(message.MAX_MESSAGE_TRYTES, "9")


@settings(max_examples=60, deadline=None)
@given(
    username=st.text(min_size=1, max_size=32),
    password=st.text(min_size=0, max_size=128),
)
def test_what_is_sealed_to_the_seller_opens_exactly(username: str, password: str) -> None:
    sealed = creds(username=username, password=password)
    try:
        trytes = message.seal(sealed, bytes(KEY.public_key))
    except message.MessageTooLongError:  # escaped control characters can exceed 765 bytes
        assert len(sealed.payload()) > message.MAX_PAYLOAD_BYTES
        return
    assert read(in_transaction(trytes)) == sealed


def test_payloads_no_utf8_text_holds_are_refused_not_raised() -> None:
    """JSON can carry a lone surrogate; hashing it as the secret would raise (and a payment
    whose claim raises would be retried in every poll)."""
    for field in ("secret", "username", "password", "quote_id"):
        doc = {"v": 1, "quote_id": QUOTE, "address": ADDRESS, "secret": SECRET,
               "username": "ann", "password": "a long password"}  # fmt: skip
        doc[field] = "\ud800"
        raw = json.dumps(doc).encode()  # ascii: the surrogate stays escaped
        assert "\\ud800" in raw.decode()
        box = SealedBox(KEY.public_key).encrypt(raw)
        assert read(message.encode_box(box)) == Refused(message.DOES_NOT_PARSE), field
    fields = {"quote_id": QUOTE, "address": ADDRESS, "secret": SECRET, "username": "ann"}
    for version, parses in (("1", True), ("true", False), ("1.0", False), ('"1"', False)):
        text = json.dumps({**fields, "password": "pw"})[:-1] + f', "v": {version}}}'
        got = read(message.encode_box(SealedBox(KEY.public_key).encrypt(text.encode())))
        assert isinstance(got, Credentials) is parses, (version, got)


def test_the_longest_login_fits_one_transaction_and_a_longer_one_is_refused_by_seal() -> None:
    longest = creds(username="u" * 32, password="p" * 128)
    assert len(message.seal(longest, bytes(KEY.public_key))) <= message.MAX_MESSAGE_TRYTES
    try:
        message.seal(creds(password="\u00e9" * 400), bytes(KEY.public_key))  # 800 bytes
    except message.MessageTooLongError:
        pass
    else:
        raise AssertionError("an 800-byte password was sealed")


def test_refusals_name_how_far_the_message_got() -> None:
    other_key = PrivateKey.generate()
    cases = {
        "": message.NO_MESSAGE,
        "HELLOWORLD": message.NO_MESSAGE,
        message.seal(creds(), bytes(other_key.public_key)): message.DOES_NOT_OPEN,
        message.encode_box(SealedBox(KEY.public_key).encrypt(b"not json")): message.DOES_NOT_PARSE,
        message.encode_box(SealedBox(KEY.public_key).encrypt(b'{"v":2}')): message.DOES_NOT_PARSE,
        message.seal(creds(quote_id="b" * 32), bytes(KEY.public_key)): message.OTHER_QUOTE,
        message.seal(creds(address="C" * 81), bytes(KEY.public_key)): message.OTHER_QUOTE,
        message.seal(creds(secret="guessed"), bytes(KEY.public_key)): message.OTHER_QUOTE,
    }
    for trytes, reason in cases.items():
        assert read(in_transaction(trytes)) == Refused(reason), trytes[:40]


def test_a_tampered_box_does_not_open() -> None:
    box = bytearray(SealedBox(KEY.public_key).encrypt(creds().payload()))
    box[60] ^= 1
    assert read(message.encode_box(bytes(box))) == Refused(message.DOES_NOT_OPEN)


def test_the_first_half_of_a_split_message_is_refused() -> None:
    """A message longer than one transaction: only its first 2187 trytes are in the value
    transaction, and they do not make a sealed message."""
    box = SealedBox(KEY.public_key).encrypt(b"x" * 1200)
    text = message.PREFIX + base64.b64encode(box)
    trytes = str(TryteString.from_bytes(text))
    assert len(trytes) > message.MAX_MESSAGE_TRYTES
    assert isinstance(read(trytes[: message.MAX_MESSAGE_TRYTES]), Refused)


@settings(max_examples=300, deadline=None)
@given(st.text(alphabet=ALPHABET, max_size=2187))
def test_any_trytes_give_an_answer_never_an_exception(trytes: str) -> None:
    assert isinstance(read(trytes), Refused)


@settings(max_examples=200, deadline=None)
@given(st.binary(max_size=900))
def test_any_sealed_bytes_give_an_answer_never_an_exception(payload: bytes) -> None:
    box = SealedBox(KEY.public_key).encrypt(payload)
    try:
        trytes = message.encode_box(box)
    except message.MessageTooLongError:
        return
    assert isinstance(read(trytes), (Refused, Credentials))


def test_old_keys_still_open_and_the_newest_is_published() -> None:
    old, new = PrivateKey.generate(), PrivateKey.generate()
    keys = SellerKeys([new, old])
    assert keys.public_key == bytes(new.public_key)
    for key in (old, new):
        assert keys.open(SealedBox(key.public_key).encrypt(b"hi")) == b"hi"
    assert keys.open(SealedBox(PrivateKey.generate().public_key).encrypt(b"hi")) is None


def test_most_advanced_refusal_is_reported() -> None:
    got = message.most_advanced(
        [Refused(message.NO_MESSAGE), Refused(message.OTHER_QUOTE), Refused(message.DOES_NOT_OPEN)]
    )
    assert got == Refused(message.OTHER_QUOTE)
    assert message.most_advanced([]) == Refused(message.NO_MESSAGE)


def test_credentials_never_show_the_password_or_secret() -> None:
    c = creds(password=secrets.token_hex(8), secret=secrets.token_hex(8))
    assert c.password not in repr(c) and c.secret not in repr(c) and c.password not in str(c)
