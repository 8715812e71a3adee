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


def run_script(*args: str, env: dict | None = None, script: Path = SCRIPT) -> subprocess.CompletedProcess:
    """Run autoencoder_mnist.py with `args`; returns the finished process with text stdout/stderr."""
    return subprocess.run([sys.executable, str(script), *map(str, args)], capture_output=True, text=True,
                          env={**os.environ, **(env or {})}, timeout=600)


@pytest.fixture(scope="session")
def small_run(tmp_path_factory) -> Path:
    """One real run on the small sample, shared by the tests that read its outputs."""
    out = tmp_path_factory.mktemp("small") / "results"
    finished = run_script(*SMALL, "--out", out)
    assert finished.returncode == 0, finished.stderr
    return out
