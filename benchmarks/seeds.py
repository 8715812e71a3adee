"""Run autoencoder_mnist.py once per seed and report each clustering row as mean +- std over the seeds.

    python benchmarks/seeds.py [--seeds 0 1 2] [--jobs 1] [--out seeds] -- [flags for the script]

Seed N's run writes the folder OUT/seed-N and its terminal output to OUT/seed-N.log. Each runs with
--resume: a seed whose folder holds a finished run with the same flags is not run again, and one that
was stopped continues from its last finished epoch. A finished run with the same data and training
flags but other scoring flags (--embed-train, --pca-dims, --test-size) is re-scored with --reuse-model:
its model is not trained again. Then OUT/summary.md lists, for every row of the clustering table,
ACC, NMI and ARI as mean +- sample standard deviation (n - 1) over the seeds, the lowest ACC and NMI
of any seed, each seed's ACC and NMI, and the reconstruction BCE.

--jobs N runs N seeds at once, each with cores / N threads. TensorFlow gains little from a second
thread on this small model: in a short probe on this project's 2-core machine, two single-threaded
runs together trained 1.3-1.8x as many images per second as one run on both cores, so --jobs 2 suits
a 2-core CPU. Thread counts change floating-point sums, so a seed's scores differ between --jobs
values, for the seed's 1,568-number codes by several points of ACC (see the README).
"""
import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import replace
from functools import partial
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))
import autoencoder_mnist  # noqa: E402

SCRIPT = HERE.parent / "autoencoder_mnist.py"
SCORES = ("acc", "nmi", "ari")


def script_flags(config: autoencoder_mnist.Config, flags: list[str]) -> list[str] | None:
    """The script's flags for this seed, or None when config.out already holds the finished run.

    A finished run there whose training flags match lends its model (--reuse-model); a run that itself
    reused a model counts as a run of its other flags.
    """
    ours = autoencoder_mnist.config_record(config)
    metrics = config.out / "metrics.json"
    theirs = json.loads(metrics.read_text())["config"] if metrics.is_file() else {}
    if {**theirs, "reuse_model": None} == ours:
        return None
    seed_flags = [*flags, "--seed", str(config.seed), "--out", str(config.out), "--resume"]
    if theirs and autoencoder_mnist.changed_training_flag(theirs, config) is None:
        seed_flags += ["--reuse-model", str(config.out)]
    return seed_flags


