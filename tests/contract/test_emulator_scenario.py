"""Scenario files: the example loads and answers within Alpaca's schemas, times are relative to
the load, faults run on a timeline, and a scenario the emulator cannot use is refused with the
place and the reason, changing nothing. Each test drives the real process."""

from __future__ import annotations

import asyncio
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.contract import extract_alpaca_facts as extractor
from tests.contract.test_emulator_openapi import Document
from tests.emulator import scenario_shapes as shapes
from tests.emulator.control import EmulatorControl, shared_ssl_context
from tests.emulator.process import REPO_ROOT, EmulatorProcess, EmulatorStartError
from tests.emulator.responses import ApiFamily
from tests.emulator.samples import default_account
from tests.emulator.timestamps import rfc3339_ns

pytestmark = pytest.mark.contract

EXAMPLE = REPO_ROOT / "tests" / "emulator" / "scenarios" / "example.yaml"
CALL, PUT = "AAPL270115C00230000", "AAPL270115P00230000"
LATEST_QUOTES = "/v2/stocks/quotes/latest"
NS_PER_S = 1_000_000_000
QUOTE_YAML = "{t: '-2s', bx: V, bp: 229.90, bs: 2, ax: V, ap: 230.10, as: 1, c: [R], z: C}"
QUOTED_PRICE_YAML = QUOTE_YAML.replace("229.90", "'229.90'")
CALENDAR_DAY_YAML = ('date: 2027-01-14, open: "09:30", close: "16:00", session_open: "0400", '
                     'session_close: "2000", settlement_date: 2027-01-15')  # fmt: skip
UNQUOTED_CLOSE = CALENDAR_DAY_YAML.replace('"16:00"', "16:00")  # YAML reads a number (960)
SESSION_WITH_COLON = CALENDAR_DAY_YAML.replace('"0400"', '"04:00"')


@pytest.fixture(scope="module")
def emulator() -> Iterator[EmulatorProcess]:
    """Started with the example scenario, which every reset loads again."""
    with EmulatorProcess(scenario=EXAMPLE) as process:
        yield process


@pytest.fixture(scope="module")
def facts() -> dict[str, Any]:
    return extractor.load_facts()


async def post_scenario(emulator: EmulatorProcess, text: str, *, is_yaml: bool) -> httpx.Response:
    content_type = "application/yaml" if is_yaml else "application/json"
    async with httpx.AsyncClient(base_url=emulator.base_url, verify=shared_ssl_context()) as c:
        return await c.post(
            "/_emulator/scenario", content=text, headers={"Content-Type": content_type}
        )


# --- the example scenario ---------------------------------------------------------------------

# (family, documented path, requested path, query): every kind of answer the example feeds.
EXAMPLE_ANSWERS = [
    ("market-data", LATEST_QUOTES, LATEST_QUOTES, {"symbols": "AAPL,MSFT,SPY"}),
    ("market-data", "/v2/stocks/{symbol}/quotes/latest", "/v2/stocks/AAPL/quotes/latest", {}),
    ("market-data", "/v2/stocks/trades/latest", "/v2/stocks/trades/latest", {"symbols": "AAPL"}),
    ("market-data", "/v2/stocks/bars/latest", "/v2/stocks/bars/latest", {"symbols": "AAPL"}),
    ("market-data", "/v2/stocks/snapshots", "/v2/stocks/snapshots", {"symbols": "AAPL"}),
    ("market-data", "/v2/stocks/{symbol}/snapshot", "/v2/stocks/AAPL/snapshot", {}),
    ("market-data", "/v2/stocks/bars", "/v2/stocks/bars",
     {"symbols": "AAPL,MSFT", "timeframe": "1Day"}),
    ("market-data", "/v2/stocks/{symbol}/bars", "/v2/stocks/AAPL/bars", {"timeframe": "1Min"}),
    ("market-data", "/v2/stocks/quotes", "/v2/stocks/quotes", {"symbols": "AAPL"}),
    ("market-data", "/v2/stocks/{symbol}/quotes", "/v2/stocks/AAPL/quotes", {}),
    ("market-data", "/v2/stocks/trades", "/v2/stocks/trades", {"symbols": "AAPL,MSFT"}),
    ("market-data", "/v2/stocks/{symbol}/trades", "/v2/stocks/MSFT/trades", {}),
    ("market-data", "/v1beta1/options/quotes/latest", "/v1beta1/options/quotes/latest",
     {"symbols": CALL}),
    ("market-data", "/v1beta1/options/trades/latest", "/v1beta1/options/trades/latest",
     {"symbols": CALL}),
    ("market-data", "/v1beta1/options/snapshots", "/v1beta1/options/snapshots",
     {"symbols": f"{CALL},{PUT}"}),
    ("market-data", "/v1beta1/options/snapshots/{underlying_symbol}",
     "/v1beta1/options/snapshots/AAPL", {}),
    ("trading", "/v2/clock", "/v2/clock", {}),
    ("trading", "/v2/calendar", "/v2/calendar", {}),
    ("trading", "/v2/assets", "/v2/assets", {}),
    ("trading", "/v2/account", "/v2/account", {}),
    ("trading", "/v2/assets/{symbol_or_asset_id}", "/v2/assets/IBM", {}),
    ("trading", "/v2/positions", "/v2/positions", {}),
    ("trading", "/v2/positions/{symbol_or_asset_id}", "/v2/positions/AAPL", {}),
    ("trading", "/v2/options/contracts", "/v2/options/contracts",
     {"underlying_symbols": "AAPL", "expiration_date_lte": "2027-12-31"}),
    ("trading", "/v2/options/contracts/{symbol_or_id}", f"/v2/options/contracts/{CALL}", {}),
]  # fmt: skip


