"""``python -m tests.emulator.kit``: the gateway in front of the Alpaca emulator, for a bot's CI.

Starts the emulator (with ``--scenario FILE`` if given), then the gateway as ``make run`` starts
it (``python -m app.serve``) pointed at the emulator, with its own key store (the embedded
SQLite file in ``--data-dir``, a temporary directory unless given) and its in-process cache,
makes a key with every scope with the CLI, and prints, once both answer::

    GATEWAY_URL=http://127.0.0.1:8000
    GATEWAY_KEY=gw_...
    EMULATOR_URL=http://127.0.0.1:PORT

on stdout (and into ``--env-file``), ready for ``>> "$GITHUB_ENV"``. Logs go to stderr. It
runs until SIGTERM or Ctrl-C, then stops both and removes its temporary directory.

``--detach`` starts all that in the background, waits until it is ready, prints the same lines
plus ``KIT_PID`` (``kill $KIT_PID`` stops it) and ``KIT_LOG`` (the processes' output), and
exits 0. The gateway runs from ``--data-dir`` with ``DATABASE_URL`` and ``REDIS_URL`` removed, so
neither a developer's ``config/.env`` nor their stores are touched; other gateway settings
(``LOG_LEVEL``, ``CACHE_QUOTE_TTL_S`` ...) pass through from the environment.

Exit status: 0 stopped by a signal, 1 a process died or did not start, 2 a refused scenario or
bad arguments.
"""

from __future__ import annotations

import argparse
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path
from types import FrameType
from urllib.parse import urlsplit

from .gateway_process import (
    ALL_SCOPES,
    REPO_ROOT,
    GatewayProcess,
    GatewayStartError,
    create_key,
    emulator_env,
    free_port,
    reachable_host,
    repo_pythonpath,
)
from .process import EmulatorProcess, EmulatorStartError
from .scenario import REFUSED_SCENARIO_PREFIX

EXIT_FAILED = 1
EXIT_USAGE = 2
DETACH_TIMEOUT_S = 120.0
EMULATOR_START_TIMEOUT_S = 30.0
# The kit's gateway has its own stores: these would point it at a developer's real ones.
_STORE_SETTINGS = ("DATABASE_URL", "REDIS_URL", "EMBEDDED_DB_PATH")
_PATH_OPTIONS = ("--scenario", "--data-dir", "--env-file")


def _parse_args(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m tests.emulator.kit",
        description="The gateway in front of the Alpaca emulator, for a bot's tests.",
    )
    parser.add_argument("--scenario", type=Path, metavar="FILE", help="YAML or JSON scenario")
    parser.add_argument("--host", default="127.0.0.1", help="address both servers bind")
    parser.add_argument("--port", type=int, default=8000, help="gateway port; 0 picks a free one")
    parser.add_argument("--emulator-port", type=int, default=0, help="0 (default) picks one")
    parser.add_argument("--data-dir", type=Path, help="the gateway's store (default: a temp dir)")
    parser.add_argument("--env-file", type=Path, help="also write the printed lines here")
    parser.add_argument("--detach", action="store_true", help="run in the background")
    parser.add_argument("--key-name", default="ci", help="the name of the key made at start")
    return parser.parse_args(argv)


def kit_lines(gateway_url: str, key: str, emulator_url: str) -> list[str]:
    """What the kit prints: NAME=value lines a shell or $GITHUB_ENV can take."""
    return [f"GATEWAY_URL={gateway_url}", f"GATEWAY_KEY={key}", f"EMULATOR_URL={emulator_url}"]


def write_env_file(path: Path, lines: list[str]) -> None:
    """Written whole, then renamed: a reader polling for the file never sees half of it."""
    partial = path.with_name(f".{path.name}.partial")
    partial.write_text("".join(f"{line}\n" for line in lines), encoding="utf-8")
    partial.replace(path)


def gateway_env(
    base: Mapping[str, str], emulator: EmulatorProcess, emulator_url: str, data_dir: Path
) -> dict[str, str]:
    """The environment minus store settings, pointed at the emulator, storing in ``data_dir``."""
    env = emulator_env({k: v for k, v in base.items() if k not in _STORE_SETTINGS}, emulator)
    env.update(
        ALPACA_DATA_URL=emulator_url,
        ALPACA_TRADING_URL=emulator_url,
        EMBEDDED_DB_PATH=str(data_dir / "gateway.sqlite3"),
        PYTHONPATH=repo_pythonpath(base),
    )
    return env


def _raise_on_sigterm(signum: int, _frame: FrameType | None) -> None:
    raise SystemExit(0)  # runs the finally blocks that stop both processes


@contextmanager
def _data_dir(given: Path | None) -> Iterator[Path]:
    if given is not None:
        given.mkdir(parents=True, exist_ok=True)
        yield given.resolve()
        return
    made = Path(tempfile.mkdtemp(prefix="gateway-kit-"))
    try:
        yield made
    finally:
        shutil.rmtree(made, ignore_errors=True)


