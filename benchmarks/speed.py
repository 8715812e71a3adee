"""Time the project's default run and its recipes against the seed's pipeline written literally,
back to back.

    python benchmarks/speed.py [--repeats 2] [--epochs 20] [--data data/mnist.npz] \
        [--runs default headline student protocol] [--out speed.md] [-- FLAGS]

Each round runs the baseline, then each of --runs (by default the default run and the headline
recipe, `--recipe headline` with its own 50 epochs; `student` is that recipe; `protocol` is the
student recipe under `--evaluate-on train+test`, timed against `student` too), one at a time on the
same data (on 2 cores, two runs at once would slow each other), and the rounds repeat. It prints the
median ratio run / baseline over the rounds for the whole run and for each stage, where the time
after training goes, the training FLOP/s of the seed's model as a share of a float32 matrix multiply
measured in the same round, and each run's peak memory, test BCE and scores. Training FLOP/s counts
the training stage's seconds, which include compiling and each epoch's pass over the test set, so it
is a slight underestimate. `seed_baseline.py` beside this file is the seed README written literally
(a copy of the project's yardstick). `--epochs` sets the baseline's and the default run's epochs;
the headline recipe keeps its own. The machine's speed drifts, so only ratios of interleaved runs
mean anything. Flags after `--` go to each of the project's runs (for instance `-- --precision
bfloat16`), not to the baseline. --out writes the same report, headed by the command and the CPU, to
a file: the README's ratio is read from one (tests/test_published_numbers.py).
"""
import argparse
import json
import os
import platform
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
RUNS = {"default": [], "headline": ["--recipe", "headline"], "student": ["--recipe", "student"],
        "protocol": ["--recipe", "student", "--evaluate-on", "train+test"]}  # the papers' protocol
sys.path.insert(0, str(SCRIPT.parent))
import autoencoder_mnist  # noqa: E402


def training_flops_per_image() -> float:
    """Forward and backward FLOPs for one training image: 3x the forward pass's 2 x multiply-adds."""
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


