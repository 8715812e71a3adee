"""Run autoencoder_mnist.py once per seed and report each clustering row as mean +- std over the seeds.

    python benchmarks/seeds.py [--seeds 0 1 2] [--jobs 1] [--out seeds] -- [flags for the script]

Seed N's run writes the folder OUT/seed-N and its terminal output to OUT/seed-N.log. A seed whose
folder holds a finished run with the same flags is not run again, and one that was stopped continues
from its last finished epoch (--resume). A finished run with the same data and training
flags but other scoring flags (--embed-train, --pca-dims, --test-size) is re-scored with --reuse-model:
its model is not trained again. Then OUT/summary.md lists, for every row of the clustering table,
ACC, NMI and ARI as mean +- sample standard deviation (n - 1) over the seeds, the lowest ACC and NMI
of any seed, each seed's ACC and NMI, and the reconstruction BCE.

--jobs N runs N seeds at once, each with cores / N threads. TensorFlow gains little from a second
thread on this small model: in a short probe on this project's 2-core machine, two single-threaded
runs together trained 1.3-1.8x as many images per second as one run on both cores, so --jobs 2 suits
a 2-core CPU. Thread counts change floating-point sums, so a seed's scores differ between --jobs
values, for the seed's 1,568-number codes by several points of ACC (docs/EXPERIMENTS.md).
"""
import json
import sys
from dataclasses import replace

import common
from common import am


def script_flags(config: am.Config, flags: list[str]) -> list[str] | None:
    """The script's flags for this seed, or None when config.out already holds the finished run.

    A run stopped there continues (--resume); a finished run there whose data and training flags
    match lends its model (--reuse-model).
    """
    ours = {**am.config_record(config), "resume": None}
    metrics = config.out / "metrics.json"
    theirs = json.loads(metrics.read_text())["config"] if metrics.is_file() else {}
    # The run in config.out is that folder's however its --out was spelled (relative or absolute).
    if {**theirs, "reuse_model": None, "resume": None, "out": ours["out"]} == ours:
        return None
    if (config.out / ".checkpoint" / "config.json").is_file():
        return [*flags, "--seed", str(config.seed), "--resume", str(config.out)]
    seed_flags = [*flags, "--seed", str(config.seed), "--out", str(config.out)]
    if theirs and all(str(theirs.get(name)) == str(ours[name]) for name in am.TRAINING_FLAGS):
        seed_flags += ["--reuse-model", str(config.out)]
    return seed_flags


def main() -> None:
    arguments = common.parser(__doc__.split("\n\n")[0], out="seeds")
    args, base = common.parse(arguments, own=("--seed", "--out", "--resume", "--reuse-model"))
    configs = [replace(base, seed=seed, out=args.out / f"seed-{seed}") for seed in args.seeds]
    args.out.mkdir(parents=True, exist_ok=True)
    commands, logs = {}, {}
    for config in configs:
        seed_flags = script_flags(config, args.flags)
        if seed_flags is None:
            print(f"seed {config.seed}: finished run kept in {config.out}/", flush=True)
            continue
        commands[config.seed] = [sys.executable, str(common.HERE.parent / "autoencoder_mnist.py"), *seed_flags]
        logs[config.seed] = config.out.with_suffix(".log")
        reusing = " (its trained model reused)" if "--reuse-model" in seed_flags else ""
        print(f"seed {config.seed}: running{reusing}, terminal output in {logs[config.seed]}", flush=True)
    try:
        common.run_seeds(commands, args.jobs, logs)
    except KeyboardInterrupt:
        sys.exit("\nstopped by Ctrl-C; finished epochs are kept: rerun the same command to continue")

    runs = [json.loads((config.out / "metrics.json").read_text()) for config in configs]
    by_seed = [{(row["features"], row["reduction"], row["clusterer"]): row for row in run["clustering"]}
               for run in runs]
    rows, partial = {}, []
    for key in dict.fromkeys(key for seed_rows in by_seed for key in seed_rows):
        present = [(config.seed, seed_rows[key]) for config, seed_rows in zip(configs, by_seed) if key in seed_rows]
        if len(present) == len(runs):
            rows[key] = [row for _, row in present]
        else:  # a student the trust rule left out on some seeds: not averaged over the others alone
            partial.append(f"Row {' '.join(key)} on seeds {', '.join(str(seed) for seed, _ in present)} only "
                           "(left out on the others): ACC " + " / ".join(f"{row['acc']:.4f}" for _, row in present))
    bce = common.spread([run["reconstruction"]["bce"] for run in runs], digits=4)
    summary = common.summary("Scores", " ".join(["python", "benchmarks/seeds.py", *sys.argv[1:]]), base.evaluate_on,
                             args.seeds, ("features", "reduction", "clusterer"), rows,
                             [f"Reconstruction BCE on the scored images: {bce}", *partial])
    common.write_summary(args.out, summary)


if __name__ == "__main__":
    main()
