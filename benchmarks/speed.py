"""Time the project's default run against the seed's pipeline written literally, back to back.

    python benchmarks/speed.py [--repeats 2] [--epochs 20] [--data data/mnist.npz]

Runs baseline, project, baseline, project, ... on the same data, one at a time (on 2 cores, two runs at
once would slow each other), and prints the median ratio project / baseline for the whole run and for
each stage, the training FLOP/s as a share of a float32 matrix multiply measured between the runs, and
each run's peak memory. Training FLOP/s counts the training stage's seconds, which include compiling
and each epoch's pass over the test set, so it is a slight underestimate. `seed_baseline.py` beside
this file is the seed README written literally (a copy of the project's yardstick).
The machine's speed drifts, so only ratios of interleaved runs mean anything.
"""
import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
SCRIPT = HERE.parent / "autoencoder_mnist.py"
BASELINE = HERE / "seed_baseline.py"
STAGES = ("whole run", "imports", "train", "after training")


def training_flops_per_image() -> float:
    """Forward and backward FLOPs for one training image: 3x the forward pass's 2 x multiply-adds."""
    sys.path.insert(0, str(SCRIPT.parent))
    import autoencoder_mnist

    autoencoder_mnist.import_stack()
    autoencoder, _ = autoencoder_mnist.build_autoencoder()
    multiply_adds = 0
    for model in (autoencoder.get_layer("encoder"), autoencoder.get_layer("decoder")):
        for layer in model.layers:
            if type(layer).__name__ == "Conv2D":
                kernel = layer.kernel.shape  # (3, 3, in, out)
                height, width = layer.output.shape[1:3]
                multiply_adds += height * width * int(np.prod(kernel))
    return 3 * 2 * multiply_adds


def matmul_flops(size: int = 2048, repeats: int = 5) -> float:
    """FLOP/s of numpy's float32 matrix multiply, best of `repeats`."""
    a = np.random.default_rng(0).random((size, size), dtype=np.float32)
    best = float("inf")
    for _ in range(repeats):
        start = time.perf_counter()
        a @ a
        best = min(best, time.perf_counter() - start)
    return 2 * size**3 / best


def timed(command: list[str], log: Path) -> tuple[float, float]:
    """Run a command with its output in `log`; returns wall seconds and its peak RSS in MB."""
    start = time.perf_counter()
    with open(log, "w") as out:
        process = subprocess.Popen(command, stdout=out, stderr=subprocess.STDOUT)
        _, status, usage = os.wait4(process.pid, 0)
    seconds = time.perf_counter() - start
    if os.waitstatus_to_exitcode(status) != 0:
        sys.exit(f"error: {' '.join(command)} failed; see {log}")
    return seconds, usage.ru_maxrss / 1024


def run_baseline(data: Path, epochs: int, folder: Path) -> dict:
    log = folder / "baseline.log"
    wall, rss = timed([sys.executable, str(BASELINE), str(data), str(epochs)], log)
    marks = [json.loads(line) for line in log.read_text().splitlines() if line.startswith('{"stage"')]
    at = {mark["stage"]: mark["t"] for mark in marks}
    scores = {mark["stage"][len("kmeans_"):]: mark for mark in marks if mark["stage"].startswith("kmeans_")}
    return {"whole run": wall, "imports": at["imports"], "train": at["train"] - at["imports"],
            "after training": at["done"] - at["train"], "rss": rss,
            "bce": next(mark["val_loss"] for mark in marks if mark["stage"] == "train"),
            "nmi": {name: mark["nmi"] for name, mark in scores.items()}}


def run_project(data: Path, epochs: int, folder: Path) -> dict:
    out = folder / "project"
    wall, rss = timed([sys.executable, str(SCRIPT), "--data", str(data), "--epochs", str(epochs),
                       "--out", str(out)], folder / "project.log")
    metrics = json.loads((out / "metrics.json").read_text())
    timings = metrics["timings"]
    latent = {row["reduction"]: row["nmi"] for row in metrics["clustering"]
              if row["features"] == "latent" and row["clusterer"] == "kmeans"}
    return {"whole run": wall, "imports": timings["imports"], "train": timings["train"],
            "after training": timings["total"] - timings["data"] - timings["imports"] - timings["train"],
            "rss": rss, "bce": metrics["reconstruction"]["test_bce"],
            "nmi": {"latent" if name == "none" else name: value for name, value in latent.items()}}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], allow_abbrev=False)
    parser.add_argument("--repeats", type=int, default=2, help="baseline/project pairs (default: 2)")
    parser.add_argument("--epochs", type=int, default=20, help="training epochs for both (default: 20)")
    parser.add_argument("--data", type=Path, default=SCRIPT.parent / "data" / "mnist.npz")
    args = parser.parse_args()
    if args.repeats < 1 or args.epochs < 1:
        parser.error("--repeats and --epochs must be 1 or more")
    if not args.data.is_file():
        parser.error(f"--data {args.data} is not a file; give the path of an mnist.npz")

    n_train = len(np.load(args.data)["y_train"])
    flops_per_image = training_flops_per_image()
    pairs = []
    with tempfile.TemporaryDirectory() as scratch:
        for repeat in range(args.repeats):
            folder = Path(scratch) / str(repeat)
            folder.mkdir()
            matmul = matmul_flops()
            baseline = run_baseline(args.data, args.epochs, folder)
            project = run_project(args.data, args.epochs, folder)
            pairs.append((baseline, project, matmul))
            print(f"pair {repeat + 1}: baseline {baseline['whole run']:.0f} s, "
                  f"project {project['whole run']:.0f} s", flush=True)

    print(f"\n{args.repeats} interleaved pairs, {args.epochs} epochs, {n_train:,} training images")
    print(f"{'stage':<16}{'baseline s':>12}{'project s':>12}{'median ratio':>14}")
    for stage in STAGES:
        ratio = statistics.median(project[stage] / baseline[stage] for baseline, project, _ in pairs)
        print(f"{stage:<16}{statistics.median(b[stage] for b, _, _ in pairs):>12.1f}"
              f"{statistics.median(p[stage] for _, p, _ in pairs):>12.1f}{ratio:>14.2f}")
    for name, which in (("baseline", 0), ("project", 1)):
        shares = [n_train * args.epochs * flops_per_image / pair[which]["train"] / pair[2] for pair in pairs]
        runs = [pair[which] for pair in pairs]
        print(f"{name}: training {statistics.median(shares):.1%} of matmul FLOP/s "
              f"({statistics.median(pair[2] for pair in pairs) / 1e9:.0f} GFLOP/s); "
              f"peak RSS {max(run['rss'] for run in runs):,.0f} MB; test BCE "
              f"{statistics.median(run['bce'] for run in runs):.4f}; NMI "
              + ", ".join(f"{key} {statistics.median(run['nmi'][key] for run in runs):.3f}"
                          for key in ("latent", "pca", "tsne", "umap")))


if __name__ == "__main__":
    main()
