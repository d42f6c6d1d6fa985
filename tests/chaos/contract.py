"""What a client may be told: the README's error-code table, read from the README itself.

A chaos answer is *typed* when it is a 2xx, or a problem+json whose `code` is in that table
with the HTTP status the table gives it (and the body's own `status` agrees). Reading the
README rather than `app.errors` makes the figure hold the gateway to what users were promised.
"""

from __future__ import annotations

import json
import re
from functools import cache
from pathlib import Path

README = Path(__file__).resolve().parents[2] / "README.md"
PROBLEM_JSON = "application/problem+json"
_TABLE_HEADING = "#### Error codes"
_ROW = re.compile(r"^\| `([A-Z_]+)` \| (\d{3}) \|")


@cache
def documented_codes(readme: Path = README) -> dict[str, int]:
    """Code -> HTTP status, from the table under "#### Error codes"."""
    lines = readme.read_text(encoding="utf-8").splitlines()
    start = lines.index(_TABLE_HEADING)
    codes: dict[str, int] = {}
    for line in lines[start + 1 :]:
        if line.startswith("#"):
            break
        if match := _ROW.match(line):
            codes[match.group(1)] = int(match.group(2))
    if not codes:
        raise RuntimeError(f"no error-code table under {_TABLE_HEADING!r} in {readme}")
    return codes


def problem_code(status: int, content_type: str, body: bytes) -> tuple[str | None, bool]:
    """(the problem's code if any, whether the answer is typed). 2xx answers are typed."""
    if 200 <= status < 300:
        return None, True
    if content_type.split(";")[0].strip().lower() != PROBLEM_JSON:
        return None, False
    try:
        doc = json.loads(body)
    except ValueError:
        return None, False
    if not isinstance(doc, dict) or not isinstance(doc.get("code"), str):
        return None, False
    code: str = doc["code"]
    typed = documented_codes().get(code) == status and doc.get("status") == status
    return code, typed