async def test_example_scenario_answers_validate_against_alpacas_schemas(
    control: EmulatorControl, alpaca: httpx.AsyncClient, facts: dict[str, Any]
) -> None:
    for family, documented, path, query in EXAMPLE_ANSWERS:
        response = await alpaca.get(path, params=query)

        assert response.status_code == 200, (path, response.text)
        assert "[]" not in response.text, (path, response.text)  # the example feeds each one
        Document(facts[ApiFamily(family).value]).validate_ok_body(
            documented, "GET", response.json()
        )


async def test_example_scenario_answers_its_own_digits_and_defaults(
    control: EmulatorControl, alpaca: httpx.AsyncClient
) -> None:
    quotes = await alpaca.get(LATEST_QUOTES, params={"symbols": "AAPL,IBM,MSFT"})
    bars = await alpaca.get("/v2/stocks/AAPL/bars", params={"timeframe": "1Day"})
    minute = await alpaca.get("/v2/stocks/AAPL/bars", params={"timeframe": "1Min"})
    hourly = await alpaca.get("/v2/stocks/MSFT/bars", params={"timeframe": "1Hour"})
    ibm = (await alpaca.get("/v2/assets/IBM")).json()
    aapl = (await alpaca.get("/v2/assets/AAPL")).json()
    position = (await alpaca.get("/v2/positions/AAPL")).json()
    account = (await alpaca.get("/v2/account")).json()
    chain = (await alpaca.get("/v1beta1/options/snapshots/AAPL")).json()["snapshots"]

    assert set(quotes.json()["quotes"]) == {"AAPL", "MSFT"}  # IBM: an asset without quotes
    assert '"bp":229.85,' in quotes.text
    assert '"h":229.0,' in bars.text  # the scenario's text, not a float's 229
    assert [b["c"] for b in bars.json()["bars"]] == [228.4, 229.87]
    assert len(minute.json()["bars"]) == 2
    assert len(hourly.json()["bars"]) == 1  # untimed bars answer every timeframe
    assert (ibm["exchange"], aapl["name"]) == ("NYSE", "Apple Inc. Common Stock")
    assert (position["asset_id"], position["exchange"]) == (aapl["id"], "NASDAQ")
    assert (position["qty"], position["unrealized_plpc"]) == ("10", "0.0381158831")
    assert account["buying_power"] == "100000"
    assert account["regt_buying_power"] == default_account()["regt_buying_power"]
    assert chain[CALL]["impliedVolatility"] == 0.2431
    assert "greeks" not in chain[PUT]


