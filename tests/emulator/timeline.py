"""A scenario's fault timeline: each fault starts ``at_s`` after the load and may end ``until_s``.

Faults are added to the :class:`~faults.FaultRegistry` at their time, so from then on they
behave exactly like faults added through ``POST /_emulator/faults`` (a ``count`` runs out, and
``DELETE /_emulator/faults`` clears those already started). Loading a scenario or resetting
the emulator cancels what has not started yet.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Sequence

from .faults import FaultKind, FaultRegistry
from .scenario import TimedFault

_HOLDING_KINDS = frozenset({FaultKind.HANG, FaultKind.ACCEPT_THEN_HANG})


class FaultTimeline:
    """Timers that add (and remove) a scenario's faults; :meth:`cancel` stops them all."""

    def __init__(self) -> None:
        self._timers: list[asyncio.TimerHandle] = []

    def start(self, faults: FaultRegistry, timed: Sequence[TimedFault]) -> None:
        """Schedule ``timed`` from now; faults at 0 s are added at once."""
        self.cancel()
        for item in timed:
            if item.at_s == 0:
                self._begin(faults, item)
            else:
                self._later(float(item.at_s), self._begin, faults, item)

    def cancel(self) -> None:
        """Forget every fault not started yet and every end not reached yet."""
        for timer in self._timers:
            timer.cancel()
        self._timers.clear()

    def _begin(self, faults: FaultRegistry, item: TimedFault) -> None:
        fault = faults.add_from_wire(item.body)  # checked when the scenario was loaded
        if item.until_s is not None:
            self._later(float(item.until_s - item.at_s), self._end, faults, fault.id, fault.kind)

    def _end(self, faults: FaultRegistry, fault_id: str, kind: FaultKind) -> None:
        faults.remove(fault_id)
        if kind in _HOLDING_KINDS:
            # The outage is over: requests it holds go on (as DELETE /_emulator/faults does).
            faults.release_hung()

    def _later(self, delay_s: float, callback: Callable[..., None], *args: object) -> None:
        loop = asyncio.get_running_loop()
        self._timers.append(loop.call_later(delay_s, callback, *args))
