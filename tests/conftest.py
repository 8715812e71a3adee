"""Shared helpers: run the real command in a subprocess, as a user would."""
import os
import subprocess
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

REPO = Path(__file__).resolve().parents[1]
SCRIPT = REPO / "autoencoder_mnist.py"
# A small, real, stratified sample of the bundled MNIST: enough to train and cluster in seconds.
SMALL = ["--epochs", "2", "--train-size", "2000", "--test-size", "500"]


def script_env(extra: dict | None = None) -> dict:
    """The environment a user's shell gives the script: without a TensorFlow log level of the caller's,
    so that the script's own quiet default is what the tests see."""
    env = {key: value for key, value in os.environ.items() if key != "TF_CPP_MIN_LOG_LEVEL"}
    return {**env, **(extra or {})}


def run_script(*args: str, env: dict | None = None, script: Path = SCRIPT) -> subprocess.CompletedProcess:
    """Run autoencoder_mnist.py with `args`; returns the finished process with text stdout/stderr."""
    return subprocess.run([sys.executable, str(script), *map(str, args)], capture_output=True, text=True,
                          env=script_env(env), timeout=600)


def stderr_lines(stderr: str) -> list[str]:
    """The non-blank lines a process wrote to stderr."""
    return [line for line in stderr.splitlines() if line.strip()]


@pytest.fixture(scope="session")
def small_run(tmp_path_factory) -> Path:
    """One real run on the small sample, shared by the tests that read its outputs. A good run writes
    nothing to stderr, whatever the CPU (TensorFlow logs differ between AVX2 and AVX-512 machines)."""
    out = tmp_path_factory.mktemp("small") / "results"
    finished = run_script(*SMALL, "--out", out)
    assert finished.returncode == 0, finished.stderr
    unexpected = stderr_lines(finished.stderr)
    assert not unexpected, "a good run wrote to stderr:\n" + "\n".join(unexpected)
    return out