async def test_relative_times_are_stamped_at_load_and_again_at_each_reset(
    control: EmulatorControl, alpaca: httpx.AsyncClient
) -> None:
    before_ns = time.time_ns()
    await control.reset()
    after_ns = time.time_ns()
    first = (await alpaca.get("/v2/stocks/AAPL/quotes/latest")).json()["quote"]["t"]
    clock = (await alpaca.get("/v2/clock")).json()
    await asyncio.sleep(0.01)
    await control.reset()
    second = (await alpaca.get("/v2/stocks/AAPL/quotes/latest")).json()["quote"]["t"]

    assert before_ns - 2 * NS_PER_S <= rfc3339_ns(first) <= after_ns - 2 * NS_PER_S  # t: "-2s"
    assert rfc3339_ns(first) + 2 * NS_PER_S == rfc3339_ns(clock["timestamp"])  # timestamp: now
    assert rfc3339_ns(clock["next_close"]) - rfc3339_ns(clock["timestamp"]) == 7200 * NS_PER_S
    assert rfc3339_ns(second) > rfc3339_ns(first)


async def test_a_posted_scenario_replaces_everything_and_reset_brings_the_start_one_back(
    emulator: EmulatorProcess, control: EmulatorControl, alpaca: httpx.AsyncClient
) -> None:
    await control.load_scenario({"stocks": {"quotes": {"TSLA": {
        "t": "2025-06-24T14:15:22.123456789Z", "bx": "V", "bp": 321.5, "bs": 1, "ax": "V",
        "ap": 321.75, "as": 2, "c": ["R"], "z": "C"}}}})  # fmt: skip
    posted = await alpaca.get(LATEST_QUOTES, params={"symbols": "AAPL,TSLA"})
    positions = await alpaca.get("/v2/positions")
    await control.reset()
    restored = await alpaca.get(LATEST_QUOTES, params={"symbols": "AAPL,TSLA"})

    assert set(posted.json()["quotes"]) == {"TSLA"}
    assert posted.json()["quotes"]["TSLA"]["t"] == "2025-06-24T14:15:22.123456789Z"
    assert positions.json() == []
    assert set(restored.json()["quotes"]) == {"AAPL"}


async def test_yaml_and_json_scenarios_load_the_same_market(
    emulator: EmulatorProcess, control: EmulatorControl, alpaca: httpx.AsyncClient, tmp_path: Path
) -> None:
    yaml_file = tmp_path / "market.yaml"
    yaml_file.write_text(
        "stocks:\n  quotes:\n    AAPL: {t: 2025-06-24T14:15:22Z, bx: V, bp: 229.90, bs: 2,"
        " ax: V, ap: 0.0001, as: 1, c: [R], z: C}\n",
        encoding="utf-8",
    )
    json_file = tmp_path / "market.json"
    json_file.write_text(
        '{"stocks": {"quotes": {"AAPL": {"t": "2025-06-24T14:15:22Z", "bx": "V", "bp": 229.90,'
        ' "bs": 2, "ax": "V", "ap": 0.0001, "as": 1, "c": ["R"], "z": "C"}}}}',
        encoding="utf-8",
    )

    await control.load_scenario_file(yaml_file)
    from_yaml = await alpaca.get("/v2/stocks/AAPL/quotes/latest")
    await control.load_scenario_file(json_file)
    from_json = await alpaca.get("/v2/stocks/AAPL/quotes/latest")

    assert from_yaml.text == from_json.text
    assert '"t":"2025-06-24T14:15:22Z"' in from_yaml.text  # a YAML timestamp stays its text
    assert '"bp":229.90,' in from_yaml.text
    assert '"ap":0.0001,' in from_yaml.text


