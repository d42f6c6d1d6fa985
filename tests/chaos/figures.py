"""One line of figures per scenario, with its goals, readable by people and by scripts.

    redis_restart  PASS  failed_servable=0 (goal 0)  p99_outage_ms=21.4  cache_back_s=0.31 ...

Goals come first, each as `name=value (goal <=limit)`, marked MISSED when it is not met; the
other figures follow as `name=value`. `--json` prints the same result as one JSON object.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

Figure = int | float | str


@dataclass(frozen=True)
class Goal:
    """Met when `value <= limit` (every goal here is a count or a time that must stay low)."""

    name: str
    value: float
    limit: float
    why: str = ""  # what a miss means, for the failure message

    @property
    def met(self) -> bool:
        return self.value <= self.limit

    def text(self) -> str:
        limit = "0" if self.limit == 0 else f"<={_number(self.limit)}"
        mark = "" if self.met else ": MISSED"
        return f"{self.name}={_number(self.value)} (goal {limit}{mark})"


@dataclass
class Result:
    scenario: str
    goals: list[Goal] = field(default_factory=list)
    figures: dict[str, Figure] = field(default_factory=dict)

    def goal(self, name: str, value: float, limit: float = 0, why: str = "") -> None:
        self.goals.append(Goal(name, value, limit, why))

    @property
    def passed(self) -> bool:
        return all(g.met for g in self.goals)

    def line(self) -> str:
        parts = [f"{self.scenario:<22}", "PASS" if self.passed else "FAIL"]
        parts += [g.text() for g in self.goals]
        parts += [f"{name}={_number(value)}" for name, value in self.figures.items()]
        return "  ".join(parts)

    def missed(self) -> str:
        """The goals missed, with what each miss means (empty when all were met)."""
        return "; ".join(
            f"{g.name}={_number(g.value)} > {_number(g.limit)}" + (f" ({g.why})" if g.why else "")
            for g in self.goals
            if not g.met
        )

    def as_json(self) -> dict[str, Any]:
        return {
            "scenario": self.scenario,
            "passed": self.passed,
            "goals": {
                g.name: {"value": g.value, "limit": g.limit, "met": g.met} for g in self.goals
            },
            "figures": dict(self.figures),
        }


def _number(value: Figure) -> str:
    if isinstance(value, float):
        return f"{value:.0f}" if value.is_integer() and abs(value) >= 1e3 else f"{value:g}"
    return str(value)
