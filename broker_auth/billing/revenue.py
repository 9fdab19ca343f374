"""What the seller earned, exactly: computed from MongoDB's payment records (never from the
best-effort business events), per UTC day and product, and every payment as CSV."""

from __future__ import annotations

import csv
import datetime as dt
import io
from collections import defaultdict
from collections.abc import Iterator

from broker_auth.infra.clock import as_utc, rfc3339
from broker_auth.infra.db import Doc, Store
from broker_auth.schemas import RevenueRow

CSV_COLUMNS = (
    "payment_id",
    "confirmed_at",
    "address",
    "amount_iota",
    "matched",
    "order_id",
    "product_id",
    "username",
    "credited",
    "ledger_index",
    "bundles",
    "refund_due_iota",
)


def _range(since: dt.datetime | None, until: dt.datetime | None) -> Doc:
    bounds: Doc = {}
    if since is not None:
        bounds["$gte"] = as_utc(since)
    if until is not None:
        bounds["$lt"] = as_utc(until)
    return {"confirmed_at": bounds} if bounds else {}


class Revenue:
    def __init__(self, store: Store) -> None:
        self.store = store

    def per_day(
        self,
        since: dt.datetime | None = None,
        until: dt.datetime | None = None,
        product_id: str | None = None,
    ) -> list[RevenueRow]:
        """Confirmed iota and payment count per (UTC day, product); unmatched value has
        product_id None. Oldest day first."""
        query = _range(since, until)
        if product_id is not None:
            query["product_id"] = product_id
        totals: dict[tuple[dt.date, str | None], list[int]] = defaultdict(lambda: [0, 0])
        fields = {"confirmed_at": 1, "product_id": 1, "amount_iota": 1}
        for p in self.store.payments.find(query, fields):
            key = (as_utc(p["confirmed_at"]).date(), p.get("product_id"))
            totals[key][0] += int(p.get("amount_iota", 0))
            totals[key][1] += 1
        return [
            RevenueRow(day=day, product_id=product, confirmed_iota=iota, payments=count)
            for (day, product), (iota, count) in sorted(
                totals.items(), key=lambda kv: (kv[0][0], kv[0][1] or "")
            )
        ]

    def csv_rows(
        self, since: dt.datetime | None = None, until: dt.datetime | None = None
    ) -> Iterator[str]:
        """The payments as CSV text, header first, oldest first."""
        out = io.StringIO()
        writer = csv.writer(out, lineterminator="\r\n")
        writer.writerow(CSV_COLUMNS)
        for p in self.store.payments.find(_range(since, until)).sort("confirmed_at", 1):
            writer.writerow(
                [
                    p["_id"],
                    rfc3339(as_utc(p["confirmed_at"])),
                    p.get("address", ""),
                    int(p.get("amount_iota", 0)),
                    "true" if p.get("matched") else "false",
                    p.get("order_id") or "",
                    p.get("product_id") or "",
                    p.get("username") or "",
                    "true" if p.get("credited") else "false",
                    int(p.get("ledger_index", 0)),
                    " ".join(str(b) for b in p.get("bundles", [])),
                    int(p.get("refund_due_iota") or 0),
                ]
            )
            yield out.getvalue()
            out.seek(0)
            out.truncate()
        yield out.getvalue()
