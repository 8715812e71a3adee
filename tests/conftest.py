"""Shared helpers: run the real command, in a subprocess as a user would or in this process."""
import contextlib
import io
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import warnings
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

REPO = Path(__file__).resolve().parents[1]
SCRIPT = REPO / "autoencoder_mnist.py"
# A small, real, stratified sample of the bundled MNIST: enough to train and cluster in seconds.
SMALL = ["--epochs", "2", "--train-size", "1000", "--test-size", "300"]


def script_env(extra: dict | None = None) -> dict:
    """The environment a user's shell gives the script: without a TensorFlow log level of the caller's,
    so that the script's own quiet default is what the tests see."""
    return {key: value for key, value in os.environ.items() if key != "TF_CPP_MIN_LOG_LEVEL"}


def run_script(*args: str) -> subprocess.CompletedProcess:
    """Run autoencoder_mnist.py with `args`; returns the finished process with text stdout/stderr."""
    return subprocess.run([sys.executable, str(SCRIPT), *map(str, args)], capture_output=True, text=True,
                          env=script_env(), timeout=600)


def stderr_lines(stderr: str) -> list[str]:
    """The non-blank lines a process wrote to stderr."""
    return [line for line in stderr.splitlines() if line.strip()]


def main_here(*flags) -> int:
    """Run the script's main() in this process, as the command does; returns its exit status."""
    import autoencoder_mnist as am

    handler = signal.getsignal(signal.SIGTERM)
    try:
        return am.main([str(flag) for flag in flags])
    finally:
        signal.signal(signal.SIGTERM, handler)


@pytest.fixture(scope="session")
def small_run(tmp_path_factory) -> Path:
    """One real run on the small sample, in this process (the tests that need a process of their
    own start one), shared by the tests that read its outputs. A good run writes nothing to stderr,
    whatever the CPU: file descriptor 2 is read too, where TensorFlow's native lines would go."""
    out = tmp_path_factory.mktemp("small") / "results"
    python_lines = io.StringIO()
    with tempfile.TemporaryFile() as native, contextlib.redirect_stderr(python_lines):
        saved = os.dup(2)
        os.dup2(native.fileno(), 2)
        try:
            status = main_here(*SMALL, "--out", out)
        finally:
            os.dup2(saved, 2)
            os.close(saved)
        native.seek(0)
        written = native.read().decode() + python_lines.getvalue()
    assert status == 0, written
    assert not stderr_lines(written), "a good run wrote to stderr:\n" + written
    return out


# Runs of the command in a process of their own that no test's state feeds: started as the session
# starts, beside the tests that run in this process, and read by their tests. Name -> (process,
# its output folder, what it printed: its stdout once it ended).
BACKGROUND = {}
JAX_RUN = ["--recipe", "headline", "--epochs", "2", "--train-size", "500", "--test-size", "100"]
EARLIER = "metrics.json"  # in the Ctrl-C run's --out: an earlier run's results, to stay untouched


def ctrl_c_at(process: subprocess.Popen, at: str, printed: list) -> None:
    """Press Ctrl-C once a line of the process's output starts with `at`: SIGINT to its whole
    process group, worker processes and all, as a terminal's Ctrl-C does."""
    for line in process.stdout:
        printed.append(line)
        if line.strip().startswith(at):
            os.killpg(process.pid, signal.SIGINT)
            return


def compile_umap_once() -> None:
    """umap-learn's numba code, compiled and cached by two tiny fits as the script makes them,
    before the processes that fit UMAP start: they load it rather than each compile it (5-10 s)."""
    import numpy as np

    import autoencoder_mnist as am

    with am.without_tensorflow(), warnings.catch_warnings():  # TensorFlow: imported later
        warnings.simplefilter("ignore", ImportWarning)  # that ParametricUMAP lacks it
        import umap  # noqa: F401
    am.cache_numba_compilation()
    points = np.random.default_rng(0).random((40, 5), dtype=np.float32)
    for name in ("umap", "umap10"):
        am.reduce(name, points, am.nearest_neighbours(points, am.UMAP_NEIGHBOURS, 0), seed=0)


def pytest_collection_modifyitems(session, config, items):
    names = {item.name for item in items}
    if names & {"test_the_headline_recipe_runs_on_jax_with_a_silent_stderr",
                "test_ctrl_c_while_the_workers_reduce_stops_in_one_line_and_keeps_earlier_results"}:
        compile_umap_once()
    folder = Path(tempfile.mkdtemp(prefix="background-runs-"))
    if "test_the_headline_recipe_runs_on_jax_with_a_silent_stderr" in names:
        # In its place on the path a stand-in for TensorFlow leaves a mark if anything imports it.
        (folder / "stand-in" / "tensorflow").mkdir(parents=True)
        (folder / "stand-in" / "tensorflow" / "__init__.py").write_text(
            f"open({str(folder / 'tensorflow-imported')!r}, 'w').close()\nraise ImportError('stand-in')\n")
        path = os.pathsep.join(filter(None, [str(folder / "stand-in"), os.environ.get("PYTHONPATH")]))
        BACKGROUND["jax"] = subprocess.Popen(
            [sys.executable, str(SCRIPT), *JAX_RUN, "--out", str(folder / "jax")], stdout=subprocess.PIPE,
            stderr=subprocess.PIPE, text=True, env={**script_env(), "KERAS_BACKEND": "jax", "PYTHONPATH": path}
        ), folder / "jax", []
    if "test_ctrl_c_while_the_workers_reduce_stops_in_one_line_and_keeps_earlier_results" in names:
        (folder / "ctrl-c").mkdir()
        (folder / "ctrl-c" / EARLIER).write_text("{}")
        # A terminal delivers Ctrl-C to a foreground job whose SIGINT is at its default. Set it so: a
        # harness that starts this suite as a background job of a non-interactive shell (as CI may)
        # leaves SIGINT ignored, children inherit that, and Python then, rightly, ignores it too.
        process = subprocess.Popen([sys.executable, str(SCRIPT), *SMALL, "--out", str(folder / "ctrl-c")],
                                   stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=script_env(),
                                   start_new_session=True,
                                   preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
        printed = []
        threading.Thread(target=ctrl_c_at, args=(process, "t-SNE to 2-D", printed), daemon=True).start()
        BACKGROUND["ctrl-c"] = process, folder / "ctrl-c", printed


def pytest_sessionfinish(session, exitstatus):
    for process, out, _ in BACKGROUND.values():
        with contextlib.suppress(OSError):
            process.kill()
        shutil.rmtree(out.parent, ignore_errors=True)


def pytest_configure(config):
    # TensorFlow's EagerTensor.__array__ predates NumPy 2's copy keyword, and Keras' own np.array(x)
    # on a tensor makes NumPy warn (keras/src/backend/tensorflow/core.py). Neither is this project's
    # to change; every other warning stays visible.
    config.addinivalue_line("filterwarnings",
                            "ignore:__array__ implementation doesn't accept a copy keyword:DeprecationWarning")
