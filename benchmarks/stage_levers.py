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
  fallback     the script's student, and a stage that keeps its start where the student is unsure: each
               scored image goes to the student's cluster where it gives it >= CONFIDENT, else to the
               starting row's (umap10+train gmm, the script's row before the stage), matched to the
               student's clusters on the training images; the student's and the start's rows are kept too
  heads        HEADS softmax heads on one student, each learning the clean targets of its own mixture (the
               same umap10 embedding, the mixture's seed + 0..HEADS-1); a scored image goes to the vote of
               the heads, each matched to the first on the training images, probabilities averaged
  balance      SCAN's class-balance term: the student's loss on the clean targets less the entropy of its
               batch's mean prediction (weight BALANCE), against the clusters drifting in size

Every lever's student learns from the training images and their codes alone, as the stage does: no
label, no scored image (`fallback` then reads the starting row's clusters of the scored images, as the
script's table has them, and no label). The stage's targets (umap10 and the mixture on the training
codes, the script's training_targets) are computed once per model and kept in MODELS/seed-N-targets.npz,
which every lever reads; `fallback` keeps the starting row's clusters in MODELS/seed-N-start.npz and its
student's probabilities in MODELS/seed-N-student-scored.npz. The student is scored whether or not the
trust rule (TRUSTED) would keep it; "kept" says what the rule would decide (the share of the stage's own
clean targets the final student gives back).

OUT/seed-N.json keeps a seed's result (not run again); OUT/summary.md gives the scores over the seeds.
"""
import math
import sys
import time
from dataclasses import replace
from pathlib import Path

import numpy as np

import common
from common import am

LEVERS = ("none", "per-cluster", "overcluster", "rounds", "fallback", "heads", "balance")
FINER = 5  # overcluster: the finer head's clusters per cluster (IIC's five times as many)
HEADS = 5  # heads: IIC's number of heads
CONFIDENT = 0.9  # rounds and fallback: the probability at which the student is sure of an image
BALANCE = 1.0  # balance: the entropy term's weight, against the clean targets' cross-entropy of weight 1


def targets_for(model: Path, encoder, data: am.Dataset, config: am.Config, lever: str) -> dict:
    """The stage's targets of this model's training codes, their neighbours and embedding, computed once;
    for `overcluster`, the mixture of FINER * K components on the same embedding too, for `heads` the
    mixtures of the next HEADS - 1 seeds."""
    from threadpoolctl import threadpool_limits

    saved = model.with_name(model.stem + "-targets.npz")
    kept = dict(np.load(saved)) if saved.is_file() else {}
    before = set(kept)
    if "embedding" not in kept:
        codes = am.encode(encoder, data.x_train)
        kept["targets"], kept["neighbours"] = am.training_targets(codes, data.n_clusters, config.seed)
        with threadpool_limits(1):  # the embedding the targets came from: the same steps again
            kept["embedding"] = am.reduce("umap10", *am.spaces(codes, None, config.seed)[0]["umap10"], config.seed)
    with threadpool_limits(1):
        if lever == "overcluster" and "finer" not in kept:
            kept["finer"] = am.clusterers(FINER * data.n_clusters, config.seed)["gmm"].fit_predict(kept["embedding"])
        if lever == "heads" and "heads" not in kept:
            kept["heads"] = np.stack([kept["targets"]] + [
                am.clusterers(data.n_clusters, config.seed + head)["gmm"].fit_predict(kept["embedding"])
                for head in range(1, HEADS)], axis=1)
    if set(kept) != before:
        np.savez(saved, **kept)
    return kept


def start_for(model: Path, encoder, data: am.Dataset, config: am.Config) -> dict:
    """The starting row as the script makes it (umap10+train, the Gaussian mixture), computed once: the
    scored images' clusters and the training images' (the context's)."""
    saved = model.with_name(model.stem + "-start.npz")
    if not saved.is_file():
        from threadpoolctl import threadpool_limits

        name, points, graph = common.clustering_space(encoder, data, config)
        with threadpool_limits(1):
            clusters = am.clusterers(data.n_clusters, config.seed)["gmm"].fit_predict(
                am.reduce(name, points, graph, config.seed))
        np.savez(saved, scored=clusters[:len(data.x_test)], training=clusters[len(data.x_test):])
    return dict(np.load(saved))


def matched(clusters: np.ndarray, to: np.ndarray, n_clusters: int) -> np.ndarray:
    """For each of `clusters`' numbers (fitted on the training images (n,)), the number of `to` (n,) it
    overlaps most, one to one (the Hungarian matching of the two clusterings; no label)."""
    from scipy.optimize import linear_sum_assignment
    from sklearn.metrics import confusion_matrix

    rows, columns = linear_sum_assignment(confusion_matrix(clusters, to, labels=np.arange(n_clusters)),
                                          maximize=True)
    return columns[np.argsort(rows)]


def learn_heads(data: am.Dataset, heads: dict[str, tuple[int, np.ndarray]], epochs: int):
    """The student with a softmax head for each entry of `heads` (name -> its clusters, its targets (n,),
    -1 where not clean: ignored) on the features after its dropout, "clusters" being the student's own;
    every head learns every training image, one loss each, the script's schedule. Returns the model of
    all heads, its outputs by name."""
    import keras
    from keras import layers

    student = am.build_student(data.n_clusters)
    features = student.layers[-2].output  # after the dropout
    outputs = {name: student.output if name == "clusters" else
               layers.Dense(width, activation="softmax", name=name)(features) for name, (width, _) in heads.items()}
    every = keras.Model(student.input, outputs)
    steps = epochs * math.ceil(len(data.x_train) / am.BATCH)
    loss = keras.losses.SparseCategoricalCrossentropy(ignore_class=-1)
    every.compile(loss={name: loss for name in outputs}, optimizer=keras.optimizers.Adam(
        keras.optimizers.schedules.CosineDecay(1e-3, steps)))
    every.fit(data.x_train, {name: targets for name, (_, targets) in heads.items()}, epochs=epochs, verbose=0,
              batch_size=am.BATCH, shuffle=True, callbacks=[am.progress("student ", epochs, len(data.x_train))])
    return every


def vote(predicted: dict[str, np.ndarray], matches: list[np.ndarray]) -> np.ndarray:
    """The heads' predicted probabilities (n, K), each head's clusters renumbered by `matches`, averaged."""
    heads = [predicted["clusters"]] + [predicted[f"head{head}"] for head in range(1, len(matches) + 1)]
    total = heads[0].copy()
    for probabilities, match in zip(heads[1:], matches):
        total[:, match] += probabilities
    return total / len(heads)


def balance_term():
    """A layer that passes the student's predictions on and adds to its loss BALANCE times the negative
    entropy of the batch's mean prediction (SCAN's term: lowest when the batch spreads evenly over the
    clusters), beside the clean targets' cross-entropy."""
    import keras
    from keras import ops

    class Balance(keras.layers.Layer):
        def call(self, predictions):
            mean = ops.mean(predictions, axis=0)
            self.add_loss(BALANCE * ops.sum(mean * ops.log(ops.clip(mean, 1e-8, 1.0))))
            return predictions

    return Balance(name="balance")


def lever_seed(lever: str, config: am.Config, model: Path) -> dict:
    """One seed's stage with the lever, on its saved model: the scored images' scores, the shares and
    the seconds (the targets' excluded: every lever shares them)."""
    data = common.load_for_seed(config)
    data = replace(data, x_train=am.intensities(data.x_train))  # fit and predict take it whole
    import keras

    encoder = keras.saving.load_model(model).get_layer("encoder")
    kept = targets_for(model, encoder, data, config, lever)
    targets, shares = kept["targets"], am.agreement(kept["targets"], kept["neighbours"])
    clean = shares >= am.AGREEMENT
    start = time.perf_counter()
    am.set_seed(config.seed)  # as train_for_clustering: the same student as the script's
    if lever == "overcluster":
        finer = np.where(am.agreement(kept["finer"], kept["neighbours"]) >= am.AGREEMENT, kept["finer"], -1)
        every = learn_heads(data, {"clusters": (data.n_clusters, np.where(clean, targets, -1)),
                                   "finer": (FINER * data.n_clusters, finer)}, config.student)
        student = keras.Model(every.input, every.output["clusters"])
        learned = float(np.mean(finer >= 0))
    elif lever == "heads":
        each_clean = np.stack([am.agreement(kept["heads"][:, head], kept["neighbours"]) >= am.AGREEMENT
                               for head in range(HEADS)], axis=1)
        names = ["clusters"] + [f"head{head}" for head in range(1, HEADS)]
        every = learn_heads(data, {name: (data.n_clusters, np.where(each_clean[:, head], kept["heads"][:, head], -1))
                                   for head, name in enumerate(names)}, config.student)
        student = every  # predicts every head: the first is the student, all of them vote (below)
        learned = float(each_clean.mean())
    elif lever == "balance":
        student = am.build_student(data.n_clusters)
        student = am.learn(keras.Model(student.input, balance_term()(student.output)), data.x_train[clean],
                           targets[clean], config.student)
        learned = float(clean.mean())
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
            confident = probabilities.max(axis=1) >= CONFIDENT
            student = am.learn(am.build_student(data.n_clusters), data.x_train[confident],
                               probabilities.argmax(axis=1)[confident], config.student)
            learned = float(confident.mean())
    on_training, probabilities = (student.predict(images, batch_size=1024, verbose=0)
                                  for images in (data.x_train, data.x_test))
    seconds = round(time.perf_counter() - start, 1)
    rows = {}
    if lever == "heads":  # the first head's row beside the vote's, the vote matched on the training images
        matches = [matched(kept["heads"][:, head], kept["targets"], data.n_clusters) for head in range(1, HEADS)]
        rows["first head"] = am.score(data.y_test, probabilities["clusters"].argmax(axis=1),
                                      probabilities["clusters"], config.seed)
        on_training, probabilities = vote(on_training, matches), vote(probabilities, matches)
    assigned = on_training.argmax(axis=1)
    if lever == "fallback":
        begun = start_for(model, encoder, data, config)
        rows["start"] = am.score(data.y_test, begun["scored"])
        rows["student"] = am.score(data.y_test, probabilities.argmax(axis=1), probabilities, config.seed)
        match = matched(begun["training"], assigned, data.n_clusters)
        sure = probabilities.max(axis=1) >= CONFIDENT
        clusters = np.where(sure, probabilities.argmax(axis=1), match[begun["scored"]])
        rows["fallback"] = {**am.score(data.y_test, clusters), "unsure": float(1 - sure.mean()),
                            "changed": float(np.mean(clusters != probabilities.argmax(axis=1)))}
        np.savez(model.with_name(f"{model.stem}-student-scored.npz"), probabilities=probabilities, assigned=assigned)
    result = {"seed": config.seed, "lever": lever, "rows": rows,
              **am.score(data.y_test, probabilities.argmax(axis=1), probabilities, config.seed),
              "clean": float(np.mean(shares >= am.AGREEMENT)), "learned": learned,
              "kept": float(np.mean(assigned[shares >= am.AGREEMENT] == targets[shares >= am.AGREEMENT])),
              "changed": float(np.mean(assigned != targets)), "seconds": seconds}
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
        base.evaluate_on, args.seeds, ("lever", "student epochs"), {(args.lever, base.student): results} | {
            (f"{args.lever}: {name}", base.student): [result["rows"][name] for result in results]
            for name in results[0].get("rows", {})}, notes))


if __name__ == "__main__":
    main()
