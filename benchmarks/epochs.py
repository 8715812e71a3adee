"""Score the clustering embedding after each of several epoch counts, over seeds: how many epochs the
autoencoder needs.

    python benchmarks/epochs.py [--at 10 15 20 30 50] [--seeds 0 1 2] [--jobs 1] [--out epochs] [--mirror] [--augment] \
        -- [flags for the script, without --epochs]

Each seed trains one model with the script's own data, model and training (its flags after `--`;
choose on `--evaluate-on validation`), and stops at each count in --at to score the clustering
embedding as the script does: the scored images' codes, UMAP to 10-d (with the training codes as
context when the flags say `--embed-train`, as `--recipe headline` does: `umap10+train`), KMeans and a
Gaussian mixture. Training then continues from the script's own checkpoint (weights, optimizer and
epoch), so count 50 is one model's 50 epochs, as the script trains them (Adam at a constant rate:
stopping earlier changes nothing before). Only that embedding's rows are scored, not the whole table.

Seed N writes OUT/seed-N.jsonl, one line per count, keeps its checkpoint in OUT/seed-N-checkpoint and
its latest model in OUT/seed-N.keras (for benchmarks/refine.py): a stopped run continues from its last
finished count when the same command runs again. OUT/summary.md then gives, for each count and
clusterer, ACC, NMI and ARI as mean +- sample std over the seeds with the worst seed, and the
validation BCE and training seconds of each count. --jobs N runs N seeds at once with cores / N
threads each, as benchmarks/seeds.py does.
"""
import argparse
import json
import statistics
import sys
import time
from dataclasses import replace
from pathlib import Path

import numpy as np

import common
from common import am


def score_counts(config: am.Config, counts: list[int], out: Path, mirror: bool = False,
                 augment: bool = False) -> None:
    """Train one seed's model, scoring it after each count of epochs; a line per count in OUT/seed-N.jsonl.
    With `mirror` it trains on the training images and their mirror images (left and right swapped);
    with `augment`, each epoch on a fresh shift and rotation of each training image (see augmented)."""
    log, checkpoint = out / f"seed-{config.seed}.jsonl", out / f"seed-{config.seed}-checkpoint"
    done = [json.loads(line) for line in log.read_text().splitlines()] if log.is_file() else []
    data = common.load_for_seed(config)
    from threadpoolctl import threadpool_limits

    am.set_seed(config.seed)
    autoencoder, encoder = am.build_autoencoder(config.bottleneck, config.architecture, config.noise,
                                                config.precision)
    checkpoint.mkdir(exist_ok=True)
    seconds = done[-1]["training_seconds"] if done else 0.0
    seen = replace(data, x_train=np.concatenate([data.x_train, data.x_train[:, :, ::-1]])) if mirror else data
    for count in (count for count in counts if count > (done[-1]["epochs"] if done else 0)):
        start = time.perf_counter()
        if augment:  # an epoch at a time, each on its own fresh views, continuing from the checkpoint
            for epoch in range(am.saved_epochs(checkpoint) + 1, count + 1):
                history = am.train(autoencoder, augmented(seen, config.seed * 10_000 + epoch), epoch,
                                   checkpoint, config.seed)
        else:
            history = am.train(autoencoder, seen, count, checkpoint, config.seed)
        seconds += time.perf_counter() - start
        start = time.perf_counter()
        name, points, graph = common.clustering_space(encoder, data, config)
        with threadpool_limits(1):  # one thread, as in the script's worker processes: the same scores
            clusterings = am.embed_and_cluster("latent", name, points, graph, len(data.x_test), data.y_test,
                                               data.n_clusters, config.seed)
        rows = {clustering.clusterer: clustering.scores for clustering in clusterings}
        line = {"seed": config.seed, "epochs": count, "reduction": name, "val_bce": history["val_loss"][-1],
                "training_seconds": round(seconds, 1), "scoring_seconds": round(time.perf_counter() - start, 1),
                "rows": rows}
        autoencoder.save(out / f"seed-{config.seed}.keras")
        with log.open("a") as stream:
            stream.write(json.dumps(line) + "\n")
        done.append(line)
        gmm = rows["gmm"]
        print(f"seed {config.seed}: epoch {count}  val BCE {line['val_bce']:.4f}  {name} gmm ACC "
              f"{gmm['acc']:.4f} NMI {gmm['nmi']:.4f}  ({seconds:,.0f} s training)", flush=True)


