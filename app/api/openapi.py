"""The OpenAPI document: the contract bots and CI code against.

Rendered from the routes' own declarations (`app/api/operation.py`: parameters, scopes, every
problem+json answer), plus what only the whole document holds: the Problem schema whose `code`
is the closed list, the request bodies' schemas, the two ways to present a key (and the
operations key), and what this deployment's settings change (anonymous data reads, the batch
size, OPS_ACCESS=key on /metrics and /ready).

    python -m app.api.openapi > openapi.json     # the committed copy, default settings
"""

from __future__ import annotations

import copy
import json
import sys
from collections.abc import Callable
from typing import Any

from fastapi import FastAPI
from fastapi.openapi.utils import get_openapi
from fastapi.routing import APIRoute
from pydantic import BaseModel

from app.api.operation import API_KEY, BEARER
from app.keys import Scope
from app.models.problem import Problem
from app.models.trading import OrderRequest
from app.settings import Settings

PROBLEM_REF = {"$ref": "#/components/schemas/Problem"}
OPS_KEY = "opsKey"
# Models only a request body names (FastAPI registers those of responses itself).
REQUEST_BODIES: tuple[type[BaseModel], ...] = (OrderRequest,)
SECURITY_SCHEMES = {
    BEARER: {
        "type": "http",
        "scheme": "bearer",
        "description": "`Authorization: Bearer gw_<key_id>_<secret>`, a key made with"
        " `python -m app.cli keys create --scopes ...`. Sent with X-API-Key, this one wins.",
    },
    API_KEY: {
        "type": "apiKey",
        "in": "header",
        "name": "X-API-Key",
        "description": "The same key as `X-API-Key: gw_<key_id>_<secret>`",
    },
    OPS_KEY: {
        "type": "http",
        "scheme": "bearer",
        "description": "`Authorization: Bearer <OPS_KEY>`: who may read `/metrics` and the"
        " details of `/ready` is the OPS_ACCESS setting. `open`: anyone, no key. `key`: this"
        " operations key (not an API key: compared with the setting, never looked up in the"
        " store); without it `/metrics` is 401 and `/ready` answers its status alone. `internal`:"
        " only on the internal listener (OPS_HOST:OPS_PORT); elsewhere likewise.",
    },
}
# What OPS_ACCESS=key asks of each operational route: /metrics needs the key, /ready answers
# without it too (its status alone, all a load balancer reads).
OPS_SECURITY: dict[str, list[dict[str, list[str]]]] = {
    "/metrics": [{OPS_KEY: []}],
    "/ready": [{}, {OPS_KEY: []}],
}
DESCRIPTION = (
    "A strict gateway in front of Alpaca: every value is Alpaca's, with provenance, or a typed "
    "problem+json error whose `code` is one of the closed list in the Problem schema. Nothing "
    "is fabricated.\n\nKeys carry scopes: `data:read` for market data, `trading:read` and "
    "`trading:write` for trading; each operation's security requirement names the one it "
    "needs. Every operation also answers 405 to another method on its path (with `Allow`), "
    "413 to a body over MAX_BODY_BYTES and 500 INTERNAL for a bug."
)


def _register(schemas: dict[str, Any], model: type[BaseModel]) -> None:
    """The model and the models it names, as components (never a `#/$defs/...` that a tool
    reading the document could not resolve)."""
    schema = model.model_json_schema(ref_template="#/components/schemas/{model}")
    for name, definition in {**schema.pop("$defs", {}), model.__name__: schema}.items():
        if schemas.setdefault(name, definition) != definition:
            raise ValueError(f"two schemas named {name} in the OpenAPI document")


def build_document(app: FastAPI, settings: Settings) -> dict[str, Any]:
    # A copy: the routes' declarations are shared objects, and the patches below are this
    # deployment's own.
    document = copy.deepcopy(
        get_openapi(
            title=app.title, version=app.version, description=DESCRIPTION, routes=app.routes
        )
    )
    components = document.setdefault("components", {})
    schemas = components.setdefault("schemas", {})
    models: tuple[type[BaseModel], ...] = (Problem, *REQUEST_BODIES)
    for model in models:
        _register(schemas, model)
    components["securitySchemes"] = SECURITY_SCHEMES
    for operation in (op for path in document["paths"].values() for op in path.values()):
        security = operation.get("security", [])
        if settings.gateway_anonymous_data and security[:1] == [{BEARER: [Scope.DATA_READ]}]:
            # GATEWAY_ANONYMOUS_DATA: a key is optional here (one that is sent is still checked).
            operation["security"] = [{}, *security]
    if settings.ops_access == "key":
        for path, security in OPS_SECURITY.items():
            document["paths"][path]["get"]["security"] = copy.deepcopy(security)
    for parameter in document["paths"]["/v1/stocks/quotes"]["get"]["parameters"]:
        if parameter["name"] == "symbols":
            # The route checks QUOTES_MAX_SYMBOLS itself; the document shows this deployment's.
            parameter["schema"]["maxItems"] = settings.quotes_max_symbols
    return document


def operation_id(route: APIRoute) -> str:
    """The route function's name (`latest_quote`, `submit_order`): what a generated client's
    methods are called, stable across FastAPI versions."""
    return route.name


def problem_openapi(app: FastAPI, settings: Settings) -> Callable[[], dict[str, Any]]:
    """`app.openapi`: the document, built once."""

    def build() -> dict[str, Any]:
        if app.openapi_schema is None:
            app.openapi_schema = build_document(app, settings)
        return app.openapi_schema

    return build


def contract_settings() -> Settings:
    """The settings the committed document is generated with: the defaults of everything that
    shapes the contract, whatever the environment says."""
    return Settings(
        _env_file=None,
        gateway_anonymous_data=False,
        quotes_max_symbols=Settings.model_fields["quotes_max_symbols"].default,
        ops_access=Settings.model_fields["ops_access"].default,
        log_level="WARNING",
    )


def main() -> None:
    # Imported here: the app factory imports this module.
    from app.main import create_app

    document = create_app(contract_settings()).openapi()
    sys.stdout.write(json.dumps(document, indent=2, ensure_ascii=False) + "\n")


if __name__ == "__main__":
    main()