def run(args: argparse.Namespace) -> int:
    """Start both, print the lines, and wait for a signal (or a process dying)."""
    port = free_port(args.host) if args.port == 0 else args.port
    emulator = EmulatorProcess(
        host=args.host,
        port=args.emulator_port,
        scenario=args.scenario,
        start_timeout_s=EMULATOR_START_TIMEOUT_S,
    )
    with _data_dir(args.data_dir) as data_dir:
        try:
            emulator.start()
        except EmulatorStartError as exc:
            _log(str(exc))
            return EXIT_USAGE if str(exc).startswith(REFUSED_SCENARIO_PREFIX) else EXIT_FAILED
        try:
            emulator_url = _reachable_url(emulator.base_url)
            env = gateway_env(os.environ, emulator, emulator_url, data_dir)
            key = create_key(env, data_dir, args.key_name, ALL_SCOPES)
            gateway = GatewayProcess(
                env, host=args.host, port=port, cwd=data_dir, output=sys.stderr
            )
            try:
                gateway.start()
                lines = kit_lines(gateway.base_url, key, emulator_url)
                _announce(lines, args.env_file)
                _log(f"ready: gateway {gateway.base_url} in front of the emulator {emulator_url}; "
                     "SIGTERM or Ctrl-C stops both")  # fmt: skip
                while gateway.returncode is None:
                    time.sleep(0.5)
                _log(f"the gateway exited with status {gateway.returncode}")
                return EXIT_FAILED
            finally:
                gateway.stop()
        except GatewayStartError as exc:
            _log(str(exc))
            return EXIT_FAILED
        finally:
            emulator.stop()


def _reachable_url(url: str) -> str:
    """The emulator's own ``http://HOST:PORT`` with a wildcard HOST made reachable."""
    parts = urlsplit(url)
    return f"{parts.scheme}://{reachable_host(parts.hostname or '')}:{parts.port}"


def _announce(lines: list[str], env_file: Path | None) -> None:
    if env_file is not None:
        write_env_file(env_file, lines)
    sys.stdout.write("".join(f"{line}\n" for line in lines))
    sys.stdout.flush()


def detach(args: argparse.Namespace, argv: list[str]) -> int:
    """Run the kit as a background process of its own; print its lines once it is ready."""
    log_fd, log_name = tempfile.mkstemp(prefix="gateway-kit-", suffix=".log")
    log_path = Path(log_name)
    env_file = args.env_file or log_path.with_suffix(".env")
    env_file.unlink(missing_ok=True)
    child_argv = [a for a in argv if a != "--detach"]
    if args.env_file is None:
        child_argv += ["--env-file", str(env_file)]
    with os.fdopen(log_fd, "wb") as log:
        child = subprocess.Popen(
            [sys.executable, "-m", "tests.emulator.kit", *child_argv],
            cwd=REPO_ROOT,
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,  # a Ctrl-C in this terminal or CI step does not stop it
        )
    deadline = time.monotonic() + DETACH_TIMEOUT_S
    while not env_file.exists():
        if child.poll() is not None or time.monotonic() > deadline:
            if child.poll() is None:
                child.terminate()
            _log("the kit did not start; its output:")
            sys.stderr.write(log_path.read_text(encoding="utf-8", errors="replace"))
            log_path.unlink()
            return child.wait() or EXIT_FAILED
        time.sleep(0.2)
    lines = env_file.read_text(encoding="utf-8").splitlines()
    if args.env_file is None:
        env_file.unlink()  # ours, only to learn the lines: they are printed now
    _announce([*lines, f"KIT_PID={child.pid}", f"KIT_LOG={log_path}"], None)
    return 0


def _log(message: str) -> None:
    sys.stderr.write(f"kit: {message}\n")
    sys.stderr.flush()


def main(argv: list[str] | None = None) -> int:
    """Entry point for ``python -m tests.emulator.kit``."""
    argv = sys.argv[1:] if argv is None else argv
    args = _parse_args(argv)
    if args.scenario is not None and not args.scenario.is_file():
        _log(f"no scenario file at {args.scenario}")
        return EXIT_USAGE
    if args.detach:
        return detach(args, _absolute_paths(argv))
    signal.signal(signal.SIGTERM, _raise_on_sigterm)
    try:
        return run(args)
    except KeyboardInterrupt:
        _log("stopped")
        return 0


def _absolute_paths(argv: list[str]) -> list[str]:
    """The child runs from the repository: relative file arguments are made absolute first."""
    absolute: list[str] = []
    for index, arg in enumerate(argv):
        name, equals, value = arg.partition("=")
        if equals and name in _PATH_OPTIONS:
            absolute.append(f"{name}={Path(value).resolve()}")
        elif index > 0 and argv[index - 1] in _PATH_OPTIONS:
            absolute.append(str(Path(arg).resolve()))
        else:
            absolute.append(arg)
    return absolute


if __name__ == "__main__":
    sys.exit(main())
