"""Autoencoder on MNIST: learn codes, reduce them, cluster them, score the clusters.

Trains an autoencoder on the 60,000 MNIST training images, encodes the 10,000 held-out test images,
reduces the codes with PCA, t-SNE and UMAP, clusters them with KMeans (and a Gaussian mixture on the
10-d clustering embedding) and scores the clusters against the true digits; raw pixels go through
the same clustering, to show what the autoencoder adds. The default is the seed's recipe, a small
convolutional autoencoder. `--recipe student`, chosen on a validation split, clusters the held-out
test images at ACC 0.983 / NMI 0.954, the mean of seeds 0-4 (README.md). Your own images: `--data`.

Commands:
    pip install -r requirements.txt
    # a quick look, about half a minute on two CPU cores
    python autoencoder_mnist.py --epochs 4 --train-size 5000 --test-size 1000 --out quick
    # the seed's recipe: 20 epochs on all training images, outputs in results/ (about 10 minutes)
    python autoencoder_mnist.py
    # the headline recipe, and the same over seeds 0-4 with a summary in seeds/summary.md
    python autoencoder_mnist.py --recipe headline --out headline
    python benchmarks/seeds.py --seeds 0 1 2 3 4 --jobs 2 -- --recipe headline
    # 20 of the headline's epochs, then a convolutional student on the clean clusters (best row)
    python autoencoder_mnist.py --recipe student --out student
    # choose on a validation split; the deep-clustering papers' transductive protocol
    python autoencoder_mnist.py --recipe headline --evaluate-on validation --out validation
    python autoencoder_mnist.py --recipe headline --evaluate-on train+test --out train-test
    # continue the run stopped in results/; score a finished run's model again with more context
    python autoencoder_mnist.py --resume results
    python autoencoder_mnist.py --reuse-model results --embed-train --out rescored

Metrics:
    BCE, MSE, PSNR  binary cross-entropy (the training loss) and mean squared error per pixel,
                intensities in [0, 1], between image and reconstruction; PSNR = 10 log10(1 / MSE) dB
    silhouette  mean silhouette coefficient in the space clustered (-1..1, higher = tighter)
    ARI, NMI    adjusted Rand index (0 = chance, 1 = identical) and normalized mutual information
                (0..1) between clusters and true labels
    ACC         the share of images labelled right under the best one-to-one matching of clusters
                to labels (Hungarian algorithm, as in the deep-clustering papers)
"""
from __future__ import annotations

import argparse
import base64
import contextlib
import csv
import fcntl
import hashlib
import importlib
import io
import json
import math
import os
import resource
import shlex
import shutil
import signal
import sys
import tempfile
import time
import warnings
import zipfile
from dataclasses import asdict, dataclass, field, fields, replace
from pathlib import Path
from typing import TYPE_CHECKING, Callable, Iterator

import matplotlib
import numpy as np
import sklearn
from joblib import Parallel, delayed, parallel_config
from scipy.optimize import linear_sum_assignment
from sklearn.cluster import KMeans
from sklearn.decomposition import PCA
from sklearn.metrics import (ConfusionMatrixDisplay, adjusted_rand_score, confusion_matrix,
                             normalized_mutual_info_score, silhouette_score)
from sklearn.mixture import GaussianMixture
from sklearn.neighbors import NearestNeighbors
from threadpoolctl import threadpool_limits

matplotlib.use("Agg")  # plots go to files: no window system
import matplotlib.pyplot as plt  # noqa: E402

if TYPE_CHECKING:  # imported by import_stack, once the flags and the data are checked
    import keras

# Read by TensorFlow on import: no C++ log lines but fatal ones (AVX-512 CPUs log an "E" line when
# oneDNN falls back for int32 ops, no error).
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

BUNDLED_DATA = Path(__file__).resolve().parent / "data" / "mnist.npz"
BUNDLED_SHA256 = "06af5dfe73b70e3bc1c36439982b18a8d76803db9b544f6fdf838a37fbb01b64"
LOCK = ".lock"  # in --out: held by the run writing it (run_folder)
MIN_IMAGES = 100  # t-SNE's perplexity needs more than 90 points, umap10's 30 neighbours 31
BATCH = 256  # the seed's batch, of the autoencoder and of the student
PREDICT_BATCH = 1024  # predicting keeps no gradients: a larger batch, fewer steps
DENSE_WIDTHS = (500, 500, 2000)  # N2D's encoder (McConville et al.): 784 -> these -> the code
SHIFT, ROTATION = 0.1, 10 / 360  # DEC-DA's augmentation: of the width and height; of a full turn
# t-SNE and UMAP start from 50 principal components, not 1,568 code numbers, as scikit-learn
# advises; UMAP's 200 layout epochs take half its default's time for the same rows (log section 5).
PCA_DIMS, UMAP_EPOCHS = 50, 200
UMAP_NEIGHBOURS = 30  # umap10's: one graph of 30 serves every UMAP fit of a set of points
# Past this many points, each step that grows faster than them takes a linear path (log sections
# 24 and 25): pynndescent's neighbour search (an exact one costs n^2; at 70,000 points it finds
# 99.9% of the same neighbours 4x as fast), UMAP's start from principal components (its spectral
# start costs n^1.5), and KMeans and the mixture fitted to a sample this size (more points take
# them more iterations), which then assign the rest.
LARGE = 20_000
# Pixels are the baseline. "umap10", UMAP to 10-d, is for clustering only; --embed-train adds
# "umap10+train", the same fitted with the training codes (and --pixel-twin's pixels) as context.
REDUCTIONS = {"pixels": ("none", "pca", "umap", "umap10"),
              "latent": ("none", "pca", "tsne", "umap", "umap10")}
CLUSTERERS = {"umap10": ("kmeans", "gmm"), "umap10+train": ("kmeans", "gmm")}  # else KMeans
NAMES = {"pixels": "pixels", "latent": "codes"}  # each kind of features, as the text names it
SILHOUETTE_POINTS = 10_000  # silhouette compares every pair: on more points, a sample this size
PAGE_POINTS = 20_000  # embeddings.html shows at most this many points, so that a browser opens it
AGREEMENT = 0.95  # a student's target is clean where this share of the image's neighbours share it
# A student's row counts where it gives back this share of its clean targets. On validation (log
# section 15) MNIST's students gave back 99.7-99.9%; Fashion-MNIST's, below their start, 97.5-99.0%.
TRUSTED = 0.995
# Worker processes of one thread each: a seeded UMAP uses one core anyway, and one thread gives the
# same rows on any machine. Slowest first (on MNIST), so that none starts last.
WORKERS = 2
SLOWEST_FIRST = ("umap10+train", "tsne", "umap10", "none", "umap", "pca")
# Named sets of flags, chosen on the validation split (docs/EXPERIMENTS.md); "seed": the defaults.
HEADLINE = {"architecture": "dense", "bottleneck": 10, "noise": 0.2, "epochs": 50,
            "embed_train": True}
RECIPES = {"seed": {}, "headline": HEADLINE, "student": {**HEADLINE, "epochs": 20, "student": 6}}
HISTORY = ("loss", "val_loss", "images_per_second")  # per epoch, in history.csv and metrics.json
# The flags that decide which model training makes: --resume and --reuse-model check them.
TRAINING_FLAGS = ("data", "train_size", "evaluate_on", "architecture", "bottleneck", "epochs",
                  "noise", "precision", "seed")


# ---- Run -----------------------------------------------------------------------------------------


def run(config: Config) -> None:
    """The pipeline: load -> build -> train -> encode -> reduce and cluster -> train for clustering
    -> plot -> report."""
    stages = Stages()
    with stages("data"):
        data = load_data(config)
        history = None if config.reuse_model is None else read_finished_run(config.reuse_model,
                                                                             config)
        print(f"  {data.source}: {data.scaling}; {len(data.x_train):,} training and "
              f"{len(data.x_test):,} scored images, {data.n_clusters} clusters"
              + ("" if data.y_test is not None else ", no labels"), flush=True)
    with run_folder(config) as (staging, checkpoint):
        with stages("imports", "importing Keras and umap-learn"):
            import_stack()
        set_seed(config.seed)
        if history is None:
            autoencoder, encoder = build_autoencoder(config.bottleneck, config.architecture,
                                                     config.noise, config.precision)
            with stages("train"):
                history = train(autoencoder, data, config.epochs, checkpoint, config.seed)
        else:
            autoencoder = load_model(config.reuse_model / "autoencoder.keras")
            encoder = autoencoder.get_layer("encoder")
        write_outputs(staging, {"autoencoder.keras": autoencoder.save,
                                "encoder.keras": for_new_images(encoder, data.scale).save})
        with stages("encode"):
            codes = encode(encoder, data.x_test)
            reconstructions = autoencoder.predict(batches(data.x_test, size=PREDICT_BATCH),
                                                  verbose=0)
            training = {"latent": encode(encoder, data.x_train)} if (config.embed_train or
                                                                     config.student) else {}
        if config.pixel_twin:  # the same steps on the raw pixels, the autoencoder's baseline
            training["pixels"] = intensities(data.x_train).reshape(len(data.x_train), -1)
        with stages("reduce and cluster", f"reducing and clustering in {WORKERS} worker processes"):
            clusterings, shared = reduce_and_cluster(
                {"pixels": data.x_test.reshape(len(data.x_test), -1), "latent": codes},
                training if config.embed_train else {}, data.y_test, data.n_clusters, config.seed)
        if config.student:
            rows, students, student = train_students(training, data, config, stages)
            clusterings += rows
            if student is not None:
                write_outputs(staging, {"student.keras": for_new_images(student, data.scale).save})
        # Shown in confusion.png and clusters.png: with labels the best row by ACC; without, the
        # recipe's own, the last row of the codes (the student, umap10+train or umap10 gmm).
        shown = ([row for row in clusterings if row.features == "latent"][-1] if data.y_test is None
                 else max(clusterings, key=lambda clustering: clustering.scores["acc"]))
        scores = score_reconstruction(data.x_test, reconstructions)
        with stages("outputs"):
            write_results(staging, data, codes, reconstructions, scores, history, clusterings,
                          shown, config.evaluate_on, config.seed)
        stages.seconds["total"] = round(time.perf_counter() - stages.start, 2)
        metrics = metrics_record(config, data, stages.seconds, scores, history, shared,
                                 clusterings, students if config.student else {})
        write_outputs(staging, {
            "report.md": lambda path: path.write_text(report_markdown(metrics)),
            "metrics.json": lambda path: path.write_text(json.dumps(metrics, indent=2) + "\n")})
        written = sorted(path.name for path in staging.iterdir())
    print(f"\n{format_table(metrics['clustering'])}\n\nReconstruction ({config.evaluate_on} set): "
          f"BCE {scores['bce']:.4f}, MSE {scores['mse']:.4f}, PSNR {scores['psnr']:.2f} dB\n"
          f"Outputs in {config.out}/: {', '.join(written)}")


# ---- Config --------------------------------------------------------------------------------------


