"""Try two refinements of the clustering embedding's mixture on models that benchmarks/epochs.py saved:
an ensemble of UMAP embeddings, and self-training on the mixture's confident points.

    python benchmarks/refine.py --models epochs [--seeds 0 1 2] [--out refine] -- [the models' flags]

The flags after `--` are the ones the models were trained with (choose on `--evaluate-on
validation`), so that the same images are scored. For each seed, the model MODELS/seed-N.keras encodes
the scored images (and the training images, with `--embed-train`), and their 10-d UMAP is fitted as
the script fits it (`umap10+train`, with the training codes as context, the headline recipe's;
`umap10` without). Rows, each from a Gaussian mixture of 10 initialisations as in the script:

- `gmm`: the script's row, on its embedding (a check: it repeats epochs.py's row for that model);
- `ensemble gmm`: the mixture on three such embeddings side by side (30-d), UMAP's seeds N, N + 1000
  and N + 2000: less of one layout's luck;
- `self-trained`: the points (scored, and context with `--embed-train`) whose mixture probability is
  at least CONFIDENT keep their cluster; a 10-nearest-neighbour vote among them, in the codes' own
  space (their principal components), labels every scored image. The codes hold what the layout drops;
- `ensemble self-trained`: the same from the ensemble's mixture.

With `--embed-train` each seed also gets two supervised numbers, not clustering: the scored images
labelled by a 10-nearest-neighbour vote of the training images with their true labels, in the codes'
space and in the layout: about what a relabelling by neighbours in those spaces could reach.

Each seed's rows go to OUT/seed-N.json, with the share of confident points and their labels' ACC
(how clean the self-training labels are); a seed whose file exists is not run again. OUT/summary.md
gives each row's ACC and NMI as mean +- sample std over the seeds, with the worst seed. One process,
one thread for the linear algebra and UMAP, as in the script's workers.
"""
import sys
from pathlib import Path

import numpy as np

import common
from common import am

CONFIDENT = 0.99  # a point's largest mixture probability, to lend its cluster to self-training
VOTERS = 10  # nearest neighbours whose vote labels a point
LAYOUTS = 3  # UMAP embeddings in the ensemble


def mixture(points: np.ndarray, n_clusters: int, seed: int) -> np.ndarray:
    """The Gaussian mixture's probabilities (n, n_clusters), fitted as the script's "gmm" clusterer."""
    return am.clusterers(n_clusters, seed)["gmm"].fit(points).predict_proba(points)


def vote(points: np.ndarray, labels: np.ndarray, queries: np.ndarray) -> np.ndarray:
    """The label of each query point (m, d): the vote of its VOTERS nearest points (n, d)."""
    from sklearn.neighbors import KNeighborsClassifier

    return KNeighborsClassifier(n_neighbors=VOTERS).fit(points, labels).predict(queries)


def self_train(codes: np.ndarray, probabilities: np.ndarray, n_scored: int) -> tuple[np.ndarray, np.ndarray]:
    """Clusters of the first n_scored points, voted by their nearest confident points in code space;
    and the mask of confident points."""
    confident = probabilities.max(axis=1) >= CONFIDENT
    return vote(codes[confident], probabilities[confident].argmax(axis=1), codes[:n_scored]), confident


def refine_seed(config: am.Config, model: Path) -> dict:
    """One seed's rows, and how many points were confident and how right their clusters were."""
    data = common.load_for_seed(config)
    import keras
    from threadpoolctl import threadpool_limits

    name, points, graph = common.clustering_space(keras.saving.load_model(model).get_layer("encoder"), data,
                                                  config)
    labels, n_clusters, n_scored = data.y_test, len(set(data.y_test)), len(data.y_test)
    rows, confident_points = {}, {}
    with threadpool_limits(1):
        layouts = [am.reduce(name, points, graph, config.seed + 1000 * index)
                   for index in range(LAYOUTS)]
        for row, points in (("gmm", layouts[0]), ("ensemble gmm", np.hstack(layouts))):
            probabilities = mixture(points, n_clusters, config.seed)
            rows[row] = am.score(labels, probabilities[:n_scored].argmax(axis=1))
            clusters, confident = self_train(points, probabilities, n_scored)
            trained = row.replace("gmm", "self-trained")
            rows[trained] = am.score(labels, clusters)
            scored_confident = confident[:n_scored]
            confident_points[trained] = {
                "share": float(confident.mean()),
                "scored_acc": am.score(
                    labels[scored_confident], probabilities[:n_scored][scored_confident].argmax(axis=1))["acc"]}
    result = {"seed": config.seed, "rows": rows, "confident": confident_points}
    if config.embed_train:  # with the training images' true labels: what a vote of neighbours can reach
        result["supervised"] = {
            where: am.score(labels, vote(space[n_scored:], data.y_train, space[:n_scored]))
            for where, space in (("codes", points), ("layout", layouts[0]))}
    print(f"seed {config.seed}: " + "; ".join(f"{row} ACC {scores['acc']:.4f} NMI {scores['nmi']:.4f}"
                                              for row, scores in rows.items()), flush=True)
    return result


def summarise(results: list[dict], command: str, split: str) -> str:
    """The summary page: each row over the seeds, how many points were confident, and the supervised
    numbers."""
    seeds = [result["seed"] for result in results]
    rows = {(row,): [result["rows"][row] for result in results] for row in results[0]["rows"]}
    notes = [f"Points with mixture probability >= {CONFIDENT} (scored and context), and the ACC of the scored "
             "ones among them, per seed:", ""]
    notes += [f"- {row}: " + "; ".join(f"seed {result['seed']} {result['confident'][row]['share']:.2%}, ACC "
                                       f"{result['confident'][row]['scored_acc']:.4f}" for result in results)
              for row in results[0]["confident"]]
    if "supervised" in results[0]:
        notes += ["", f"Not clustering: a {VOTERS}-nearest-neighbour vote of the training images with their true "
                  "labels, in the codes' space and in the layout, labels the scored images:", ""]
        for where in results[0]["supervised"]:
            acc, nmi = ([result["supervised"][where][name] for result in results] for name in ("acc", "nmi"))
            notes.append(f"- {where}: ACC {common.spread(acc)}, NMI {common.spread(nmi)} "
                         f"(worst seed {min(acc):.3f} / {min(nmi):.3f})")
    return common.summary("Refinements of the clustering embedding's mixture", command, split, seeds, ("row",),
                          rows, notes)


def main() -> None:
    arguments = common.parser(__doc__.split("\n\n")[0], out="refine", jobs=False, models=True)
    args, base = common.parse(arguments, own=("--seed", "--out", "--resume", "--reuse-model"))
    results = common.on_saved_models(arguments, args, base, refine_seed)
    summary = summarise(results, " ".join(["python", "benchmarks/refine.py", *sys.argv[1:]]), base.evaluate_on)
    common.write_summary(args.out, summary)


if __name__ == "__main__":
    main()
