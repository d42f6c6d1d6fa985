"""Extract the facts the tests use from Alpaca's OpenAPI documents into ``alpaca_facts.json``.

    python -m tests.contract.extract_alpaca_facts [--openapi-dir DIR]

Alpaca's own documents (``market-data-api.json``, ``trading-api.json``) are not part of this
repository. What the tests need from them is written, in our own derived form, to
``tests/contract/alpaca_facts.json``, which is committed; the tests read only that file. For each
operation the emulator serves (``tests/emulator/routes.py``) it records the path, method and
parameters (name, location, required, reduced schema) and the 200 answer's headers and schema,
reduced to a self-contained JSON Schema (draft 4): ``$ref`` inlined, OpenAPI's ``nullable`` made
a type union, prose and vendor extensions dropped. It also keeps the few example payloads and
enums the tests use, and a header saying where it all came from (titles, versions and sha256 of
the two documents, the date, the upstream origin).

The documents are read from ``--openapi-dir``, else ``ALPACA_OPENAPI_DIR``, else the
``alpaca-openapi`` directory of the shared docs beside the repository. Run it again when
Alpaca's documents or the emulator's route table change; ``test_emulator_openapi.py`` fails
while the committed file differs from what the documents give (where they are available).
"""

from __future__ import annotations

import argparse
import copy
import hashlib
import json
import os
import sys
from collections.abc import Mapping
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

Json = Any  # parsed JSON
JsonObject = dict[str, Any]

REPO_ROOT = Path(__file__).resolve().parents[2]
FACTS_PATH = Path(__file__).with_name("alpaca_facts.json")
DEFAULT_OPENAPI_DIR = REPO_ROOT.parent.joinpath("shared", "alpaca-openapi")
OPENAPI_DIR_VARIABLE = "ALPACA_OPENAPI_DIR"
# ApiFamily values (tests/emulator/responses.py) -> Alpaca's file name for that API.
DOCUMENTS = {"market-data": "market-data-api.json", "trading": "trading-api.json"}
ORIGIN = {
    "what": "Alpaca's published OpenAPI documents of its Market Data and Trading REST APIs",
    "copied_in": "alpacahq/alpaca-mcp-server (MIT), src/alpaca_mcp_server/specs/",
    "commit": "88722ce0ead33a5c69c41f9bfe5deec0a759cbf6",
}

# Examples are kept only where a test uses them; each note says which test.
# 200-answer examples: the contract test stores every served market-data example in the
# emulator and expects it back; test_parsers.py feeds the stock ones to our parsers; the
# account example gives the shape of the emulator's default account.
_TRADING_OK_EXAMPLES = {("GET", "/v2/account")}
# Examples that sit on component schemas: the parsers' wire samples (quote, trade, bar, clock,
# asset) and what the contract test stores for clock, asset and positions.
_SCHEMA_EXAMPLES: dict[str, dict[str, tuple[str, ...]]] = {
    "market-data": {
        "stock_quote": ("example",),
        "stock_trade": ("example",),
        "stock_bar": ("example",),
    },
    "trading": {
        "legacy_clock": ("example",),
        "Assets": ("x-examples", "example-1"),
        "Position": ("x-examples", "example-2"),
    },
}
# The option contract and the calendar day have no whole example: their properties' examples
# make one (contract test).
_PROPERTY_EXAMPLES = {"trading": ("OptionContract", "legacy_calendar_day")}
# Alpaca's not-found error code, from its one documented 404 example (test_parsers.py).
_ERROR_EXAMPLES = {("trading", "GET", "/v2/options/contracts/{symbol_or_id}"): "404"}
# The feeds the emulator accepts must be exactly these enums (contract test).
_SCHEMA_ENUMS = {"market-data": ("stock_latest_feed", "stock_historical_feed")}

_HTTP_METHODS = frozenset({"get", "put", "post", "delete", "options", "head", "patch", "trace"})

# Draft 4 keywords, by what their value holds. Anything else must be named in _DROPPED, so a
# keyword that would validate is never lost without a decision.
_SCHEMA_MAPS = frozenset({"properties", "patternProperties"})
_SCHEMA_LISTS = frozenset({"allOf", "anyOf", "oneOf"})
_SCHEMA_VALUES = frozenset({"items", "additionalProperties", "additionalItems", "not"})
_CONSTRAINTS = frozenset(
    {
        "type", "enum", "format", "minimum", "maximum", "exclusiveMinimum", "exclusiveMaximum",
        "multipleOf", "minLength", "maxLength", "pattern", "minItems", "maxItems",
        "uniqueItems", "minProperties", "maxProperties",
    }
)  # fmt: skip
# Prose, examples and OpenAPI-only annotations: none of them constrains a JSON value in draft 4.
# `nullable` is not lost: it becomes part of `type`.
_DROPPED = frozenset(
    {
        "description", "title", "example", "examples", "default", "deprecated", "readOnly",
        "writeOnly", "externalDocs", "xml", "discriminator", "nullable",
    }
)  # fmt: skip