def option(default, help: str, check: Callable[[Config], str | None] | None = None, **argparse):
    """A flag: its default, help, check (the error where a config is wrong) and argparse's needs;
    a boolean is a switch, a path a FOLDER unless it says otherwise."""
    if default is False:
        argparse["action"] = "store_true"
    if argparse.get("type") is Path:
        argparse.setdefault("metavar", "FOLDER")
    return field(default=default, metadata={"help": help, "check": check, "argparse": argparse})


def at_least(minimum: float, kind: type = int) -> Callable[[str], int | float]:
    """A flag's type: a finite number of `kind` (int: whole numbers), at least `minimum`."""
    def parse(text: str) -> int | float:
        with contextlib.suppress(ValueError):
            if math.isfinite(value := kind(text)):
                if value < minimum:
                    raise argparse.ArgumentTypeError(f"{value} must be {minimum} or more")
                return value
        raise argparse.ArgumentTypeError(
            f"{text!r} is not {'a whole number' if kind is int else 'a number'}")
    return parse


@dataclass(frozen=True)
class Config:
    """Every setting of a run, a flag each; the defaults are the seed's recipe."""

    recipe: str = option("seed", "a named set of flags, chosen on validation: seed (the defaults), "
                         "headline or student (README.md); flags beside it win", choices=RECIPES)
    data: Path | None = option(None, "an .npz of images x_train, x_test (n, 28, 28), optionally "
                               "y_train, y_test, class_names (default: the bundled MNIST)",
                               type=Path, metavar="PATH")
    train_size: int | None = option(None, "train on N images, drawn by label",
                                    type=at_least(1), metavar="N")
    test_size: int | None = option(None, f"score N images, at least {MIN_IMAGES}",
                                   type=at_least(1), metavar="N")
    clusters: int | None = option(None, "clusters to find (default: the labels' classes; "
                                  "without labels, give it)", type=at_least(2), metavar="K")
    evaluate_on: str = option(
        "test", "score the test set; as many training images held out, to choose on; or all "
        "images, trained on", choices=("test", "validation", "train+test"))
    architecture: str = option(
        "conv", "the seed's convolutional autoencoder, or N2D's 784-500-500-2000-N",
        lambda c: "--architecture dense needs --bottleneck N, the size of its code (N2D uses 10)"
        if c.architecture == "dense" and not c.bottleneck else None, choices=("conv", "dense"))
    bottleneck: int = option(
        0, "a code of N numbers; 0: the seed's 7x7x32 maps", lambda c: "--bottleneck 1 leaves no "
        "second dimension for the 2-D plots; give 0 or 2 or more" if c.bottleneck == 1 else None,
        type=at_least(0), metavar="N")
    noise: float = option(0.0, "Gaussian noise on the training input",
                          type=at_least(0, float), metavar="SIGMA")
    epochs: int = option(20, "training epochs", type=at_least(1), metavar="N")
    precision: str = option("float32", "the autoencoder's arithmetic: float32, or bfloat16 (faster "
                            "with AMX or AVX512_BF16)", choices=("float32", "bfloat16"),
                            metavar="P")
    reuse_model: Path | None = option(None, "score the model of the finished run in FOLDER; its "
                                      "data and training flags must match", type=Path)
    embed_train: bool = option(False, "add rows umap10+train: the 10-d UMAP fitted with the "
                               "training codes as context (none under train+test)")
    student: int = option(0, "then a small convolutional network learns the training images' "
                          "clean clusters, EPOCHS epochs", type=at_least(0), metavar="EPOCHS")
    pixel_twin: bool = option(
        False, "repeat --embed-train and --student on the raw pixels", lambda c: "--pixel-twin "
        "repeats --embed-train and --student on the pixels; give one of them"
        if c.pixel_twin and not (c.embed_train or c.student) else None)
    seed: int = option(0, "seed of everything random", type=at_least(0), metavar="N")
    out: Path = option(Path("results"), "folder of the outputs", lambda c: f"--out {c.out} is a "
                       "file; name a folder" if c.out.exists() and not c.out.is_dir() else None,
                       type=Path)
    resume: Path | None = option(None, "continue the run stopped in FOLDER, with its flags",
                                 type=Path)


def parse_config(argv: list[str] | None = None) -> Config:
    """Why: a flag is defined once, in its Config field; argparse is built from the fields. The
    flags given, over their recipe's (or the stopped run's, under --resume), over the defaults."""
    parser = argparse.ArgumentParser(
        prog="autoencoder_mnist.py", usage="%(prog)s [flags]", allow_abbrev=False,
        argument_default=argparse.SUPPRESS, description=__doc__.split("\n\n")[0],
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog=__doc__[__doc__.index("Commands:"):__doc__.index("Metrics:")] + "More: README.md.")
    for spec in fields(Config):
        default = "" if spec.default is None or spec.default is False else (
            f" (default: {spec.default})")
        parser.add_argument(flag(spec.name), help=spec.metadata["help"] + default,
                            **spec.metadata["argparse"])
    given = vars(parser.parse_args(argv))
    if "resume" in given:
        settings = {**read_stopped_run(given["resume"]), "out": given["resume"]}
        if name := first_difference(settings, given):
            raise InputError(f"--resume {given['resume']} continues a run made with {flag(name)} "
                             f"{settings[name]}; drop {flag(name)} {given[name]}, or start "
                             "afresh with --out")
    else:
        settings = RECIPES[given.get("recipe", "seed")]
    config = Config(**{**settings, **given})
    if config.evaluate_on == "train+test":  # every training image is scored: none left as context
        config = replace(config, embed_train=False)
    for spec in fields(Config):
        if spec.metadata["check"] and (message := spec.metadata["check"](config)):
            parser.error(message)
    return config


def flag(name: str) -> str:
    """A Config field's flag: train_size -> --train-size."""
    return "--" + name.replace("_", "-")


def config_record(config: Config) -> dict:
    """The config as metrics.json records it: paths as text."""
    return {key: str(value) if isinstance(value, Path) else value
            for key, value in asdict(config).items()}


# ---- Data ----------------------------------------------------------------------------------------


@dataclass
class Dataset:
    """Images (n, 28, 28, 1) and integer labels (n,) or None: the scored images in [0, 1], the
    training images as the file stores integers (uint8, 4x less memory; intensities() brings a
    batch into [0, 1]) or in [0, 1]; the scored images' positions in the file (in x_test; under
    validation in x_train; under train+test in both, joined); how the file stores its images and
    names its classes."""

    x_train: np.ndarray
    y_train: np.ndarray | None
    x_test: np.ndarray
    y_test: np.ndarray | None
    indices: np.ndarray
    n_clusters: int
    scale: float  # what the file's intensities were divided by
    scaling: str
    source: str
    class_names: list[str] | None
    noun: str  # "digit" for MNIST, else "class"

    def name(self, label: int) -> str:
        """A class as plots name it: "digit 3", "Trouser", "class 3"."""
        return self.class_names[label] if self.class_names else f"{self.noun} {label}"


def load_data(config: Config) -> Dataset:
    """Load, check and sample the data: the bundled MNIST, or --data (read_npz says what it may
    hold). Each split's images x, labels y (or None) and positions in the file i go together."""
    path = config.data or check_bundled_data()
    arrays, source = read_npz(path), str(config.data or "data/mnist.npz (bundled, sha256 checked)")
    scale, scaling = image_scale(arrays)
    names = [str(name) for name in arrays.pop("class_names", [])] or None
    splits = {split: {"x": arrays[f"x_{split}"], "y": arrays.get(f"y_{split}"),
                      "i": np.arange(len(arrays[f"x_{split}"]))} for split in ("train", "test")}
    rng, n_train, n_test = (np.random.default_rng(config.seed), len(splits["train"]["x"]),
                            len(splits["test"]["x"]))
    if config.evaluate_on == "validation":  # the scored images are training images
        if n_train < 2 * n_test:
            raise InputError(f"{source} has {n_train} training images, too few to hold out "
                             f"{n_test} (as many as its test set) and train on the rest; use "
                             "--evaluate-on test")
        held_out = np.zeros(n_train, dtype=bool)
        held_out[sample(splits["train"]["y"], n_train, n_test, rng)] = True
        splits = {"train": take(splits["train"], ~held_out),
                  "test": take(splits["train"], held_out)}
        source += f" (validation: {n_test} training images held out)"
    for split, size in (("train", config.train_size), ("test", config.test_size)):
        available = len(splits[split]["x"])
        if size is not None and size > available:
            raise InputError(f"--{split}-size {size} is larger than the {available} {split} images "
                             f"in {source}; use at most {available}")
        if size is not None and size < available:
            splits[split] = take(splits[split], sample(splits[split]["y"], available, size, rng))
    if config.evaluate_on == "train+test":  # transductive: the images trained on are scored
        train, test = splits["train"], {**splits["test"], "i": splits["test"]["i"] + n_train}
        splits["train"] = splits["test"] = {  # labels of some scored images only: none
            key: None if train[key] is None or test[key] is None else
            np.concatenate([train[key], test[key]]) for key in train}
        source += " (train+test: training and test images together, trained on and scored)"
    labels = {split: None if splits[split]["y"] is None else splits[split]["y"].astype(int)
              for split in splits}
    n_clusters = config.clusters or (None if labels["test"] is None else
                                     len(np.unique(labels["test"])))
    refuse_unclusterable(splits["train"]["x"], splits["test"]["x"], n_clusters, config)
    x_train = compact_images(splits["train"]["x"], scale)
    x_test = (x_train if config.evaluate_on == "train+test" else
              compact_images(splits["test"]["x"], scale))
    digits = config.data is None or names == [str(digit) for digit in range(10)]
    return Dataset(x_train, labels["train"], intensities(x_test), labels["test"],
                   splits["test"]["i"], n_clusters, scale, scaling, source,
                   None if digits else names, "digit" if digits else "class")


def take(split: dict[str, np.ndarray | None], rows: np.ndarray) -> dict[str, np.ndarray | None]:
    """The rows (indices or a mask) of each array of a split."""
    return {key: None if array is None else array[rows] for key, array in split.items()}


def sample(labels: np.ndarray | None, n: int, size: int, rng: np.random.Generator) -> np.ndarray:
    """Indices of `size` of n items drawn without replacement, in order: at random, or where there
    are labels each class in proportion. Not train_test_split(stratify=...): every choice in
    docs/EXPERIMENTS.md was made on this split."""
    if labels is None:
        return np.sort(rng.choice(n, size, replace=False))
    order = rng.permutation(len(labels))
    position = np.empty(len(labels))  # within its class, as a fraction: the smallest first
    for label in np.unique(labels):
        members = order[labels[order] == label]
        position[members] = (np.arange(len(members)) + 0.5) / len(members)
    return np.sort(order[np.argsort(position[order], kind="stable")[:size]])


def compact_images(images: np.ndarray, scale: float) -> np.ndarray:
    """Images (n, 28, 28) -> (n, 28, 28, 1): integers (0..255) as uint8, floats divided by scale."""
    return (images.astype(np.uint8, copy=False) if images.dtype.kind in "ui" else
            (images / np.float32(scale)).astype("float32", copy=False))[..., None]


