"""Every setting the gateway reads is documented in config/.env.example, and the example
loads to the defaults (so copying it changes nothing until someone edits it)."""

from __future__ import annotations

import re
from pathlib import Path

from app.settings import Settings

EXAMPLE = Path(__file__).resolve().parents[2] / "config" / ".env.example"


def test_every_setting_is_in_the_example_file() -> None:
    documented = set(re.findall(r"^#?\s*([A-Z][A-Z0-9_]+)=", EXAMPLE.read_text(), re.MULTILINE))
    missing = sorted(
        name.upper() for name in Settings.model_fields if name.upper() not in documented
    )
    assert not missing, f"undocumented settings: {missing}"


def test_the_example_file_loads_to_the_defaults() -> None:
    from_example = Settings(_env_file=str(EXAMPLE))  # type: ignore[call-arg]
    defaults = Settings(_env_file=None)  # type: ignore[call-arg]
    assert from_example.model_dump() == defaults.model_dump()
