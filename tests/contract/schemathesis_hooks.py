"""The three schemathesis checks the gateway's contract needs narrower than the stock ones.

Loaded by `tests/contract/test_schemathesis.py` (`hooks` in schemathesis.toml), which excludes
the stock `not_a_server_error`, `positive_data_acceptance` and `use_after_free` for these. Each
allows exactly the answers listed below, identified by their problem `code` (or the order's
status) and what the request carried, and nothing else: any other 5xx, any other refusal of a
schema-valid request, any other read of a deleted resource still fails.
"""

from __future__ import annotations

import json
from typing import Any

import schemathesis
from schemathesis import Case, CheckContext, Response
from schemathesis.openapi.checks import UseAfterFree
from schemathesis.specs.openapi.checks import use_after_free

# 422s for rules that join two inputs, which JSON Schema cannot say across parameters (their
# descriptions in the document do): (invalid param, reason).
CROSS_INPUT_RULES = frozenset(
    {
        ("start", "start is after end"),
        ("strike_price_gte", "is above strike_price_lte"),
        ("client_order_id", "differs from the Idempotency-Key header"),
    }
)
# The decimal rule is about a JSON number's own text (`0.30000000000000004` has 17 decimals),
# which JSON Schema cannot see: it validates the number's value.
DECIMAL_TEXT_REASON = "must be a non-negative decimal number, e.g. 10 or 150.25"
ACCEPTED = {401, 403, 404, 409, 429}


def _problem(response: Response) -> dict[str, Any]:
    try:
        body = json.loads(response.content)
    except ValueError:
        return {}
    return body if isinstance(body, dict) else {}


def _member(body: Any, dotted: str) -> Any:
    for part in dotted.split("."):
        if isinstance(body, dict):
            body = body.get(part)
        elif isinstance(body, list) and part.isdigit() and int(part) < len(body):
            body = body[int(part)]
        else:
            return None
    return body


def _documented_refusal(case: Case, problem: dict[str, Any]) -> bool:
    code = problem.get("code")
    if case.operation.label == "POST /v1/orders" and code == "ORDER_REJECTED":
        # Alpaca's own verdict on a well-formed order (buying power, "notional orders must be
        # market day orders", a bracket without its legs...): only Alpaca can judge it.
        return True
    if code != "VALIDATION_ERROR":
        return False
    if "upstream_status" in problem and "page_token" in (case.query or {}):
        # A page token is opaque: only Alpaca knows whether it is one of its own.
        return "page" in str(problem.get("upstream_message", "")).lower()
    invalid = problem.get("invalid_params") or []
    if not invalid:
        return False
    return all(
        (p.get("name"), p.get("reason")) in CROSS_INPUT_RULES
        or (
            str(p.get("reason", "")).endswith(DECIMAL_TEXT_REASON)
            and isinstance(_member(case.body, str(p.get("name"))), float)
        )
        for p in invalid
    )


@schemathesis.check
def gateway_positive_data_acceptance(
    ctx: CheckContext, response: Response, case: Case
) -> bool | None:
    """A schema-valid request is served, or refused for a reason the request's own schema
    cannot carry (listed above)."""
    meta = case.meta
    if meta is None or not meta.generation.mode.is_positive:
        return None
    status = response.status_code
    if status < 400 or status >= 500 or status in ACCEPTED:
        return None
    if status == 422 and _documented_refusal(case, _problem(response)):
        return None
    raise AssertionError(f"a schema-valid request was refused with {status}: {response.text}")


@schemathesis.check
def gateway_not_a_server_error(ctx: CheckContext, response: Response, case: Case) -> bool | None:
    """No 5xx, except 503 DATA_STALE for a request that set its own `max_age_ms`: the newest
    real value is older than the client allows, and saying so is the contract."""
    if response.status_code < 500:
        return None
    problem = _problem(response)
    if (
        response.status_code == 503
        and problem.get("code") == "DATA_STALE"
        and "max_age_ms" in (case.query or {})
    ):
        return None
    raise AssertionError(f"server error {response.status_code}: {response.text}")


# A cancel is not a deletion: Alpaca keeps a canceled order readable, with its status.
CANCELED = frozenset({"canceled", "pending_cancel"})


@schemathesis.check
def gateway_use_after_free(ctx: CheckContext, response: Response, case: Case) -> bool | None:
    """The stock check, except that GET /v1/orders/{id} after DELETE /v1/orders/{id} (a cancel,
    204) answers the order with status canceled or pending_cancel, as Alpaca does."""
    try:
        return use_after_free(ctx, response, case)
    except UseAfterFree:
        body = _problem(response)
        if case.operation.label == "GET /v1/orders/{order_id}" and body.get("status") in CANCELED:
            return None
        raise
