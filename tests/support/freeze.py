"""Freezing a private server with SIGSTOP: a hung dependency (it accepts TCP connections, as the
kernel does for it, and then never answers), which is worse than a dead one (refused at once).

Always used as a context manager: SIGCONT is sent on the way out whatever happened, before any
fixture tries to close a pool or a client against the frozen server.
"""

from __future__ import annotations

import os
import signal
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from pathlib import Path

from tests.conftest import PrivatePostgres, PrivateRedis


def _children(parent: int) -> list[int]:
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
        except OSError:
            continue  # gone meanwhile
        # "pid (comm) state ppid ...": comm may hold spaces and parentheses.
        fields = stat.rsplit(")", 1)[1].split()
        if int(fields[1]) == parent:
            found.append(int(entry.name))
    return found


def postgres_pids(server: PrivatePostgres) -> list[int]:
    """The postmaster first, then every process it forked (backends, checkpointer, ...)."""
    postmaster = int((server.data_dir / "postmaster.pid").read_text().split()[0])
    return [postmaster, *_children(postmaster)]


@contextmanager
def frozen_pids(pids: list[int]) -> Iterator[None]:
    stopped: list[int] = []
    try:
        for pid in pids:
            os.kill(pid, signal.SIGSTOP)
            stopped.append(pid)
        yield
    finally:
        for pid in reversed(stopped):
            with suppress(ProcessLookupError):
                os.kill(pid, signal.SIGCONT)


@contextmanager
def frozen_postgres(server: PrivatePostgres) -> Iterator[None]:
    """SIGSTOP the postmaster (so it forks nothing new) and its children; SIGCONT on exit."""
    with frozen_pids(postgres_pids(server)):
        yield


@contextmanager
def frozen_redis(server: PrivateRedis) -> Iterator[None]:
    assert server.process is not None, "start the private redis-server first"
    with frozen_pids([server.process.pid]):
        yield
