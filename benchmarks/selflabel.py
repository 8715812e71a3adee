"""Train the encoder for clustering on the models that benchmarks/epochs.py saved: self-labelling from
the recipe's own clusters of the training images, on shifted and rotated images. A lead for the issue
"codes trained for clustering", measured before it becomes a stage of the script.

    python benchmarks/selflabel.py --models epochs [--seeds 0 1 2] [--out selflabel] \
        [--rounds 3] [--epochs 4] [--no-augment] -- [the models' flags]

The flags after `--` are the ones the models were trained with (choose on `--evaluate-on validation`).
For each seed:

1. Targets, from the training images alone (never a scored image, never a label): their codes, UMAP to
   10-d as the script's `umap10` (from 50 principal components), clustered by the script's Gaussian
   mixture.
2. A classifier: the pretrained encoder with a softmax layer of k units on its code, trained to give
   each training image its target, with Adam from 1e-3 down to 0 on one cosine over all rounds, batch
   256. With augmentation (the default) each training image is shifted by up to 10% of its width and
   height and rotated by up to 10 degrees, afresh each time (DEC-DA's augmentation); targets come from
   the clean images.
3. --rounds rounds of --epochs epochs: the first learns the mixture's clusters, each later one the
   classifier's own assignments of the clean training images.

With --pretrain-epochs N the autoencoder first trains on for N epochs on shifted and rotated training
images, each reconstructing its shifted image (DEC-DA's pretraining), a fresh draw every epoch.

After each round the scored images are assigned by the classifier and scored (ACC, NMI, ARI); the
line also gives the share of training images whose assignment changed in that round, a stop signal that
needs no label. OUT/seed-N.json keeps the rounds (a seed whose file exists is not run again);
OUT/summary.md gives each round's scores over the seeds. One process; TensorFlow with the caller's
threads, UMAP and the mixture with one, as in the script's workers.
"""
import sys
import time
from pathlib import Path

import numpy as np

import common
from common import am

SHIFT = 0.1  # of the width and the height
ROTATION = 10 / 360  # of a full turn: 10 degrees


def targets(encoder, data: am.Dataset, config: am.Config) -> np.ndarray:
    """The mixture's clusters (n_train,) of the training images' codes in the script's 10-d UMAP."""
    from threadpoolctl import threadpool_limits

    codes = am.encode(encoder, data.x_train)
    space = am.prepare_spaces("latent", codes, ("umap10",), config)[0][0]
    with threadpool_limits(1):
        embedding = am.embed(space, config)
        return am.clusterer_model("gmm", len(np.unique(data.y_test)), config.seed).fit_predict(embedding)


def augmenter():
    """Layers that shift and rotate images (n, 28, 28, 1), afresh on every call in training."""
    import keras
    from keras import layers

    return keras.Sequential([layers.RandomTranslation(SHIFT, SHIFT, fill_mode="constant"),
                             layers.RandomRotation(ROTATION, fill_mode="constant")], name="augment")


def pretrain_augmented(autoencoder, data: am.Dataset, config: am.Config, epochs: int) -> None:
    """Train the autoencoder on for `epochs` epochs on shifted and rotated training images, a fresh draw
    each epoch, each reconstructing its shifted image (DEC-DA's pretraining), with a new Adam."""
    autoencoder.compile(optimizer="adam", loss="binary_crossentropy")
    augment = augmenter()
    for _ in range(epochs):
        shifted = np.concatenate([augment(batch, training=True) for batch in np.array_split(data.x_train, 50)])
        autoencoder.fit(shifted, shifted, batch_size=config.batch_size, shuffle=True, verbose=0)


def classifier(encoder, n_clusters: int, augment: bool, network: str = "encoder"):
    """The encoder (or, with network "conv", a fresh copy of the seed's convolutional encoder) with a
    softmax layer on its code; in training, its input shifted and rotated."""
    import keras
    from keras import layers

    image = keras.Input(shape=(*am.IMAGE_SHAPE, 1), name="image")
    if network == "conv":
        encoder = am.build_conv(keras.Input(shape=(*am.IMAGE_SHAPE, 1)), 0)[0]
    code = layers.Flatten()(encoder(augmenter()(image) if augment else image))
    return keras.Model(image, layers.Dense(n_clusters, activation="softmax")(code), name="classifier")


