"""The script under each Keras backend, back to back: wall time per stage and the rows.

    python benchmarks/backends.py [--backends tensorflow jax torch] [--seeds 0 1] [--out backends] \
        -- [flags for the script, e.g. --recipe student]

For each seed, one run per backend in turn (KERAS_BACKEND; jax and torch are not in requirements.txt
but for the suite's jax: `pip install torch==2.13.0` for PyTorch's CPU build), one at a time with the
script's default threads, each into OUT/BACKEND-SEED (its terminal output in OUT/BACKEND-SEED.log). A
folder that holds a finished run is not run again. OUT/summary.md then gives, per backend and seed,
the wall seconds of each stage and of the whole run, and the ACC / NMI of the recipe's own row (the
last row of the codes: the student, umap10+train or umap10 gmm), with the ratio of each backend's
whole-run time to TensorFlow's in the same round. The machine's speed drifts: compare backends only
within a round.
"""
import json
import os
import subprocess
import sys

import common


def main() -> None:
    arguments = common.parser(__doc__.split("\n\n")[0], out="backends", jobs=False)
    arguments.add_argument("--backends", nargs="+", default=["tensorflow", "jax", "torch"],
                           choices=["tensorflow", "jax", "torch"], help="Keras backends, in this order")
    args, _ = common.parse(arguments, own=("--seed", "--out", "--resume", "--reuse-model"))
    args.out.mkdir(parents=True, exist_ok=True)
    runs = {}
    for seed in args.seeds:
        for backend in args.backends:
            out = args.out / f"{backend}-{seed}"
            if not (out / "metrics.json").is_file():
                print(f"seed {seed}, {backend}: running, output in {out}.log", flush=True)
                with open(out.with_suffix(".log"), "w") as log:
                    status = subprocess.run(
                        [sys.executable, str(common.HERE.parent / "autoencoder_mnist.py"), *args.flags, "--seed",
                         str(seed), "--out", str(out)], stdout=log, stderr=subprocess.STDOUT,
                        env={**os.environ, "KERAS_BACKEND": backend}).returncode
                if status:
                    sys.exit(f"error: seed {seed} under {backend} failed with status {status}; see {out}.log")
            runs[backend, seed] = json.loads((out / "metrics.json").read_text())
    stages = [stage for stage in runs[args.backends[0], args.seeds[0]]["timings"] if stage != "total"]
    lines = [f"# The script under each Keras backend, seeds {', '.join(map(str, args.seeds))}", "",
             f"Command: `python benchmarks/backends.py {' '.join(sys.argv[1:])}`", "",
             "| backend | version | seed | " + " | ".join(stages) + " | whole run | against tensorflow | row | ACC | NMI |",
             "|" + " --- |" * (len(stages) + 8)]
    for (backend, seed), metrics in runs.items():
        row = [row for row in metrics["clustering"] if row["features"] == "latent"][-1]
        timings, base = metrics["timings"], runs.get(("tensorflow", seed))
        ratio = f"{timings['total'] / base['timings']['total']:.2f}x" if base else "-"
        lines.append(f"| {backend} | {metrics['versions'][backend]} | {seed} | "
                     + " | ".join(f"{timings.get(stage, 0):.0f}" for stage in stages)
                     + f" | {timings['total']:.0f} | {ratio} | {row['reduction']} {row['clusterer']} | "
                     f"{row['acc']:.4f} | {row['nmi']:.4f} |")
    common.write_summary(args.out, "\n".join(lines + [""]))


if __name__ == "__main__":
    main()