REFUSED = [
    pytest.param("stock: {}", "stock: unknown section; expected one of", id="unknown-section"),
    pytest.param(f"stocks:\n  quotes:\n    AAPL: {QUOTE_YAML[:-1]}, bid: 1}}",
                 "stocks.quotes.AAPL.bid: unknown quote field", id="unknown-field"),
    pytest.param("stocks:\n  quotes:\n    AAPL: {bx: V, bp: 1, bs: 1, ax: V, ap: 2, as: 1, c: [R],"
                 " z: C}", "stocks.quotes.AAPL: the quote has no t; Alpaca's schema requires it",
                 id="quote-without-t"),
    pytest.param(f"stocks:\n  quotes:\n    AAPL: {QUOTE_YAML.replace('-2s', '2 seconds ago')}",
                 "stocks.quotes.AAPL.t: must be an RFC 3339 time or a relative one",
                 id="bad-time"),
    pytest.param(f"stocks:\n  quotes:\n    AAPL: {QUOTED_PRICE_YAML}",
                 "stocks.quotes.AAPL.bp: must be a number, not '229.90'", id="price-as-text"),
    pytest.param(f"stocks:\n  quotes:\n    aapl: {QUOTE_YAML}",
                 "stocks.quotes.aapl: not a stock symbol Alpaca accepts", id="lowercase-symbol"),
    pytest.param(f"options:\n  quotes:\n    AAPL: {QUOTE_YAML}",
                 "options.quotes.AAPL: not an OCC option symbol", id="not-occ"),
    pytest.param("stocks:\n  bars:\n    AAPL:\n      1Decade: []",
                 "stocks.bars.AAPL.1Decade: invalid timeframe", id="bad-timeframe"),
    pytest.param("account: {buying_power: 1000}",
                 "account.buying_power: must be a decimal number as a string", id="bare-decimal"),
    pytest.param("positions:\n  AAPL: {qty: '1'}", "positions.AAPL: the position has no",
                 id="position-without-figures"),
    pytest.param("config: {plan: gold}", "config: invalid config plan='gold'", id="bad-config"),
    pytest.param("faults:\n  - {at_s: 5, path: /v2/stocks/quotes/latest, kind: status_501}",
                 "faults[0]: kind must be one of", id="unknown-fault-kind"),
    pytest.param("faults:\n  - {after_s: 5, path: /v2/*, kind: status_500}",
                 "faults[0].after_s: unknown fault field", id="unknown-fault-field"),
    pytest.param("faults:\n  - {at_s: 5, until_s: 5, path: /v2/*, kind: status_500}",
                 "faults[0].until_s: must be later than at_s", id="until-before-at"),
    pytest.param(f"stocks:\n  quotes:\n    AAPL: {QUOTE_YAML}\n    AAPL: {QUOTE_YAML}",
                 "not valid YAML: the key 'AAPL' appears twice", id="duplicate-key"),
    pytest.param("- just a list", "a scenario must be an object", id="not-an-object"),
    pytest.param(f"stocks:\n  quotes_history:\n    AAPL: {QUOTE_YAML}",
                 "stocks.quotes_history.AAPL: must be a list of quotes", id="history-not-a-list"),
    pytest.param("stocks:\n  trades_history:\n    AAPL:\n      - {t: '-1s', x: V, p: 1.5, s: 1}",
                 "stocks.trades_history.AAPL[0]: the trade has no i, c, z",
                 id="history-trade-short"),
    pytest.param(f"calendar:\n  - {{{UNQUOTED_CLOSE}}}",
                 "calendar[0].close: must be an HH:MM time of day as a string", id="unquoted-time"),
    pytest.param(f"calendar:\n  - {{{SESSION_WITH_COLON}}}",
                 "calendar[0].session_open: must be an HHMM time of day", id="session-time-colon"),
    pytest.param(f"calendar:\n  - {{{CALENDAR_DAY_YAML}}}\n  - {{{CALENDAR_DAY_YAML}}}",
                 "calendar[1].date: 2027-01-14 is listed twice", id="calendar-day-twice"),
    pytest.param("calendar: {date: 2027-01-14}", "calendar: must be a list of market days",
                 id="calendar-not-a-list"),
]  # fmt: skip


@pytest.mark.parametrize(("text", "reason"), REFUSED)
async def test_a_refused_scenario_names_the_place_and_the_reason_and_changes_nothing(
    emulator: EmulatorProcess,
    control: EmulatorControl,
    alpaca: httpx.AsyncClient,
    text: str,
    reason: str,
) -> None:
    refused = await post_scenario(emulator, text, is_yaml=True)
    quotes = await alpaca.get(LATEST_QUOTES, params={"symbols": "AAPL,MSFT"})

    assert refused.status_code == 400
    assert refused.json()["error"].startswith(f"scenario (request body): {reason}")
    assert set(quotes.json()["quotes"]) == {"AAPL", "MSFT"}  # the example market, untouched