def self_label_seed(config: am.Config, model: Path, rounds: int, epochs: int, augment: bool,
                    pretrain_epochs: int = 0, network: str = "encoder") -> dict:
    """One seed's rounds: after each, the scored images' scores and the share of changed assignments."""
    data = common.load_for_seed(config)
    import keras

    keras.utils.set_random_seed(config.seed)
    autoencoder = keras.saving.load_model(model)
    start = time.perf_counter()
    pretrain_augmented(autoencoder, data, config, pretrain_epochs)
    pretraining = round(time.perf_counter() - start, 1)
    encoder = autoencoder.get_layer("encoder")
    start = time.perf_counter()
    labels = targets(encoder, data, config)
    result = {"seed": config.seed, "pretraining_seconds": pretraining,
              "targets": {"seconds": round(time.perf_counter() - start, 1),
                          "train": am.label_scores(data.y_train, labels)}, "rounds": []}
    n_clusters = len(np.unique(data.y_test))
    network = classifier(encoder, n_clusters, augment, network)
    steps = rounds * epochs * -(-len(data.x_train) // config.batch_size)
    network.compile(optimizer=keras.optimizers.Adam(keras.optimizers.schedules.CosineDecay(1e-3, steps)),
                    loss="sparse_categorical_crossentropy")
    for round_ in range(1, rounds + 1):
        start = time.perf_counter()
        network.fit(data.x_train, labels, epochs=epochs, batch_size=config.batch_size, shuffle=True, verbose=0)
        assigned = network.predict(data.x_train, batch_size=1024, verbose=0).argmax(axis=1)
        scored = network.predict(data.x_test, batch_size=1024, verbose=0).argmax(axis=1)
        line = {"round": round_, "seconds": round(time.perf_counter() - start, 1),
                "changed": float(np.mean(assigned != labels)), **am.label_scores(data.y_test, scored)}
        result["rounds"].append(line)
        print(f"seed {config.seed}: round {round_}  ACC {line['acc']:.4f}  NMI {line['nmi']:.4f}  "
              f"changed {line['changed']:.2%}  ({line['seconds']:.0f} s)", flush=True)
        labels = assigned
    return result


def main() -> None:
    arguments = common.parser(__doc__.split("\n\n")[0], out="selflabel", jobs=False)
    arguments.add_argument("--rounds", type=int, default=3, help="rounds of self-labelling (default: 3)")
    arguments.add_argument("--epochs", type=int, default=4, help="epochs per round (default: 4)")
    arguments.add_argument("--no-augment", action="store_true", help="train on the images as they are")
    arguments.add_argument("--pretrain-epochs", type=int, default=0, help=(
        "first train the autoencoder on for N epochs on shifted and rotated images (default: 0)"))
    arguments.add_argument("--network", choices=("encoder", "conv"), default="encoder", help=(
        "train the pretrained encoder, or a fresh copy of the seed's convolutional encoder (default: encoder)"))
    args, base = common.parse(arguments, own=("--seed", "--out", "--resume", "--reuse-model"))
    if args.rounds < 1 or args.epochs < 1 or args.pretrain_epochs < 0:
        arguments.error("--rounds and --epochs must be 1 or more, --pretrain-epochs 0 or more")
    results = common.on_saved_models(arguments, args, base, lambda config, model: self_label_seed(
        config, model, args.rounds, args.epochs, not args.no_augment, args.pretrain_epochs, args.network))
    rows = {(result_round["round"],): [result["rounds"][index] for result in results]
            for index, result_round in enumerate(results[0]["rounds"])}
    notes = ["Targets' ACC on the training images (a diagnostic; training never sees a label): "
             + "; ".join(f"seed {result['seed']} {result['targets']['train']['acc']:.4f}" for result in results),
             "Share of training images whose assignment changed in each round, per seed: "
             + "; ".join(f"round {key[0]}: " + " / ".join(f"{run['changed']:.2%}" for run in runs)
                         for key, runs in rows.items())]
    summary = common.summary("Self-labelling rounds", " ".join(["python", "benchmarks/selflabel.py", *sys.argv[1:]]),
                             base.evaluate_on, args.seeds, ("round",), rows, notes)
    (args.out / "summary.md").write_text(summary)
    print(summary)


if __name__ == "__main__":
    main()
