"""The portal's sealed box (js/sealed.js) against PyNaCl and PyOTA, in Node.

The browser seals the buyer's MQTT login to the seller's key (libsodium crypto_box_seal) and
sends it as a transaction message. What it seals must open with PyNaCl, which broker_auth uses,
and its trytes must be what PyOTA decodes. Node runs the same ES modules the browser loads
(js/sealed.js and the vendored TweetNaCl and BLAKE2b); no browser is needed.
"""

from __future__ import annotations

import base64
import hashlib
import json
import random
import re
import subprocess
from pathlib import Path
from typing import Any

import pytest
from iota import TryteString
from nacl.public import PrivateKey, SealedBox

NODE = Path("/usr/bin/node")
STATIC = Path(__file__).resolve().parents[2] / "broker_auth" / "portal" / "static"
SEALED_JS = STATIC / "js" / "sealed.js"
VENDOR = STATIC / "vendor"
MAX_MESSAGE_TRYTES = 2187

# SHA-256 of the upstream files inside the vendored ES modules (npm tweetnacl 1.0.3, blakejs
# 1.2.1), between their BEGIN and END lines: see vendor/README.md.
UPSTREAM_SHA256 = {
    ("tweetnacl-fast.mjs", "tweetnacl-1.0.3/nacl-fast.js"): (
        "6bcd37a3b20dce913f82d4b23e4e2b661058b4b953df8a3f8c45d56ac4f72447"
    ),
    ("blakejs.mjs", "blakejs-1.2.1/util.js"): (
        "46118f8900880fc759aa2ae5c64fed9a753132a3dcbefb2881a3bf9c0dd094fd"
    ),
    ("blakejs.mjs", "blakejs-1.2.1/blake2b.js"): (
        "79e88d06fcb301e862d7908d14698e7d2e647b850e3bfbcaf33234615a7b5219"
    ),
}

# Reads a list of operations (JSON on stdin), answers a list of results (JSON on stdout).
# Bytes travel as hex.
DRIVER = """
import nacl from "__TWEETNACL__";
import { blake2bHex } from "__BLAKEJS__";
import * as sealed from "__SEALED__";

const hex = (b) => Buffer.from(b).toString("hex");
const bytes = (h) => new Uint8Array(Buffer.from(h, "hex"));

function run(op) {
  switch (op.op) {
    case "constants":
      return {
        prefix: sealed.SEALED_PREFIX,
        max: sealed.MAX_MESSAGE_TRYTES,
        naclBox: typeof nacl.box,
        blake2bAbc: blake2bHex("abc", undefined, 24),
      };
    case "seal":
      return hex(sealed.sealedBox(bytes(op.message), bytes(op.public_key)));
    case "open": {
      const m = sealed.openSealedBox(bytes(op.box), bytes(op.public_key), bytes(op.secret_key));
      return m === null ? null : hex(m);
    }
    case "trytes":
      return sealed.bytesToTrytes(bytes(op.bytes));
    case "message":
      try {
        return { trytes: sealed.sealedMessage(op.payload, op.key) };
      } catch (err) {
        return { error: String(err.message) };
      }
    default:
      throw new Error(`unknown op ${op.op}`);
  }
}

let input = "";
process.stdin.setEncoding("utf8");
for await (const chunk of process.stdin) input += chunk;
process.stdout.write(JSON.stringify(JSON.parse(input).map(run)));
"""


