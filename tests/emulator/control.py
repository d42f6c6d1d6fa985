"""Async client for the emulator's ``/_emulator`` control API, used by tests and the demo.

Every method raises :class:`EmulatorControlError` on a non-2xx answer, so a typo in a test's
setup fails loudly at the setup line rather than as a puzzling assertion later.
"""

from __future__ import annotations

import asyncio
import ssl
from collections.abc import Mapping, Sequence
from functools import cache
from pathlib import Path
from types import MappingProxyType, TracebackType
from typing import Any, Literal, Self
from urllib.parse import quote

import httpx

from .scenario_text import YAML_SUFFIXES
from .stream_control import StreamControl
from .wire_json import dumps

WireObject = Mapping[str, Any]
FaultKindName = Literal[
    "latency",
    "hang",
    "status_500",
    "status_502_html",
    "status_503",
    "status_504",
    "reset",
    "malformed_json",
    "schema_missing_t",
    "schema_wrong_type",
    "rate_limited",
    "accept_then_reset",
    "accept_then_hang",
    "accept_then_500",
    "stream_auth_failed",
    "stream_connection_limit",
    "stream_insufficient_subscription",
    "stream_mute",
    "stream_mute_no_pong",
    "stream_disconnect",
    "stream_reset",
]
# Default for set_asset: register with realistic defaults only (a shared, read-only mapping).
NO_FIELDS: WireObject = MappingProxyType({})


class EmulatorControlError(RuntimeError):
    """The control API refused a request (bad body, unknown fault id ...)."""

    def __init__(self, method: str, path: str, status_code: int, body: str) -> None:
        super().__init__(f"{method} {path} answered {status_code}: {body}")
        self.status_code = status_code
        self.body = body