def openapi_dir() -> Path:
    """Where Alpaca's documents are looked for when no directory is given."""
    configured = os.environ.get(OPENAPI_DIR_VARIABLE)
    return Path(configured) if configured else DEFAULT_OPENAPI_DIR


def documents_present(directory: Path) -> bool:
    return all((directory / name).is_file() for name in DOCUMENTS.values())


class _Document:
    """One OpenAPI 3.0 document, read for facts."""

    def __init__(self, spec: JsonObject) -> None:
        self.spec = spec

    def resolve(self, node: JsonObject) -> JsonObject:
        """The node a (chain of) ``$ref`` points at; siblings of ``$ref`` are ignored."""
        while "$ref" in node:
            node = self._target(node["$ref"])
        return node

    def _target(self, ref: str) -> JsonObject:
        if not ref.startswith("#/"):
            raise ValueError(f"{ref}: only references inside the document are supported")
        target: Json = self.spec
        for part in ref.removeprefix("#/").split("/"):
            target = target[part.replace("~1", "/").replace("~0", "~")]
        if not isinstance(target, dict):
            raise ValueError(f"{ref} does not point at an object")
        return target

    def schema(self, node: JsonObject, seen: tuple[str, ...] = ()) -> JsonObject:
        """The node as self-contained JSON Schema (draft 4), with the same validation meaning.

        Draft 4 ignores the siblings of ``$ref``, so a reference is replaced by its target.
        ``nullable: true`` next to a single ``type`` adds ``"null"`` to it, as OpenAPI 3.0 means.
        """
        if "$ref" in node:
            ref = node["$ref"]
            if ref in seen:
                raise ValueError(f"{ref} is recursive: teach the extractor local definitions")
            return self.schema(self._target(ref), (*seen, ref))
        reduced: JsonObject = {}
        for key, value in node.items():
            if key in _SCHEMA_MAPS:
                reduced[key] = {name: self.schema(sub, seen) for name, sub in value.items()}
            elif key in _SCHEMA_LISTS:
                reduced[key] = [self.schema(sub, seen) for sub in value]
            elif key in _SCHEMA_VALUES:
                reduced[key] = self._schema_value(value, seen)
            elif key == "required":
                reduced[key] = sorted(value)  # a set in meaning; sorted for stable diffs
            elif key in _CONSTRAINTS:
                reduced[key] = copy.deepcopy(value)
            elif key not in _DROPPED and not key.startswith("x-"):
                raise ValueError(f"schema keyword {key!r} is unknown to the extractor")
        if node.get("nullable") is True and isinstance(reduced.get("type"), str):
            reduced["type"] = [reduced["type"], "null"]
        return reduced

    def _schema_value(self, value: Json, seen: tuple[str, ...]) -> Json:
        if isinstance(value, bool):
            return value
        if isinstance(value, list):
            return [self.schema(sub, seen) for sub in value]
        return self.schema(value, seen)

    def operation(self, path: str, method: str) -> JsonObject:
        operation: JsonObject = self.spec["paths"][path][method.lower()]
        return operation

    def parameters(self, path: str, method: str) -> list[JsonObject]:
        """Path-level parameters, overridden by operation-level ones of the same name and place."""
        declared = [*self.spec["paths"][path].get("parameters", [])]
        declared += self.operation(path, method).get("parameters", [])
        merged: dict[tuple[str, str], JsonObject] = {}
        for parameter in map(self.resolve, declared):
            merged[parameter["in"], parameter["name"]] = {
                "in": parameter["in"],
                "name": parameter["name"],
                "required": parameter.get("required", False) is True,
                "schema": self.schema(parameter.get("schema", {})),
            }
        return [merged[key] for key in sorted(merged)]

    def response(self, path: str, method: str, status: str) -> JsonObject | None:
        response = self.operation(path, method).get("responses", {}).get(status)
        return None if response is None else self.resolve(response)


def _first_example(document: _Document, content: JsonObject) -> Json:
    """The media type's ``example``, else the value of its first ``examples`` entry."""
    if "example" in content:
        return copy.deepcopy(content["example"])
    return copy.deepcopy(document.resolve(next(iter(content["examples"].values())))["value"])


def _operation_facts(
    document: _Document, family: str, method: str, path: str, *, with_example: bool
) -> JsonObject:
    facts: JsonObject = {"parameters": document.parameters(path, method)}
    ok = document.response(path, method, "200")
    if ok is not None:
        content = ok["content"]["application/json"]
        facts["ok"] = {
            "headers": sorted(ok.get("headers", {})),
            "schema": document.schema(content["schema"]),
        }
        if with_example:
            facts["ok"]["example"] = _first_example(document, content)
    status = _ERROR_EXAMPLES.get((family, method, path))
    if status is not None:
        error = document.response(path, method, status)
        if error is None:
            raise ValueError(f"{method} {path} documents no {status} answer")
        facts["error_examples"] = {
            status: _first_example(document, error["content"]["application/json"])
        }
    return facts


