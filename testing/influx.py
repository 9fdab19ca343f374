"""Read back what the services wrote to the embedded InfluxDB (tests, benchmarks)."""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

import httpx

from stack.influxdb import DATABASE, influxql, quoted


@dataclass(frozen=True)
class Reader:
    """Read back what was written (tests, benchmarks): InfluxQL for points, Flux for panels."""

    url: str
    token: str
    database: str = DATABASE

    def query(self, statement: str, client: httpx.Client | None = None) -> dict[str, Any]:
        """One InfluxQL statement on the database, timestamps in ms (`client`: see influxql)."""
        params = {"db": self.database, "epoch": "ms"}
        return influxql(self.url, statement, self.token, params, client)

    def series(
        self, measurement: str, field: str, **tags: str
    ) -> list[tuple[dict[str, str], list[tuple[int, float]]]]:
        """Each series of `measurement` matching `tags`: its tags and (timestamp ms, value)."""
        where = " AND ".join(f'"{k}" = {quoted(v)}' for k, v in tags.items())
        statement = (
            f'SELECT "{field}" FROM "{measurement}"'
            + (f" WHERE {where}" if where else "")
            + " GROUP BY *"
        )
        body = self.query(statement)
        return [
            (
                dict(series.get("tags") or {}),
                [(int(t), float(v)) for t, v in series["values"] if v is not None],
            )
            for series in body["results"][0].get("series", [])
        ]

    def points(self, measurement: str, field: str, **tags: str) -> list[tuple[int, float]]:
        """(timestamp ms, value) of every series matching `tags`, oldest first."""
        return sorted(p for _, points in self.series(measurement, field, **tags) for p in points)

    def count_where_prefix(self, measurement: str, field: str, tag: str, prefix: str) -> int:
        """How many points of `measurement` have `tag` starting with `prefix` (benchmarks)."""
        pattern = re.escape(prefix).replace("/", r"\/")
        statement = f'SELECT count("{field}") FROM "{measurement}" WHERE "{tag}" =~ /^{pattern}/'
        body = influxql(self.url, statement, self.token, {"db": self.database})
        series = body["results"][0].get("series", [])
        return int(series[0]["values"][0][1]) if series else 0

    def flux(self, query: str) -> list[dict[str, Any]]:
        """The records of a Flux query (annotated CSV parsed by influxdb-client)."""
        from influxdb_client.client.influxdb_client import InfluxDBClient

        with InfluxDBClient(url=self.url, token=self.token, org="-", timeout=30_000) as client:
            tables = client.query_api().query(query)
        return [dict(record.values) for table in tables for record in table.records]