class EmulatorControl:
    """Typed calls to the control API of the emulator at ``base_url``."""

    def __init__(self, base_url: str, *, timeout_s: float = 10.0) -> None:
        self._client = httpx.AsyncClient(
            base_url=base_url, timeout=timeout_s, verify=shared_ssl_context()
        )

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        await self.aclose()

    async def aclose(self) -> None:
        """Close the HTTP client."""
        await self._client.aclose()

    @property
    def streams(self) -> StreamControl:
        """The stream calls: push ticks onto a feed, watch connections (stream_control.py)."""
        return StreamControl(self)

    async def reset(self) -> None:
        """Clear data, faults, counters and the request log; config and budgets to defaults."""
        await self._send("POST", "/_emulator/reset")

    async def set_quote(self, symbol: str, quote: WireObject | None) -> None:
        """Store the latest quote (wire shape, kept verbatim); None removes it."""
        await self._send("PUT", f"/_emulator/quotes/{_segment(symbol)}", quote)

    async def set_trade(self, symbol: str, trade: WireObject | None) -> None:
        """Store the latest trade (wire shape, kept verbatim); None removes it."""
        await self._send("PUT", f"/_emulator/trades/{_segment(symbol)}", trade)

    async def set_bars(
        self, symbol: str, bars: Sequence[WireObject] | None, *, timeframe: str | None = None
    ) -> None:
        """Replace the symbol's bars (each needs an RFC 3339 ``t``); None removes them.

        Without ``timeframe`` they answer every timeframe; with one (``"1Min"``, ``"1Day"``)
        only that one, and they win over the untimed bars there.
        """
        query = "" if timeframe is None else f"?timeframe={quote(timeframe, safe='')}"
        await self._send("PUT", f"/_emulator/bars/{_segment(symbol)}{query}", bars)

    async def set_quotes_history(self, symbol: str, quotes: Sequence[WireObject] | None) -> None:
        """Replace the historical quotes GET /v2/stocks/quotes pages through (each needs an
        RFC 3339 ``t``; kept verbatim, ordered by t); None removes them."""
        await self._send("PUT", f"/_emulator/history/quotes/{_segment(symbol)}", quotes)

    async def set_trades_history(self, symbol: str, trades: Sequence[WireObject] | None) -> None:
        """Replace the historical trades GET /v2/stocks/trades pages through; None removes them."""
        await self._send("PUT", f"/_emulator/history/trades/{_segment(symbol)}", trades)

    async def set_calendar(self, days: Sequence[WireObject]) -> None:
        """The market days GET /v2/calendar answers (each with a YYYY-MM-DD ``date``, kept
        verbatim, ordered by date); ``[]`` for none, the default."""
        await self._send("PUT", "/_emulator/calendar", days)

    async def set_snapshot(self, symbol: str, snapshot: WireObject | None) -> None:
        """Store the snapshot (any of latestTrade ... prevDailyBar); None removes it."""
        await self._send("PUT", f"/_emulator/snapshots/{_segment(symbol)}", snapshot)

    async def set_asset(self, symbol: str, fields: WireObject | None = NO_FIELDS) -> None:
        """Register a known asset: realistic defaults overlaid with ``fields``; None removes."""
        await self._send("PUT", f"/_emulator/assets/{_segment(symbol)}", fields)

    async def remove_asset(self, symbol: str) -> None:
        """Forget the asset, so GET /v2/assets/{symbol} answers 404."""
        await self.set_asset(symbol, None)

    async def set_clock(self, clock: WireObject) -> None:
        """The wire clock GET /v2/clock answers."""
        await self._send("PUT", "/_emulator/clock", clock)

    async def set_option_quote(self, occ: str, quote: WireObject | None) -> None:
        """Store an option's latest quote (``c`` is one string, no ``z``); None removes it."""
        await self._send("PUT", f"/_emulator/options/quotes/{_segment(occ)}", quote)

    async def set_option_trade(self, occ: str, trade: WireObject | None) -> None:
        """Store an option's latest trade (t, x, p, s, c); None removes it."""
        await self._send("PUT", f"/_emulator/options/trades/{_segment(occ)}", trade)

    async def set_option_snapshot(self, occ: str, snapshot: WireObject | None) -> None:
        """Store an option snapshot (greeks/impliedVolatility only if given); None removes."""
        await self._send("PUT", f"/_emulator/options/snapshots/{_segment(occ)}", snapshot)

    async def set_option_contract(self, occ: str, fields: WireObject | None = NO_FIELDS) -> None:
        """Register a contract: defaults derived from the OCC symbol overlaid with ``fields``."""
        await self._send("PUT", f"/_emulator/options/contracts/{_segment(occ)}", fields)

    async def set_account(self, fields: WireObject) -> None:
        """Merge fields (decimal strings, e.g. ``{"buying_power": "1000"}``) into the account."""
        await self._send("PUT", "/_emulator/account", fields)

    async def set_position(self, symbol: str, position: WireObject | None) -> None:
        """Store the wire position GET /v2/positions[/{symbol}] answers; None removes it."""
        await self._send("PUT", f"/_emulator/positions/{_segment(symbol)}", position)

    async def orders(self) -> list[dict[str, Any]]:
        """Every order the emulated account holds (any status), in submission order."""
        answer: list[dict[str, Any]] = (await self._send("GET", "/_emulator/orders")).json()
        return answer

    async def set_order_status(
        self,
        order_id: str,
        status: str,
        *,
        filled_qty: str | None = None,
        filled_avg_price: str | None = None,
    ) -> None:
        """Move an order to ``status`` (filled fills the whole qty unless filled_qty is given)."""
        body: dict[str, object] = {"status": status}
        if filled_qty is not None:
            body["filled_qty"] = filled_qty
        if filled_avg_price is not None:
            body["filled_avg_price"] = filled_avg_price
        await self._send("PUT", f"/_emulator/orders/{_segment(order_id)}/status", body)

    async def set_state(
        self,
        *,
        quotes: Mapping[str, WireObject | None] | None = None,
        trades: Mapping[str, WireObject | None] | None = None,
        bars: Mapping[str, Sequence[WireObject] | None] | None = None,
        snapshots: Mapping[str, WireObject | None] | None = None,
        assets: Sequence[str] | Mapping[str, WireObject | None] | None = None,
        option_quotes: Mapping[str, WireObject | None] | None = None,
        option_trades: Mapping[str, WireObject | None] | None = None,
        option_snapshots: Mapping[str, WireObject | None] | None = None,
        option_contracts: Sequence[str] | Mapping[str, WireObject | None] | None = None,
        positions: Mapping[str, WireObject | None] | None = None,
        quotes_history: Mapping[str, Sequence[WireObject] | None] | None = None,
        trades_history: Mapping[str, Sequence[WireObject] | None] | None = None,
    ) -> None:
        """Merge many symbols' data in one call (None values remove).

        ``assets`` and ``option_contracts``: a list of symbols (defaults) or a map to fields.
        """
        parts = {
            "quotes": quotes,
            "trades": trades,
            "bars": bars,
            "quotes_history": quotes_history,
            "trades_history": trades_history,
            "snapshots": snapshots,
            "option_quotes": option_quotes,
            "option_trades": option_trades,
            "option_snapshots": option_snapshots,
            "positions": positions,
        }
        body: dict[str, object] = {name: value for name, value in parts.items() if value}
        if assets is not None:
            body["assets"] = assets
        if option_contracts is not None:
            body["option_contracts"] = option_contracts
        await self._send("POST", "/_emulator/state", body)

    async def load_scenario(self, scenario: WireObject) -> None:
        """A clean emulator holding this scenario document (see ``scenario.py``), as of now."""
        await self._send("POST", "/_emulator/scenario", scenario)

    async def load_scenario_file(self, path: Path) -> None:
        """The same, from a file: YAML for ``.yaml``/``.yml``, JSON otherwise, sent as written."""
        is_yaml = path.suffix.lower() in YAML_SUFFIXES
        content_type = "application/yaml" if is_yaml else "application/json"
        text = await asyncio.to_thread(path.read_text, "utf-8")
        await self._send_text("POST", "/_emulator/scenario", text, content_type)

    async def configure(
        self,
        *,
        unknown_symbols: Literal["omit", "null"] | None = None,
        plan: Literal["free", "unlimited"] | None = None,
        rate_limit_per_minute: int | None = None,
        max_page_size: int | None = None,
        sdk_shapes: bool | None = None,
        order_extra_fields: WireObject | None = None,
    ) -> None:
        """Change configuration; arguments left None keep their current value."""
        changes = {
            "unknown_symbols": unknown_symbols,
            "plan": plan,
            "rate_limit_per_minute": rate_limit_per_minute,
            "max_page_size": max_page_size,
            "sdk_shapes": sdk_shapes,
            "order_extra_fields": order_extra_fields,
        }
        body = {name: value for name, value in changes.items() if value is not None}
        await self._send("PUT", "/_emulator/config", body)

    async def set_sdk_shapes(
        self, enabled: bool = True, *, order_extra_fields: WireObject | None = None
    ) -> None:
        """Orders with JSON-number qty/prices and contracts without ``multiplier``, as alpaca-py's
        tests record them; ``order_extra_fields`` (e.g. ``{"commission": 1.25}``) are added to
        every order answer."""
        await self.configure(sdk_shapes=enabled, order_extra_fields=order_extra_fields)

    async def set_random_walk(self, seed: int | None, *, step_ms: int = 1000) -> None:
        """Latest quotes and trades walk (one step per ``step_ms``); None stops the walk."""
        walk = None if seed is None else {"seed": seed, "step_ms": step_ms}
        await self._send("PUT", "/_emulator/config", {"random_walk": walk})

    async def config(self) -> dict[str, Any]:
        """The current configuration."""
        answer: dict[str, Any] = (await self._send("GET", "/_emulator/config")).json()
        return answer

    async def add_fault(
        self,
        path: str,
        kind: FaultKindName,
        count: int | None = None,
        delay_ms: int | None = None,
        retry_after_s: int | None = None,
    ) -> str:
        """Inject a fault for paths matching the fnmatch ``path``; returns its id.

        ``count`` None lasts until cleared; ``delay_ms`` is for latency, ``retry_after_s`` for
        rate_limited (X-RateLimit-Reset = now + retry_after_s, default 60).
        """
        body = {
            "path": path,
            "kind": kind,
            "count": count,
            "delay_ms": delay_ms,
            "retry_after_s": retry_after_s,
        }
        answer = await self._send("POST", "/_emulator/faults", body)
        fault_id: str = answer.json()["id"]
        return fault_id

    async def faults(self) -> list[dict[str, Any]]:
        """Active faults in matching order, with their remaining counts."""
        answer: list[dict[str, Any]] = (await self._send("GET", "/_emulator/faults")).json()
        return answer

    async def remove_fault(self, fault_id: str) -> None:
        """Remove one fault by id."""
        await self._send("DELETE", f"/_emulator/faults/{_segment(fault_id)}")

    async def clear_faults(self) -> None:
        """Remove every fault and release requests held by ``hang``."""
        await self._send("DELETE", "/_emulator/faults")

    async def calls(self) -> dict[str, int]:
        """Requests received per Alpaca path (faulted, refused and rate-limited ones too)."""
        answer: dict[str, int] = (await self._send("GET", "/_emulator/calls")).json()
        return answer

    async def calls_to(self, path: str) -> int:
        """Requests received for one exact path (0 if none)."""
        return (await self.calls()).get(path, 0)

    async def reset_calls(self) -> None:
        """Reset call counts and the request log."""
        await self._send("DELETE", "/_emulator/calls")

    async def requests(self) -> list[dict[str, Any]]:
        """Every Alpaca-path request in order: method, path, query, has_auth."""
        answer: list[dict[str, Any]] = (await self._send("GET", "/_emulator/requests")).json()
        return answer

    async def _send(self, method: str, path: str, body: object = ...) -> httpx.Response:
        if body is ...:
            return await self._send_text(method, path, None, None)
        return await self._send_text(method, path, dumps(body), "application/json")

    async def _send_text(
        self, method: str, path: str, content: str | None, content_type: str | None
    ) -> httpx.Response:
        headers = None if content_type is None else {"Content-Type": content_type}
        response = await self._client.request(method, path, content=content, headers=headers)
        if not response.is_success:
            raise EmulatorControlError(method, path, response.status_code, response.text)
        return response


@cache
def shared_ssl_context() -> ssl.SSLContext:
    """One default TLS context per process.

    httpx builds a fresh context (loading the CA bundle, ~0.1 s) for every client otherwise;
    tests open clients per test, and the emulator speaks plain HTTP anyway.
    """
    return ssl.create_default_context()


def _segment(value: str) -> str:
    """One URL path segment: '/' and friends are escaped so BRK/B stays a single symbol."""
    return quote(value, safe="")