def _schema_examples(document: _Document, family: str) -> JsonObject:
    schemas = document.spec["components"]["schemas"]
    examples: JsonObject = {}
    for name, location in _SCHEMA_EXAMPLES.get(family, {}).items():
        value: Json = schemas[name]
        for key in location:
            value = value[key]
        examples[name] = copy.deepcopy(value)
    for name in _PROPERTY_EXAMPLES.get(family, ()):
        properties = schemas[name]["properties"]
        examples[name] = {
            prop: copy.deepcopy(schema["example"])
            for prop, schema in properties.items()
            if "example" in schema
        }
    return examples


def _family_facts(document: _Document, family: str) -> JsonObject:
    from tests.emulator.routes import ROUTES  # the emulator only when extracting, not loading

    documented = {
        path: sorted(method for method in item if method in _HTTP_METHODS)
        for path, item in document.spec["paths"].items()
    }
    operations: JsonObject = {}
    for route in ROUTES:
        if route.family.value != family:
            continue
        if route.method.lower() not in documented.get(route.path, []):
            continue  # not in Alpaca's document: the contract test reports it
        with_example = family == "market-data" or (route.method, route.path) in _TRADING_OK_EXAMPLES
        operations[f"{route.method} {route.path}"] = _operation_facts(
            document, family, route.method, route.path, with_example=with_example
        )
    schemas = document.spec["components"]["schemas"]
    return {
        "documented": documented,
        "operations": operations,
        "schema_enums": {
            name: list(schemas[name]["enum"]) for name in _SCHEMA_ENUMS.get(family, ())
        },
        "schema_examples": _schema_examples(document, family),
    }


def extract(directory: Path, extracted_on: str) -> JsonObject:
    """The facts of the two documents in ``directory``."""
    documents: JsonObject = {}
    facts: JsonObject = {}
    for family, name in DOCUMENTS.items():
        raw = (directory / name).read_bytes()
        spec: JsonObject = json.loads(raw)
        documents[family] = {
            "file": name,
            "openapi": spec["openapi"],
            "title": spec["info"]["title"],
            "version": spec["info"]["version"],
            "sha256": hashlib.sha256(raw).hexdigest(),
        }
        facts[family] = _family_facts(_Document(spec), family)
    facts["about"] = {
        "what": (
            "Facts of Alpaca's REST APIs that the tests check the emulator and the parsers "
            "against, derived from Alpaca's OpenAPI documents: not a copy of them"
        ),
        "derived_by": "python -m tests.contract.extract_alpaca_facts --openapi-dir DIR",
        "extracted_on": extracted_on,
        "origin": ORIGIN,
        "documents": documents,
    }
    return facts


def without_date(facts: Mapping[str, Json]) -> JsonObject:
    """The facts minus the extraction date, which is all a re-extraction may change."""
    dateless = copy.deepcopy(dict(facts))
    dateless.get("about", {}).pop("extracted_on", None)
    return dateless


def render(facts: Mapping[str, Json]) -> str:
    return json.dumps(facts, indent=1, sort_keys=True, ensure_ascii=False) + "\n"


def load_facts(path: Path = FACTS_PATH) -> JsonObject:
    facts: JsonObject = json.loads(path.read_text(encoding="utf-8"))
    return facts


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m tests.contract.extract_alpaca_facts",
        description="Write the facts the tests use from Alpaca's OpenAPI documents.",
    )
    parser.add_argument(
        "--openapi-dir",
        type=Path,
        default=openapi_dir(),
        help=f"directory holding {' and '.join(DOCUMENTS.values())} "
        f"(default: ${OPENAPI_DIR_VARIABLE}, else {DEFAULT_OPENAPI_DIR})",
    )
    parser.add_argument("--output", type=Path, default=FACTS_PATH, help="default: %(default)s")
    args = parser.parse_args(argv)
    if not documents_present(args.openapi_dir):
        parser.error(f"{args.openapi_dir} does not hold {' and '.join(DOCUMENTS.values())}")

    facts = extract(args.openapi_dir, datetime.now(UTC).date().isoformat())
    output: Path = args.output
    if output.is_file() and without_date(load_facts(output)) == without_date(facts):
        # Unchanged facts keep their date, so a re-run leaves no diff to review.
        facts["about"]["extracted_on"] = load_facts(output)["about"]["extracted_on"]
    output.write_text(render(facts), encoding="utf-8")
    count = sum(len(facts[family]["operations"]) for family in DOCUMENTS)
    sys.stdout.write(f"{output}: facts of {count} operations\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
