"""The folders draw the data path; these checks keep imports flowing one way.

api -> reads -> (alpaca | cache | coalesce) -> (models | errors). Nothing
below the API knows the web framework, and nothing imports the API or the app factory.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

APP = Path(__file__).resolve().parents[2] / "app"
FRAMEWORK = ("fastapi", "starlette", "uvicorn")


def _imports(path: Path) -> set[str]:
    names: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module:
            names.add(node.module)
    return names


def _module(path: Path) -> str:
    return ".".join(path.relative_to(APP.parent).with_suffix("").parts)


BELOW_THE_API = sorted(
    p for p in APP.rglob("*.py") if not _module(p).startswith(("app.api", "app.main"))
)


@pytest.mark.parametrize("path", BELOW_THE_API, ids=_module)
def test_modules_below_the_api_do_not_know_the_web_framework(path: Path) -> None:
    framework = {n for n in _imports(path) if n.split(".")[0] in FRAMEWORK}
    assert not framework, f"{_module(path)} imports {framework}"


@pytest.mark.parametrize("path", BELOW_THE_API, ids=_module)
def test_nothing_below_the_api_imports_the_api_or_the_app(path: Path) -> None:
    upward = {n for n in _imports(path) if n.startswith(("app.api", "app.main"))}
    assert not upward, f"{_module(path)} imports {upward}"


@pytest.mark.parametrize(
    "path", [*sorted((APP / "alpaca").glob("*.py")), APP / "errors.py"], ids=_module
)
def test_alpaca_wire_code_and_errors_never_import_the_cache_or_routes(path: Path) -> None:
    # The Alpaca layer is translation only; caching and coalescing sit above it.
    above = {
        n for n in _imports(path) if n in ("app.cache", "app.coalesce") or n.startswith("app.reads")
    }
    assert not above, f"{_module(path)} imports {above}"


def test_only_the_transport_sees_aiohttp() -> None:
    users = {
        _module(p)
        for p in APP.rglob("*.py")
        if any(n.split(".")[0] == "aiohttp" for n in _imports(p))
    }
    # Two transports, one per kind of connection to Alpaca: REST requests (app.alpaca.transport)
    # and the long-lived stream websockets (app.streams.upstream), which authenticate by message
    # and live for hours, so they share neither the REST sessions nor their error mapping.
    assert users == {"app.alpaca.transport", "app.streams.upstream"}


@pytest.mark.parametrize(
    "path",
    [
        *sorted((APP / "alpaca").glob("*.py")),
        *sorted((APP / "models").glob("*.py")),
        APP / "cache.py",
        APP / "coalesce.py",
        APP / "errors.py",
    ],
    ids=_module,
)
def test_the_layers_under_the_read_path_never_reach_up_into_it(path: Path) -> None:
    upward = {n for n in _imports(path) if n.startswith(("app.reads", "app.orders", "app.state"))}
    assert not upward, f"{_module(path)} imports {upward}"


def test_the_read_path_lives_in_its_own_package() -> None:
    # One name per concept: the stock reads are app/reads/stocks.py, not a fourth market_data.
    assert not (APP / "market_data.py").exists()
    assert not (APP / "read_through.py").exists()
    assert {p.stem for p in (APP / "reads").glob("*.py")} >= {
        "read_through",
        "latest",
        "missing",
        "stocks",
        "options",
    }
