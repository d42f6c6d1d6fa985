"""What the test harness's process wrappers (a served gateway, nginx, a Redis Cluster) share:
leaving the `with` block stops whatever was started, however the block ended."""

from __future__ import annotations

from types import TracebackType


class StopsOnExit:
    """A context manager whose exit calls `stop()`; the subclass says how it stops."""

    def stop(self) -> None:
        raise NotImplementedError

    def __exit__(
        self,
        kind: type[BaseException] | None,
        error: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()
