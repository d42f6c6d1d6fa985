"""A tiny trading bot for the CI example: buy when the ask is at or below a limit.

It talks to the gateway's /v1 API with httpx, the way a real bot would, and its tests
(test_bot.py) run it against the contract-test kit: the gateway in front of the Alpaca
emulator, loaded with scenario.yaml.

    GATEWAY_URL=http://127.0.0.1:8000 GATEWAY_KEY=gw_... python bot.py AAPL --max-ask 230
"""

from __future__ import annotations

import argparse
import os
import sys
import uuid
from dataclasses import dataclass
from decimal import Decimal
from typing import Any, Literal

import httpx


class GatewayProblem(Exception):
    """A typed error from the gateway (an application/problem+json body)."""

    def __init__(self, status: int, body: dict[str, Any]) -> None:
        self.status = status
        self.code = str(body.get("code", "UNKNOWN"))
        self.retryable = bool(body.get("retryable", False))
        super().__init__(f"{status} {self.code}: {body.get('detail', '')}")


@dataclass(frozen=True)
class Decision:
    """What one run did: bought (with the order id), held, or skipped (with the reason)."""

    action: Literal["bought", "held", "skipped"]
    symbol: str
    ask_price: Decimal | None = None
    order_id: str | None = None
    reason: str = ""


class Bot:
    """Buys ``qty`` shares of a symbol whenever its ask is at or below ``max_ask``."""

    def __init__(self, client: httpx.Client, *, max_ask: Decimal, qty: int = 1) -> None:
        self.client = client
        self.max_ask = max_ask
        self.qty = qty

    def run_once(self, symbol: str) -> Decision:
        """Read the latest quote and buy if it is cheap enough. A failure the gateway marks
        retryable (Alpaca down, a breaker open) skips this run; any other one is raised."""
        try:
            ask = self.latest_ask(symbol)
        except GatewayProblem as problem:
            if problem.retryable:
                return Decision("skipped", symbol, reason=problem.code)
            raise
        if ask is None or ask > self.max_ask:
            return Decision("held", symbol, ask)
        order = self.buy(symbol)
        return Decision("bought", symbol, ask, order_id=order["id"])

    def latest_ask(self, symbol: str) -> Decimal | None:
        """The ask price exactly as Alpaca sent it (null when Alpaca sent no ask)."""
        quote = self._answer(self.client.get(f"/v1/stocks/{symbol}/quote"))
        ask = quote["ask_price"]
        return None if ask is None else Decimal(ask)

    def buy(self, symbol: str) -> dict[str, Any]:
        """A market day order. The Idempotency-Key makes a retried request place it once."""
        order = {"symbol": symbol, "qty": self.qty, "side": "buy", "type": "market",
                 "time_in_force": "day"}  # fmt: skip
        headers = {"Idempotency-Key": f"bot-{uuid.uuid4()}"}
        return self._answer(self.client.post("/v1/orders", json=order, headers=headers))

    @staticmethod
    def _answer(response: httpx.Response) -> dict[str, Any]:
        # Numbers as Decimal: the gateway passes Alpaca's digits on, and so do we.
        body: dict[str, Any] = response.json(parse_float=Decimal)
        if response.status_code != 200:
            raise GatewayProblem(response.status_code, body)
        return body


def gateway_client() -> httpx.Client:
    """A client for the gateway named by GATEWAY_URL, with the key in GATEWAY_KEY."""
    return httpx.Client(
        base_url=os.environ["GATEWAY_URL"],
        headers={"Authorization": f"Bearer {os.environ['GATEWAY_KEY']}"},
        timeout=10.0,
    )


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("symbol")
    parser.add_argument("--max-ask", type=Decimal, required=True)
    parser.add_argument("--qty", type=int, default=1)
    args = parser.parse_args()
    with gateway_client() as client:
        decision = Bot(client, max_ask=args.max_ask, qty=args.qty).run_once(args.symbol)
    print(decision)  # noqa: T201 - a command-line bot reports what it did
    return 0


if __name__ == "__main__":
    sys.exit(main())
