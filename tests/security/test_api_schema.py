"""schemathesis against broker_auth's own OpenAPI schema, served by a live process.

Every operation in the live /openapi.json gets generated requests, valid and invalid (at most
MAX_EXAMPLES of each per operation), with the credentials of its audience: the admin's Bearer
token on admin operations, a registered buyer's HTTP Basic elsewhere. schemathesis' checks
then hold for every answer: no 5xx, a documented status code, a body and content type matching
the schema, invalid input refused with a 4xx, auth not ignored, and so on.

One check is left out: `positive_data_acceptance` (a schema-valid request must be accepted).
The service refuses, with a 422 and a reason, a few things the schema cannot say: control
characters in a password, a topic filter's MQTT syntax and its byte length, and orders longer
than MAX_ORDER_HOURS (a setting). That is the design's "bad input gets a 4xx with a reason".

The schemathesis pytest plugin does not run on pytest 9 (it reads `Function._nodeid`), so the
operations' Hypothesis strategies are driven directly.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
import schemathesis
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from hypothesis.errors import Unsatisfiable
from schemathesis import GenerationMode, checks
from schemathesis.core.result import Ok

from broker_auth.schemas import ID_PATTERN
from testing.broker_auth import AuthStack
from testing.procs import wait_for
from tests.broker_auth.conftest import AuthStackFactory
from tests.devnet_fixture import start_devnet
from tests.security.conftest import REPORTS

MAX_EXAMPLES = 30
BUYER, PASSWORD = "schema-buyer", "schema-buyer-password"
EXCLUDED = [checks.positive_data_acceptance]


@pytest.fixture(scope="module")
def api_stack(
    auth_stack_factory: AuthStackFactory, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[AuthStack]:
    # A healthy node, so /healthz answers 200 (its documented 503 would count as a 5xx).
    net = start_devnet(tmp_path_factory.mktemp("schema-devnet"))
    try:
        stack = auth_stack_factory(
            "schema",
            node_url=net.url,
            # The generator registers and logs in a lot: no throttling in this instance.
            SIGNUP_MAX_PER_IP="1000000",
            LOGIN_MAX_FAILURES="1000000",
            LOGIN_MAX_FAILURES_PER_IP="1000000",
        )
        stack.register(BUYER, PASSWORD)
        stack.create_product("plug-1-live", "live/plug-1/#", 500)
        wait_for(lambda: (stack.health() or {}).get("status") == "ok", 20, "healthz ok")
        yield stack
    finally:
        net.stop()


def credentials(operation: Any, stack: AuthStack) -> dict[str, Any]:
    if "admin" in (operation.tags or []):
        return {"headers": {"Authorization": f"Bearer {stack.admin_token}"}}
    return {"auth": (BUYER, PASSWORD)}


def fuzz(operation: Any, mode: GenerationMode, stack: AuthStack, seen: set[int]) -> int:
    """Run up to MAX_EXAMPLES generated cases; returns how many ran."""
    calls = 0
    kwargs = credentials(operation, stack)

    @given(case=operation.as_strategy(generation_mode=mode))
    @settings(
        max_examples=MAX_EXAMPLES,
        deadline=None,
        database=None,
        suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much],
    )
    def run(case: Any) -> None:
        nonlocal calls
        calls += 1
        response = case.call_and_validate(excluded_checks=EXCLUDED, timeout=15, **kwargs)
        seen.add(response.status_code)

    try:
        run()
    except Unsatisfiable:
        # Nothing in the request can be made invalid (no parameters, or a free-form string).
        assert mode == GenerationMode.NEGATIVE, operation.label
    return calls


ids = st.from_regex(ID_PATTERN, fullmatch=True)
levels = st.from_regex(r"[a-z0-9_-]{1,12}", fullmatch=True)
topic_filters = st.builds(
    lambda parts, tail: "/".join(["live", *parts, *tail]),
    st.lists(levels | st.just("+"), min_size=1, max_size=3),
    st.sampled_from([[], ["#"]]),
)


def well_formed(operation: Any, stack: AuthStack, seen: set[int]) -> int:
    """Valid requests the generic generator rarely makes (a valid MQTT filter, an existing
    product, an existing order), so the success answers are checked against the schema too."""
    calls = 0
    kwargs = credentials(operation, stack)
    bodies: st.SearchStrategy[dict[str, Any]] | None = None
    if operation.label == "POST /api/products":
        bodies = st.fixed_dictionaries(
            {
                "id": ids,
                "topic_filter": topic_filters,
                "price_iota_per_hour": st.integers(1, 10**9),
            },
            optional={"description": st.text(max_size=500)},
        )
    elif operation.label == "POST /api/orders":
        hours = st.floats(min_value=1e-6, max_value=8760, allow_nan=False)
        bodies = st.fixed_dictionaries({"product_id": st.just("plug-1-live"), "hours": hours})
    elif operation.label == "GET /api/orders/{order_id}":
        for order in httpx.get(f"{stack.api_url}/api/orders", auth=(BUYER, PASSWORD)).json():
            case = operation.Case(path_parameters={"order_id": order["order_id"]})
            seen.add(case.call_and_validate(timeout=15, **kwargs).status_code)
            calls += 1
        return calls
    if bodies is None:
        return 0

    @given(body=bodies)
    @settings(max_examples=15, deadline=None, database=None)
    def run(body: dict[str, Any]) -> None:
        nonlocal calls
        calls += 1
        response = operation.Case(body=body).call_and_validate(timeout=15, **kwargs)
        assert response.status_code in (201, 409), response.text
        seen.add(response.status_code)

    run()
    return calls


def test_api_matches_its_schema(api_stack: AuthStack) -> None:
    schema = schemathesis.openapi.from_url(f"{api_stack.api_url}/openapi.json")
    operations = []
    for result in schema.get_all_operations():
        assert isinstance(result, Ok), result
        operations.append(result.ok())
    assert len(operations) >= 10
    # Orders first, so that GET /api/orders/{order_id} finds some.
    operations.sort(key=lambda op: op.label != "POST /api/orders")
    failures: list[str] = []
    seen: dict[str, set[int]] = defaultdict(set)
    calls: dict[str, int] = defaultdict(int)
    for operation in operations:
        for mode in (GenerationMode.POSITIVE, GenerationMode.NEGATIVE):
            try:
                calls[operation.label] += fuzz(operation, mode, api_stack, seen[operation.label])
            except BaseExceptionGroup as group:  # schemathesis' FailureGroup of check failures
                failures.append(f"{operation.label} ({mode.value}):\n{group}")
        try:
            calls[operation.label] += well_formed(operation, api_stack, seen[operation.label])
        except BaseExceptionGroup as group:
            failures.append(f"{operation.label} (well formed):\n{group}")
    summary = "\n".join(
        f"  {label:<28} {calls[label]:>3} requests, statuses {sorted(codes)}"
        for label, codes in sorted(seen.items())
    )
    report = f"schemathesis on broker_auth's OpenAPI schema:\n{summary}"
    REPORTS.append(report)
    print("\n" + report)
    # Positive cases reached the real work, not just validation errors.
    for label in (
        "POST /api/accounts",
        "POST /api/devices",
        "POST /api/products",
        "POST /api/orders",
    ):
        assert 201 in seen[label], label
    assert 200 in seen["GET /api/orders/{order_id}"]
    assert all(code < 500 for codes in seen.values() for code in codes)
    assert not failures, "\n\n".join(failures)