def run_project(data: Path, flags: list[str], folder: Path, name: str) -> dict:
    """Run autoencoder_mnist.py with `flags`; its wall time, stages, peak memory, BCE and latent rows."""
    out = folder / name
    wall, rss = timed([sys.executable, str(SCRIPT), "--data", str(data), *flags, "--out", str(out)],
                      folder / f"{name}.log")
    metrics = json.loads((out / "metrics.json").read_text())
    timings = metrics["timings"]
    after = {stage: seconds for stage, seconds in timings.items()
             if stage not in ("data", "imports", "train", "total")}
    latent = {f"{row['reduction']} {row['clusterer']}": (row["acc"], row["nmi"])
              for row in metrics["clustering"] if row["features"] == "latent"}
    return {"whole run": wall, "imports": timings["imports"], "train": timings["train"],
            "after training": sum(after.values()), "stages after training": after,
            "rss": rss, "bce": metrics["reconstruction"]["bce"], "rows": latent}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], allow_abbrev=False)
    parser.add_argument("--repeats", type=int, default=2, help="rounds of interleaved runs (default: 2)")
    parser.add_argument("--epochs", type=int, default=20,
                        help="training epochs of the baseline and the default run (default: 20)")
    parser.add_argument("--data", type=Path, default=SCRIPT.parent / "data" / "mnist.npz")
    parser.add_argument("--runs", nargs="+", choices=RUNS, default=["default", "headline"],
                        help="the project's runs timed against the baseline (default: default headline)")
    parser.add_argument("--out", type=Path, help="a markdown file for the report, headed by the command and CPU")
    parser.add_argument("flags", nargs="*", help="flags for each of the project's runs, after --")
    args = parser.parse_args()
    if args.repeats < 1 or args.epochs < 1:
        parser.error("--repeats and --epochs must be 1 or more")
    if not args.data.is_file():
        parser.error(f"--data {args.data} is not a file; give the path of an mnist.npz")

    recipes = {name: [*(["--epochs", str(args.epochs)] if name == "default" else RUNS[name]), *args.flags]
               for name in args.runs}
    for flags in recipes.values():  # a bad flag stops here, not after the first baseline
        autoencoder_mnist.parse_config(flags)
    n_train = len(np.load(args.data)["y_train"])
    flops_per_image = training_flops_per_image()
    rounds = []
    with tempfile.TemporaryDirectory() as scratch:
        for repeat in range(args.repeats):
            folder = Path(scratch) / str(repeat)
            folder.mkdir()
            matmul = matmul_flops()
            runs = {"baseline": run_baseline(args.data, args.epochs, folder)}
            for name, flags in recipes.items():
                runs[name] = run_project(args.data, flags, folder, name)
            rounds.append((runs, matmul))
            print(f"round {repeat + 1}: " + ", ".join(f"{name} {run['whole run']:.0f} s"
                                                      for name, run in runs.items()), flush=True)

    def median(values) -> float:
        return statistics.median(list(values))

    report = []

    def say(line: str) -> None:
        print(line)
        report.extend(line.split("\n"))

    say(f"\n{args.repeats} rounds; baseline and default run {args.epochs} epochs, {n_train:,} training images")
    for name in recipes:
        say(f"\n{name} run against the baseline")
        say(f"{'stage':<16}{'baseline s':>12}{name + ' s':>14}{'median ratio':>14}")
        for stage in STAGES:
            say(f"{stage:<16}{median(runs['baseline'][stage] for runs, _ in rounds):>12.1f}"
                f"{median(runs[name][stage] for runs, _ in rounds):>14.1f}"
                f"{median(runs[name][stage] / runs['baseline'][stage] for runs, _ in rounds):>14.2f}")
        stages = rounds[0][0][name]["stages after training"]
        say("  after training, median s: " + ", ".join(
            f"{stage} {median(runs[name]['stages after training'][stage] for runs, _ in rounds):.1f}"
            for stage in stages))
    if {"student", "protocol"} <= set(recipes):  # the same recipe scoring all 70,000 images, not 10,000
        say(f"\nprotocol run against the student run, whole run: median ratio "
            f"{median(runs['protocol']['whole run'] / runs['student']['whole run'] for runs, _ in rounds):.2f}")
    for name in ("baseline", *recipes):
        results = [runs[name] for runs, _ in rounds]
        line = (f"{name}: peak RSS {max(result['rss'] for result in results):,.0f} MB; "
                f"test BCE {median(result['bce'] for result in results):.4f}")
        if name in ("baseline", "default"):  # the seed's convolutional model, whose FLOPs are counted
            shares = [n_train * args.epochs * flops_per_image / runs[name]["train"] / matmul
                      for runs, matmul in rounds]
            line += (f"; training {median(shares):.1%} of matmul FLOP/s "
                     f"({median(matmul for _, matmul in rounds) / 1e9:.0f} GFLOP/s)")
        if name == "baseline":
            line += "; NMI " + ", ".join(f"{key} {median(result['nmi'][key] for result in results):.3f}"
                                         for key in ("latent", "pca", "tsne", "umap"))
        else:
            line += "; latent ACC / NMI: " + ", ".join(
                f"{row} {median(result['rows'][row][0] for result in results):.3f} / "
                f"{median(result['rows'][row][1] for result in results):.3f}" for row in results[0]["rows"])
        say(line)
    if args.out:
        command = " ".join(["python benchmarks/speed.py", *sys.argv[1:]])
        args.out.write_text(f"# Speed against the seed's pipeline: `{command}`\n\nCPU: {cpu_name()}, "
                            f"{os.cpu_count()} cores, each run at its default threads\n\n```\n"
                            + "\n".join(report).strip() + "\n```\n")


def cpu_name() -> str:
    """The CPU's model name and whether it has AVX-512 and bfloat16 or AMX units (Linux; else the platform's)."""
    try:
        info = Path("/proc/cpuinfo").read_text()
    except OSError:
        return platform.processor() or platform.machine()
    name = next((line.split(":", 1)[1].strip() for line in info.splitlines() if line.startswith("model name")), "?")
    flags = set(next((line.split(":", 1)[1].split() for line in info.splitlines() if line.startswith("flags")), []))
    units = [unit for unit, flag in (("AVX-512", "avx512f"), ("AVX512_BF16", "avx512_bf16"), ("AMX", "amx_tile"))
             if flag in flags]
    return f"{name} ({', '.join(units) or 'AVX2 at most, no AVX-512'})"


if __name__ == "__main__":
    main()