async def test_json_scenarios_are_strict_too(emulator: EmulatorProcess) -> None:
    duplicate = await post_scenario(emulator, '{"clock": {}, "clock": {}}', is_yaml=False)
    nan = await post_scenario(emulator, '{"account": {"bod_dtbp": NaN}}', is_yaml=False)

    assert "the key 'clock' appears twice" in duplicate.json()["error"]
    assert "NaN is not valid JSON" in nan.json()["error"]


# --- the fault timeline -----------------------------------------------------------------------


async def test_faults_start_and_end_at_their_times_after_the_load(
    control: EmulatorControl, alpaca: httpx.AsyncClient
) -> None:
    await control.load_scenario({"faults": [
        {"at_s": 0, "path": "/v2/clock", "kind": "status_503", "count": 1},
        {"at_s": 1, "until_s": 2, "path": "/v2/account", "kind": "status_500"},
    ]})  # fmt: skip
    loaded = time.monotonic()
    clock = [(await alpaca.get("/v2/clock")).status_code for _ in range(2)]
    account_before = (await alpaca.get("/v2/account")).status_code
    await asyncio.sleep(max(0.0, loaded + 1.3 - time.monotonic()))
    account_during = (await alpaca.get("/v2/account")).status_code
    active = await control.faults()
    await asyncio.sleep(max(0.0, loaded + 2.5 - time.monotonic()))
    account_after = (await alpaca.get("/v2/account")).status_code

    assert clock == [503, 200]
    assert (account_before, account_during, account_after) == (200, 500, 200)
    assert [(f["path"], f["count"]) for f in active] == [("/v2/account", None)]


async def test_a_new_scenario_or_a_reset_cancels_the_faults_still_to_come(
    control: EmulatorControl, alpaca: httpx.AsyncClient
) -> None:
    later = {"faults": [{"at_s": 0.5, "path": "/v2/clock", "kind": "status_500"}]}
    await control.load_scenario(later)
    await control.load_scenario({})
    await control.load_scenario(later)
    await control.reset()
    await asyncio.sleep(0.8)

    assert (await alpaca.get("/v2/clock")).status_code == 200
    assert await control.faults() == []


async def test_a_hang_that_ends_at_until_s_releases_the_requests_it_held(
    control: EmulatorControl, alpaca: httpx.AsyncClient
) -> None:
    await control.load_scenario(
        {"faults": [{"at_s": 0, "until_s": 1, "path": "/v2/clock", "kind": "hang"}]}
    )
    started = time.monotonic()

    held = await alpaca.get("/v2/clock", timeout=10)

    assert held.status_code == 200
    assert 0.5 < time.monotonic() - started < 5


# --- starting with a scenario -----------------------------------------------------------------


def test_the_emulator_refuses_to_start_with_a_bad_scenario_file(tmp_path: Path) -> None:
    bad = tmp_path / "bad.yaml"
    bad.write_text("clock: {timestamp: now, is_open: yes}\n", encoding="utf-8")

    with pytest.raises(EmulatorStartError) as refused:
        EmulatorProcess(scenario=bad).start()

    assert str(refused.value) == (
        f"emulator: refusing the scenario {bad}: clock: the clock has no next_open, next_close;"
        " Alpaca's schema requires them"
    )


@pytest.mark.parametrize(("scenario", "status"), [(EXAMPLE, 0), (Path("missing.yaml"), 2)])
def test_check_mode_checks_a_scenario_file_without_serving(scenario: Path, status: int) -> None:
    done = subprocess.run(
        [sys.executable, "-m", "tests.emulator", "--scenario", str(scenario), "--check"],
        cwd=REPO_ROOT,
        capture_output=True,
        text=True,
        timeout=30,
    )

    assert done.returncode == status, done.stderr
    if status:
        assert done.stderr.startswith("emulator: refusing the scenario missing.yaml: cannot read")


# --- the tables match Alpaca's documents ------------------------------------------------------

_JSON_TYPES = {
    shapes.Kind.NUMBER: "number", shapes.Kind.INTEGER: "integer", shapes.Kind.STRING: "string",
    shapes.Kind.TIME: "string", shapes.Kind.DATE: "string", shapes.Kind.DECIMAL: "string",
    shapes.Kind.UUID: "string", shapes.Kind.STRINGS: "array", shapes.Kind.BOOL: "boolean",
    shapes.Kind.OBJECT: "object", shapes.Kind.HOUR_MINUTE: "string",
    shapes.Kind.HOUR_MINUTE_COMPACT: "string",
}  # fmt: skip
_FORMATS = {"date-time": shapes.Kind.TIME, "date": shapes.Kind.DATE,
            "uuid": shapes.Kind.UUID, "decimal": shapes.Kind.DECIMAL}  # fmt: skip


