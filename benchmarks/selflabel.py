"""Score the script's stage that trains the encoder for clustering (--self-label) on the models that
benchmarks/epochs.py saved, over seeds, without training them again: how many rounds and epochs, on
which pretraining.

    python benchmarks/selflabel.py --models epochs [--seeds 0 1 2] [--out selflabel] \
        -- [the models' flags] --self-label 3 [--self-label-epochs 4]

The flags after `--` are the ones the models were trained with (choose on `--evaluate-on validation`),
and the stage's. For each seed the script's own functions run the stage (train_for_clustering, on the
training images alone) and assign the scored images (assign_clusters), as a run of the script with
`--reuse-model` would; the line gives the row's ACC, NMI and ARI, the share of training images whose
cluster changed in each round (the stop signal that needs no label), the stage's seconds, and, as a
diagnostic read after training, the ACC of the training images' clusters.

OUT/seed-N.json keeps a seed's result (a seed whose file exists is not run again); OUT/summary.md gives
the scores over the seeds. One process; TensorFlow with the caller's threads, UMAP and the mixture with
one, as in the script.
"""
import sys
import time
from pathlib import Path

import numpy as np

import common
from common import am


def self_label_seed(config: am.Config, model: Path) -> dict:
    """One seed's stage on its saved model: the scored images' scores, the changed shares, the seconds."""
    data = common.load_for_seed(config)
    import keras

    encoder = keras.saving.load_model(model).get_layer("encoder")
    start = time.perf_counter()
    classifier, stage = am.train_for_clustering(encoder, data.x_train, len(np.unique(data.y_test)), config)
    seconds = time.perf_counter() - start
    if classifier is None:  # the student was not trusted, and no self-labelled classifier stands
        return {"seed": config.seed, "acc": float("nan"), "nmi": float("nan"), "ari": float("nan"),
                "seconds": seconds, **stage, "train_acc": float("nan")}
    row = am.assign_clusters(classifier, data.x_test, data.y_test, seconds, config.seed).row
    trained = classifier.predict(data.x_train, batch_size=1024, verbose=0).argmax(axis=1)
    print(f"seed {config.seed}: ACC {row['acc']:.4f}  NMI {row['nmi']:.4f}  ({seconds:.0f} s)", flush=True)
    return {"seed": config.seed, **row, **stage, "train_acc": am.score(data.y_train, trained)["acc"]}


def main() -> None:
    arguments = common.parser(__doc__.split("\n\n")[0], out="selflabel", jobs=False)
    args, base = common.parse(arguments, own=("--seed", "--out", "--resume", "--reuse-model"))
    if not (base.self_label or base.student):
        arguments.error("give the stage after --: -- [the models' flags] --self-label N and/or --student EPOCHS")
    results = common.on_saved_models(arguments, args, base, self_label_seed)
    notes = ["Share of training images whose cluster changed in each round, per seed: "
             + "; ".join(" / ".join(f"{share:.2%}" for share in result["changed"]) for result in results),
             "ACC of the training images' clusters (a diagnostic, read after training): "
             + " / ".join(f"{result['train_acc']:.4f}" for result in results),
             "The stage's seconds per seed: " + " / ".join(f"{result['seconds']:.0f}" for result in results)]
    if base.student:
        notes.append("Share of training images with clean targets, per seed: "
                     + " / ".join(f"{result['clean']:.1%}" for result in results))
    summary = common.summary("The --self-label stage", " ".join(["python", "benchmarks/selflabel.py", *sys.argv[1:]]),
                             base.evaluate_on, args.seeds, ("rounds", "epochs per round", "student epochs", "student rounds", "agreement"),
                             {(base.self_label, base.self_label_epochs, base.student, base.student_rounds,
                               base.agreement): results}, notes)
    (args.out / "summary.md").write_text(summary)
    print(summary)


if __name__ == "__main__":
    main()
