"""Score the clustering embedding after each of several epoch counts, over seeds: how many epochs the
autoencoder needs.

    python benchmarks/epochs.py [--at 10 15 20 30 50] [--seeds 0 1 2] [--jobs 1] [--out epochs] \
        -- [flags for the script, without --epochs]

Each seed trains one model with the script's own data, model and settings (its flags after `--`;
choose on `--evaluate-on validation`), and stops at each count in --at to score the clustering
embedding as the script does: the scored images' codes, UMAP to 10-d (with the training codes as
context when the flags say `--embed-train`, the headline recipe's `umap10+train`), KMeans and a
Gaussian mixture. Training continues from there with the same optimizer, so count 50 is one model's
50 epochs, as the script trains them (Adam at a constant rate: stopping earlier changes nothing
before). Only that embedding's rows are scored, not the script's whole table.

Seed N writes OUT/seed-N.jsonl, one line per count, and keeps its latest model in OUT/seed-N.keras: a
stopped run continues from its last finished count when the same command runs again. OUT/summary.md
then gives, for each count and clusterer, ACC and NMI as mean +- sample std over the seeds with the
worst seed, the validation BCE and the training seconds. --jobs N runs N seeds at once with cores / N
threads each, as benchmarks/seeds.py does.
"""
import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from dataclasses import replace
from functools import partial
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))
import autoencoder_mnist  # noqa: E402
from seeds import run_at_once, spread  # noqa: E402


def score_counts(config: autoencoder_mnist.Config, counts: list[int], out: Path) -> None:
    """Train one seed's model, scoring it after each count of epochs; a line per count in OUT/seed-N.jsonl."""
    log, saved = out / f"seed-{config.seed}.jsonl", out / f"seed-{config.seed}.keras"
    done = [json.loads(line) for line in log.read_text().splitlines()] if log.is_file() and saved.is_file() else []
    data = autoencoder_mnist.load_data(config)
    autoencoder_mnist.import_stack()
    import keras
    import numba
    from threadpoolctl import threadpool_limits

    numba.set_num_threads(1)  # UMAP's, as in the script's worker processes
    keras.utils.set_random_seed(config.seed)
    if done:
        autoencoder = keras.saving.load_model(saved)
        print(f"seed {config.seed}: continuing after epoch {done[-1]['epochs']}", flush=True)
    else:
        autoencoder = autoencoder_mnist.build_autoencoder(config.bottleneck, config.architecture, config.noise)[0]
        autoencoder.compile(optimizer="adam", loss="binary_crossentropy")  # as the script's train()
        log.write_text("")
    encoder = autoencoder.get_layer("encoder")
    trained = done[-1]["epochs"] if done else 0
    seconds = done[-1]["training_seconds"] if done else 0.0
    name = "umap10+train" if config.embed_train else "umap10"
    for count in (count for count in counts if count > trained):
        start = time.perf_counter()
        history = autoencoder.fit(data.x_train, data.x_train, initial_epoch=trained, epochs=count,
                                  batch_size=config.batch_size, shuffle=True,
                                  validation_data=(data.x_test, data.x_test), verbose=0).history
        seconds += time.perf_counter() - start
        start = time.perf_counter()
        codes = autoencoder_mnist.encode(encoder, data.x_test)
        context = autoencoder_mnist.encode(encoder, data.x_train) if config.embed_train else None
        space = autoencoder_mnist.prepare_spaces("latent", codes, (name,), config, context)[0][0]
        with threadpool_limits(1):  # one thread, as in the script's worker processes: the same scores
            embedding = autoencoder_mnist.embed(space, config)
            rows = {clusterer: autoencoder_mnist.cluster_and_score(embedding, data.y_test, len(set(data.y_test)),
                                                                   config.seed, clusterer)[1]
                    for clusterer in autoencoder_mnist.CLUSTERERS[name]}
        line = {"seed": config.seed, "epochs": count, "reduction": name, "val_bce": history["val_loss"][-1],
                "training_seconds": round(seconds, 1), "scoring_seconds": round(time.perf_counter() - start, 1),
                "rows": rows}
        autoencoder.save(saved.with_suffix(".partial.keras"))
        os.replace(saved.with_suffix(".partial.keras"), saved)
        with log.open("a") as stream:
            stream.write(json.dumps(line) + "\n")
        trained = count
        gmm = rows.get("gmm", rows["kmeans"])
        print(f"seed {config.seed}: epoch {count}  val BCE {line['val_bce']:.4f}  {name} gmm ACC {gmm['acc']:.4f}"
              f" NMI {gmm['nmi']:.4f}  ({seconds:,.0f} s training)", flush=True)


