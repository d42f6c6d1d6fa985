"""Scenario files as JSON documents: YAML or JSON text read strictly, numbers kept exactly.

Both readers give the emulator's own JSON values (:mod:`wire_json`): a number with a fraction
becomes a ``Decimal`` built from its text, so ``229.90`` in a scenario is answered as ``229.90``.
YAML's implicit types are narrowed to JSON's: a timestamp (``t: 2025-06-24T14:15:22Z``) or a
date stays the text it was written as, and ``.inf``/``.nan`` are refused. A key written twice
is refused in both formats: YAML and Python's JSON would otherwise keep the last one silently.

PyYAML is imported only when a YAML scenario is read, so JSON scenarios work without it.
"""

from __future__ import annotations

import importlib
import json
from decimal import Decimal, InvalidOperation
from pathlib import Path
from typing import Any

from .wire_json import Json, WireJsonError

YAML_SUFFIXES = (".yaml", ".yml")


class ScenarioSyntaxError(ValueError):
    """The text is not a JSON or YAML document the emulator can read."""


def read_scenario_file(path: Path) -> Json:
    """The document in ``path``: YAML for ``.yaml``/``.yml``, JSON otherwise."""
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise ScenarioSyntaxError(f"cannot read the file: {exc}") from exc
    return parse_scenario_text(text, is_yaml=path.suffix.lower() in YAML_SUFFIXES)


def parse_scenario_text(text: str, *, is_yaml: bool) -> Json:
    """One JSON or YAML document; ScenarioSyntaxError says where it breaks."""
    return _parse_yaml(text) if is_yaml else _parse_json(text)


def _parse_json(text: str) -> Json:
    try:
        value: Json = json.loads(
            text,
            parse_float=Decimal,
            parse_constant=_refuse_constant,
            object_pairs_hook=_unique_keys,
        )
    except json.JSONDecodeError as exc:
        raise ScenarioSyntaxError(f"not valid JSON: {exc}") from exc
    except WireJsonError as exc:
        raise ScenarioSyntaxError(str(exc)) from exc
    return value


def _refuse_constant(name: str) -> Json:
    raise WireJsonError(f"{name} is not valid JSON")


def _unique_keys(pairs: list[tuple[str, Json]]) -> dict[str, Json]:
    found: dict[str, Json] = {}
    for key, value in pairs:
        if key in found:
            raise WireJsonError(f"the key {key!r} appears twice in one object")
        found[key] = value
    return found


def _parse_yaml(text: str) -> Json:
    # Imported here: only YAML scenarios need PyYAML (requirements-dev.txt). It ships no type
    # stubs, so it is typed as Any and every value it returns is narrowed by _as_json.
    yaml: Any = importlib.import_module("yaml")
    try:
        documents = list(yaml.load_all(text, Loader=_loader_class(yaml)))
    except yaml.YAMLError as exc:
        raise ScenarioSyntaxError(f"not valid YAML: {exc}") from exc
    if len(documents) != 1:
        raise ScenarioSyntaxError(f"expected one YAML document, found {len(documents)}")
    return _as_json(documents[0], "")


def _loader_class(yaml: Any) -> Any:
    """A SafeLoader whose floats are Decimals, timestamps text, and duplicate keys errors."""
    error = yaml.constructor.ConstructorError

    def unique_keys(loader: Any, node: Any) -> dict[object, object]:
        merge_tag = "tag:yaml.org,2002:merge"
        own = sum(1 for key_node, _ in node.value if key_node.tag != merge_tag)
        loader.flatten_mapping(node)  # merged pairs (<<: *base) go first; own keys override them
        inherited = len(node.value) - own
        mapping: dict[object, object] = {}
        own_keys: set[object] = set()
        for index, (key_node, value_node) in enumerate(node.value):
            key = loader.construct_object(key_node, deep=True)
            if index >= inherited:
                try:
                    repeated = key in own_keys
                except TypeError:
                    raise error(
                        None, None, f"the key {key!r} is not a string", key_node.start_mark
                    ) from None
                if repeated:
                    raise error(None, None, f"the key {key!r} appears twice", key_node.start_mark)
                own_keys.add(key)
            mapping[key] = loader.construct_object(value_node, deep=True)
        return mapping

    def exact_float(loader: Any, node: Any) -> Decimal:
        text = str(loader.construct_scalar(node)).replace("_", "")
        try:
            number = Decimal(text)
        except InvalidOperation:
            number = Decimal("NaN")
        if not number.is_finite():
            raise error(None, None, f"{text!r} is not a JSON number", node.start_mark)
        return number

    def as_text(loader: Any, node: Any) -> str:
        return str(loader.construct_scalar(node))

    loader: Any = type("ScenarioLoader", (yaml.SafeLoader,), {})
    loader.add_constructor("tag:yaml.org,2002:map", unique_keys)
    loader.add_constructor("tag:yaml.org,2002:float", exact_float)
    loader.add_constructor("tag:yaml.org,2002:timestamp", as_text)
    return loader


def _as_json(value: object, where: str) -> Json:
    """YAML's values narrowed to JSON's (string keys only); ScenarioSyntaxError otherwise."""
    if value is None or isinstance(value, (bool, int, Decimal, str)):
        return value
    if isinstance(value, list):
        return [_as_json(item, f"{where}[{index}]") for index, item in enumerate(value)]
    if isinstance(value, dict):
        converted: dict[str, Json] = {}
        for key, item in value.items():
            if not isinstance(key, str):
                at = where or "the top level"
                raise ScenarioSyntaxError(f"{at}: the key {key!r} must be a string (quote it)")
            converted[key] = _as_json(item, f"{where}.{key}" if where else key)
        return converted
    raise ScenarioSyntaxError(f"{where}: {type(value).__name__} values are not JSON")
