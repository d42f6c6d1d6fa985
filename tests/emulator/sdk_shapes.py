"""Orders and option contracts in the shapes alpaca-py's own tests record, behind ``sdk_shapes``.

Alpaca's documents give order numbers as decimal strings and contracts with a ``multiplier``;
alpaca-py's recorded answers (tests/trading/trading_client/test_order_routes.py and
test_option_routes.py) have ``"qty": 1``, ``"limit_price": 300``, ``"filled_qty": 0`` as JSON
numbers, and contracts without ``multiplier`` (its OptionContract model has none). Clients must
cope with both, so ``PUT /_emulator/config {"sdk_shapes": true}`` switches to the latter:

- orders: ``qty``, ``filled_qty``, ``filled_avg_price``, ``limit_price`` and ``stop_price``,
  where set, are JSON numbers written with the text they were sent with (``400.10`` stays
  ``400.10``; a client must pass that text on, not a float's);
- option contracts: no ``multiplier``; ``strike_price`` is a JSON number with the text of the
  stored string (``"162.5"`` -> ``162.5``).

``order_extra_fields`` (independent of ``sdk_shapes``) adds members to every order answer, such
as the recorded ``"commission": 1.25``; members an order already has are never replaced. The
control API's ``GET /_emulator/orders`` and fault bodies keep the documented shapes.
"""

from __future__ import annotations

from decimal import Decimal

from .config import Config
from .decimals import parse_decimal
from .order_book import StoredOrder
from .wire_json import Json, JsonObject

ORDER_NUMBERS = ("qty", "filled_qty", "filled_avg_price", "limit_price", "stop_price")


def _as_number(value: Json) -> Json:
    """A decimal string as a JSON number with the same text; anything else unchanged."""
    if not isinstance(value, str):
        return value
    try:
        return parse_decimal(value)
    except ValueError:
        return value


def order_answer(order: StoredOrder, config: Config) -> JsonObject:
    """The order as the trading API answers it under ``config``."""
    answer = dict(order.wire)
    if config.sdk_shapes:
        for name in ORDER_NUMBERS:
            if answer.get(name) is not None:
                held: Decimal | None = order.numbers.get(name)
                answer[name] = held if held is not None else _as_number(answer[name])
    for name, value in config.order_extra_fields.items():
        answer.setdefault(name, value)
    return answer


def contract_answer(contract: JsonObject, config: Config) -> JsonObject:
    """The option contract as the trading API answers it under ``config``."""
    if not config.sdk_shapes:
        return contract
    answer = {name: value for name, value in contract.items() if name != "multiplier"}
    if "strike_price" in answer:
        answer["strike_price"] = _as_number(answer["strike_price"])
    return answer