def run_js(tmp_path: Path, ops: list[dict[str, Any]]) -> list[Any]:
    """Run the operations in Node 20 with the portal's modules, imported by file URL."""
    if not NODE.exists():
        pytest.fail(f"{NODE} (Node.js 20) is needed to test the portal's JavaScript")
    driver = tmp_path / "driver.mjs"
    driver.write_text(
        DRIVER.replace("__TWEETNACL__", (VENDOR / "tweetnacl-fast.mjs").as_uri())
        .replace("__BLAKEJS__", (VENDOR / "blakejs.mjs").as_uri())
        .replace("__SEALED__", SEALED_JS.as_uri())
    )
    done = subprocess.run(
        [str(NODE), str(driver)],
        input=json.dumps(ops),
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    results: list[Any] = json.loads(done.stdout)
    assert len(results) == len(ops)
    return results


def messages() -> list[bytes]:
    rng = random.Random(20240501)
    payload = {"v": 1, "username": "jürgen_ü", "password": "pässwörd ☃ 😀 日本語", "n": [1, 2]}
    return [
        b"",
        b"\x00",
        b"x",
        bytes(range(256)),
        rng.randbytes(700),
        json.dumps(payload, ensure_ascii=False).encode("utf-8"),
        *(rng.randbytes(rng.randrange(1, 300)) for _ in range(20)),
    ]


def test_vendored_files_are_upstream_byte_for_byte() -> None:
    for (name, upstream), digest in UPSTREAM_SHA256.items():
        text = (VENDOR / name).read_bytes()
        begin = f"// ---- BEGIN {upstream} ----\n".encode()
        end = f"// ---- END {upstream} ----\n".encode()
        assert text.count(begin) == 1 and text.count(end) == 1, (name, upstream)
        inner = text.split(begin)[1].split(end)[0]
        assert hashlib.sha256(inner).hexdigest() == digest, (name, upstream)
    for licence in ("tweetnacl.LICENSE.txt", "blakejs.LICENSE.txt"):
        assert (VENDOR / licence).stat().st_size > 0
    readme = (VENDOR / "README.md").read_text()
    assert "`tweetnacl-fast.mjs`" in readme and "`blakejs.mjs`" in readme


def test_modules_load(tmp_path: Path) -> None:
    [constants] = run_js(tmp_path, [{"op": "constants"}])
    assert constants["prefix"] == "sealed1:"
    assert constants["max"] == MAX_MESSAGE_TRYTES
    assert constants["naclBox"] == "function"
    assert constants["blake2bAbc"] == hashlib.blake2b(b"abc", digest_size=24).hexdigest()


def test_js_seals_what_pynacl_opens(tmp_path: Path) -> None:
    secret = PrivateKey.generate()
    public = bytes(secret.public_key)
    plain = messages()
    boxes = run_js(
        tmp_path, [{"op": "seal", "message": m.hex(), "public_key": public.hex()} for m in plain]
    )
    opener = SealedBox(secret)
    for message, box_hex in zip(plain, boxes, strict=True):
        box = bytes.fromhex(box_hex)
        assert len(box) == len(message) + 48
        assert opener.decrypt(box) == message
    # A fresh ephemeral key every time: the same message never seals the same way twice.
    assert len({bytes.fromhex(b)[:32] for b in boxes}) == len(boxes)
    # Only the recipient's key opens it.
    other = SealedBox(PrivateKey.generate())
    with pytest.raises(Exception, match=r"(?i)decrypt"):
        other.decrypt(bytes.fromhex(boxes[-1]))


def test_js_opens_what_pynacl_seals(tmp_path: Path) -> None:
    secret = PrivateKey.generate()
    keys = {"public_key": bytes(secret.public_key).hex(), "secret_key": bytes(secret).hex()}
    plain = messages()
    boxes = [SealedBox(secret.public_key).encrypt(m) for m in plain]
    tampered = []
    rng = random.Random(7)
    for box in boxes:
        altered = bytearray(box)
        altered[rng.randrange(len(altered))] ^= 1 << rng.randrange(8)
        tampered.append(bytes(altered))
    ops = [{"op": "open", "box": b.hex(), **keys} for b in boxes + tampered]
    ops.append({"op": "open", "box": boxes[0][:47].hex(), **keys})  # shorter than the overhead
    wrong = PrivateKey.generate()
    ops.append(
        {
            "op": "open",
            "box": boxes[3].hex(),
            "public_key": bytes(wrong.public_key).hex(),
            "secret_key": bytes(wrong).hex(),
        }
    )
    results = run_js(tmp_path, ops)
    opened = results[: len(boxes)]
    assert [bytes.fromhex(r) for r in opened] == plain
    assert results[len(boxes) :] == [None] * (len(tampered) + 2)


def test_bytes_to_trytes_is_pyotas(tmp_path: Path) -> None:
    rng = random.Random(3)
    samples = [bytes([b]) for b in range(256)]
    samples += [b"", b"sealed1:AAAA==", bytes(range(256))]
    samples += [rng.randbytes(rng.randrange(1, 500)) for _ in range(20)]
    results = run_js(tmp_path, [{"op": "trytes", "bytes": s.hex()} for s in samples])
    for sample, trytes in zip(samples, results, strict=True):
        assert trytes == str(TryteString.from_bytes(sample)), sample
        assert TryteString(trytes).encode() == sample


def decode_message(trytes: str, secret: PrivateKey) -> Any:
    """What broker_auth does with the message of a paying transaction (protocol v1)."""
    text = TryteString(trytes).encode().decode("ascii")
    assert text.startswith("sealed1:")
    box = base64.b64decode(text.removeprefix("sealed1:"), validate=True)
    return json.loads(SealedBox(secret).decrypt(box).decode("utf-8"))


def test_sealed_message_decodes_with_pyota_and_pynacl(tmp_path: Path) -> None:
    secret = PrivateKey.generate()
    key = base64.b64encode(bytes(secret.public_key)).decode()
    payloads: list[dict[str, Any]] = [
        {
            "v": 1,
            "quote_id": "q" * 36,
            "address": "A" * 81,
            "secret": "s" * 43,
            "username": "john_doe-1",
            "password": "correct horse battery staple",
        },
        # The longest login the portal allows: 32 characters, 128 UTF-16 units of 3-byte UTF-8.
        {
            "v": 1,
            "quote_id": "0123456789abcdef" * 2,
            "address": "9" * 81,
            "secret": "-_" * 22,
            "username": "z" * 32,
            "password": "€ü日" * 42 + "ab",
        },
        {"v": 1, "username": "ünïcödé", "password": 'quote " and \\ and \n 😀'},
    ]
    results = run_js(tmp_path, [{"op": "message", "payload": p, "key": key} for p in payloads])
    for payload, result in zip(payloads, results, strict=True):
        trytes = result["trytes"]
        assert re.fullmatch(r"[9A-Z]+", trytes) and len(trytes) % 2 == 0
        assert len(trytes) <= MAX_MESSAGE_TRYTES
        assert decode_message(trytes, secret) == payload
        # The node pads a message with 9s to 2187 trytes. Every character of the text is
        # ASCII 32 or more, so its last tryte is never 9: stripping the padding gives it back.
        padded = trytes + "9" * (MAX_MESSAGE_TRYTES - len(trytes))
        assert padded.rstrip("9") == trytes


def test_oversized_payload_throws(tmp_path: Path) -> None:
    secret = PrivateKey.generate()
    key = base64.b64encode(bytes(secret.public_key)).decode()
    # {"p":"..."} is 8 bytes of JSON around the filler: 765 bytes fit (2184 trytes), 766 do not.
    fits, too_long = {"p": "x" * 757}, {"p": "x" * 758}
    results = run_js(
        tmp_path,
        [
            {"op": "message", "payload": fits, "key": key},
            {"op": "message", "payload": too_long, "key": key},
            {"op": "message", "payload": {"p": "x" * 5000}, "key": key},
            {"op": "message", "payload": fits, "key": base64.b64encode(b"short").decode()},
        ],
    )
    assert len(results[0]["trytes"]) == 2184
    assert decode_message(results[0]["trytes"], secret) == fits
    assert "too long" in results[1]["error"]
    assert "too long" in results[2]["error"]
    assert "32 bytes" in results[3]["error"]
