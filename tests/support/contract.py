"""The project's own contract as the tests read it: the README's "Error codes" table.

Read from the repository, never from outside it, so a fresh clone checks itself. The table is
what users code against; tests compare the code (`ErrorCode`, the OpenAPI document, the problem
bodies) with it, not with the code itself.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[2]
README = REPO_ROOT / "README.md"
_ROW = re.compile(
    r"^\|\s*`(?P<code>[A-Z_]+)`\s*\|\s*(?P<status>\d{3})\s*\|\s*(?P<retry>yes|no)\s*\|"
)


@dataclass(frozen=True)
class ContractRow:
    status: int
    retryable: bool


def error_table() -> dict[str, ContractRow]:
    """code -> (status, retryable) from the README's "#### Error codes" section."""
    text = README.read_text(encoding="utf-8")
    section = text.split("#### Error codes", 1)
    if len(section) != 2:
        raise AssertionError(f"{README} has no '#### Error codes' section")
    rows: dict[str, ContractRow] = {}
    for line in section[1].split("\n#", 1)[0].splitlines():
        if match := _ROW.match(line.strip()):
            rows[match["code"]] = ContractRow(int(match["status"]), match["retry"] == "yes")
    if len(rows) < 20:
        raise AssertionError(f"could not read the error-code table from {README}")
    return rows
