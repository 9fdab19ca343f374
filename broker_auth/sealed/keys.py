"""The seller's X25519 key pairs for sealed purchases: made once, rotated only on purpose.

Kept in one JSON file (mode 0600; `make run`: under .data/, compose: a volume), newest first:
the newest key is the one buyers seal to (`GET /api/seller-key`, retained on `info/seller-key`);
older keys stay so that messages sealed for quotes made under them still open. The first
process to start makes the file (written aside, then linked in: replicas starting together
agree on one key). `python -m broker_auth.sealed.keys rotate FILE` adds a new key.
"""

from __future__ import annotations

import argparse
import base64
import datetime as dt
import json
import logging
import os
import secrets
from pathlib import Path

from nacl.exceptions import CryptoError
from nacl.public import PrivateKey, SealedBox

log = logging.getLogger(__name__)

ALG = "x25519-sealedbox"


class SellerKeys:
    def __init__(self, keys: list[PrivateKey], path: Path | None = None) -> None:
        if not keys:
            raise ValueError("no seller key")
        self._keys = keys
        self._boxes = [SealedBox(k) for k in keys]
        self._path = path  # read again when a box opens with none (a rotation elsewhere)
        self._mtime = path.stat().st_mtime_ns if path is not None else 0

    @classmethod
    def load_or_create(cls, path: Path) -> SellerKeys:
        if not path.exists():
            _write_new(path, [_entry(PrivateKey.generate())])
        return cls.load(path)

    @classmethod
    def load(cls, path: Path) -> SellerKeys:
        if path.stat().st_mode & 0o077:
            log.warning("%s is readable by others: chmod 600 it", path)
        doc = json.loads(path.read_text())
        return cls([PrivateKey(base64.b64decode(e["private_key"])) for e in doc["keys"]], path)

    @property
    def public_key(self) -> bytes:
        return bytes(self._keys[0].public_key)

    @property
    def public_key_b64(self) -> str:
        return base64.b64encode(self.public_key).decode()

    def open(self, box: bytes) -> bytes | None:
        """The plaintext of a sealed box made for any of the seller's keys, or None. A key
        rotated in the file since (by another replica's operator) is read first."""
        opened = self._open(box)
        if opened is None and self._path is not None and self._changed():
            fresh = SellerKeys.load(self._path)
            self._keys, self._boxes, self._mtime = fresh._keys, fresh._boxes, fresh._mtime
            opened = self._open(box)
        return opened

    def _open(self, box: bytes) -> bytes | None:
        for sealed in self._boxes:
            try:
                return bytes(sealed.decrypt(box))
            except CryptoError:
                continue
        return None

    def _changed(self) -> bool:
        try:
            return self._path is not None and self._path.stat().st_mtime_ns != self._mtime
        except FileNotFoundError:
            return False


def _entry(key: PrivateKey) -> dict[str, str]:
    return {
        "private_key": base64.b64encode(bytes(key)).decode(),
        "public_key": base64.b64encode(bytes(key.public_key)).decode(),
        "created_at": dt.datetime.now(dt.UTC).isoformat(),
    }


def _write_new(path: Path, entries: list[dict[str, str]], replace: bool = False) -> None:
    """Write the file aside (0600) and link it in: only one of several writers wins."""
    path.parent.mkdir(parents=True, exist_ok=True)
    aside = path.with_name(f".{path.name}.{secrets.token_hex(4)}")
    fd = os.open(aside, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w") as f:
        json.dump({"alg": ALG, "keys": entries}, f, indent=1)
        f.flush()
        os.fsync(f.fileno())
    try:
        if replace:
            os.replace(aside, path)
        else:
            os.link(aside, path)
            log.info("seller key for sealed purchases made in %s", path)
    except FileExistsError:
        pass  # another process made it first: theirs stands
    finally:
        if not replace:
            aside.unlink(missing_ok=True)


def rotate(path: Path) -> str:
    """Add a new key in front (buyers seal to it from now on); returns its public half."""
    doc = json.loads(path.read_text()) if path.exists() else {"keys": []}
    key = PrivateKey.generate()
    _write_new(path, [_entry(key), *doc["keys"]], replace=path.exists())
    return base64.b64encode(bytes(key.public_key)).decode()


def main() -> None:
    p = argparse.ArgumentParser(prog="python -m broker_auth.sealed.keys")
    p.add_argument("command", choices=["rotate", "show"])
    p.add_argument("file", type=Path)
    args = p.parse_args()
    if args.command == "rotate":
        print(f"new seller key: {rotate(args.file)} (restart broker_auth to publish it)")
    else:
        print(SellerKeys.load_or_create(args.file).public_key_b64)


if __name__ == "__main__":
    main()
