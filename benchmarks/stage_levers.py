"""Levers on the stage that trains for clustering (--student), each measured on the models that
benchmarks/epochs.py saved: which student learns the training images best.

    python benchmarks/stage_levers.py --models val20 --lever LEVER [--seeds 0 1 2] [--out OUT] \
        -- [the models' flags] --student 6

LEVER is one of
  none         the script's stage: a student learns the clean targets (train_for_clustering)
  per-cluster  each cluster gives the same share of its images, those its neighbours agree on most
               (a threshold per cluster, at most AGREEMENT), so that no cluster is left thin
  overcluster  IIC's over-clustering head: beside its softmax of K, the student has one of 5K that
               learns the training features' finer clusters (the mixture of 5K components on the
               same umap10 embedding) wherever they are clean; the K-way head is scored
  rounds       a second student learns every training image that the first assigns with
               probability >= CONFIDENT (0.9), to that cluster: the first's own confident assignments as targets

Every lever reads the training images and their codes alone, as the stage does: no label, no scored
image. The stage's targets (umap10 and the mixture on the training codes, the script's
training_targets) are computed once per model and kept in MODELS/seed-N-targets.npz, which every lever
reads. The student is scored whether or not the trust rule (TRUSTED) would keep it; "kept" says what
the rule would decide (the share of the stage's own clean targets the final student gives back).

OUT/seed-N.json keeps a seed's result (not run again); OUT/summary.md gives the scores over the seeds.
"""
import math
import sys
import time
from pathlib import Path

import numpy as np

import common
from common import am

LEVERS = ("none", "per-cluster", "overcluster", "rounds")
FINER = 5  # overcluster: the finer head's clusters per cluster (IIC's five times as many)


def targets_for(model: Path, encoder, data: am.Dataset, config: am.Config, finer: bool) -> dict:
    """The stage's targets of this model's training codes and their neighbours, computed once; with
    `finer`, the mixture of FINER * K components on the same embedding too."""
    saved = model.with_name(model.stem + "-targets.npz")
    kept = dict(np.load(saved)) if saved.is_file() else {}
    if "targets" not in kept or (finer and "finer" not in kept):
        codes = am.encode(encoder, data.x_train)
        kept["targets"], kept["neighbours"], embedding = am.training_targets(codes, data.n_clusters, config.seed)
        if finer:
            from threadpoolctl import threadpool_limits

            with threadpool_limits(1):
                kept["finer"] = am.clusterers(FINER * data.n_clusters, config.seed)["gmm"].fit_predict(embedding)
        np.savez(saved, **kept)
    return kept


def learn_two_heads(data: am.Dataset, targets: np.ndarray, finer: np.ndarray, epochs: int):
    """The student with a second softmax of FINER * K clusters, both heads learning every training
    image whose target is clean (-1 where not: ignored), the script's schedule; returns the student."""
    import keras
    from keras import layers

    student = am.build_student(data.n_clusters)
    features = student.layers[-2].output  # after the dropout
    head = layers.Dense(FINER * data.n_clusters, activation="softmax", name="finer")(features)
    both = keras.Model(student.input, {"clusters": student.output, "finer": head})
    steps = epochs * math.ceil(len(data.x_train) / am.BATCH)
    loss = keras.losses.SparseCategoricalCrossentropy(ignore_class=-1)
    both.compile(loss={"clusters": loss, "finer": loss}, optimizer=keras.optimizers.Adam(
        keras.optimizers.schedules.CosineDecay(1e-3, steps)))
    both.fit(data.x_train, {"clusters": targets, "finer": finer}, epochs=epochs, verbose=0, batch_size=am.BATCH,
             shuffle=True, callbacks=[am.progress("student ", epochs, len(data.x_train))])
    return student


