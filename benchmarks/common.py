"""What the benchmarks share: their arguments, the seed runner, the summary table, and the script's own
stages from data to the clustering embedding's space.

Each benchmark is a client of autoencoder_mnist.py: it takes the script's flags after `--` (a recipe is
one word: `-- --recipe headline`) and calls the script's functions for every stage.
"""
import argparse
import contextlib
import json
import os
import statistics
import subprocess
import sys
import threading
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor, as_completed
from dataclasses import replace
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))
import autoencoder_mnist as am  # noqa: E402

SCORES = ("acc", "nmi", "ari")


def parser(description: str, out: str, jobs: bool = True, models: bool = False) -> argparse.ArgumentParser:
    """The arguments every benchmark takes: --seeds, --out, the script's flags after `--`, and --jobs
    where seeds run in processes of their own at once, or --models (see on_saved_models)."""
    arguments = argparse.ArgumentParser(description=description, allow_abbrev=False)
    arguments.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2], help="seeds to run (default: 0 1 2)")
    if jobs:
        arguments.add_argument("--jobs", type=int, default=1, help="seeds run at once (default: 1)")
    if models:  # the benchmarks that score the models benchmarks/epochs.py saved, one seed after another
        arguments.add_argument("--models", type=Path, required=True, help="a folder of benchmarks/epochs.py's seed-N.keras")
    arguments.add_argument("--out", type=Path, default=Path(out), help=f"folder for the runs (default: {out})")
    arguments.add_argument("flags", nargs="*", help="flags for autoencoder_mnist.py, after --")
    return arguments


def parse(arguments: argparse.ArgumentParser, own: tuple[str, ...]) -> tuple[argparse.Namespace, am.Config]:
    """Parse the benchmark's arguments and the script's flags (a bad flag stops here, before any run);
    `own` are the script's flags that the benchmark sets itself and refuses after `--`."""
    args = arguments.parse_args()
    if getattr(args, "jobs", 1) < 1 or min(args.seeds) < 0 or len(set(args.seeds)) < len(args.seeds):
        arguments.error("--jobs must be at least 1, and --seeds distinct whole numbers")
    if any(flag.startswith(own) for flag in args.flags):
        arguments.error(f"{', '.join(own)} are this command's to set: give --seeds and --out to it, not to the script")
    return args, am.parse_config(args.flags)


def on_saved_models(arguments: argparse.ArgumentParser, args: argparse.Namespace, base: am.Config,
                    score: Callable[[am.Config, Path], dict]) -> list[dict]:
    """score(config, model) for each seed's model that benchmarks/epochs.py saved in --models, once:
    OUT/seed-N.json keeps a seed's result, and a seed whose file exists is not run again."""
    models = {seed: args.models / f"seed-{seed}.keras" for seed in args.seeds}
    missing = [str(path) for path in models.values() if not path.is_file()]
    if missing:
        arguments.error(f"no model {', '.join(missing)}: train them with benchmarks/epochs.py --out {args.models}")
    args.out.mkdir(parents=True, exist_ok=True)
    results = []
    for seed in args.seeds:
        saved = args.out / f"seed-{seed}.json"
        if not saved.is_file():
            with bad_input_exits():
                result = score(replace(base, seed=seed), models[seed])
            saved.write_text(json.dumps(result, indent=1))
        results.append(json.loads(saved.read_text()))
    return results


