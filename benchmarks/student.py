"""Score the script's stage that trains for clustering (--student) on the models that
benchmarks/epochs.py saved, over seeds, without training them again: which student, on which
pretraining.

    python benchmarks/student.py --models epochs [--seeds 0 1 2] [--out student] \
        -- [the models' flags] --student 6 [--pixel-twin]

The flags after `--` are the ones the models were trained with (choose on `--evaluate-on validation`),
and the stage's. For each seed the script's own functions run the stage (train_for_clustering, on the
training images and their codes alone; with --pixel-twin on their pixels too) and assign the scored
images, as a run of the script with `--reuse-model` would (train_students); the line gives the row's
ACC, NMI and ARI, the share of training images with clean targets and the stage's seconds.

OUT/seed-N.json keeps a seed's result (a seed whose file exists is not run again); OUT/summary.md gives
the scores over the seeds. One process; TensorFlow with the caller's threads, UMAP and the mixture with
one, as in the script.
"""
import math
import sys
from pathlib import Path

import common
from common import am


def student_seed(config: am.Config, model: Path) -> dict:
    """One seed's stage on its saved model, as the script runs it (am.train_students): for each kind
    of features, the scored images' scores, the stage's shares and seconds."""
    data = common.load_for_seed(config)
    import keras

    encoder = keras.saving.load_model(model).get_layer("encoder")
    training = {"latent": am.encode(encoder, data.x_train)}
    if config.pixel_twin:
        training["pixels"] = am.intensities(data.x_train).reshape(len(data.x_train), -1)
    stages = am.Stages()
    rows, records, _ = am.train_students(training, data, config, stages)
    rows = {row.features: row.row for row in rows}
    result = {"seed": config.seed}
    for kind in training:
        seconds = stages.seconds[f"student of the {am.NAMES[kind]}"]
        result[kind] = {"acc": math.nan, "nmi": math.nan, "ari": math.nan, **rows.get(kind, {}),
                        **records[kind], "seconds": seconds}
        print(f"seed {config.seed}, {kind}: ACC {result[kind]['acc']:.4f}  NMI "
              f"{result[kind]['nmi']:.4f}  ({seconds:.0f} s)", flush=True)
    return result


def main() -> None:
    arguments = common.parser(__doc__.split("\n\n")[0], out="student", jobs=False, models=True)
    args, base = common.parse(arguments, own=("--seed", "--out", "--resume", "--reuse-model"))
    if not base.student:
        arguments.error("give the stage after --: -- [the models' flags] --student EPOCHS")
    results = common.on_saved_models(arguments, args, base, student_seed)
    kinds = [kind for kind in ("latent", "pixels") if kind in results[0]]
    notes = [f"{am.NAMES[kind].capitalize()}: {what} per seed: "
             + " / ".join(fmt.format(result[kind][key]) for result in results)
             for kind in kinds for what, key, fmt in (
                 ("share of training images with clean targets", "clean", "{:.1%}"),
                 ("the stage's seconds", "seconds", "{:.0f}"))]
    common.write_summary(args.out, common.summary(
        "The --student stage", " ".join(["python", "benchmarks/student.py", *sys.argv[1:]]), base.evaluate_on,
        args.seeds, ("features", "student epochs"), {(kind, base.student): [result[kind] for result in results]
                                                       for kind in kinds}, notes))


if __name__ == "__main__":
    main()
