"""Products: a live topic filter sold by the hour; each is a role `product.<id>`."""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Sequence

from pymongo import ReturnDocument
from pymongo.errors import DuplicateKeyError

from broker_auth.broker.errors import BrokerError
from broker_auth.broker.projector import Projector
from broker_auth.errors import ConflictError, InvalidError, NotFoundError, UnavailableError
from broker_auth.infra.clock import utcnow
from broker_auth.infra.db import Doc, Store
from broker_auth.schemas import ProductAdminOut, ProductIn, ProductOut, ProductPatch

log = logging.getLogger(__name__)


def to_out(doc: Doc) -> ProductOut:
    return ProductOut(
        id=str(doc["_id"]),
        topic_filter=str(doc["topic_filter"]),
        price_iota_per_hour=int(doc["price_iota_per_hour"]),
        description=str(doc.get("description", "")),
    )


def to_admin_out(doc: Doc) -> ProductAdminOut:
    return ProductAdminOut(**to_out(doc).model_dump(), active=bool(doc.get("active", True)))


class Products:
    def __init__(self, store: Store, projector: Projector, live_prefix: str) -> None:
        self.store = store
        self.projector = projector
        self.live_prefix = live_prefix

    def list(self) -> list[ProductOut]:
        """The catalog: products on sale."""
        on_sale = {"active": {"$ne": False}}
        return [to_out(d) for d in self.store.products.find(on_sale).sort("_id", 1)]

    def list_all(self) -> Sequence[ProductAdminOut]:
        """Every product, disabled ones too (the seller)."""
        return [to_admin_out(d) for d in self.store.products.find().sort("_id", 1)]

    def get(self, product_id: str) -> Doc | None:
        return self.store.products.find_one({"_id": product_id})

    def create(self, product: ProductIn) -> ProductOut:
        levels = product.topic_filter.split("/")
        if len(levels) < 2 or levels[0] != self.live_prefix:
            raise InvalidError(f"topic_filter must be under {self.live_prefix}/")
        doc: Doc = {
            "_id": product.id,
            "topic_filter": product.topic_filter,
            "price_iota_per_hour": product.price_iota_per_hour,
            "description": product.description,
            "created_at": utcnow(),
        }
        with self.projector.leader.grants_lock:
            try:
                self.store.products.insert_one(doc)
            except DuplicateKeyError:
                raise ConflictError("product already exists") from None
            try:
                self.projector.ensure_role(self.projector.product_role(doc))
            except BrokerError as exc:
                self.store.products.delete_one({"_id": product.id})
                log.warning("product %r not created: broker unavailable (%s)", product.id, exc)
                raise UnavailableError("MQTT broker unavailable; try again shortly") from None
        log.info("product %r created on %s", product.id, product.topic_filter)
        return to_out(doc)

    def update(self, product_id: str, patch: ProductPatch) -> ProductAdminOut:
        """Price, description or on-sale flag. Orders already made keep their amount and
        grants their time: only new orders read the product."""
        changes = patch.model_dump(exclude_none=True)
        if not changes:
            raise InvalidError("nothing to change: give price_iota_per_hour, description or active")
        doc = self.store.products.find_one_and_update(
            {"_id": product_id}, {"$set": changes}, return_document=ReturnDocument.AFTER
        )
        if doc is None:
            raise NotFoundError("no such product")
        log.info("product %r updated: %s", product_id, changes)
        return to_admin_out(doc)

    def ensure(self, product: ProductIn) -> None:
        """Idempotent creation (demo seed): an existing product is left as it is."""
        if self.get(product.id) is None:
            with contextlib.suppress(ConflictError):
                self.create(product)