def run_seeds(commands: dict[int, list[str]], jobs: int, logs: dict[int, Path] | None = None) -> None:
    """Run each seed's command line, `jobs` at a time, its output in logs[seed] where given. With jobs > 1
    each gets cores / jobs threads (TensorFlow and OpenMP); one at a time keeps the caller's environment.
    A failed command stops the others and this process, with status 1."""
    threads = str(max(1, (os.cpu_count() or 1) // jobs))
    env = {**os.environ, "TF_NUM_INTRAOP_THREADS": threads, "TF_NUM_INTEROP_THREADS": threads,
           "OMP_NUM_THREADS": threads} if jobs > 1 else None
    running, failed = {}, threading.Event()

    def run(seed: int) -> int | None:
        if failed.is_set():  # another seed failed: start no more
            return None
        with open(logs[seed], "w") if logs else contextlib.nullcontext() as log:
            running[seed] = subprocess.Popen(commands[seed], stdout=log, stderr=subprocess.STDOUT if log else None,
                                             env=env)
            return running[seed].wait()

    with ThreadPoolExecutor(jobs) as pool:
        futures = {pool.submit(run, seed): seed for seed in commands}
        for future in as_completed(futures):
            seed, status = futures[future], future.result()
            if status:
                failed.set()
                for process in running.values():
                    process.terminate()
                see = f": see {logs[seed]}" if logs else ""
                sys.exit(f"error: seed {seed} failed with status {status}{see}; rerun the same command to continue")
            if status == 0:
                print(f"seed {seed}: done", flush=True)


def spread(values: list[float], digits: int = 3) -> str:
    """Mean +- sample standard deviation (n - 1); one value alone, as it is."""
    if len(values) == 1:
        return f"{values[0]:.{digits}f}"
    return f"{statistics.mean(values):.{digits}f} +- {statistics.stdev(values):.{digits}f}"


def summary(title: str, command: str, split: str, seeds: list[int], key_columns: tuple[str, ...],
            rows: dict[tuple, list[dict[str, float]]], notes: list[str] = ()) -> str:
    """A Markdown page: for each row (its key cells, then each seed's scores in the order of `seeds`),
    ACC, NMI and ARI as mean +- sample std over the seeds, the worst seed's ACC and NMI, and each seed's
    ACC and NMI; then `notes`, one line each."""
    listed = ", ".join(map(str, seeds))
    lines = [f"# {title} over seeds {listed}", "", f"Command: `{command}`",
             f"Evaluated on: {split}. Mean +- sample std (n - 1) over {len(seeds)} runs.", "",
             "| " + " | ".join(key_columns) + " | " + " | ".join(name.upper() for name in SCORES)
             + f" | worst seed's ACC / NMI | ACC per seed ({listed}) | NMI per seed |",
             "|" + " --- |" * (len(key_columns) + len(SCORES) + 3)]
    for key, runs in rows.items():
        acc, nmi = ([run[name] for run in runs] for name in ("acc", "nmi"))
        lines.append("| " + " | ".join(map(str, key)) + " | "
                     + " | ".join(spread([run[name] for run in runs]) for name in SCORES)
                     + f" | {min(acc):.3f} / {min(nmi):.3f} | " + " / ".join(f"{value:.4f}" for value in acc)
                     + " | " + " / ".join(f"{value:.4f}" for value in nmi) + " |")
    return "\n".join(lines + [""] + list(notes) + [""])


@contextlib.contextmanager
def bad_input_exits() -> Iterator[None]:
    """Bad data stops a benchmark as it stops the script: its one line on stderr, status 2."""
    try:
        yield
    except am.InputError as error:
        print(f"error: {error}", file=sys.stderr)
        sys.exit(2)


def load_for_seed(config: am.Config) -> am.Dataset:
    """The script's data for this config, with its stack imported and UMAP on one thread, as in the
    script's worker processes (so that the scores are the script's)."""
    data = am.load_data(config)
    am.import_stack()
    import numba

    numba.set_num_threads(1)
    return data


def clustering_space(encoder, data: am.Dataset, config: am.Config) -> tuple:
    """What the script's clustering embedding reduces, as the script prepares it (am.spaces): (its
    name, the points, their neighbour graph); under --embed-train "umap10+train", else "umap10"."""
    name = "umap10+train" if config.embed_train else "umap10"
    context = am.encode(encoder, data.x_train) if config.embed_train else None
    return name, *am.spaces(am.encode(encoder, data.x_test), context, config.seed)[0][name]


def write_summary(out: Path, text: str) -> None:
    """OUT/summary.md, printed as well."""
    (out / "summary.md").write_text(text)
    print(text)
