"""Score the script's stage that trains for clustering (--student) on the models that
benchmarks/epochs.py saved, over seeds, without training them again: which student, on which
pretraining.

    python benchmarks/student.py --models epochs [--seeds 0 1 2] [--out student] \
        -- [the models' flags] --student 6 [--agreement 0.95] [--pixel-twin]

The flags after `--` are the ones the models were trained with (choose on `--evaluate-on validation`),
and the stage's. For each seed the script's own functions run the stage (train_for_clustering, on the
training images and their codes alone; with --pixel-twin on their pixels too) and assign the scored
images (assign_clusters), as a run of the script with `--reuse-model` would; the line gives the row's
ACC, NMI and ARI, the share of training images with clean targets, the stage's seconds, and, as a
diagnostic read after training, the ACC of the training images' clusters.

OUT/seed-N.json keeps a seed's result (a seed whose file exists is not run again); OUT/summary.md gives
the scores over the seeds. One process; TensorFlow with the caller's threads, UMAP and the mixture with
one, as in the script.
"""
import math
import sys
import time
from pathlib import Path

import numpy as np

import common
from common import am


def student_seed(config: am.Config, model: Path) -> dict:
    """One seed's stage on its saved model: for each kind of features, the scored images' scores, the
    stage's shares and seconds."""
    data = common.load_for_seed(config)
    import keras

    encoder = keras.saving.load_model(model).get_layer("encoder")
    features = {"latent": am.encode(encoder, data.x_train)}
    if config.pixel_twin:
        features["pixels"] = data.x_train.reshape(len(data.x_train), -1)
    result = {"seed": config.seed}
    for kind, points in features.items():
        start = time.perf_counter()
        student, stage = am.train_for_clustering(points, data.x_train, len(np.unique(data.y_test)), config)
        seconds = time.perf_counter() - start
        if student is None:  # not trusted: no row
            result[kind] = {"acc": math.nan, "nmi": math.nan, "ari": math.nan, "seconds": seconds, **stage,
                            "train_acc": math.nan}
            continue
        row = am.assign_clusters(student, kind, data.x_test, data.y_test, seconds, config.seed).row
        trained = student.predict(data.x_train, batch_size=1024, verbose=0).argmax(axis=1)
        print(f"seed {config.seed}, {kind}: ACC {row['acc']:.4f}  NMI {row['nmi']:.4f}  ({seconds:.0f} s)", flush=True)
        result[kind] = {**row, **stage, "train_acc": am.score(data.y_train, trained)["acc"]}
    return result


def main() -> None:
    arguments = common.parser(__doc__.split("\n\n")[0], out="student", jobs=False)
    args, base = common.parse(arguments, own=("--seed", "--out", "--resume", "--reuse-model"))
    if not base.student:
        arguments.error("give the stage after --: -- [the models' flags] --student EPOCHS")
    results = common.on_saved_models(arguments, args, base, student_seed)
    kinds = [kind for kind in ("latent", "pixels") if kind in results[0]]
    notes = [f"{am.NAMES[kind].capitalize()}: {what} per seed: "
             + " / ".join(fmt.format(result[kind][key]) for result in results)
             for kind in kinds for what, key, fmt in (
                 ("share of training images with clean targets", "clean", "{:.1%}"),
                 ("ACC of the training images' clusters (a diagnostic, read after training)", "train_acc", "{:.4f}"),
                 ("the stage's seconds", "seconds", "{:.0f}"))]
    summary = common.summary("The --student stage", " ".join(["python", "benchmarks/student.py", *sys.argv[1:]]),
                             base.evaluate_on, args.seeds, ("features", "student epochs", "agreement"),
                             {(kind, base.student, base.agreement): [result[kind] for result in results]
                              for kind in kinds}, notes)
    (args.out / "summary.md").write_text(summary)
    print(summary)


if __name__ == "__main__":
    main()