def intensities(images: np.ndarray) -> np.ndarray:
    """Images in [0, 1]: uint8 ones (0..255) as float32 divided by 255, others as they are."""
    return images / np.float32(255) if images.dtype == np.uint8 else images


# ---- Model ---------------------------------------------------------------------------------------


def build_autoencoder(bottleneck: int = 0, architecture: str = "conv", noise: float = 0.0,
                      precision: str = "float32") -> tuple[keras.Model, keras.Model]:
    """The autoencoder of images (n, 28, 28, 1) and its encoder; its layer "decoder" is the decoder.
    conv (the seed's): Conv2D(32, 3x3, relu) -> MaxPooling2D(2), twice, a (7, 7, 32) code, then
    (Conv2D(32) -> UpSampling2D(2)) twice -> Conv2D(1, sigmoid); a `bottleneck` squeezes the code
    through dense layers. dense (N2D's): 784 -> 500 -> 500 -> 2000 -> `bottleneck`, and mirrored.
    `noise`: Gaussian noise on the input in training only (a denoising autoencoder). `precision`
    bfloat16: the layers between the image, the code and the reconstruction compute in bfloat16
    with float32 weights (Keras' mixed_bfloat16); those three stay float32.
    """
    import keras
    from keras import layers

    hidden = {"dtype": "mixed_bfloat16" if precision == "bfloat16" else "float32"}
    image = keras.Input(shape=(28, 28, 1), name="image")
    if architecture == "conv":
        x = layers.Conv2D(32, 3, activation="relu", padding="same", **hidden)(image)
        x = layers.MaxPooling2D(2, padding="same", **hidden)(x)
        x = layers.Conv2D(32, 3, activation="relu", padding="same", **hidden)(x)
        code = layers.MaxPooling2D(2, padding="same", **(hidden if bottleneck else {}))(x)
        if bottleneck:
            code = layers.Dense(bottleneck)(layers.Flatten(**hidden)(code))
        encoder = keras.Model(image, code, name="encoder")
        code_input = x = keras.Input(shape=code.shape[1:], name="code")
        if bottleneck:
            x = layers.Reshape((7, 7, 32), **hidden)(
                layers.Dense(7 * 7 * 32, activation="relu", **hidden)(x))
        for _ in range(2):
            x = layers.UpSampling2D(2, **hidden)(
                layers.Conv2D(32, 3, activation="relu", padding="same", **hidden)(x))
        reconstruction = layers.Conv2D(1, 3, activation="sigmoid", padding="same")(x)
    else:
        x = layers.Flatten()(image)
        for width in DENSE_WIDTHS:
            x = layers.Dense(width, activation="relu", **hidden)(x)
        encoder = keras.Model(image, layers.Dense(bottleneck)(x), name="encoder")
        code_input = x = keras.Input(shape=(bottleneck,), name="code")
        for width in reversed(DENSE_WIDTHS):
            x = layers.Dense(width, activation="relu", **hidden)(x)
        reconstruction = layers.Reshape((28, 28, 1))(layers.Dense(784, activation="sigmoid")(x))
    decoder = keras.Model(code_input, reconstruction, name="decoder")
    corrupted = layers.GaussianNoise(noise, name="noise")(image) if noise else image
    return keras.Model(image, decoder(encoder(corrupted)), name="autoencoder"), encoder


def for_new_images(model: keras.Model, scale: float) -> keras.Model:
    """The model as saved for use without this script: images (n, 28, 28) as the data file stores
    them in, flat outputs (n, d) out; the scaling and reshaping are its first layers."""
    import keras
    from keras import layers

    images = keras.Input(shape=(28, 28), name="images")
    x = layers.Reshape((28, 28, 1))(layers.Rescaling(1 / scale)(images))
    return keras.Model(images, layers.Flatten()(model(x)), name=model.name)


# ---- Train ---------------------------------------------------------------------------------------


def train(autoencoder: keras.Model, data: Dataset, epochs: int, checkpoint: Path,
          seed: int) -> dict[str, list[float]]:
    """Fit the autoencoder to reproduce its input; returns loss, val_loss and images/s per epoch.
    After each epoch BackupAndRestore saves weights, optimizer and epoch in `checkpoint`, whence a
    run continues, and CSVLogger adds a line to history.csv, read back at the end (fit() knows only
    this process's epochs)."""
    import keras

    autoencoder.compile(optimizer="adam", loss="binary_crossentropy")
    images = batches(data.x_train, seed=seed)
    backup = keras.callbacks.BackupAndRestore(str(checkpoint / "backup"), delete_checkpoint=False)
    log = keras.callbacks.CSVLogger(str(checkpoint / "history.csv"), append=True)
    with signals_deferred() as stop_on_signal:
        try:
            autoencoder.fit(images, epochs=epochs, verbose=0, shuffle=False, callbacks=[
                backup, stop_on_signal, progress("", epochs, len(data.x_train)), images.shuffler,
                log], validation_data=batches(data.x_test))
        except OSError as error:
            raise WriteError(f"could not save training's checkpoint in {checkpoint} "
                             f"({error.strerror or error})") from None
    return read_history(checkpoint)


def batches(images: np.ndarray, targets: np.ndarray | None = None, seed: int | None = None,
            size: int = BATCH) -> keras.utils.PyDataset:
    """Images (n, 28, 28, 1) and their targets (n,), or themselves as an autoencoder's, `size` at a
    time, as Keras' fit and predict take them: given whole, Keras would copy them four times over
    (2.9 GB more for 0.7 GB of images, log section 25). With a seed, in a new order each epoch from
    the seed and the epoch alone (its `shuffler` callback; fit's own shuffle must be off), so that
    a resumed run repeats the whole one on any backend."""
    import keras

    class Batches(keras.utils.PyDataset):
        order = np.arange(len(images))
        shuffler = keras.callbacks.LambdaCallback(on_epoch_begin=lambda epoch, logs: setattr(
            Batches, "order", np.random.default_rng([seed, epoch]).permutation(len(images))))

        def __len__(self) -> int:
            return math.ceil(len(images) / size)

        def __getitem__(self, index: int) -> tuple[np.ndarray, np.ndarray]:
            chosen = np.sort(self.order[index * size:(index + 1) * size])
            batch = intensities(images[chosen])
            return batch, batch if targets is None else targets[chosen]

    return Batches()


# ---- Encode --------------------------------------------------------------------------------------


def encode(encoder: keras.Model, images: np.ndarray) -> np.ndarray:
    """Images (n, 28, 28, 1) -> flat codes (n, 1568), or (n, bottleneck)."""
    return encoder.predict(batches(images, size=PREDICT_BATCH), verbose=0).reshape(len(images), -1)


def score_reconstruction(images: np.ndarray, reconstructions: np.ndarray) -> dict[str, float]:
    """BCE and MSE per pixel and PSNR in dB of reconstructions of images, both in [0, 1]."""
    # Keras clips predictions by 1e-7 in its binary cross-entropy: so does this, to match val_loss.
    p, x = np.clip(reconstructions.astype("float64"), 1e-7, 1 - 1e-7), images.astype("float64")
    mse = np.mean((x - reconstructions) ** 2)
    return {"bce": float(-np.mean(x * np.log(p) + (1 - x) * np.log(1 - p))), "mse": float(mse),
            "psnr": float(10 * np.log10(1 / mse))}


# ---- Reduce, cluster and score -------------------------------------------------------------------


@dataclass
class Clustering:
    """One row of the table: one kind of features, reduced, clustered and scored."""

    features: str  # "pixels" or "latent"
    reduction: str
    clusterer: str
    scores: dict[str, float]  # silhouette, and with labels ari, nmi and acc
    seconds: float  # what the reduction took
    cluster_seconds: float  # what clustering and scoring took
    clusters: np.ndarray  # (n,), one per scored image
    embedding: np.ndarray | None  # (n, d): the scored images reduced; None for "none"

    @property
    def row(self) -> dict:
        """The row as metrics.json and the tables give it."""
        return {"features": self.features, "reduction": self.reduction, "clusterer": self.clusterer,
                **self.scores, "seconds": round(self.seconds, 2),
                "cluster_seconds": round(self.cluster_seconds, 2)}


def reduce_and_cluster(features: dict[str, np.ndarray], context: dict[str, np.ndarray],
                       labels: np.ndarray | None, n_clusters: int,
                       seed: int) -> tuple[list[Clustering], dict]:
    """Every row of the table: the scored images' "pixels" (n, 784) and "latent" codes (n, d)
    through their REDUCTIONS (see spaces), in WORKERS processes of one thread (joblib's, which
    stop at once on an error or Ctrl-C). Returns the rows, and what metrics.json records of the
    shared work."""
    tasks, shared = [], {}
    for kind, points in features.items():
        also = f" and the training {NAMES[kind]}" if kind in context else ""
        print(f"  principal components and nearest neighbours of the {NAMES[kind]}{also}",
              flush=True)
        start = time.perf_counter()
        prepared, shared[f"{kind}_pca_variance_kept"] = spaces(points, context.get(kind), seed)
        shared[f"{kind}_shared_seconds"] = round(time.perf_counter() - start, 2)
        tasks += [(kind, name, *prepared[name], len(points)) for name in REDUCTIONS[kind]
                  + (("umap10+train",) if kind in context else ())]
    order = sorted(range(len(tasks)), key=lambda index: SLOWEST_FIRST.index(tasks[index][1]))
    # Arrays reach the workers as memory-mapped files (joblib's), not a copy in each; copy-on-write,
    # as UMAP writes into its graph. Their stderr is muted: a Ctrl-C as one starts would print a
    # traceback; an error in a task is raised here, and reported as usual.
    with parallel_config(backend="loky", inner_max_num_threads=1), quiet_stderr():
        workers = Parallel(WORKERS, batch_size=1, mmap_mode="c", initializer=start_worker)
        done = dict(zip(order, workers(delayed(embed_and_cluster)(*tasks[index], labels,
                                                                  n_clusters, seed)
                                       for index in order)))
    return [row for index in range(len(tasks)) for row in done[index]], shared


def spaces(points: np.ndarray, context: np.ndarray | None,
           seed: int) -> tuple[dict[str, tuple], float]:
    """What each reduction starts from: name -> (points, their nearest_neighbours graph or None).
    t-SNE and UMAP start from the points' PCA_DIMS principal components; "umap10+train" from those
    of the points, then of the training `context` (m, d). Also the share of variance they keep."""
    if not points.std(axis=0).any():  # PCA would divide by zero, and UMAP crash on the NaNs
        raise InputError("the codes are all the same: nothing to cluster; check the images, or "
                         "train longer")
    pca = PCA(n_components=min(PCA_DIMS, *points.shape), random_state=seed)
    compact = pca.fit_transform(points)
    graph = nearest_neighbours(compact, UMAP_NEIGHBOURS, seed)
    prepared = {"none": (points, None), "pca": (points, None), "tsne": (compact, None),
                "umap": (compact, graph), "umap10": (compact, graph)}
    if context is not None:  # the scored points first, then the context
        more = np.vstack([compact, pca.transform(context)])
        prepared["umap10+train"] = more, nearest_neighbours(more, UMAP_NEIGHBOURS, seed)
    return prepared, float(pca.explained_variance_ratio_.sum())