def augmented(data: am.Dataset, seed: int) -> am.Dataset:
    """The training images shifted and rotated afresh, as the student sees them in training (DEC-DA
    pretrains its autoencoder so, reconstructing each view); the scored images are left as they are."""
    import keras

    views = keras.Sequential([keras.layers.RandomTranslation(am.SHIFT, am.SHIFT, fill_mode="constant", seed=seed),
                              keras.layers.RandomRotation(am.ROTATION, fill_mode="constant", seed=seed + 1)])
    x = np.concatenate([keras.ops.convert_to_numpy(views(am.intensities(data.x_train[i:i + 4096]), training=True))
                        for i in range(0, len(data.x_train), 4096)])
    return replace(data, x_train=x.astype("float32"))


def summarise(lines: list[dict], seeds: list[int], command: str, split: str) -> str:
    """The summary page: each count's rows over the seeds, then its BCE and training seconds."""
    counts = sorted({line["epochs"] for line in lines})
    at = {count: sorted((line for line in lines if line["epochs"] == count), key=lambda line: seeds.index(line["seed"]))
          for count in counts}
    rows = {(count, runs[0]["reduction"], clusterer): [run["rows"][clusterer] for run in runs]
            for count, runs in at.items() for clusterer in runs[0]["rows"]}
    notes = [f"Epochs {count}: {split} BCE {common.spread([run['val_bce'] for run in runs], 4)}, "
             f"{statistics.mean(run['training_seconds'] for run in runs):,.0f} s of training" for count, runs in at.items()]
    return common.summary("Clustering after each count of epochs", command, split, seeds,
                          ("epochs", "reduction", "clusterer"), rows, notes)


def main() -> None:
    arguments = common.parser(__doc__.split("\n\n")[0], out="epochs")
    arguments.add_argument("--at", type=int, nargs="+", default=[10, 15, 20, 30, 50],
                           help="epoch counts to score at (default: 10 15 20 30 50)")
    arguments.add_argument("--mirror", action="store_true",
                           help="train on the training images and their mirror images, twice the images an epoch "
                                "(an invariance of clothes, not of digits); scored as usual")
    arguments.add_argument("--augment", action="store_true",
                           help="train each epoch on a fresh shift and rotation of each training image (DEC-DA's "
                                "pretraining, the student's augmentation); scored on the images as they are")
    arguments.add_argument("--one-seed", action="store_true", help=argparse.SUPPRESS)  # a seed's own process
    args, base = common.parse(arguments, own=("--epochs", "--seed", "--out", "--resume", "--reuse-model"))
    if min(args.at) < 1:
        arguments.error("--at takes epoch counts of 1 or more")
    counts = sorted(set(args.at))
    base = replace(base, epochs=counts[-1])
    args.out.mkdir(parents=True, exist_ok=True)
    if args.one_seed:
        with common.bad_input_exits():
            score_counts(replace(base, seed=args.seeds[0]), counts, args.out, args.mirror, args.augment)
        return
    own = ["--at", *map(str, counts), "--out", str(args.out), *(["--mirror"] if args.mirror else []),
           *(["--augment"] if args.augment else []), "--", *args.flags]
    try:
        common.run_seeds({seed: [sys.executable, __file__, "--one-seed", "--seeds", str(seed), *own]
                          for seed in args.seeds}, args.jobs)
    except KeyboardInterrupt:
        sys.exit("\nstopped by Ctrl-C; finished counts are kept: rerun the same command to continue")
    lines = [json.loads(line) for seed in args.seeds
             for line in (args.out / f"seed-{seed}.jsonl").read_text().splitlines()]
    summary = summarise([line for line in lines if line["epochs"] in counts], args.seeds,
                        " ".join(["python", "benchmarks/epochs.py", *sys.argv[1:]]), base.evaluate_on)
    common.write_summary(args.out, summary)


if __name__ == "__main__":
    main()