def lever_seed(lever: str, config: am.Config, model: Path) -> dict:
    """One seed's stage with the lever, on its saved model: the scored images' scores, the shares and
    the seconds (the targets' excluded: every lever shares them)."""
    data = common.load_for_seed(config)
    import keras

    encoder = keras.saving.load_model(model).get_layer("encoder")
    kept = targets_for(model, encoder, data, config, finer=lever == "overcluster")
    targets, shares = kept["targets"], am.agreement(kept["targets"], kept["neighbours"])
    clean = shares >= am.AGREEMENT
    start = time.perf_counter()
    am.set_seed(config.seed)  # as train_for_clustering: the same student as the script's
    if lever == "overcluster":
        finer = np.where(am.agreement(kept["finer"], kept["neighbours"]) >= am.AGREEMENT, kept["finer"], -1)
        student = learn_two_heads(data, np.where(clean, targets, -1), finer, config.student)
        learned = float(np.mean(finer >= 0))
    else:
        if lever == "per-cluster":
            share = clean.mean()
            for cluster in range(data.n_clusters):
                mine = targets == cluster
                clean[mine] = shares[mine] >= min(am.AGREEMENT, np.quantile(shares[mine], 1 - share))
        student = am.learn(am.build_student(data.n_clusters), data.x_train[clean], targets[clean], config.student)
        learned = float(clean.mean())
        if lever == "rounds":
            probabilities = student.predict(data.x_train, batch_size=1024, verbose=0)
            confident = probabilities.max(axis=1) >= am.CONFIDENT
            student = am.learn(am.build_student(data.n_clusters), data.x_train[confident],
                               probabilities.argmax(axis=1)[confident], config.student)
            learned = float(confident.mean())
    assigned = student.predict(data.x_train, batch_size=1024, verbose=0).argmax(axis=1)
    probabilities = student.predict(data.x_test, batch_size=1024, verbose=0)
    result = {"seed": config.seed, "lever": lever,
              **am.score(data.y_test, probabilities.argmax(axis=1), probabilities, config.seed),
              "clean": float(np.mean(shares >= am.AGREEMENT)), "learned": learned,
              "kept": float(np.mean(assigned[shares >= am.AGREEMENT] == targets[shares >= am.AGREEMENT])),
              "changed": float(np.mean(assigned != targets)), "seconds": round(time.perf_counter() - start, 1)}
    print(f"seed {config.seed}, {lever}: ACC {result['acc']:.4f}  NMI {result['nmi']:.4f}  kept {result['kept']:.2%}"
          f"  ({result['seconds']:.0f} s)", flush=True)
    return result


def main() -> None:
    arguments = common.parser(__doc__.split("\n\n")[0], out="stage-levers", jobs=False, models=True)
    arguments.add_argument("--lever", choices=LEVERS, required=True, help="which stage (see the top of this file)")
    args, base = common.parse(arguments, own=("--seed", "--out", "--resume", "--reuse-model"))
    if not base.student:
        arguments.error("give the stage after --: -- [the models' flags] --student EPOCHS")
    results = common.on_saved_models(arguments, args, base, lambda config, model: lever_seed(args.lever, config, model))
    notes = [f"{what} per seed: " + " / ".join(fmt.format(result[key]) for result in results)
             for what, key, fmt in (
                 ("Share of training images with clean targets", "clean", "{:.1%}"),
                 ("Share the student learned (the lever's targets)", "learned", "{:.1%}"),
                 (f"Kept (of the clean targets; the trust rule asks {am.TRUSTED:.1%})", "kept", "{:.2%}"),
                 ("Changed (training images off their target)", "changed", "{:.1%}"),
                 ("The student's seconds (the shared targets not counted)", "seconds", "{:.0f}"))]
    common.write_summary(args.out, common.summary(
        f"The stage with lever `{args.lever}`", " ".join(["python", "benchmarks/stage_levers.py", *sys.argv[1:]]),
        base.evaluate_on, args.seeds, ("lever", "student epochs"), {(args.lever, base.student): results}, notes))


if __name__ == "__main__":
    main()