def nearest_neighbours(points: np.ndarray, k: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """The k nearest neighbours of each point (n, d), itself first at distance 0 as UMAP expects:
    indices (n, k) and distances (n, k). Exact up to LARGE points, past them
    pynndescent's nearest-neighbour descent (umap-learn's own search) on one thread."""
    itself = np.arange(len(points))[:, None]
    if len(points) <= LARGE:
        # Asked with the points again, scikit-learn would find each at a rounding error's distance,
        # which UMAP would take for its nearest neighbour's (rho), shifting every membership.
        others, indices = NearestNeighbors(n_neighbors=min(k, len(points)) - 1).fit(
            points).kneighbors()
    else:
        from pynndescent import NNDescent

        with warnings.catch_warnings():  # that numba cannot cache two of its functions
            warnings.filterwarnings("ignore", message=".*Cannot cache compiled function")
            found, distances = NNDescent(points, n_neighbors=k, random_state=seed,
                                         n_jobs=1).neighbor_graph
        # Each point's k - 1 nearest others, in order, whether or not the search found it itself.
        order = np.argsort(found == itself, axis=1, kind="stable")[:, :k - 1]
        indices, others = (np.take_along_axis(array, order, axis=1) for array in (found, distances))
    return np.hstack([itself, indices]), np.hstack([np.zeros_like(itself, others.dtype), others])


def embed_and_cluster(kind: str, name: str, points: np.ndarray, graph: tuple | None, n: int,
                      labels: np.ndarray | None, n_clusters: int, seed: int) -> list[Clustering]:
    """A worker's task: the rows of one reduction of one kind of features. Points past the n
    scored ones (the context) are reduced and clustered, not scored."""
    if name not in ("none", "pca"):
        also = f" and the training {NAMES[kind]}" if name == "umap10+train" else ""
        says = {"tsne": "t-SNE to 2-D", "umap": "UMAP to 2-D"}.get(name, "UMAP to 10-d")
        print(f"  {says} of the {NAMES[kind]}{also}, {len(points):,} points", flush=True)
    start = time.perf_counter()
    embedding = reduce(name, points, graph, seed)
    seconds, rows = time.perf_counter() - start, []
    for clusterer in CLUSTERERS.get(name, ("kmeans",)):
        start = time.perf_counter()
        clusters = fit_predict(clusterers(n_clusters, seed)[clusterer], embedding, seed)[:n]
        scores = score(labels, clusters, embedding[:n], seed)
        rows.append(Clustering(kind, name, clusterer, scores, seconds, time.perf_counter() - start,
                               clusters, None if name == "none" else embedding[:n]))
    return rows


def reduce(name: str, points: np.ndarray, graph: tuple | None, seed: int) -> np.ndarray:
    """Points (n, d) reduced to (n, 2), or (n, 10) by umap10 ("none" keeps them); UMAP starts from
    their nearest_neighbours `graph`."""
    if name == "none":
        return points
    if name == "tsne":  # openTSNE: Barnes-Hut under 10,000 points, from there FFT-accelerated
        from openTSNE import TSNE  # interpolation (FIt-SNE), linear in the points

        return np.asarray(TSNE(n_jobs=1, random_state=seed).fit(points))
    from umap import UMAP

    def umap(n_components: int, n_neighbors: int, **settings) -> UMAP:
        knn = (graph[0][:, :n_neighbors], graph[1][:, :n_neighbors]) if graph else (None,) * 3
        return UMAP(n_components=n_components, n_neighbors=n_neighbors, random_state=seed,
                    n_jobs=1, precomputed_knn=knn, n_epochs=UMAP_EPOCHS,
                    init="spectral" if len(points) <= LARGE else "pca", **settings)

    reducers = {"pca": PCA(n_components=2, random_state=seed), "umap": umap(2, 15),
                # For clustering: more room, points packed tight, wider neighbourhoods.
                "umap10": umap(10, 30, min_dist=0.0)}
    with warnings.catch_warnings():  # that a graph without its search index can't embed new points
        warnings.filterwarnings("ignore", message="precomputed_knn")
        return reducers[name.removesuffix("+train")].fit_transform(points)


def clusterers(n_clusters: int, seed: int) -> dict:
    """Name -> unfitted clusterer, each the best of 10 initialisations."""
    return {"kmeans": KMeans(n_clusters=n_clusters, n_init=10, random_state=seed),
            "gmm": GaussianMixture(n_components=n_clusters, n_init=10, random_state=seed)}


def fit_predict(clusterer, points: np.ndarray, seed: int) -> np.ndarray:
    """The clusterer's cluster of each point (n, d): fitted to them all, or past LARGE to that
    many drawn with `seed`."""
    if len(points) <= LARGE:
        return clusterer.fit_predict(points)
    drawn = np.random.default_rng(seed).choice(len(points), LARGE, replace=False)
    return clusterer.fit(points[drawn]).predict(points)


def score(labels: np.ndarray | None, clusters: np.ndarray, points: np.ndarray | None = None,
          seed: int = 0) -> dict[str, float]:
    """ARI, NMI and ACC of clusters (n,) against labels (n,) where there are labels; given the
    clustered points (n, d), the silhouette (on SILHOUETTE_POINTS of them, drawn with `seed`)."""
    scores = {}
    if labels is not None:
        counts, rows, columns = matching(labels, clusters)
        scores = {"ari": float(adjusted_rand_score(labels, clusters)),
                  "nmi": float(normalized_mutual_info_score(labels, clusters)),
                  "acc": float(counts[rows, columns].sum() / len(labels))}
    if points is not None:  # float64: scikit-learn's pairwise distances run twice as fast on it
        sampled = SILHOUETTE_POINTS if len(points) > SILHOUETTE_POINTS else None
        scores["silhouette"] = (float(silhouette_score(points.astype("float64"), clusters,
                                                       sample_size=sampled, random_state=seed))
                                if len(np.unique(clusters)) > 1 else math.nan)
    return scores


def matching(labels: np.ndarray, clusters: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Counts (classes x cluster numbers) and the best one-to-one matching of classes to clusters
    (Hungarian algorithm): its rows and columns."""
    classes, label_index = np.unique(labels, return_inverse=True)
    size = max(len(classes), int(clusters.max()) + 1)
    counts = confusion_matrix(label_index, clusters, labels=np.arange(size))[:len(classes)]
    return counts, *linear_sum_assignment(counts, maximize=True)


def matched_classes(labels: np.ndarray, clusters: np.ndarray) -> np.ndarray:
    """Per cluster number, the index (in np.unique(labels)) of the class the matching gives it; the
    count of classes where it has none."""
    counts, rows, columns = matching(labels, clusters)
    matched = np.full(counts.shape[1], len(counts))
    matched[columns] = rows
    return matched


# ---- Train for clustering (--student) ------------------------------------------------------------


def train_students(training: dict[str, np.ndarray], data: Dataset, config: Config,
                   stages: Stages) -> tuple[list[Clustering], dict[str, dict], keras.Model | None]:
    """The stage for each kind of training features, codes and (--pixel-twin) pixels: the rows of
    the students trusted, each scoring the scored images in its most probable cluster (the
    silhouette in the space of cluster probabilities), what metrics.json records of each, and the
    codes' student (None where it was not trusted)."""
    rows, records, students = [], {}, {}
    for kind, features in training.items():
        stage = f"student of the {NAMES[kind]}"
        with stages(stage, f"training a student on the clusters of the training {NAMES[kind]}, "
                    f"{len(features):,} points"):
            students[kind], records[kind] = train_for_clustering(features, data.x_train,
                                                                 data.n_clusters, config)
        if students[kind] is not None:
            start = time.perf_counter()
            probabilities = students[kind].predict(batches(data.x_test, size=PREDICT_BATCH),
                                                   verbose=0)
            clusters = probabilities.argmax(axis=1)
            scores = score(data.y_test, clusters, probabilities, config.seed)
            rows.append(Clustering(kind, "student", "softmax", scores, stages.seconds[stage],
                                   time.perf_counter() - start, clusters, probabilities))
    return rows, records, students.get("latent")


def train_for_clustering(features: np.ndarray, images: np.ndarray, n_clusters: int,
                         config: Config) -> tuple[keras.Model | None, dict]:
    """On the training images (n, 28, 28, 1) and their features (n, d), codes or pixels, never a
    scored image or a label: the features' clusters (umap10, the mixture) are the targets, and a
    small convolutional network (build_student) learns those that are clean, that the image's
    nearest neighbours in the features share (AGREEMENT). Returns the student, or None where it is
    not trusted, and what metrics.json records: the share of clean targets, the share of them the
    student gave back, and the share of images whose cluster differs from its target."""
    set_seed(config.seed)  # the same student from a reused model
    print("  its targets: UMAP to 10-d of the training features, a Gaussian mixture", flush=True)
    start = time.perf_counter()
    targets, neighbours = training_targets(features, n_clusters, config.seed)
    clean, seconds = agreement(targets, neighbours) >= AGREEMENT, time.perf_counter() - start
    print(f"  {clean.mean():.1%} of the training images have clean targets ({seconds:.0f} s)",
          flush=True)
    student = learn(build_student(n_clusters), images[clean], targets[clean], config.student,
                    config.seed)
    assigned = student.predict(batches(images, size=PREDICT_BATCH), verbose=0).argmax(axis=1)
    speeds = student.history.history["images_per_second"]
    stage = {"clean": float(clean.mean()), "changed": float(np.mean(assigned != targets)),
             "kept": float(np.mean(assigned[clean] == targets[clean])),
             "targets_seconds": round(seconds, 2),
             "epoch_seconds": [round(clean.sum() / speed, 2) for speed in speeds]}
    print(f"  the student: {stage['changed']:.2%} of the training images changed cluster",
          flush=True)
    # Without a label, whether to trust it: a student that gives back too few of the clean targets
    # it learned (too few steps, targets that images do not bear out) is left out.
    if stage["kept"] < TRUSTED:
        print(f"note: the student gives back only {stage['kept']:.1%} of its clean targets "
              f"(under {TRUSTED:.1%}); its row is left out", flush=True)
        return None, stage
    return student, stage


def training_targets(features: np.ndarray, n_clusters: int,
                     seed: int) -> tuple[np.ndarray, np.ndarray]:
    """The features' (n, d) clusters (n,) by the table's chain to its umap10 gmm row (spaces,
    reduce, the mixture), and each point's nearest neighbours (n, UMAP_NEIGHBOURS), itself first."""
    points, graph = spaces(features, None, seed)[0]["umap10"]
    with threadpool_limits(1):  # one thread, as in the workers: the same clusters on any machine
        embedding = reduce("umap10", points, graph, seed)
        return fit_predict(clusterers(n_clusters, seed)["gmm"], embedding, seed), graph[0]


def agreement(targets: np.ndarray, neighbours: np.ndarray) -> np.ndarray:
    """Per image, the share of its nearest neighbours (indices (n, k), itself first) that share
    its target (n,)."""
    return (targets[neighbours[:, 1:]] == targets[:, None]).mean(axis=1)


def build_student(n_clusters: int) -> keras.Model:
    """A small convolutional network, (Conv2D(3x3, relu) twice -> MaxPooling2D(2)) of 32 and then
    64 filters, Dense(128) with dropout 0.5, a softmax of n_clusters; in training it sees each image
    shifted by up to 10% and rotated by up to 10 degrees afresh (DEC-DA's augmentation), filled
    with black as MNIST's background."""
    import keras
    from keras import layers

    image = keras.Input(shape=(28, 28, 1), name="image")
    augment = [layers.RandomTranslation(SHIFT, SHIFT, fill_mode="constant"),
               layers.RandomRotation(ROTATION, fill_mode="constant")]
    x = keras.Sequential(augment, name="augment")(image)
    for filters in (32, 64):
        for _ in range(2):
            x = layers.Conv2D(filters, 3, activation="relu")(x)
        x = layers.MaxPooling2D(2)(x)
    x = layers.Dropout(0.5)(layers.Dense(128, activation="relu")(layers.Flatten()(x)))
    return keras.Model(image, layers.Dense(n_clusters, activation="softmax", name="clusters")(x),
                       name="student")


def learn(student: keras.Model, images: np.ndarray, targets: np.ndarray, epochs: int,
          seed: int = 0) -> keras.Model:
    """Fit the student to the images' (n, 28, 28, 1) targets (n,) by cross-entropy, Adam's rate
    falling from 1e-3 to 0 along one cosine."""
    import keras

    steps = epochs * math.ceil(len(images) / BATCH)
    student.compile(loss="sparse_categorical_crossentropy", optimizer=keras.optimizers.Adam(
        keras.optimizers.schedules.CosineDecay(1e-3, steps)))
    with signals_deferred() as stop_on_signal:
        data = batches(images, targets, seed)
        student.fit(data, epochs=epochs, verbose=0, shuffle=False, callbacks=[
            stop_on_signal, data.shuffler, progress("student ", epochs, len(images))])
    return student


# ---- Plot ----------------------------------------------------------------------------------------


def write_results(folder: Path, data: Dataset, codes: np.ndarray, reconstructions: np.ndarray,
                  scores: dict[str, float], history: dict[str, list[float]],
                  clusterings: list[Clustering], shown: Clustering, split: str, seed: int) -> None:
    """codes.npz (the scored images' positions in the data file, their codes and labels, each
    reduction's embedding and each row's clusters), the plots and the page, into `folder`."""
    arrays = {"indices": data.indices, "codes": codes}
    arrays.update({} if data.y_test is None else {"labels": data.y_test})
    for clustering in clusterings:
        name = f"{clustering.features}_{clustering.reduction}"
        arrays[f"clusters_{name}_{clustering.clusterer}"] = clustering.clusters
        if clustering.embedding is not None:
            arrays[name] = clustering.embedding.astype("float32")
    write_outputs(folder, {
        "codes.npz": lambda path: np.savez_compressed(path, **arrays),
        "reconstructions.png": lambda path: plot_reconstructions(
            data, reconstructions, scores, split, path),
        "training_curves.png": lambda path: plot_training_curves(history, split, path),
        "embeddings.png": lambda path: plot_embeddings(clusterings, data, split, path),
        "clusters.png": lambda path: plot_clusters(data, shown, split, path),
        "embeddings.html": lambda path: plot_embeddings_page(clusterings, data, shown, split, path,
                                                             seed),
        **({} if data.y_test is None else {  # no labels: nothing to confuse the clusters with
            "confusion.png": lambda path: plot_confusion(data, shown, split, path)})})


def plot_reconstructions(data: Dataset, reconstructions: np.ndarray, scores: dict[str, float],
                         split: str, path: Path) -> None:
    """The first scored image of each class (up to 10; unlabelled, the first 10), reconstructed."""
    labels = data.y_test
    picks = (range(10) if labels is None or len(np.unique(labels)) > 10 else
             [int(np.flatnonzero(labels == label)[0]) for label in np.unique(labels)])
    fig, axes = plt.subplots(2, len(picks), figsize=(1.2 * len(picks), 2.8), squeeze=False)
    for column, index in enumerate(picks):
        for row, source in enumerate((data.x_test, reconstructions)):
            axes[row, column].imshow(source[index, ..., 0], cmap="gray", vmin=0, vmax=1)
            axes[row, column].set(xticks=[], yticks=[])
        axes[0, column].set_title("" if labels is None else data.name(labels[index]), fontsize=8)
    axes[0, 0].set_ylabel(f"{split} image")
    axes[1, 0].set_ylabel("reconstruction")
    fig.suptitle(f"{split.capitalize()} images and their reconstructions - BCE "
                 f"{scores['bce']:.4f}, PSNR {scores['psnr']:.1f} dB")
    save(fig, path, dpi=120)


def plot_training_curves(history: dict[str, list[float]], split: str, path: Path) -> None:
    """Loss per epoch on the training images and on the scored images."""
    epochs = np.arange(1, len(history["loss"]) + 1)
    fig, ax = plt.subplots(figsize=(6, 4))
    ax.plot(epochs, history["loss"], marker="o", label="training loss")
    ax.plot(epochs, history["val_loss"], marker="o", label=f"{split}-set loss")
    ax.xaxis.set_major_locator(plt.MaxNLocator(integer=True))
    ax.set(xlabel="epoch", xlim=(0.5, len(epochs) + 0.5), ylabel="binary cross-entropy per pixel",
           title=f"Training curves - final {split}-set BCE {history['val_loss'][-1]:.4f}")
    ax.grid(alpha=0.3)
    ax.legend()
    save(fig, path, dpi=120)


def plot_embeddings(clusterings: list[Clustering], data: Dataset, split: str, path: Path) -> None:
    """The codes' 2-D embeddings by true class (top; unlabelled, none) and by KMeans cluster, each
    cluster in the colour of the class it is matched to (unlabelled, its own)."""
    titles = {"pca": "PCA", "tsne": "t-SNE", "umap": "UMAP"}
    plotted = [clustering for clustering in clusterings if clustering.features == "latent"
               and clustering.clusterer == "kmeans" and clustering.reduction in titles]
    labels = data.y_test
    classes = np.arange(data.n_clusters) if labels is None else np.unique(labels)
    colours = plt.get_cmap("tab10" if len(classes) <= 10 else "tab20")
    fig, axes = plt.subplots(1 if labels is None else 2, len(plotted), squeeze=False,
                             figsize=(5 * len(plotted), 5 if labels is None else 10))
    for column, clustering in enumerate(plotted):
        name, scores, colourings = titles[clustering.reduction], clustering.scores, [
            clustering.clusters]
        if labels is not None:
            colourings = [np.searchsorted(classes, labels),
                          matched_classes(labels, clustering.clusters)[clustering.clusters]]
            axes[0, column].set_title(f"{name} of the codes, coloured by true {data.noun}")
        for ax, colour in zip(axes[:, column], colourings):
            ax.scatter(*clustering.embedding.T, c=colour, cmap=colours, vmin=0,
                       vmax=colours.N - 1, s=2, alpha=0.7, linewidths=0)
            ax.set(xticks=[], yticks=[])
        axes[-1, column].set_title(f"{name}: KMeans clusters - " + (
            f"silhouette {scores['silhouette']:.2f}" if labels is None else
            f"NMI {scores['nmi']:.2f}, ACC {scores['acc']:.2f}"))
    if labels is not None:
        fig.legend(handles=[plt.Line2D([], [], marker="o", linestyle="", color=colours(index),
                                       label=data.name(label)) for index, label in
                            enumerate(classes)], title=f"{data.noun} (bottom: matched cluster)",
                   loc="center left", bbox_to_anchor=(0.92, 0.5))
    fig.suptitle(f"{split.capitalize()}-set codes in 2-D (axes are arbitrary units)", fontsize=14)
    save(fig, path, dpi=100)


def plot_confusion(data: Dataset, shown: Clustering, split: str, path: Path) -> None:
    """True labels against a row's clusters, each cluster in its matched label's column."""
    counts, _, columns = matching(data.y_test, shown.clusters)
    fig, ax = plt.subplots(figsize=(7, 6))
    display = ConfusionMatrixDisplay(counts[:, columns], display_labels=[
        data.name(label) for label in np.unique(data.y_test)])
    display.plot(ax=ax, cmap="Blues", values_format="d", text_kw={"fontsize": 7})
    ax.set_xticks(range(len(columns)), [f"c{cluster}" for cluster in columns])
    ax.set(xlabel=f"cluster, ordered by matched {data.noun}", ylabel=f"true {data.noun}",
           title=f"Best row: {shown.features} + {shown.reduction} + {shown.clusterer}\n"
                 f"ACC {shown.scores['acc']:.3f}, NMI {shown.scores['nmi']:.3f}")
    display.im_.colorbar.set_label(f"{split} images")
    save(fig, path, dpi=120)


def plot_clusters(data: Dataset, shown: Clustering, split: str, path: Path, n: int = 8) -> None:
    """A strip of images per cluster of a row. With labels, by majority class: that class and the
    cluster's purity (the majority's share), n of its images of that class and up to n of other
    classes, framed in red under the class each truly is; unlabelled, 2n of its images."""
    labels, noun, slot = data.y_test, data.noun, 31  # slot: pixels per image, a white gap included
    clusters = np.unique(shown.clusters)
    majority = {cluster: 0 if labels is None else np.bincount(
        labels[shown.clusters == cluster]).argmax() for cluster in clusters}
    ordered = sorted(clusters, key=lambda cluster: (majority[cluster], cluster))
    fig, axes = plt.subplots(len(ordered), 1, squeeze=False, figsize=(12, 0.8 * len(ordered)),
                             gridspec_kw={"hspace": 0.45})
    for ax, cluster in zip(axes[:, 0], ordered):
        members = np.flatnonzero(shown.clusters == cluster)
        right = members if labels is None else members[labels[members] == majority[cluster]]
        wrong = np.setdiff1d(members, right)
        strip = np.zeros((28, slot * (2 * n + 1)))
        for column, index in [*enumerate(right[:2 * n if labels is None else n]),
                              *enumerate(wrong[:n], n + 1)]:
            mistaken = labels is not None and column > n
            strip[:, slot * column:slot * column + 28] = data.x_test[index, ..., 0]
            ax.add_patch(plt.Rectangle((slot * column - 0.5, -0.5), 28, 28, fill=False, lw=1,
                                       edgecolor="crimson" if mistaken else "silver"))
            if mistaken:
                name = data.name(labels[index]).removeprefix(noun + " ")
                ax.text(slot * column + 14, -2, name, color="crimson", ha="center", va="bottom",
                        fontsize=min(7, 56 / len(name)))  # within its image's width
        if labels is not None and not len(wrong):
            ax.text(slot * (n + 1), 14, f"no image of another {noun}", fontsize=8, va="center")
        ax.imshow(strip, cmap="gray_r", vmin=0, vmax=1)
        ax.set(xticks=[], yticks=[], frame_on=False)
        ax.set_ylabel(f"cluster {cluster}\n{len(members):,} images" if labels is None else
                      f"{data.name(majority[cluster])}\n{len(right) / len(members):.1%} of "
                      f"{len(members):,}", rotation=0, ha="right", va="center", fontsize=9)
    others = "classes" if noun == "class" else noun + "s"
    for middle, heading, colour in ([(n, "sample images of each cluster", "black")]
                                    if labels is None else [
            (n / 2, f"its images of that {noun}", "black"),
            (n + 1 + n / 2, f"its images of other {others}: what each truly is", "crimson")]):
        axes[0, 0].text(slot * middle, -14, heading, ha="center", va="bottom", fontsize=9,
                        color=colour)
    fig.suptitle(f"What each cluster holds ({split} images): {shown.features} + {shown.reduction} "
                 f"+ {shown.clusterer}, " + ("no labels given" if labels is None else
                 f"ACC {shown.scores['acc']:.3f}\n(left: each cluster's majority {noun} and "
                 f"purity, the share of its images that are that {noun})"), fontsize=10)
    save(fig, path, dpi=110)


def plot_embeddings_page(clusterings: list[Clustering], data: Dataset, shown: Clustering,
                         split: str, path: Path, seed: int) -> None:
    """embeddings.html, a page that opens offline (Bokeh, its scripts inline): the codes' 2-D UMAP
    and t-SNE to pan and zoom, by true class, by the best row's cluster (each in its matched
    class's colour) and the best row's mistakes alone, a tab each (unlabelled: clusters only); a
    legend entry's click hides its points; hovering shows a point's image, its position in the data
    file, class and cluster. Past PAGE_POINTS scored images, a random sample of that many."""
    from bokeh import embed, layouts, models, plotting, resources
    from PIL import Image

    def webp(image: np.ndarray) -> str:  # lossless, a quarter smaller than PNG; base64 for a URI
        Image.fromarray(np.uint8(image * 255 + 0.5)).save(out := io.BytesIO(), "WEBP",
                                                          lossless=True)
        return base64.b64encode(out.getvalue()).decode()

    titles, labels, n = {"umap": "UMAP", "tsne": "t-SNE"}, data.y_test, len(data.x_test)
    keep = np.sort(np.random.default_rng(seed).choice(n, min(n, PAGE_POINTS), replace=False))
    table = {"index": data.indices[keep], "image": [webp(data.x_test[i, ..., 0]) for i in keep],
             "cluster": [f"cluster {c}" for c in shown.clusters[keep]]}
    for row in (row for row in clusterings if row.features == "latent" and row.reduction in titles):
        table[f"x {row.reduction}"], table[f"y {row.reduction}"] = np.float32(row.embedding[keep].T)
    # Each cluster's colour (its place in the palette), and each tab's groups with their colours.
    colour, groups = {c: c for c in np.unique(shown.clusters)}, {}
    if labels is not None:  # each cluster in the colour of the class it is matched to, if any
        classes, matched = np.unique(labels), matched_classes(labels, shown.clusters)
        colour = {c: matched[c] if matched[c] < len(classes) else -1 for c in colour}
        groups[data.noun] = {data.name(label): index for index, label in enumerate(classes)}
        table.update(wrong=(matched[shown.clusters[keep]] != np.searchsorted(classes, labels[keep]))
                     .tolist(), **{data.noun: [data.name(label) for label in labels[keep]]})
    groups["cluster"] = {f"cluster {c}": colour[c] for c in sorted(colour, key=colour.get)}
    hover = ('<img src="data:image/webp;base64,@image" width="84" height="84" style="image-'
             'rendering: pixelated"><br>#@index in the data file<br>' + (
                 "@cluster" if labels is None else f"@{data.noun}, @cluster (wrong: @wrong)"))
    source, palette = models.ColumnDataSource(table), plt.get_cmap("tab10" if len(
        groups["cluster"]) <= 10 else "tab20")

    def panel(by: str, mistakes: models.Filter | None = None) -> models.TabPanel:
        plots = [plotting.figure(title=f"{title} of the codes", tools="pan,wheel_zoom,reset",
                                 active_scroll="wheel_zoom", tooltips=hover)
                 for title in titles.values()]
        for plot, name in zip(plots, titles):
            for group, index in groups[by].items():
                chosen = models.GroupFilter(column_name=by, group=group)
                plot.scatter(f"x {name}", f"y {name}", source=source, size=3, alpha=0.7,
                             color=matplotlib.colors.to_hex(palette(index % palette.N)),
                             view=models.CDSView(filter=chosen & mistakes if mistakes else chosen),
                             legend_label=group)
            plot.add_layout(plot.legend[0], "right")  # beside the points, not over them
            plot.legend.click_policy, plot.axis.visible = "hide", False  # arbitrary units
        return models.TabPanel(child=layouts.row(plots),
                               title=("mistakes only, " if mistakes else "") + f"by {by}")

    tabs = [panel(by) for by in groups] + ([] if labels is None else [
        panel(data.noun, models.BooleanFilter(booleans=table["wrong"]))])
    sample = f"a random sample of {len(keep):,} of the {n:,}" if len(keep) < n else f"all {n:,}"
    heading = models.Div(text=f"<h3>{split.capitalize()}-set codes in 2-D, {sample} scored images"
                         f"</h3>Best row: {shown.features} + {shown.reduction} + {shown.clusterer}"
                         ". Drag, scroll, hover over a point, click a legend entry to hide it.")
    path.write_text(embed.file_html(layouts.column(heading, models.Tabs(tabs=tabs)),
                                    resources.INLINE, "Codes in 2-D"))


def save(fig: plt.Figure, path: Path, dpi: int) -> None:
    """Write a plot and free it."""
    fig.savefig(path, dpi=dpi, bbox_inches="tight")
    plt.close(fig)


# ---- Report --------------------------------------------------------------------------------------


def metrics_record(config: Config, data: Dataset, timings: dict[str, float],
                   reconstruction: dict[str, float], history: dict[str, list[float]], shared: dict,
                   clusterings: list[Clustering], students: dict[str, dict]) -> dict:
    """What metrics.json records of a run (README.md lists it); the libraries' versions as each
    module states its own (a distribution's name varies: tensorflow, tensorflow-cpu)."""
    import keras
    import umap

    backend = keras.config.backend()
    modules = {"numpy": np, "keras": keras, backend: sys.modules[backend],
               "scikit-learn": sklearn, "umap-learn": umap}
    return {"config": config_record(config),
            "versions": {"python": sys.version.split()[0], "backend": backend,
                         **{name: module.__version__ for name, module in modules.items()}},
            "data": {"source": data.source, "scaling": data.scaling, "n_train": len(data.x_train),
                     "n_test": len(data.x_test), "labelled": data.y_test is not None,
                     "n_classes": None if data.y_test is None else len(np.unique(data.y_test)),
                     "clusters": data.n_clusters, "class_names": data.class_names,
                     "silhouette_points": min(len(data.x_test), SILHOUETTE_POINTS)},
            "timings": timings, "peak_rss_mb": round(resource.getrusage(
                resource.RUSAGE_SELF).ru_maxrss / 1024, 1), **shared,
            "reconstruction": reconstruction, "history": history,
            "reused_model": None if config.reuse_model is None else str(config.reuse_model),
            "clustering": [clustering.row for clustering in clusterings],
            "student": students or None}


def report_markdown(metrics: dict) -> str:
    """report.md: the run's tables and plots on one page (README.md says what each column means)."""
    config, recon, data = metrics["config"], metrics["reconstruction"], metrics["data"]
    stage = "".join(f" A student learned the training {NAMES[kind]}' clean clusters "
                    f"({done['clean']:.1%} of the images) and gave back {done['kept']:.1%} of "
                    "them." for kind, done in (metrics["student"] or {}).items())
    model = (f"reused from {metrics['reused_model']}/" if metrics["reused_model"] else
             f"trained {config['epochs']} epoch{'s' * (config['epochs'] != 1)} in "
             f"{metrics['timings']['train']:.0f} s")
    labels = (f"{data['n_classes']} classes" if data["labelled"] else
              "no labels given, so no ARI, NMI or ACC") + (
        f" ({', '.join(data['class_names'])})" if data["class_names"] else "")
    flags = " ".join(flag(name) + ("" if value is True else f" {value}") for name, value in
                     config.items() if value != config_record(Config())[name])
    return "\n".join([
        f"# Autoencoder on {Path(config['data']).name if config['data'] else 'MNIST'}: results", "",
        f"Data: {data['source']}; {data['scaling']}; {data['n_train']:,} training and "
        f"{data['n_test']:,} {config['evaluate_on']} images, {data['clusters']} clusters, "
        f"{labels}.", f"Flags: `{flags or 'none'}` (backend "
        f"{metrics['versions']['backend']}); {config['architecture']} model, {model}.{stage} "
        f"Wall time {metrics['timings']['total']:.0f} s.", "",
        "| BCE per pixel | MSE per pixel | PSNR (dB) |", "| --- | --- | --- |",
        f"| {recon['bce']:.4f} | {recon['mse']:.4f} | {recon['psnr']:.2f} |", "",
        "![reconstructions](reconstructions.png) ![training curves](training_curves.png)", "",
        format_table(metrics["clustering"], markdown=True), "", "![embeddings](embeddings.png)",
        *(["", "![confusion](confusion.png)"] if data["labelled"] else []), "",
        "![what each cluster holds](clusters.png)", "",
        "[Explore the codes in the browser](embeddings.html): every image under the pointer.", ""])


def format_table(rows: list[dict], markdown: bool = False) -> str:
    """The clustering rows as an aligned text table, or a Markdown one; "-" where no labels."""
    header = ["features", "reduction", "clusterer", "silhouette", "ARI", "NMI", "ACC", "seconds"]
    lines = [[row["features"], row["reduction"], row["clusterer"],
              *(f"{row[name]:.3f}" if name in row else "-"
                for name in ("silhouette", "ari", "nmi", "acc")), f"{row['seconds']:.1f}"]
             for row in rows]
    if markdown:
        return "\n".join(f"| {' | '.join(line)} |" for line in [header, ["---"] * 8, *lines])
    widths = [max(map(len, column)) for column in zip(header, *lines)]
    return "\n".join("  ".join(cell.ljust(width) if i < 3 else cell.rjust(width)
                               for i, (cell, width) in enumerate(zip(line, widths)))
                     for line in [header, *lines])


# ---- Machinery: what keeps a run safe and its terminal clean -------------------------------------


def main(argv: list[str] | None = None) -> int:
    """Run, and turn each way a run can end early into one line on stderr and an exit status."""
    signal.signal(signal.SIGTERM, Terminated.handler)
    config = None
    try:
        config = parse_config(argv)
        run(config)
    except InputError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    except (WriteError, KeyboardInterrupt, Terminated) as stop:
        if config is None:
            raise
        status, what = {WriteError: (1, f"error: {stop}"), Terminated: (143, "\nstopped by "
                        "SIGTERM")}.get(type(stop), (130, "\nstopped by Ctrl-C"))
        print(f"{what}; earlier results in {config.out}/ are untouched{saved_training(config)}",
              file=sys.stderr)
        return status
    return 0


class InputError(ValueError):
    """A problem with the user's flags or data: one line on stderr, exit status 2."""


class WriteError(OSError):
    """A file of the run could not be written (a full disk): one line, exit status 1."""


class Stages:
    """Why: a user sees progress, and metrics.json where the time went: seconds per stage."""

    def __init__(self) -> None:
        self.start, self.seconds = time.perf_counter(), {}

    @contextlib.contextmanager
    def __call__(self, name: str, doing: str = "") -> Iterator[None]:
        if doing:
            print(f"  {doing}", flush=True)
        start = time.perf_counter()
        yield
        self.seconds[name] = round(time.perf_counter() - start, 2)
        print(f"[{time.perf_counter() - self.start:7.1f} s] {name} done in "
              f"{self.seconds[name]:.1f} s", flush=True)


def progress(what: str, epochs: int, images: int) -> keras.callbacks.Callback:
    """Why: a user sees each epoch. A line per epoch of a fit, its losses and images/s (logged)."""
    import keras

    started = {}

    def end(epoch: int, logs: dict) -> None:
        seconds = time.perf_counter() - started[epoch]
        logs["images_per_second"] = images / seconds
        print(f"  {what}epoch {epoch + 1}/{epochs}  " + "  ".join(
            f"{name} {value:.4f}" for name, value in logs.items() if name != "images_per_second")
            + f"  {logs['images_per_second']:,.0f} images/s, {seconds:.0f} s", flush=True)

    return keras.callbacks.LambdaCallback(
        on_epoch_begin=lambda epoch, logs: started.update({epoch: time.perf_counter()}),
        on_epoch_end=end)


def import_stack() -> None:
    """Why: a good run's stderr stays empty. Imports Keras, its backend and umap-learn, muted."""
    with quiet_stderr():
        import keras

        if keras.config.backend() == "tensorflow":
            import tensorflow as tf

            tf.config.list_physical_devices()  # prints a CUDA line on machines without its driver
            tf.get_logger().setLevel("ERROR")  # its Python warnings advise its programmers
        with without_tensorflow():
            import umap  # noqa: F401
    cache_numba_compilation()


def set_seed(seed: int) -> None:
    """Why: keras.utils.set_random_seed seeds TensorFlow too, importing it wherever it is installed.
    Seeds Python, NumPy and the backend."""
    import keras

    with without_tensorflow():
        keras.utils.set_random_seed(seed)


@contextlib.contextmanager
def without_tensorflow() -> Iterator[None]:
    """Why: umap-learn (for its ParametricUMAP, which no run uses) and Keras' seeding import
    TensorFlow wherever it is installed, 3 s and its log lines. Inside, where TensorFlow was not
    imported (it is not the backend), importing it fails as if it were not installed."""
    barred = "tensorflow" not in sys.modules
    if barred:
        sys.modules["tensorflow"] = None
    try:
        yield
    finally:
        if barred:  # Keras asks later whether TensorFlow was imported: it was not
            del sys.modules["tensorflow"]


def cache_numba_compilation() -> None:
    """Why: umap-learn and pynndescent compile their code with numba afresh in every process, 5-30 s
    before their first fit. With numba's cache on, later processes load most of it in a second."""
    import numba

    for name in ("umap.umap_", "umap.layouts", "umap.utils", "pynndescent.pynndescent_",
                 "pynndescent.distances", "pynndescent.rp_trees", "pynndescent.utils"):
        for function in vars(importlib.import_module(name)).values():
            if isinstance(function, numba.core.registry.CPUDispatcher):
                with contextlib.suppress(RuntimeError):  # no folder to write to: compiled as before
                    function.enable_caching()


@contextlib.contextmanager
def quiet_stderr() -> Iterator[None]:
    """Why: TensorFlow's native start-up lines bypass its log level. Mutes file descriptor 2."""
    sys.stderr.flush()
    saved = os.dup(2)
    with open(os.devnull, "w") as null:
        os.dup2(null.fileno(), 2)
    try:
        yield
    finally:
        os.dup2(saved, 2)
        os.close(saved)


def start_worker() -> None:
    """Why: Ctrl-C reaches every process of the terminal, and the main process stops the workers:
    one that raised too would print a traceback. No worker needs TensorFlow (without_tensorflow)."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    sys.modules["tensorflow"] = None
    cache_numba_compilation()


def check_bundled_data() -> Path:
    """Why: a clone whose data file was cut short (by Git LFS, say) must say so."""
    digest = BUNDLED_DATA.is_file() and hashlib.sha256(BUNDLED_DATA.read_bytes()).hexdigest()
    if digest != BUNDLED_SHA256:
        raise InputError(f"{BUNDLED_DATA} is {'damaged' if digest else 'missing'}; restore it "
                         "with `git checkout data/mnist.npz` or pass a copy of MNIST with --data")
    return BUNDLED_DATA


def read_npz(path: Path) -> dict[str, np.ndarray]:
    """Why: the files people have are of every kind, some damaged or hostile. The arrays of an
    .npz: x_train and x_test (n, 28, 28), and optionally y_train and y_test (n,) and class_names;
    never unpickled, each array's size checked against the file and the memory before numpy
    allocates what its header promises, then their contents (check_arrays)."""
    if not path.is_file() or not os.access(path, os.R_OK) or not zipfile.is_zipfile(path):
        raise InputError(f"--data {path} " + (
            "is a folder" if path.is_dir() else "does not exist" if not path.exists() else
            "cannot be read (permission denied)" if not os.access(path, os.R_OK) else
            "is not an .npz file") + "; pass an .npz file saved with numpy.savez")
    keys = ("x_train", "y_train", "x_test", "y_test", "class_names")
    try:
        with zipfile.ZipFile(path) as archive:
            members = {info.filename.removesuffix(".npy"): info for info in archive.infolist()}
            if missing := [key for key in ("x_train", "x_test") if key not in members]:
                raise InputError(f"--data {path} lacks {', '.join(missing)}; an .npz needs images "
                                 "x_train and x_test, as in Keras' mnist.npz")
            promised = {key: promised_bytes(archive, members[key]) for key in keys
                        if key in members}
        memory = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
        for key, size in [*promised.items(), ("its arrays", sum(promised.values()))]:
            if size > (memory if key == "its arrays" else members[key].file_size):
                raise InputError(f"--data {path}: {key} would take {size:,} bytes, more than " + (
                    f"this machine's memory ({memory:,}); pass a smaller file" if key ==
                    "its arrays" else f"the file holds ({members[key].file_size:,}): it is "
                    "damaged; save it again with numpy.savez"))
        with np.load(path, allow_pickle=False) as npz:
            arrays = {key: npz[key] for key in keys if key in npz.files}
    except InputError:
        raise
    except (OSError, zipfile.BadZipFile, EOFError, ValueError) as error:
        raise InputError(f"--data {path} is a damaged .npz ({error}); save it again with "
                         "numpy.savez") from None
    check_arrays(arrays)
    return arrays


def promised_bytes(archive: zipfile.ZipFile, member: zipfile.ZipInfo) -> int:
    """The bytes an .npy member's header promises, read from the header alone."""
    with archive.open(member) as stream:
        version = np.lib.format.read_magic(stream)
        if version not in ((1, 0), (2, 0)):
            raise ValueError(f"npy format {version}")
        shape, _, dtype = getattr(np.lib.format, f"read_array_header_{version[0]}_0")(stream)
    if dtype.hasobject:
        raise InputError(f"--data holds object arrays ({member.filename}), which are never "
                         "unpickled; save plain numeric arrays")
    return math.prod(shape) * dtype.itemsize


def check_arrays(arrays: dict[str, np.ndarray]) -> None:
    """Refuses, in one line, images or labels that are not what read_npz says they may be."""
    for x, y in (("x_train", "y_train"), ("x_test", "y_test")):
        images, labels = arrays[x], arrays.get(y)
        # The first problem only: each test needs the ones before it to pass.
        problem = (f"has dtype {images.dtype}" if images.dtype.kind not in "uif" else
                   f"has shape {images.shape}, not (n, 28, 28) with n >= 1"
                   if images.ndim != 3 or images.shape[1:] != (28, 28) or not len(images) else
                   "contains NaN or infinity"
                   if images.dtype.kind == "f" and not np.isfinite(images).all() else
                   f"has values {images.min()}..{images.max()}"
                   if images.min() < 0 or images.max() > 255 else
                   f"holds one value ({images.min()})" if images.min() == images.max() else None)
        if problem:
            raise InputError(f"{x} {problem}; images must be numbers in 0..255 (uint8, as in "
                             "Keras) or in [0, 1], and differ")
        if labels is not None and (labels.dtype.kind not in "ui" or labels.shape != (len(images),)
                                   or labels.min() < 0 or labels.max() > 255):
            values = f" and values {labels.min()}..{labels.max()}" if labels.size else ""
            raise InputError(f"{y} has dtype {labels.dtype}, shape {labels.shape}{values}; labels "
                             f"must be class numbers 0..255, one per image of {x} ({len(images)})")
    names, largest = arrays.get("class_names"), max(
        [int(arrays[y].max()) for y in ("y_train", "y_test") if y in arrays], default=-1)
    if names is not None and (names.dtype.kind not in "US" or names.ndim != 1
                              or len(names) <= largest):
        raise InputError(f"class_names has dtype {names.dtype} and shape {names.shape}; it must be "
                         f"1-D text, a name for each class 0..{largest}")


def image_scale(arrays: dict[str, np.ndarray]) -> tuple[float, str]:
    """What to divide the images by to bring them into [0, 1], and how the file stores them:
    integers in 0..255 (as Keras' mnist.npz), floats in 0..255, or floats in [0, 1], taken as they
    are. Integers no larger than 1 could be dark images or 0/1 ones: refused."""
    stored = {}
    for key in ("x_train", "x_test"):
        images = arrays[key]
        if images.dtype.kind != "f" and images.max() <= 1:
            raise InputError(f"{key} holds integers 0..{images.max()}: intensities 0..255 or 0/1 "
                             "images? Store 0/1 images as floats (0.0, 1.0) or as 0/255")
        stored[key] = ("floats in [0, 1]" if images.dtype.kind == "f" and images.max() <= 1 else
                       f"{'floats' if images.dtype.kind == 'f' else images.dtype} in 0..255")
    if (stored["x_train"] == "floats in [0, 1]") != (stored["x_test"] == "floats in [0, 1]"):
        raise InputError(f"x_train holds {stored['x_train']} and x_test {stored['x_test']}; "
                         "store both alike")
    if stored["x_test"] == "floats in [0, 1]":
        return 1.0, "floats in [0, 1], taken as they are"
    return 255.0, f"{stored['x_test']}, divided by 255"


def refuse_unclusterable(x_train: np.ndarray, x_test: np.ndarray, n_clusters: int | None,
                         config: Config) -> None:
    """Refuses, in one line, a sample that cannot be clustered as asked."""
    n_train, n_test = len(x_train), len(x_test)
    distinct = len({image.tobytes() for image in x_test})
    for wrong, message in [
        (n_test < MIN_IMAGES, f"only {n_test} test images; t-SNE and UMAP need at least "
         f"{MIN_IMAGES}: use --test-size {MIN_IMAGES} or more"),
        (config.student and n_train < MIN_IMAGES, f"--student clusters the training images, and "
         f"{n_train} are too few for UMAP: use --train-size {MIN_IMAGES} or more"),
        (distinct < MIN_IMAGES, f"the {n_test} scored images hold only {distinct} different ones; "
         f"t-SNE and UMAP need at least {MIN_IMAGES}"),
        (n_clusters is None, "the data has no labels (y_test): give --clusters K, the number of "
         "clusters to find"),
        (n_clusters == 1, "the test labels hold a single class; give --clusters K to cluster them"),
        ((n_clusters or 0) * 2 > n_test, f"{n_test} test images for {n_clusters} clusters; "
         f"clustering needs at least two images per cluster on average: use --test-size "
         f"{(n_clusters or 0) * 2} or more")]:
        if wrong:
            raise InputError(message)


@contextlib.contextmanager
def run_folder(config: Config) -> Iterator[tuple[Path, Path]]:
    """Why: an earlier run's results stay whole until a new run has finished, --resume finds
    training's checkpoint, and one run at a time writes --out. Holds --out's lock file (LOCK, with
    this process's id in it), removes what dead runs left staged, and yields a private staging
    folder, whose outputs replace the old ones at the end, and the checkpoint folder, removed
    then; a run that reuses a model has none. A bad input found inside leaves nothing new."""
    checkpoint, created = config.out / ".checkpoint", not config.out.exists()
    try:
        config.out.mkdir(parents=True, exist_ok=True)
        lock = os.open(config.out / LOCK, os.O_RDWR | os.O_CREAT, 0o644)
    except OSError as error:
        raise InputError(f"--out {config.out} cannot be written ({error.strerror}); name a folder "
                         "you can write to") from None
    try:
        lock_or_refuse(lock, "--out", config.out, "choose another --out")
        os.ftruncate(lock, 0)
        os.write(lock, str(os.getpid()).encode())
        for dead in config.out.glob(".partial-*"):  # the lock is ours: their runs are gone
            shutil.rmtree(dead, ignore_errors=True)
        staging = Path(tempfile.mkdtemp(prefix=".partial-", dir=config.out))
        try:
            if config.reuse_model is None:
                if not config.resume:
                    shutil.rmtree(checkpoint, ignore_errors=True)
                checkpoint.mkdir(exist_ok=True)
                write_outputs(checkpoint, {"config.json": lambda path: path.write_text(
                    json.dumps(config_record(config)))})
            yield staging, checkpoint
            # Each replaces its old version atomically; metrics.json, which marks a finished run,
            # last.
            for path in sorted(staging.iterdir(), key=lambda path: path.name == "metrics.json"):
                os.replace(path, config.out / path.name)
            if config.reuse_model is None:
                shutil.rmtree(checkpoint)
        finally:
            shutil.rmtree(staging, ignore_errors=True)
    except InputError:  # found inside, as a damaged model: a folder this run made goes too
        if created:
            shutil.rmtree(config.out)
        raise
    finally:
        os.close(lock)  # which releases the lock


def lock_or_refuse(descriptor: int, flag: str, folder: Path, fix: str) -> None:
    """Why: two runs into one folder delete each other's checkpoint and outputs. Takes the
    exclusive lock of the folder's open LOCK file (flock: the system drops it when its holder
    dies, even by SIGKILL), or refuses: a live run holds it, whose process id the file gives."""
    try:
        fcntl.flock(descriptor, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        pid = (folder / LOCK).read_text().strip() or "unknown"
        raise InputError(f"{flag} {folder} is being written by another run (process {pid}); "
                         f"wait for it to finish, or {fix}") from None


def read_stopped_run(folder: Path) -> dict:
    """Why: --resume must never continue a run that is damaged or that a live run writes. The
    stopped run's settings, once its checkpoint's weights open and history.csv holds a line per
    epoch saved."""
    checkpoint, fix = folder / ".checkpoint", "start afresh with --out"
    check_saved_run(folder, [checkpoint / "config.json"], "--resume", fix)
    try:
        saved = json.loads((checkpoint / "config.json").read_text())
        if (metadata := checkpoint / "backup" / "training_metadata.json").is_file():
            import h5py  # Keras' own reader: a file cut short fails to open

            h5py.File(checkpoint / "backup" / "latest.weights.h5", "r").close()
            if saved_epochs(checkpoint) != json.loads(metadata.read_text())["epoch"]:
                raise ValueError("history.csv")
        settings = {**config_record(Config()), **saved}
    except (OSError, ValueError, TypeError, KeyError) as error:
        raise InputError(f"the checkpoint in {checkpoint} is damaged ({type(error).__name__}); "
                         f"{fix}") from None
    return {name: Path(value) if name in ("data", "out") and value else value
            for name, value in settings.items() if name in Config.__annotations__}


def read_finished_run(folder: Path, config: Config) -> dict[str, list[float]]:
    """Why: --reuse-model must never score a model that is damaged, that a live run writes, or
    that other data or training flags made. The finished run's training history."""
    fix = "name the --out folder of a run that finished"
    check_saved_run(folder, [folder / "metrics.json", folder / "autoencoder.keras"],
                    "--reuse-model", fix)
    try:
        saved = json.loads((folder / "metrics.json").read_text())
        history = {name: [float(value) for value in saved["history"][name]] for name in HISTORY}
        settings = {**config_record(Config()), **saved["config"]}
    except (OSError, ValueError, TypeError, KeyError):
        raise InputError(f"{folder}/metrics.json is damaged or not a metrics file of this version "
                         f"of the script; {fix}") from None
    if name := first_difference(settings, {name: getattr(config, name) for name in TRAINING_FLAGS}):
        raise InputError(f"the model in {folder} was made with {flag(name)} {settings[name]}, this "
                         f"run has {getattr(config, name)}; give the same data and training "
                         "flags, or drop --reuse-model")
    return history


def check_saved_run(folder: Path, needs: list[Path], option: str, fix: str) -> None:
    """Refuses a folder without the files a saved run holds, or one that a live run writes."""
    if not all(path.is_file() for path in needs):
        raise InputError(f"{folder} holds no " + ("stopped run (no .checkpoint/config.json)" if
                         option == "--resume" else "finished run (metrics.json and "
                         "autoencoder.keras)") + f"; {fix}")
    if (folder / LOCK).is_file():
        with open(folder / LOCK) as probe:
            lock_or_refuse(probe.fileno(), option, folder, "name a finished run's folder")


def first_difference(saved: dict, wanted: dict) -> str | None:
    """The first flag that decides the model (TRAINING_FLAGS, and --out) whose value `wanted` gives
    otherwise than a saved run's settings, or None."""
    return next((name for name in (*TRAINING_FLAGS, "out")
                 if name in wanted and str(wanted[name]) != str(saved[name])), None)


def read_history(checkpoint: Path) -> dict[str, list[float]]:
    """The history training's CSVLogger wrote in `checkpoint`: a list per HISTORY name, a number
    per epoch; empty lists before the first epoch."""
    if not (checkpoint / "history.csv").is_file():
        return {name: [] for name in HISTORY}
    with (checkpoint / "history.csv").open(newline="") as stream:
        lines = list(csv.DictReader(stream))
    return {name: [float(line[name]) for line in lines] for name in HISTORY}


def load_model(path: Path) -> keras.Model:
    """Why: a damaged model file must end in one line, not a traceback."""
    import keras

    try:
        model = keras.saving.load_model(path)
        model.get_layer("encoder")  # a model of another script has none
        return model
    except Exception as error:  # what a damaged file raises depends on where it is damaged
        raise InputError(f"{path} is damaged and cannot be loaded ({type(error).__name__}); train "
                         "again, or name the --out folder of a run that finished") from None


@contextlib.contextmanager
def signals_deferred() -> Iterator[keras.callbacks.Callback]:
    """Why: a handler that raised inside TensorFlow's C++ calls crashed the process (a segmentation
    fault, one stop in eight). Ctrl-C and SIGTERM are noted instead; the callback yielded raises
    the noted one (KeyboardInterrupt or Terminated) between batches, as does the end."""
    import keras

    noted, deferred = [], [signal.SIGTERM]
    if signal.getsignal(signal.SIGINT) is not signal.SIG_IGN:  # a background job ignores Ctrl-C
        deferred.append(signal.SIGINT)
    previous = {signum: signal.signal(signum, lambda signum, frame: noted.append(signum))
                for signum in deferred}

    def raise_noted(*_, **__) -> None:
        if noted:
            raise KeyboardInterrupt if noted[0] == signal.SIGINT else Terminated

    try:
        yield keras.callbacks.LambdaCallback(on_train_batch_end=raise_noted,
                                             on_test_batch_end=raise_noted)
        raise_noted()
    finally:
        for signum, handler in previous.items():
            signal.signal(signum, handler)


class Terminated(Exception):
    """Raised on SIGTERM, so that a `kill` unwinds like Ctrl-C."""

    @classmethod
    def handler(cls, signum: int, frame) -> None:
        raise cls


def saved_epochs(checkpoint: Path) -> int:
    """How many epochs a training checkpoint holds."""
    return len(read_history(checkpoint)["loss"])


def saved_training(config: Config) -> str:
    """Why: a stopped run says how to continue it: how many epochs its checkpoint holds, and the
    command."""
    finished = saved_epochs(config.out / ".checkpoint") if config.reuse_model is None else 0
    if not finished:
        return ""
    command = (f"python {shlex.quote(os.path.relpath(__file__))} "
               f"--resume {shlex.quote(str(config.out))}")
    if finished >= config.epochs:
        return f"; training had finished: `{command}` scores its model without training again"
    return f"; {finished} of {config.epochs} epochs are saved: `{command}` continues"


def write_outputs(folder: Path, outputs: dict[str, Callable[[Path], object]]) -> None:
    """Why: a full disk ends in one line naming the file. Writes each output into `folder`."""
    for name, write in outputs.items():
        try:
            write(folder / name)
        except OSError as error:
            raise WriteError(f"could not write {name} ({error.strerror or error})") from None


if __name__ == "__main__":
    sys.exit(main())