def run_seeds(seeds: list[int], jobs: int, argv: list[str]) -> None:
    """Run this command once per seed in its own process, `jobs` at a time; stop if one fails."""
    def start(seed: int, env: dict | None) -> subprocess.Popen:
        return subprocess.Popen([sys.executable, __file__, "--one-seed", "--seeds", str(seed), *argv], env=env)

    starts = {seed: partial(start, seed) for seed in seeds}
    for seed, status in run_at_once(starts, jobs):
        if status != 0:
            sys.exit(f"error: seed {seed} failed with status {status}; rerun the same command to continue "
                     "from its last finished count")


def summarise(lines: list[dict], seeds: list[int], command: str, split: str) -> str:
    """A Markdown table: for each count and clusterer, ACC and NMI over the seeds."""
    table = ["# Clustering after each count of epochs, over seeds " + ", ".join(map(str, seeds)), "",
             f"Command: `{command}`", f"Scored on: {split}. Mean +- sample std (n - 1) over the seeds.", "",
             "| epochs | reduction | clusterer | ACC | NMI | worst seed's ACC / NMI | ACC per seed | BCE | "
             "training s |", "|" + " --- |" * 9]
    for count in sorted({line["epochs"] for line in lines}):
        at = [line for line in lines if line["epochs"] == count]
        for clusterer in at[0]["rows"]:
            acc, nmi = ([line["rows"][clusterer][score] for line in at] for score in ("acc", "nmi"))
            table.append(f"| {count} | {at[0]['reduction']} | {clusterer} | {spread(acc)} | {spread(nmi)} | "
                         f"{min(acc):.3f} / {min(nmi):.3f} | " + " / ".join(f"{value:.4f}" for value in acc)
                         + f" | {spread([line['val_bce'] for line in at], 4)} | "
                         f"{statistics.mean(line['training_seconds'] for line in at):,.0f} |")
    return "\n".join(table + [""])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--at", type=int, nargs="+", default=[10, 15, 20, 30, 50],
                        help="epoch counts to score at (default: 10 15 20 30 50)")
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2], help="seeds to run (default: 0 1 2)")
    parser.add_argument("--jobs", type=int, default=1, help="seeds run at once (default: 1)")
    parser.add_argument("--out", type=Path, default=Path("epochs"), help="folder for the runs (default: epochs)")
    parser.add_argument("--one-seed", action="store_true", help=argparse.SUPPRESS)  # a seed's own process
    parser.add_argument("flags", nargs="*", help="flags for autoencoder_mnist.py, after --")
    args = parser.parse_args()
    if args.jobs < 1 or min(args.seeds + args.at) < 0 or min(args.at) < 1:
        parser.error("--jobs and --at must be at least 1, and --seeds whole numbers")
    if any(flag.startswith(("--epochs", "--seed", "--out", "--resume", "--reuse-model")) for flag in args.flags):
        parser.error("give --at, --seeds and --out to this command, not --epochs, --seed or --out to the script")
    counts = sorted(set(args.at))
    base = replace(autoencoder_mnist.parse_config(args.flags), epochs=counts[-1])  # a bad flag stops here
    args.out.mkdir(parents=True, exist_ok=True)
    try:
        if args.one_seed:
            try:
                score_counts(replace(base, seed=args.seeds[0]), counts, args.out)
            except autoencoder_mnist.InputError as error:  # bad data: the script's one line, status 2
                print(f"error: {error}", file=sys.stderr)
                sys.exit(2)
            return
        run_seeds(args.seeds, args.jobs, ["--at", *map(str, counts), "--out", str(args.out), "--", *args.flags])
    except KeyboardInterrupt:
        sys.exit("\nstopped by Ctrl-C; finished counts are kept: rerun the same command to continue")
    lines = [json.loads(line) for seed in args.seeds
             for line in (args.out / f"seed-{seed}.jsonl").read_text().splitlines()]
    summary = summarise([line for line in lines if line["epochs"] in counts], args.seeds,
                        " ".join(["python", "benchmarks/epochs.py", *sys.argv[1:]]), base.evaluate_on)
    (args.out / "summary.md").write_text(summary)
    print(summary)


if __name__ == "__main__":
    main()
