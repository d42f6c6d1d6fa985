"""Run the emulator as a child process for tests and the demo.

``EmulatorProcess`` starts ``python -m tests.emulator --port 0`` from the repository root,
learns the port from the one line the emulator prints, and stops the process on exit.
The child's stderr goes to a temporary file so a failed start can show why.
"""

from __future__ import annotations

import queue
import subprocess
import sys
import tempfile
import threading
from pathlib import Path
from types import TracebackType
from typing import IO, Self

from .scenario import REFUSED_SCENARIO_PREFIX
from .state import DEFAULT_KEY_ID, DEFAULT_SECRET_KEY

REPO_ROOT = Path(__file__).resolve().parents[2]
START_TIMEOUT_S = 10.0
STOP_TIMEOUT_S = 5.0
_READY_PREFIX = "emulator listening on "


class EmulatorStartError(RuntimeError):
    """The emulator did not report that it is listening."""


class EmulatorProcess:
    """A running emulator; use as a context manager or call :meth:`start` and :meth:`stop`."""

    def __init__(
        self,
        *,
        key_id: str = DEFAULT_KEY_ID,
        secret_key: str = DEFAULT_SECRET_KEY,
        host: str = "127.0.0.1",
        start_timeout_s: float = START_TIMEOUT_S,
        random_walk_seed: int | None = None,
        scenario: Path | None = None,
        port: int = 0,
    ) -> None:
        """``scenario``: a file loaded at start and at every reset (``--scenario``); a scenario
        the emulator refuses makes :meth:`start` raise with its reason. ``port`` 0 picks one."""
        self.key_id = key_id
        self.random_walk_seed = random_walk_seed
        self.scenario = scenario
        self.port = port
        self.secret_key = secret_key
        self.host = host
        self._start_timeout_s = start_timeout_s
        self._process: subprocess.Popen[str] | None = None
        self._stderr: IO[str] | None = None
        self._base_url: str | None = None

    @property
    def base_url(self) -> str:
        """``http://host:port`` of the running emulator."""
        if self._base_url is None:
            raise RuntimeError("the emulator is not running; call start() first")
        return self._base_url

    @property
    def auth_headers(self) -> dict[str, str]:
        """The two APCA headers the emulator accepts."""
        return {"APCA-API-KEY-ID": self.key_id, "APCA-API-SECRET-KEY": self.secret_key}

    def start(self) -> Self:
        """Start the process and wait (at most ``start_timeout_s``) for its listening line."""
        if self._process is not None:
            raise RuntimeError("the emulator is already started")
        # Open for the life of the child (it writes there), so closed in stop(), not a `with`.
        self._stderr = tempfile.TemporaryFile(mode="w+", encoding="utf-8")  # noqa: SIM115
        argv = [sys.executable, "-m", "tests.emulator", "--port", str(self.port)]
        argv += ["--host", self.host, "--key-id", self.key_id, "--secret-key", self.secret_key]
        if self.random_walk_seed is not None:
            argv += ["--random-walk", str(self.random_walk_seed)]
        if self.scenario is not None:
            argv += ["--scenario", str(self.scenario.resolve())]
        self._process = subprocess.Popen(
            argv, cwd=REPO_ROOT, stdout=subprocess.PIPE, stderr=self._stderr, text=True
        )
        line = self._first_line(self._process)
        if line is None or not line.startswith(_READY_PREFIX):
            self._terminate()
            message = self._failure_message(line, self._read_stderr())
            self.stop()
            raise EmulatorStartError(message)
        self._base_url = line.removeprefix(_READY_PREFIX).strip()
        return self

    def stop(self) -> None:
        """Terminate the process (kill it if it does not exit in time); safe to call twice."""
        self._terminate()
        process, self._process = self._process, None
        self._base_url = None
        if process is not None and process.stdout is not None:
            process.stdout.close()
        if self._stderr is not None:
            self._stderr.close()
            self._stderr = None

    def _terminate(self) -> None:
        process = self._process
        if process is None or process.poll() is not None:
            return
        process.terminate()
        try:
            process.wait(timeout=STOP_TIMEOUT_S)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.stop()

    def _first_line(self, process: subprocess.Popen[str]) -> str | None:
        """The first stdout line, read on a thread so the wait can time out."""
        lines: queue.Queue[str] = queue.Queue(maxsize=1)
        stdout = process.stdout
        if stdout is None:
            return None
        reader = threading.Thread(target=lambda: lines.put(stdout.readline()), daemon=True)
        reader.start()
        try:
            return lines.get(timeout=self._start_timeout_s) or None
        except queue.Empty:
            return None

    def _read_stderr(self) -> str:
        if self._stderr is None:
            return ""
        self._stderr.seek(0)
        return self._stderr.read()

    def _failure_message(self, line: str | None, stderr: str) -> str:
        if stderr.startswith(REFUSED_SCENARIO_PREFIX):
            return stderr.strip()  # the place and reason, as the user should see them
        seen = "nothing" if line is None else repr(line)
        stderr = stderr or "(empty)"
        return (
            f"the emulator did not report listening within {self._start_timeout_s} s "
            f"(stdout gave {seen}); its stderr:\n{stderr}"
        )