def run_at_once(starts: dict[int, Callable[[dict | None], subprocess.Popen]], jobs: int
                ) -> Iterator[tuple[int, int]]:
    """Start each seed's process with `starts[seed](env)`, `jobs` at a time, and yield (seed, exit
    status) as each ends. With jobs > 1, env gives each process cores / jobs threads (TensorFlow and
    OpenMP); with one at a time it is None, the caller's environment. A failed process stops the
    others, and nothing more starts."""
    threads = str(max(1, (os.cpu_count() or 1) // jobs))
    env = {**os.environ, "TF_NUM_INTRAOP_THREADS": threads, "TF_NUM_INTEROP_THREADS": threads,
           "OMP_NUM_THREADS": threads} if jobs > 1 else None
    waiting, running = list(starts), {}
    while waiting or running:
        if waiting and len(running) < jobs:
            seed = waiting.pop(0)
            running[seed] = starts[seed](env)
            continue
        time.sleep(1)
        for seed, process in list(running.items()):
            if process.poll() is None:
                continue
            del running[seed]
            if process.returncode != 0:
                for other in running.values():
                    other.terminate()
                running.clear()
                waiting.clear()
            yield seed, process.returncode


def run_seeds(configs: list[autoencoder_mnist.Config], flags: list[str], jobs: int) -> None:
    """Run each unfinished seed, `jobs` at a time, with --resume; stop with status 1 if one fails."""
    def start(config: autoencoder_mnist.Config, seed_flags: list[str], env: dict | None) -> subprocess.Popen:
        log = config.out.with_suffix(".log")
        reusing = " (its trained model reused)" if "--reuse-model" in seed_flags else ""
        print(f"seed {config.seed}: running{reusing}, terminal output in {log}", flush=True)
        with log.open("w") as stream:
            return subprocess.Popen([sys.executable, str(SCRIPT), *seed_flags], stdout=stream,
                                    stderr=subprocess.STDOUT, env=env)

    starts = {}
    for config in configs:
        seed_flags = script_flags(config, flags)
        if seed_flags is None:
            print(f"seed {config.seed}: finished run kept in {config.out}/", flush=True)
        else:
            starts[config.seed] = partial(start, config, seed_flags)
    logs = {config.seed: config.out.with_suffix(".log") for config in configs}
    for seed, status in run_at_once(starts, jobs):
        if status != 0:
            sys.exit(f"error: seed {seed} failed with status {status}: see {logs[seed]}; rerun the same "
                     "command to continue")
        print(f"seed {seed}: done", flush=True)


def spread(values: list[float], digits: int = 3) -> str:
    """Mean +- sample standard deviation (n - 1; nan for one value)."""
    std = statistics.stdev(values) if len(values) > 1 else float("nan")
    return f"{statistics.mean(values):.{digits}f} +- {std:.{digits}f}"


def summarise(configs: list[autoencoder_mnist.Config], command: str) -> str:
    """A Markdown table of every row's mean +- std over the seeds' metrics.json files."""
    runs = [json.loads((config.out / "metrics.json").read_text()) for config in configs]
    seeds = ", ".join(str(config.seed) for config in configs)

    lines = [f"# Scores over seeds {seeds}", "",
             f"Command: `{command}`",
             f"Evaluated on: {runs[0]['config']['evaluate_on']}. Mean +- sample std (n - 1) over "
             f"{len(runs)} runs.", "",
             "| features | reduction | clusterer | " + " | ".join(name.upper() for name in SCORES)
             + f" | worst seed's ACC / NMI | ACC per seed ({seeds}) | NMI per seed |",
             "| --- | --- | --- |" + " --- |" * (len(SCORES) + 3)]
    for index, row in enumerate(runs[0]["clustering"]):
        values = [[run["clustering"][index][name] for run in runs] for name in SCORES]
        acc, nmi = values[0], values[1]
        lines.append(f"| {row['features']} | {row['reduction']} | {row['clusterer']} | "
                     + " | ".join(spread(column) for column in values)
                     + f" | {min(acc):.3f} / {min(nmi):.3f} | "
                     + " / ".join(f"{value:.4f}" for value in acc) + " | "
                     + " / ".join(f"{value:.4f}" for value in nmi) + " |")
    bce = spread([run["reconstruction"]["test_bce"] for run in runs], digits=4)
    lines += ["", f"Reconstruction BCE on the scored images: {bce}", ""]
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2], help="seeds to run (default: 0 1 2)")
    parser.add_argument("--jobs", type=int, default=1, help="seeds run at once (default: 1)")
    parser.add_argument("--out", type=Path, default=Path("seeds"), help="folder for the runs (default: seeds)")
    parser.add_argument("flags", nargs="*", help="flags for autoencoder_mnist.py, after --")
    args = parser.parse_args()
    if args.jobs < 1 or min(args.seeds) < 0 or len(set(args.seeds)) < len(args.seeds):
        parser.error("--jobs must be at least 1, and --seeds distinct whole numbers")
    if any(flag.startswith(("--seed", "--out", "--resume", "--reuse-model")) for flag in args.flags):
        parser.error("give --seeds and --out to this command, not to the script; it adds --resume and "
                     "--reuse-model itself")
    base = autoencoder_mnist.parse_config(args.flags)  # a bad flag stops here, before any run
    configs = [replace(base, seed=seed, out=args.out / f"seed-{seed}", resume=True) for seed in args.seeds]
    args.out.mkdir(parents=True, exist_ok=True)
    try:
        run_seeds(configs, args.flags, args.jobs)
    except KeyboardInterrupt:
        sys.exit("\nstopped by Ctrl-C; finished epochs are kept: rerun the same command to continue")
    summary = summarise(configs, " ".join(["python", "benchmarks/seeds.py", *sys.argv[1:]]))
    (args.out / "summary.md").write_text(summary)
    print(summary)


if __name__ == "__main__":
    main()