def _documented_shapes(facts: dict[str, Any]) -> list[tuple[shapes.Shape, dict[str, Any], bool]]:
    """(shape, schema, exact): exact shapes hold precisely the schema's fields and required."""
    data, trading = facts["market-data"]["operations"], facts["trading"]["operations"]

    def ok(operations: dict[str, Any], key: str) -> dict[str, Any]:
        schema: dict[str, Any] = operations[f"GET {key}"]["ok"]["schema"]
        return schema

    option = ok(data, "/v1beta1/options/snapshots")["properties"]["snapshots"]
    option = option["additionalProperties"]
    contract = ok(trading, "/v2/options/contracts/{symbol_or_id}")
    return [
        (shapes.QUOTE, ok(data, "/v2/stocks/{symbol}/quotes/latest")["properties"]["quote"], True),
        (shapes.TRADE, ok(data, "/v2/stocks/{symbol}/trades/latest")["properties"]["trade"], True),
        (shapes.BAR, ok(data, "/v2/stocks/{symbol}/bars/latest")["properties"]["bar"], True),
        (shapes.SNAPSHOT, ok(data, "/v2/stocks/{symbol}/snapshot")["allOf"][1], True),
        (shapes.OPTION_SNAPSHOT, option, True),
        (shapes.OPTION_QUOTE, option["properties"]["latestQuote"], True),
        (shapes.OPTION_TRADE, option["properties"]["latestTrade"], True),
        (shapes.GREEKS, option["properties"]["greeks"], True),
        (shapes.CLOCK, ok(trading, "/v2/clock"), True),
        (shapes.CALENDAR_DAY, ok(trading, "/v2/calendar")["items"], True),
        (shapes.DELIVERABLE, contract["properties"]["deliverables"]["items"], True),
        (shapes.POSITION, ok(trading, "/v2/positions/{symbol_or_asset_id}"), True),
        (shapes.ACCOUNT, ok(trading, "/v2/account"), False),
        (shapes.ASSET, ok(trading, "/v2/assets/{symbol_or_asset_id}"), False),
        (shapes.OPTION_CONTRACT, contract, False),
    ]


def test_scenario_shapes_are_alpacas_schemas(facts: dict[str, Any]) -> None:
    for shape, schema, exact in _documented_shapes(facts):
        documented = schema["properties"]
        if exact:
            assert set(shape.fields) == set(documented), shape.name
            assert shape.required == set(schema.get("required", [])), shape.name
        else:  # merged over the emulator's defaults: every documented field may be set
            assert set(documented) <= set(shape.fields), shape.name
        for name, spec in shape.fields.items():
            if name in documented:
                _assert_field_matches(f"{shape.name}.{name}", spec, documented[name])
    extra_account_fields = set(shapes.ACCOUNT.fields) - set(_account_schema(facts)["properties"])
    assert extra_account_fields <= set(default_account())  # what Alpaca's answers carry


def _account_schema(facts: dict[str, Any]) -> dict[str, Any]:
    schema: dict[str, Any] = facts["trading"]["operations"]["GET /v2/account"]["ok"]["schema"]
    return schema


def _assert_field_matches(where: str, spec: shapes.Field, documented: dict[str, Any]) -> None:
    types = documented.get("type")
    nullable = isinstance(types, list) and "null" in types
    json_type = next(t for t in types if t != "null") if isinstance(types, list) else types
    if spec.many:
        assert json_type == "array", where
        documented = documented["items"]
        json_type = documented["type"]
    kind = spec.kind
    expected = "object" if isinstance(kind, shapes.Shape) else _JSON_TYPES[kind]
    assert (expected, spec.nullable) == (json_type, nullable), where
    if documented.get("format") in _FORMATS:
        assert kind is _FORMATS[documented["format"]], where
    enum = documented.get("enum") or documented.get("items", {}).get("enum")
    assert set(spec.enum) == set(enum or []), where
