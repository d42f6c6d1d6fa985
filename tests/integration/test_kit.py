"""The contract-test kit, as a user's CI runs it: `python -m tests.emulator.kit` prints the
gateway's URL, a working key and the emulator's URL; the example GitHub Actions workflow's own
steps run the sample bot's tests against it; SIGTERM stops everything.

Every process runs on free ports, from tmp_path (so no config/.env is read), with its own
session so a failed test can end the whole tree; each wait is bounded.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml

from tests.observability.test_compose import compose_config

pytestmark = pytest.mark.integration

REPO_ROOT = Path(__file__).resolve().parents[2]
EXAMPLES = REPO_ROOT / "examples" / "ci"
EXAMPLE_SCENARIO = REPO_ROOT / "tests" / "emulator" / "scenarios" / "example.yaml"
KIT = [sys.executable, "-m", "tests.emulator.kit"]
START_TIMEOUT_S = 90.0
STEP_TIMEOUT_S = 180.0
STOP_TIMEOUT_S = 20.0


def read_env_lines(text: str) -> dict[str, str]:
    return dict(line.split("=", 1) for line in text.splitlines() if "=" in line)


def stop_session(process: subprocess.Popen[Any]) -> None:
    """Only for a test that failed before stopping what it started."""
    if process.poll() is None:
        os.killpg(process.pid, signal.SIGKILL)
        process.wait(timeout=10)


def wait_until_gone(pid: int) -> bool:
    deadline = time.monotonic() + STOP_TIMEOUT_S
    while time.monotonic() < deadline:
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return True
        time.sleep(0.2)
    return False


@pytest.fixture
def kit(tmp_path: Path) -> Iterator[tuple[subprocess.Popen[str], Path]]:
    """The kit in the foreground, as `make kit` runs it, with its lines also in an env file."""
    env_file = tmp_path / "kit.env"
    argv = [*KIT, "--scenario", str(EXAMPLE_SCENARIO), "--port", "0", "--env-file", str(env_file)]
    with (tmp_path / "kit.err").open("w") as stderr:
        process = subprocess.Popen(
            argv, cwd=REPO_ROOT, stdout=subprocess.PIPE, stderr=stderr, text=True,
            start_new_session=True,
        )  # fmt: skip
    try:
        deadline = time.monotonic() + START_TIMEOUT_S
        while not env_file.exists():
            if process.poll() is not None or time.monotonic() > deadline:
                errors = (tmp_path / "kit.err").read_text()
                pytest.fail(f"the kit did not start:\n{errors[-4000:]}", pytrace=False)
            time.sleep(0.2)
        yield process, env_file
    finally:
        stop_session(process)
        if process.stdout is not None:
            process.stdout.close()


def test_kit_prints_urls_and_a_working_key_then_stops_on_sigterm(
    kit: tuple[subprocess.Popen[str], Path],
) -> None:
    process, env_file = kit
    assert process.stdout is not None
    printed = [process.stdout.readline().rstrip("\n") for _ in range(3)]
    found = read_env_lines("\n".join(printed))
    key = {"Authorization": f"Bearer {found['GATEWAY_KEY']}"}
    with httpx.Client(timeout=10) as client:
        quote = client.get(f"{found['GATEWAY_URL']}/v1/stocks/AAPL/quote", headers=key)
        keyless = client.get(f"{found['GATEWAY_URL']}/v1/stocks/AAPL/quote")
        config = client.get(f"{found['EMULATOR_URL']}/_emulator/config")

        process.send_signal(signal.SIGTERM)
        status = process.wait(timeout=STOP_TIMEOUT_S)
        with pytest.raises(httpx.TransportError):
            client.get(f"{found['GATEWAY_URL']}/health")

    assert [line.split("=", 1)[0] for line in printed] == ["GATEWAY_URL", "GATEWAY_KEY",
                                                           "EMULATOR_URL"]  # fmt: skip
    assert env_file.read_text().splitlines() == printed
    assert found["GATEWAY_KEY"].startswith("gw_")
    assert quote.status_code == 200, quote.text
    assert quote.json()["ask_price"] == 229.9  # the example scenario's quote
    assert quote.json()["provenance"]["source"] == "emulator"
    assert keyless.status_code == 401
    assert config.json()["rate_limit_per_minute"] == 200  # the scenario's config
    assert status == 0


def test_kit_refuses_a_scenario_the_emulator_cannot_load(tmp_path: Path) -> None:
    bad = tmp_path / "bad.yaml"
    bad.write_text("faults:\n  - {at_s: 5, path: /v2/*, kind: status_501}\n", encoding="utf-8")

    done = subprocess.run(
        [*KIT, "--scenario", str(bad), "--port", "0", "--detach"],
        cwd=REPO_ROOT, capture_output=True, text=True, timeout=START_TIMEOUT_S,
    )  # fmt: skip

    assert done.returncode == 2
    assert done.stdout == ""
    assert f"emulator: refusing the scenario {bad}: faults[0]: kind must be one of" in done.stderr


def _workflow_steps() -> list[dict[str, Any]]:
    workflow = yaml.safe_load((EXAMPLES / "github-actions.yml").read_text(encoding="utf-8"))
    steps: list[dict[str, Any]] = workflow["jobs"]["test"]["steps"]
    return steps


def test_the_example_workflow_runs_the_sample_bots_tests_against_the_kit(tmp_path: Path) -> None:
    """The workflow's own `run` steps, in the layout its checkouts make: the bot's files at the
    workspace root, this repository in gateway/. The install step is checked, not run (this
    venv holds requirements-dev.txt); `uses` steps are GitHub's."""
    workspace = tmp_path / "workspace"
    workspace.mkdir()
    for name in ("bot.py", "test_bot.py", "scenario.yaml"):
        shutil.copy(EXAMPLES / name, workspace / name)
    (workspace / "gateway").symlink_to(REPO_ROOT, target_is_directory=True)
    github_env = tmp_path / "github_env"
    github_env.touch()
    base = {k: v for k, v in os.environ.items() if not k.startswith(("GATEWAY_", "EMULATOR_"))}
    base.update(
        GITHUB_WORKSPACE=str(workspace),
        GITHUB_ENV=str(github_env),
        PATH=f"{Path(sys.executable).parent}{os.pathsep}{base.get('PATH', '')}",
    )
    runs = [step for step in _workflow_steps() if "run" in step and "if" not in step]
    install, *steps = runs
    assert install["run"] == "pip install -r gateway/requirements-dev.txt"
    outputs: list[str] = []
    try:
        for step in steps:
            env = {**base, **read_env_lines(github_env.read_text())}
            done = subprocess.run(
                ["bash", "-e", "-c", step["run"]],
                cwd=workspace / step.get("working-directory", "."),
                env=env, capture_output=True, text=True, timeout=STEP_TIMEOUT_S,
            )  # fmt: skip
            outputs.append(done.stdout + done.stderr)
            assert done.returncode == 0, f"{step['name']}:\n{outputs[-1][-4000:]}"
    finally:
        started = read_env_lines(github_env.read_text())
        if "KIT_PID" in started:
            os.kill(int(started["KIT_PID"]), signal.SIGTERM)
            assert wait_until_gone(int(started["KIT_PID"])), "the kit outlived SIGTERM"
            Path(started["KIT_LOG"]).unlink()

    exported = read_env_lines(github_env.read_text())
    assert set(exported) == {"GATEWAY_URL", "GATEWAY_KEY", "EMULATOR_URL", "KIT_PID", "KIT_LOG"}
    assert "4 passed" in outputs[-1]


def test_compose_kit_profile_runs_the_kit_with_a_scenario_and_the_dev_pin_of_pyyaml() -> None:
    default = compose_config()["services"]
    kit = compose_config("kit")["services"]["kit"]
    dev_pins = (REPO_ROOT / "requirements-dev.txt").read_text(encoding="utf-8").splitlines()
    pyyaml_pin = next(line for line in dev_pins if line.startswith("PyYAML=="))

    assert "kit" not in default  # only with --profile kit
    assert kit["command"][:3] == ["python", "-m", "tests.emulator.kit"]
    assert "--scenario" in kit["command"]
    [scenario] = [v for v in kit["volumes"] if v["target"] == "/kit/scenario.yaml"]
    assert Path(scenario["source"]) == EXAMPLE_SCENARIO
    assert f"pip install -r requirements.txt {pyyaml_pin}\n" in kit["build"]["dockerfile_inline"]
