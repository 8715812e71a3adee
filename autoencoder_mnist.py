"""Autoencoder on MNIST: learn codes, reduce them, cluster them, score the clusters.

Trains an autoencoder on the 60,000 MNIST training images, encodes the 10,000 held-out test images,
reduces the codes with PCA, t-SNE and UMAP, clusters them with KMeans (and a Gaussian mixture on the
10-d clustering embedding) and scores the clusters against the true digits; raw pixels go through
the same clustering, to show what the autoencoder adds. The default is the seed's recipe, a small
convolutional autoencoder. `--recipe student`, chosen on a validation split, clusters the held-out
test images at ACC 0.983 / NMI 0.954, the mean of seeds 0-4 (README.md).

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
    # continue an interrupted run; score a finished run's model again with the training codes
    python autoencoder_mnist.py --resume
    python autoencoder_mnist.py --reuse-model results --embed-train --out rescored

Metrics:
    BCE         binary cross-entropy per pixel between image and reconstruction (the training loss)
    MSE         mean squared error per pixel, intensities in [0, 1]
    PSNR        peak signal-to-noise ratio, 10 * log10(1 / MSE), in dB (higher is better)
    silhouette  mean silhouette coefficient in the space clustered (-1..1, higher = tighter)
    ARI         adjusted Rand index between clusters and true labels (0 = chance, 1 = identical)
    NMI         normalized mutual information between clusters and true labels (0..1)
    ACC         the share of images labelled right under the best one-to-one matching of clusters
                to labels (Hungarian algorithm, as in the deep-clustering papers)
"""
from __future__ import annotations

import argparse
import contextlib
import csv
import fcntl
import hashlib
import json
import math
import os
import platform
import shutil
import signal
import sys
import tempfile
import time
import warnings
import zipfile
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Callable, Iterator

import matplotlib
import numpy as np
import sklearn
from joblib import Parallel, delayed, parallel_config
from scipy.optimize import linear_sum_assignment
from sklearn.cluster import KMeans
from sklearn.decomposition import PCA
from sklearn.manifold import TSNE
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
# oneDNN falls back for int32 ops, which is no error). Failures still raise.
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

BUNDLED_DATA = Path(__file__).resolve().parent / "data" / "mnist.npz"
BUNDLED_SHA256 = "06af5dfe73b70e3bc1c36439982b18a8d76803db9b544f6fdf838a37fbb01b64"
LOCK = ".lock"  # in --out: held by the run writing it (run_folders)
MIN_IMAGES = 100  # t-SNE's perplexity needs more than 90 points, umap10's 30 neighbours 31
DENSE_WIDTHS = (500, 500, 2000)  # N2D's encoder (McConville et al.): 784 -> these -> the code
SHIFT, ROTATION = 0.1, 10 / 360  # DEC-DA's augmentation: of the width and height; of a full turn
NAMES = {"pixels": "pixels", "latent": "codes"}  # each kind of features, as the text names it
# Pixels are the baseline. "umap10", UMAP to 10-d, is for clustering only; --embed-train adds
# "umap10+train", the same fitted with the training codes (and --pixel-twin's pixels) as context.
REDUCTIONS = {"pixels": ("none", "pca", "umap", "umap10"),
              "latent": ("none", "pca", "tsne", "umap", "umap10")}
CLUSTERERS = {"umap10": ("kmeans", "gmm"), "umap10+train": ("kmeans", "gmm")}  # else KMeans
SAYS = {"tsne": "t-SNE to 2-D", "umap": "UMAP to 2-D", "umap10": "UMAP to 10-d",
        "umap10+train": "UMAP to 10-d"}  # what the slow reductions print as they start
SPREAD_STEPS = 20  # --spread: steps of label propagation, enough to cross the unclean regions
CONFIDENT = 0.9  # --passes: a later pass learns the assignments of at least this probability
# A student's row counts where it gives back this share of its clean targets. On validation (log
# section 15) MNIST's students gave back 99.7-99.9%; Fashion-MNIST's, below the row they start
# from, 97.5-99.0%.
TRUSTED = 0.995
UMAP_NEIGHBOURS = 30  # umap10's: one exact graph of 30 serves every UMAP fit of a set of points
SILHOUETTE_POINTS = 10_000  # silhouette compares every pair: on more points, a sample this size
# Worker processes of one thread each: a seeded UMAP uses one core anyway, and one thread gives the
# same rows on any machine. Slowest first (on MNIST), so that none starts last.
WORKERS = 2
SLOWEST_FIRST = ("umap10+train", "tsne", "umap10", "none", "umap", "pca")
# Named sets of flags, chosen on the validation split (docs/EXPERIMENTS.md); "seed": the defaults.
HEADLINE = {"architecture": "dense", "bottleneck": 10, "noise": 0.2, "epochs": 50,
            "embed_train": True}
RECIPES = {"seed": {}, "headline": HEADLINE, "student": {**HEADLINE, "epochs": 20, "student": 6}}
# The flags that decide which model training makes: --resume and --reuse-model check them.
TRAINING_FLAGS = ("data", "train_size", "evaluate_on", "architecture", "bottleneck", "epochs",
                  "batch_size", "noise", "seed")


class InputError(ValueError):
    """A problem with the user's flags or data: one line on stderr, exit status 2."""


class WriteError(OSError):
    """A file of the run could not be written (a full disk): one line, exit status 1."""


# ---- Config --------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Config:
    """Every setting of a run, each the flag of its name (parse_config says what it does). The
    defaults are the seed's recipe, but for UMAP's 200 layout epochs (docs/EXPERIMENTS.md)."""

    recipe: str = "seed"
    data: Path | None = None  # None: the bundled data/mnist.npz
    train_size: int | None = None  # None: every image
    test_size: int | None = None
    evaluate_on: str = "test"
    architecture: str = "conv"
    bottleneck: int = 0  # 0: the seed's 7x7x32 maps
    noise: float = 0.0
    epochs: int = 20
    batch_size: int = 256
    reuse_model: Path | None = None
    # t-SNE and UMAP search neighbours among 50 principal components, not 1,568 code numbers: many
    # times faster, as scikit-learn's TSNE documentation advises.
    pca_dims: int = 50
    tsne_angle: float = 0.5
    umap_epochs: int = 200
    embed_train: bool = False
    student: int = 0
    agreement: float = 0.95
    spread: bool = False
    passes: int = 1
    pixel_twin: bool = False
    seed: int = 0
    out: Path = Path("results")
    resume: bool = False


def parse_config(argv: list[str] | None = None) -> Config:
    """Each flag with its check and help, its default Config's; argparse exits 2 on a bad flag."""
    parser = argparse.ArgumentParser(
        prog="autoencoder_mnist.py", allow_abbrev=False, description=__doc__.split("\n\n")[0],
        epilog=__doc__[__doc__.index("Commands:"):__doc__.index("Metrics:")] + "More: README.md.",
        formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.set_defaults(**asdict(Config()))
    add, count, number, size = parser.add_argument, at_least(1), at_least(0, float), at_least(0)
    add("--recipe", choices=tuple(RECIPES), help=f"a named set of flags: seed, every default; "
        f"headline, {recipe_flags('headline')}; student, {recipe_flags('student')}. Flags beside "
        "it win (default: seed)")
    add("--data", type=Path, metavar="PATH", help="an .npz in Keras' mnist.npz layout "
        "(default: the bundled data/mnist.npz)")
    add("--train-size", type=count, metavar="N", help="train on N images, drawn by label")
    add("--test-size", type=count, metavar="N", help=f"score N images, at least {MIN_IMAGES}")
    add("--evaluate-on", choices=("test", "validation", "train+test"), help="score the test set; "
        "or as many training images held out (choose on validation); or all images, trained on, "
        "as the deep-clustering papers do (default: test)")
    add("--architecture", choices=("conv", "dense"), help="the seed's convolutional autoencoder, "
        "or N2D's 784-500-500-2000-N (default: conv)")
    add("--bottleneck", type=size, metavar="N", help="a code of N numbers; dense needs it "
        "(default: 0, the seed's 7x7x32 maps)")
    add("--noise", type=number, metavar="SIGMA", help="Gaussian noise on the training input")
    add("--epochs", type=count, metavar="N", help="training epochs (default: %(default)s)")
    add("--batch-size", type=count, metavar="N", help="images per step (default: %(default)s)")
    add("--reuse-model", type=Path, metavar="FOLDER", help="score a finished run's model instead "
        f"of training; its {', '.join(map(flag, TRAINING_FLAGS))} must match")
    add("--pca-dims", type=size, metavar="N", help="principal components that t-SNE and UMAP "
        "start from; 0: the features (default: %(default)s)")
    add("--tsne-angle", type=number, metavar="THETA", help="t-SNE's Barnes-Hut angle, at most 1 "
        "(default: %(default)s)")
    add("--umap-epochs", type=size, metavar="N", help="UMAP's layout epochs; 0: umap-learn's "
        "choice (default: %(default)s, in about half the time)")
    add("--embed-train", action="store_true", help="add rows umap10+train: the 10-d UMAP fitted "
        "with the training codes as unlabelled context")
    add("--student", type=size, metavar="EPOCHS", help="after pretraining, train a small "
        "convolutional network for EPOCHS epochs on the training images whose targets are clean "
        "(default: 0, none)")
    add("--agreement", type=number, metavar="SHARE", help="a target is clean when this share of "
        f"the image's {UMAP_NEIGHBOURS - 1} nearest neighbours in the codes share it, at most 1 "
        "(default: %(default)s)")
    add("--spread", action="store_true", help="the student learns the images whose targets "
        "are not clean too, their clusters spread from the clean ones over the neighbour graph")
    add("--passes", type=count, metavar="N", help="after the student's first pass, N - 1 more: a "
        "fresh student learns every image that the last one assigns confidently (default: 1)")
    add("--pixel-twin", action="store_true", help="also run --embed-train's context and "
        "--student's stage on the raw pixels: rows that show what the autoencoder adds to each")
    add("--seed", type=size, metavar="N", help="seed of everything random (default: %(default)s)")
    add("--out", type=Path, metavar="FOLDER", help="folder of the outputs (default: %(default)s)")
    add("--resume", action="store_true", help="continue an interrupted run in --out")
    # A recipe sets the defaults of its flags, so that a flag given beside it wins. Under train+test
    # every image is scored already: there are no training codes left to add as context.
    chosen = parser.parse_known_args(argv)[0]
    parser.set_defaults(**{name: value for name, value in RECIPES[chosen.recipe].items()
                           if (name, chosen.evaluate_on) != ("embed_train", "train+test")})
    config = Config(**vars(parser.parse_args(argv)))
    for wrong, message in [
        (config.agreement > 1, f"--agreement {config.agreement} is above 1, all neighbours; "
         "give 0 to 1"),
        (config.tsne_angle > 1,
         f"--tsne-angle {config.tsne_angle} is above 1, the coarsest t-SNE allows; give 0 to 1"),
        (config.bottleneck == 1,
         "--bottleneck 1 leaves no second dimension for the 2-D plots; give 0 or 2 or more"),
        (config.embed_train and config.evaluate_on == "train+test", "--embed-train adds the "
         "training images as context, and --evaluate-on train+test already scores them; drop "
         "--embed-train"),
        (config.pixel_twin and not (config.embed_train or config.student), "--pixel-twin "
         "repeats --embed-train and --student on the pixels; give one of them"),
        (config.architecture == "dense" and not config.bottleneck,
         "--architecture dense needs --bottleneck N, the size of its code (N2D uses 10)"),
        (config.out.exists() and not config.out.is_dir(), f"--out {config.out} is a file; name a "
         "folder")]:
        if wrong:
            parser.error(message)
    return config


def at_least(minimum: float, kind: type = int) -> Callable[[str], int | float]:
    """A flag's check: a finite number of `kind` (int: whole numbers), at least `minimum`."""
    def parse(text: str) -> int | float:
        try:
            value = kind(text)
        except ValueError:
            value = math.nan
        if not math.isfinite(value):
            raise argparse.ArgumentTypeError(
                f"{text!r} is not {'a whole number' if kind is int else 'a number'}")
        if value < minimum:
            raise argparse.ArgumentTypeError(f"{value} must be {minimum} or more")
        return value
    return parse


def flag(name: str) -> str:
    """A Config field's flag: batch_size -> --batch-size."""
    return "--" + name.replace("_", "-")


def recipe_flags(recipe: str) -> str:
    """A recipe as the flags it stands for: "--architecture dense --bottleneck 10 ..."."""
    return " ".join(flag(name) + ("" if value is True else f" {value}")
                    for name, value in RECIPES[recipe].items())


def config_record(config: Config) -> dict:
    """The config as metrics.json records it: paths as text."""
    return {key: str(value) if isinstance(value, Path) else value
            for key, value in asdict(config).items()}


# ---- Data ----------------------------------------------------------------------------------------


@dataclass
class Dataset:
    """Images in [0, 1], shape (n, 28, 28, 1); integer labels, shape (n,)."""

    x_train: np.ndarray
    y_train: np.ndarray
    x_test: np.ndarray
    y_test: np.ndarray
    source: str


def load_data(config: Config) -> Dataset:
    """Load, check and sample the data: the bundled MNIST, or --data."""
    if config.data is not None:
        arrays, source = read_npz(config.data), str(config.data)
    else:
        digest = (hashlib.sha256(BUNDLED_DATA.read_bytes()).hexdigest()
                  if BUNDLED_DATA.is_file() else "missing")
        if digest != BUNDLED_SHA256:
            raise InputError(f"{BUNDLED_DATA} is {'missing' if digest == 'missing' else 'damaged'}"
                             "; restore it with `git checkout data/mnist.npz` or pass a copy of "
                             "MNIST with --data")
        arrays, source = read_npz(BUNDLED_DATA), "data/mnist.npz (bundled, sha256 checked)"
    rng, n_train, n_test = (np.random.default_rng(config.seed), len(arrays["y_train"]),
                            len(arrays["y_test"]))
    if config.evaluate_on == "validation":
        if n_train < 2 * n_test:
            raise InputError(f"{source} has {n_train} training images, too few to hold out "
                             f"{n_test} (as many as its test set) and train on the rest; use "
                             "--evaluate-on test")
        held_out = np.zeros(n_train, dtype=bool)
        held_out[stratified_sample(arrays["y_train"], n_test, rng)] = True
        for axis in "xy":
            arrays[f"{axis}_test"] = arrays[f"{axis}_train"][held_out]
            arrays[f"{axis}_train"] = arrays[f"{axis}_train"][~held_out]
        source += f" (validation: {held_out.sum()} training images held out)"
    for split, size in (("train", config.train_size), ("test", config.test_size)):
        available = len(arrays[f"y_{split}"])
        if size is not None and size > available:
            raise InputError(f"--{split}-size {size} is larger than the {available} {split} images "
                             f"in {source}; use at most {available}")
        if size is not None and size < available:
            keep = stratified_sample(arrays[f"y_{split}"], size, rng)
            for axis in "xy":
                arrays[f"{axis}_{split}"] = arrays[f"{axis}_{split}"][keep]
    if config.evaluate_on == "train+test":  # transductive: the images trained on are scored
        for axis in "xy":
            arrays[f"{axis}_train"] = arrays[f"{axis}_test"] = np.concatenate(
                [arrays[f"{axis}_train"], arrays[f"{axis}_test"]])
        source += " (train+test: training and test images together, trained on and scored)"
    n_train, n_test = len(arrays["y_train"]), len(arrays["y_test"])
    n_classes = len(np.unique(arrays["y_test"]))
    for wrong, message in [
        (n_test < MIN_IMAGES, f"only {n_test} test images; t-SNE and UMAP need at least "
         f"{MIN_IMAGES}: use --test-size {MIN_IMAGES} or more"),
        (config.student and n_train < MIN_IMAGES, f"--student clusters the training images, and "
         f"{n_train} are too few for UMAP: use --train-size {MIN_IMAGES} or more"),
        (n_classes < 2, "the test labels hold a single class; clustering needs at least two"),
        (n_classes * 2 > n_test, f"{n_test} test images for {n_classes} classes; clustering needs "
         f"at least two images per class on average: use --test-size {n_classes * 2} or more")]:
        if wrong:
            raise InputError(message)
    x_train = (arrays["x_train"] / np.float32(255))[..., None]
    y_train = arrays["y_train"].astype(int)
    if config.evaluate_on == "train+test":  # one copy
        return Dataset(x_train, y_train, x_train, y_train, source)
    return Dataset(x_train, y_train, (arrays["x_test"] / np.float32(255))[..., None],
                   arrays["y_test"].astype(int), source)


def read_npz(path: Path) -> dict[str, np.ndarray]:
    """The four arrays of a Keras-layout .npz, read without unpickling, and checked."""
    keys = ("x_train", "y_train", "x_test", "y_test")
    if not path.is_file():
        raise InputError(f"--data {path} {'is a folder' if path.is_dir() else 'does not exist'}; "
                         "pass the path of an .npz file")
    if not os.access(path, os.R_OK):
        raise InputError(f"--data {path} cannot be read (permission denied); make it readable")
    if not zipfile.is_zipfile(path):
        raise InputError(f"--data {path} is not an .npz file; save the arrays with numpy.savez")
    try:
        with np.load(path, allow_pickle=False) as npz:
            if missing := [key for key in keys if key not in npz.files]:
                raise InputError(f"--data {path} lacks {', '.join(missing)}; an .npz needs the "
                                 f"arrays {', '.join(keys)}, as in Keras' mnist.npz")
            arrays = {key: npz[key] for key in keys}
    except InputError:
        raise
    except ValueError:
        raise InputError(f"--data {path} holds object arrays, which are never unpickled; save "
                         "plain numeric arrays") from None
    except (OSError, zipfile.BadZipFile, EOFError) as error:
        raise InputError(f"--data {path} is a damaged .npz ({error}); save it again with "
                         "numpy.savez") from None
    for x, y in (("x_train", "y_train"), ("x_test", "y_test")):
        images, labels = arrays[x], arrays[y]
        if images.dtype.kind not in "uif":
            raise InputError(f"{x} has dtype {images.dtype}; images must be numbers 0..255 (uint8 "
                             "as in Keras)")
        if images.ndim != 3 or images.shape[1:] != (28, 28) or len(images) == 0:
            raise InputError(f"{x} has shape {images.shape}; images must be (n, 28, 28) with "
                             "n >= 1")
        if images.dtype.kind == "f" and not np.isfinite(images).all():
            raise InputError(f"{x} contains NaN or infinity; images must be finite intensities "
                             "0..255")
        if images.min() < 0 or images.max() > 255:
            raise InputError(f"{x} has values {images.min()}..{images.max()}; intensities must lie "
                             "in 0..255")
        if labels.dtype.kind not in "ui" or labels.ndim != 1:
            raise InputError(f"{y} has dtype {labels.dtype} and shape {labels.shape}; labels must "
                             "be a 1-D integer array")
        if len(labels) != len(images):
            raise InputError(f"{y} has {len(labels)} labels for {len(images)} images in {x}; give "
                             "one label per image")
        if labels.min() < 0 or labels.max() > 255:
            raise InputError(f"{y} has labels {labels.min()}..{labels.max()}; labels must be class "
                             "numbers 0..255")
    return arrays


def stratified_sample(labels: np.ndarray, size: int, rng: np.random.Generator) -> np.ndarray:
    """Indices of `size` items drawn without replacement, each class in proportion, in order. Not
    train_test_split(stratify=...): every choice in docs/EXPERIMENTS.md was made on this split."""
    order = rng.permutation(len(labels))
    position = np.empty(len(labels))  # within its class, as a fraction: the smallest first
    for label in np.unique(labels):
        members = order[labels[order] == label]
        position[members] = (np.arange(len(members)) + 0.5) / len(members)
    return np.sort(order[np.argsort(position[order], kind="stable")[:size]])


# ---- Model ---------------------------------------------------------------------------------------


def build_autoencoder(bottleneck: int = 0, architecture: str = "conv",
                      noise: float = 0.0) -> tuple[keras.Model, keras.Model]:
    """The autoencoder of images (n, 28, 28, 1) and its encoder; its layer "decoder" is the decoder.

    conv (the seed's): Conv2D(32, 3x3, relu) -> MaxPooling2D(2), twice, a (7, 7, 32) code, then
    (Conv2D(32) -> UpSampling2D(2)) twice -> Conv2D(1, sigmoid); a `bottleneck` squeezes the code
    through dense layers. dense (N2D's): 784 -> 500 -> 500 -> 2000 -> `bottleneck`, and mirrored.
    `noise`: Gaussian noise on the input in training only (a denoising autoencoder).
    """
    import keras
    from keras import layers

    image = keras.Input(shape=(28, 28, 1), name="image")
    if architecture == "conv":
        x = layers.Conv2D(32, 3, activation="relu", padding="same")(image)
        x = layers.MaxPooling2D(2, padding="same")(x)
        x = layers.Conv2D(32, 3, activation="relu", padding="same")(x)
        code = layers.MaxPooling2D(2, padding="same")(x)
        if bottleneck:
            code = layers.Dense(bottleneck)(layers.Flatten()(code))
        encoder = keras.Model(image, code, name="encoder")
        code_input = x = keras.Input(shape=code.shape[1:], name="code")
        if bottleneck:
            x = layers.Reshape((7, 7, 32))(layers.Dense(7 * 7 * 32, activation="relu")(x))
        for _ in range(2):
            x = layers.UpSampling2D(2)(layers.Conv2D(32, 3, activation="relu", padding="same")(x))
        reconstruction = layers.Conv2D(1, 3, activation="sigmoid", padding="same")(x)
    else:
        x = layers.Flatten()(image)
        for width in DENSE_WIDTHS:
            x = layers.Dense(width, activation="relu")(x)
        encoder = keras.Model(image, layers.Dense(bottleneck)(x), name="encoder")
        code_input = x = keras.Input(shape=(bottleneck,), name="code")
        for width in reversed(DENSE_WIDTHS):
            x = layers.Dense(width, activation="relu")(x)
        reconstruction = layers.Reshape((28, 28, 1))(layers.Dense(784, activation="sigmoid")(x))
    decoder = keras.Model(code_input, reconstruction, name="decoder")
    corrupted = layers.GaussianNoise(noise, name="noise")(image) if noise else image
    return keras.Model(image, decoder(encoder(corrupted)), name="autoencoder"), encoder


# ---- Train ---------------------------------------------------------------------------------------


def train(autoencoder: keras.Model, data: Dataset, config: Config,
          checkpoint: Path) -> dict[str, list[float]]:
    """Fit the autoencoder to reproduce its input; returns loss, val_loss and images/s per epoch.
    After each epoch BackupAndRestore saves weights, optimizer and epoch in `checkpoint`, whence a
    run continues, and CSVLogger adds a line to history.csv, read back at the end (fit() knows only
    this process's epochs)."""
    import keras

    autoencoder.compile(optimizer="adam", loss="binary_crossentropy")
    log, started, restored = checkpoint / "history.csv", {}, []

    def end_epoch(epoch: int, logs: dict) -> None:
        logs["images_per_second"] = len(data.x_train) / (time.perf_counter() - started[epoch])
        print(f"  epoch {epoch + 1}/{config.epochs}  loss {logs['loss']:.4f}  val_loss "
              f"{logs['val_loss']:.4f}  {logs['images_per_second']:,.0f} images/s", flush=True)

    with signals_deferred() as stop_if_signalled:
        progress = keras.callbacks.LambdaCallback(
            on_train_begin=lambda logs: restored.append(True), on_epoch_end=end_epoch,
            on_epoch_begin=lambda epoch, logs: started.update({epoch: time.perf_counter()}),
            on_train_batch_end=lambda batch, logs: stop_if_signalled(),
            on_test_batch_end=lambda batch, logs: stop_if_signalled())
        try:
            autoencoder.fit(data.x_train, data.x_train, batch_size=config.batch_size,
                            epochs=config.epochs, shuffle=True, verbose=0,
                            validation_data=(data.x_test, data.x_test), callbacks=[
                                keras.callbacks.BackupAndRestore(str(checkpoint / "backup"),
                                                                 delete_checkpoint=False),
                                progress, keras.callbacks.CSVLogger(str(log), append=True)])
        except Exception as error:
            if config.resume and not restored:  # BackupAndRestore, called first, failed to read it
                raise InputError(f"the checkpoint in {checkpoint} is damaged and cannot be loaded "
                                 f"({type(error).__name__}); rerun without --resume to start "
                                 "afresh") from None
            if isinstance(error, OSError):
                raise WriteError(f"could not save training's checkpoint in {checkpoint} "
                                 f"({error.strerror or error})") from None
            raise
        stop_if_signalled()
    with log.open(newline="") as stream:
        lines = list(csv.DictReader(stream))
    return {name: [float(line[name]) for line in lines]
            for name in ("loss", "val_loss", "images_per_second")}


# ---- Encode --------------------------------------------------------------------------------------


def encode(encoder: keras.Model, images: np.ndarray) -> np.ndarray:
    """Images (n, 28, 28, 1) -> flat codes (n, 1568), or (n, bottleneck)."""
    return encoder.predict(images, batch_size=1024, verbose=0).reshape(len(images), -1)


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
    scores: dict[str, float]  # ari, nmi, acc and silhouette
    seconds: float  # what the reduction took
    clusters: np.ndarray  # (n,), one per scored image
    embedding: np.ndarray | None  # (n, d): the scored images reduced; None for "none"

    @property
    def row(self) -> dict:
        """The row as metrics.json and the tables give it."""
        return {"features": self.features, "reduction": self.reduction, "clusterer": self.clusterer,
                **self.scores, "seconds": round(self.seconds, 2)}


def reduce_and_cluster(features: dict[str, np.ndarray], context: dict[str, np.ndarray],
                       labels: np.ndarray, config: Config) -> tuple[list[Clustering], dict]:
    """Every row of the table: the scored images' "pixels" (n, 784) and "latent" codes (n, d)
    through their REDUCTIONS, and "umap10+train" for each kind with training points as `context`
    (m, 784 or d). t-SNE and UMAP start from principal components, the UMAP fits of a set of points
    from its one neighbour graph; the work runs in WORKERS processes of one thread (joblib's, which
    stop at once on an error or Ctrl-C). Returns the rows, and what metrics.json records of the
    shared work and the workers."""
    tasks, shared = [], {"pca_variance_kept": {}, "reduce_shared_seconds": {}}
    for kind, points in features.items():
        start = time.perf_counter()
        compact, pca = principal_components(points, config)
        seconds = {"pca_seconds": round(time.perf_counter() - start, 2)}
        start, graph = time.perf_counter(), nearest_neighbours(compact, UMAP_NEIGHBOURS)
        spaces = {"none": (points, None), "pca": (points, None), "tsne": (compact, None),
                  "umap": (compact, graph), "umap10": (compact, graph)}
        names = REDUCTIONS[kind]
        if kind in context:  # the scored points first, then the context
            more = np.vstack([compact, pca.transform(context[kind]) if pca else context[kind]])
            spaces["umap10+train"] = more, nearest_neighbours(more, UMAP_NEIGHBOURS)
            names += ("umap10+train",)
        tasks += [(kind, name, *spaces[name]) for name in names]
        seconds["neighbours_seconds"] = round(time.perf_counter() - start, 2)
        shared["reduce_shared_seconds"][kind] = seconds
        shared["pca_variance_kept"][kind] = (None if pca is None
                                             else float(pca.explained_variance_ratio_.sum()))
    order = sorted(range(len(tasks)), key=lambda index: SLOWEST_FIRST.index(tasks[index][1]))
    # Arrays go to the workers whole, not as memory-mapped files. Their stderr is muted: a Ctrl-C as
    # one starts would print a traceback; an error in a task is raised here, and reported as usual.
    with parallel_config(backend="loky", inner_max_num_threads=1), quiet_stderr():
        done = dict(zip(order, Parallel(WORKERS, batch_size=1, max_nbytes=None,
                                        initializer=start_worker)(
            delayed(embed_and_cluster)(*tasks[index], labels, config) for index in order)))
    peaks = [peak for _, peak in done.values()]
    shared["worker_peak_rss_mb"] = None if None in peaks else max(peaks)
    return [row for index in range(len(tasks)) for row in done[index][0]], shared


def principal_components(features: np.ndarray, config: Config) -> tuple[np.ndarray, PCA | None]:
    """The --pca-dims principal components of features (n, d) and their PCA, or, under --pca-dims
    0, the features and None."""
    if not config.pca_dims:
        return features, None
    pca = PCA(n_components=min(config.pca_dims, *features.shape), random_state=config.seed)
    return pca.fit_transform(features), pca


def nearest_neighbours(points: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """Exact k nearest neighbours of each point (n, d), itself first at distance 0 as UMAP expects:
    indices (n, k) and distances (n, k). Faster than UMAP's own search on tens of dimensions."""
    # Asked with the points again, scikit-learn would find each at a rounding error's distance,
    # which UMAP would take for its nearest neighbour's (rho), shifting every membership.
    others, indices = NearestNeighbors(n_neighbors=min(k, len(points)) - 1).fit(points).kneighbors()
    itself = np.arange(len(points))[:, None]
    return np.hstack([itself, indices]), np.hstack([np.zeros_like(itself, others.dtype), others])


def embed_and_cluster(kind: str, name: str, points: np.ndarray, graph: tuple | None,
                      labels: np.ndarray, config: Config) -> tuple[list[Clustering], float | None]:
    """A worker's task: the rows of one reduction of one kind of features, and the worker's peak
    memory. Points past the scored ones (the context) are reduced and clustered, not scored."""
    if name in SAYS:
        also = f" and the training {NAMES[kind]}" if name == "umap10+train" else ""
        print(f"  {SAYS[name]} of the {NAMES[kind]}{also}, {len(points):,} points", flush=True)
    start = time.perf_counter()
    embedding = reduce(name, points, graph, config)
    seconds, n, rows = time.perf_counter() - start, len(labels), []
    for clusterer in CLUSTERERS.get(name, ("kmeans",)):
        clusters = clusterers(len(np.unique(labels)), config.seed)[clusterer].fit_predict(embedding)
        rows.append(Clustering(kind, name, clusterer, score(labels, clusters[:n], embedding[:n],
                               config.seed), seconds, clusters[:n],
                               None if name == "none" else embedding[:n]))
    return rows, peak_memory_mb()


def reduce(name: str, points: np.ndarray, graph: tuple | None, config: Config) -> np.ndarray:
    """Points (n, d) reduced to (n, 2), or (n, 10) by umap10 ("none" keeps them); UMAP starts from
    their nearest_neighbours `graph`."""
    if name == "none":
        return points
    from umap import UMAP

    def umap(n_components: int, n_neighbors: int, **settings) -> UMAP:
        knn = (graph[0][:, :n_neighbors], graph[1][:, :n_neighbors]) if graph else (None,) * 3
        return UMAP(n_components=n_components, n_neighbors=n_neighbors, random_state=config.seed,
                    n_jobs=1, precomputed_knn=knn, n_epochs=config.umap_epochs or None, **settings)

    reducers = {"pca": PCA(n_components=2, random_state=config.seed),
                "tsne": TSNE(n_components=2, angle=config.tsne_angle, random_state=config.seed),
                "umap": umap(2, 15),
                # For clustering: more room, points packed tight, wider neighbourhoods.
                "umap10": umap(10, 30, min_dist=0.0)}
    with warnings.catch_warnings():  # that a graph without its search index can't embed new points
        warnings.filterwarnings("ignore", message="precomputed_knn")
        return reducers[name.removesuffix("+train")].fit_transform(points)


def clusterers(n_clusters: int, seed: int) -> dict:
    """Name -> unfitted clusterer, each the best of 10 initialisations."""
    return {"kmeans": KMeans(n_clusters=n_clusters, n_init=10, random_state=seed),
            "gmm": GaussianMixture(n_components=n_clusters, n_init=10, random_state=seed)}


def score(labels: np.ndarray, clusters: np.ndarray, points: np.ndarray | None = None,
          seed: int = 0) -> dict[str, float]:
    """ARI, NMI and ACC of clusters (n,) against labels (n,); given the clustered points (n, d), the
    silhouette too (on SILHOUETTE_POINTS of them, drawn with `seed`, where there are more)."""
    counts, rows, columns = matching(labels, clusters)
    scores = {"ari": float(adjusted_rand_score(labels, clusters)),
              "nmi": float(normalized_mutual_info_score(labels, clusters)),
              "acc": float(counts[rows, columns].sum() / len(labels))}
    if points is not None:  # float64: scikit-learn's pairwise distances run twice as fast on it
        sample = SILHOUETTE_POINTS if len(points) > SILHOUETTE_POINTS else None
        scores["silhouette"] = (float(silhouette_score(points.astype("float64"), clusters,
                                                       sample_size=sample, random_state=seed))
                                if len(np.unique(clusters)) > 1 else math.nan)
    return scores


def matching(labels: np.ndarray, clusters: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Counts (classes x cluster numbers) and the best one-to-one matching of classes to clusters
    (Hungarian algorithm): its rows and columns."""
    classes, label_index = np.unique(labels, return_inverse=True)
    size = max(len(classes), int(clusters.max()) + 1)
    counts = confusion_matrix(label_index, clusters, labels=np.arange(size))[:len(classes)]
    return counts, *linear_sum_assignment(counts, maximize=True)


# ---- Train for clustering (--student) -----------------------------------------------------------


def train_for_clustering(features: np.ndarray, images: np.ndarray, n_clusters: int,
                         config: Config) -> tuple[keras.Model | None, dict]:
    """On the training images (n, 28, 28, 1) and their features (n, d), codes or pixels, never a
    scored image or a label: the features' clusters (umap10, the mixture) are the targets, and a
    small convolutional network (build_student) learns those that are clean, that the image's
    nearest neighbours in the features share (agreement). Returns the student, or None where it is
    not trusted, and what metrics.json records: the share of clean targets, the share of them the
    student gave back, and the share of images whose cluster differs from its target."""
    import keras

    keras.utils.set_random_seed(config.seed)  # the same student from a reused model
    compact, _ = principal_components(features, config)
    graph = nearest_neighbours(compact, UMAP_NEIGHBOURS)
    with threadpool_limits(1):  # one thread, as in the workers: the same clusters on any machine
        targets = clusterers(n_clusters, config.seed)["gmm"].fit_predict(
            reduce("umap10", compact, graph, config))
    clean = agreement(targets, graph[0]) >= config.agreement
    print(f"  {clean.mean():.1%} of the training images have clean targets", flush=True)
    learned, weights = (spread_labels(targets, clean, graph[0]) if config.spread
                        else (targets, clean.astype("float32")))
    student = build_student(n_clusters)
    probabilities = learn(student, images, learned, weights, config)
    for _ in range(config.passes - 1):  # a fresh student on the last one's confident assignments
        confident = probabilities.max(axis=1) >= CONFIDENT
        print(f"  another pass: {confident.mean():.1%} of the images assigned confidently",
              flush=True)
        if not confident.any():
            break
        student = build_student(n_clusters)
        probabilities = learn(student, images, probabilities.argmax(axis=1),
                              confident.astype("float32"), config)
    assigned = probabilities.argmax(axis=1)
    stage = {"clean": float(clean.mean()), "changed": float(np.mean(assigned != targets)),
             "kept": float(np.mean(assigned[clean] == targets[clean]))}
    print(f"  the student: {stage['changed']:.2%} of the training images changed cluster",
          flush=True)
    # Without a label, whether to trust it: a student that gives back too few of the clean targets
    # it learned (too few steps, targets that images do not bear out) is left out.
    if stage["kept"] < TRUSTED:
        print(f"note: the student gives back only {stage['kept']:.1%} of its clean targets "
              f"(under {TRUSTED:.1%}); its row is left out", flush=True)
        return None, stage
    return student, stage


def learn(student: keras.Model, images: np.ndarray, targets: np.ndarray, weights: np.ndarray,
          config: Config) -> np.ndarray:
    """Fit the student to the targets of the images of weight above 0, each image's loss times its
    weight (n,), for --student epochs, Adam's rate falling from 1e-3 to 0 along one cosine; returns
    its probabilities for every image (n, clusters)."""
    import keras

    keep = weights > 0
    steps = config.student * math.ceil(keep.sum() / config.batch_size)
    student.compile(loss="sparse_categorical_crossentropy", optimizer=keras.optimizers.Adam(
        keras.optimizers.schedules.CosineDecay(1e-3, steps)))
    with signals_deferred() as stop_if_signalled:
        student.fit(images[keep], targets[keep], sample_weight=weights[keep], epochs=config.student,
                    verbose=0, batch_size=config.batch_size, shuffle=True,
                    callbacks=[keras.callbacks.LambdaCallback(
                        on_train_batch_end=lambda batch, logs: stop_if_signalled())])
        stop_if_signalled()
    return student.predict(images, batch_size=1024, verbose=0)


def spread_labels(targets: np.ndarray, clean: np.ndarray, neighbours: np.ndarray,
                  steps: int = SPREAD_STEPS) -> tuple[np.ndarray, np.ndarray]:
    """Labels for the images whose targets are not clean, from the clean ones (n,) over the
    neighbour graph (indices (n, k), itself first): each image's share of each cluster is the mean
    of its neighbours' shares, the clean images' held at their one target (label propagation, Zhu
    and Ghahramani 2002), `steps` times. Returns each image's most shared cluster (n,), a clean
    image's own target, and its weight: 1 for a clean image, else that cluster's share of what
    reached it (0 if nothing did)."""
    from scipy.sparse import csr_matrix

    n, k = neighbours.shape
    mean_of_neighbours = csr_matrix((np.full(n * (k - 1), 1 / (k - 1), "float32"),
                                     (np.repeat(np.arange(n), k - 1), neighbours[:, 1:].ravel())),
                                    shape=(n, n))
    fixed = np.eye(targets.max() + 1, dtype="float32")[targets] * clean[:, None]
    shares = fixed
    for _ in range(steps):
        shares = np.where(clean[:, None], fixed, mean_of_neighbours @ shares)
    reached = shares.sum(axis=1)
    weights = np.divide(shares.max(axis=1), reached, out=np.zeros(n, "float32"), where=reached > 0)
    return shares.argmax(axis=1), np.where(clean, 1, weights).astype("float32")


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
    augment = keras.Sequential([layers.RandomTranslation(SHIFT, SHIFT, fill_mode="constant"),
                                layers.RandomRotation(ROTATION, fill_mode="constant")],
                               name="augment")
    x = augment(image)
    for filters in (32, 64):
        for _ in range(2):
            x = layers.Conv2D(filters, 3, activation="relu")(x)
        x = layers.MaxPooling2D(2)(x)
    x = layers.Dropout(0.5)(layers.Dense(128, activation="relu")(layers.Flatten()(x)))
    return keras.Model(image, layers.Dense(n_clusters, activation="softmax", name="clusters")(x),
                       name="student")


def assign_clusters(student: keras.Model, kind: str, images: np.ndarray, labels: np.ndarray,
                    seconds: float, seed: int) -> Clustering:
    """The student's row: each scored image in its most probable cluster; the silhouette in the
    space of cluster probabilities. `kind` names the features whose targets it learned."""
    probabilities = student.predict(images, batch_size=1024, verbose=0)
    clusters = probabilities.argmax(axis=1)
    return Clustering(kind, "student", "softmax", score(labels, clusters, probabilities, seed),
                      seconds, clusters, probabilities)


# ---- Plot and save -------------------------------------------------------------------------------


def write_results(folder: Path, data: Dataset, codes: np.ndarray, reconstructions: np.ndarray,
                  scores: dict[str, float], history: dict[str, list[float]],
                  clusterings: list[Clustering], best: Clustering, split: str) -> None:
    """codes.npz (the scored images' codes and labels, each reduction's embedding and each row's
    clusters, to plot or cluster again) and every plot into `folder`; `split` names the images."""
    arrays = {"codes": codes, "labels": data.y_test}
    for clustering in clusterings:
        name = f"{clustering.features}_{clustering.reduction}"
        arrays[f"clusters_{name}_{clustering.clusterer}"] = clustering.clusters
        if clustering.embedding is not None:
            arrays[name] = clustering.embedding.astype("float32")
    write_outputs(folder, {
        "codes.npz": lambda path: np.savez_compressed(path, **arrays),
        "reconstructions.png": lambda path: plot_reconstructions(
            data.x_test, reconstructions, data.y_test, scores, split, path),
        "training_curves.png": lambda path: plot_training_curves(history, split, path),
        "embeddings.png": lambda path: plot_embeddings(clusterings, data.y_test, split, path),
        "confusion.png": lambda path: plot_confusion(data.y_test, best, split, path),
        "clusters.png": lambda path: plot_clusters(data.x_test, data.y_test, best, split, path)})


def plot_reconstructions(images: np.ndarray, reconstructions: np.ndarray, labels: np.ndarray,
                         scores: dict[str, float], split: str, path: Path) -> None:
    """The first scored image of each class (up to 10) above its reconstruction."""
    picks = [int(np.flatnonzero(labels == label)[0]) for label in np.unique(labels)[:10]]
    fig, axes = plt.subplots(2, len(picks), figsize=(1.2 * len(picks), 2.8), squeeze=False)
    for column, index in enumerate(picks):
        for row, source in enumerate((images, reconstructions)):
            axes[row, column].imshow(source[index, ..., 0], cmap="gray", vmin=0, vmax=1)
            axes[row, column].set(xticks=[], yticks=[])
        axes[0, column].set_title(f"label {labels[index]}", fontsize=9)
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


def plot_embeddings(clusterings: list[Clustering], labels: np.ndarray, split: str,
                    path: Path) -> None:
    """The codes' 2-D embeddings by true label (top) and by KMeans cluster (bottom), each cluster in
    the colour of the class it is matched to."""
    titles = {"pca": "PCA", "tsne": "t-SNE", "umap": "UMAP"}
    plotted = [clustering for clustering in clusterings if clustering.features == "latent"
               and clustering.clusterer == "kmeans" and clustering.reduction in titles]
    classes = np.unique(labels)
    colours = plt.get_cmap("tab10" if len(classes) <= 10 else "tab20")
    fig, axes = plt.subplots(2, len(plotted), figsize=(5 * len(plotted), 10), squeeze=False)
    for column, clustering in enumerate(plotted):
        counts, rows, columns = matching(labels, clustering.clusters)
        class_of_cluster = np.full(counts.shape[1], len(classes))
        class_of_cluster[columns] = rows
        for row, colour in enumerate((np.searchsorted(classes, labels),
                                      class_of_cluster[clustering.clusters])):
            axes[row, column].scatter(*clustering.embedding.T, c=colour, cmap=colours, vmin=0,
                                      vmax=colours.N - 1, s=2, alpha=0.7, linewidths=0)
            axes[row, column].set(xticks=[], yticks=[])
        name, scores = titles[clustering.reduction], clustering.scores
        axes[0, column].set_title(f"{name} of the codes, coloured by true digit")
        axes[1, column].set_title(f"{name}: KMeans clusters - NMI {scores['nmi']:.2f}, "
                                  f"ACC {scores['acc']:.2f}")
    fig.legend(handles=[plt.Line2D([], [], marker="o", linestyle="", color=colours(i), label=str(c))
                        for i, c in enumerate(classes)], title="digit (bottom: matched cluster)",
               loc="center left", bbox_to_anchor=(0.92, 0.5))
    fig.suptitle(f"{split.capitalize()}-set codes in 2-D (axes are arbitrary units)", fontsize=14)
    save(fig, path, dpi=100)


def plot_confusion(labels: np.ndarray, best: Clustering, split: str, path: Path) -> None:
    """True labels against the best row's clusters, each cluster in its matched label's column."""
    counts, _, columns = matching(labels, best.clusters)
    fig, ax = plt.subplots(figsize=(7, 6))
    display = ConfusionMatrixDisplay(counts[:, columns], display_labels=np.unique(labels))
    display.plot(ax=ax, cmap="Blues", values_format="d", text_kw={"fontsize": 7})
    ax.set_xticks(range(len(columns)), [f"c{cluster}" for cluster in columns])
    ax.set(xlabel="cluster, ordered by matched digit", ylabel="true digit",
           title=f"Best row: {best.features} + {best.reduction} + {best.clusterer}\n"
                 f"ACC {best.scores['acc']:.3f}, NMI {best.scores['nmi']:.3f}")
    display.im_.colorbar.set_label(f"{split} images")
    save(fig, path, dpi=120)


def plot_clusters(images: np.ndarray, labels: np.ndarray, best: Clustering, split: str,
                  path: Path, shown: int = 8) -> None:
    """A row per cluster of the best row, by majority digit: that digit and the cluster's purity
    (the majority's share), `shown` of its images of that digit and up to `shown` of its images of
    other digits, framed in red under the digit each truly is. One strip of images per row."""
    clusters = np.unique(best.clusters)
    majority = {cluster: np.bincount(labels[best.clusters == cluster]).argmax()
                for cluster in clusters}
    ordered = sorted(clusters, key=lambda cluster: (majority[cluster], cluster))
    fig, axes = plt.subplots(len(ordered), 1, squeeze=False, figsize=(12, 0.8 * len(ordered)),
                             gridspec_kw={"hspace": 0.45})
    slot = 31  # pixels per image in a strip, a white gap included
    for ax, cluster in zip(axes[:, 0], ordered):
        members = np.flatnonzero(best.clusters == cluster)
        right = members[labels[members] == majority[cluster]]
        wrong = members[labels[members] != majority[cluster]]
        strip = np.zeros((28, slot * (2 * shown + 1)))
        for column, index in [*enumerate(right[:shown]), *enumerate(wrong[:shown], shown + 1)]:
            strip[:, slot * column:slot * column + 28] = images[index, ..., 0]
            ax.add_patch(plt.Rectangle((slot * column - 0.5, -0.5), 28, 28, fill=False, lw=1,
                                       edgecolor="crimson" if column > shown else "silver"))
            if column > shown:
                ax.text(slot * column + 14, -2, str(labels[index]), fontsize=9, color="crimson",
                        ha="center", va="bottom")
        if not len(wrong):
            ax.text(slot * (shown + 1), 14, "no image of another digit", fontsize=8, va="center")
        ax.imshow(strip, cmap="gray_r", vmin=0, vmax=1)
        ax.set(xticks=[], yticks=[], frame_on=False)
        ax.set_ylabel(f"digit {majority[cluster]}\n{len(right) / len(members):.1%} of "
                      f"{len(members):,}", rotation=0, ha="right", va="center", fontsize=9)
    for first, heading, colour in ((0, "its images of that digit", "black"), (
            shown + 1, "its images of other digits: what each truly is", "crimson")):
        axes[0, 0].text(slot * (first + shown / 2), -14, heading, ha="center", va="bottom",
                        fontsize=9, color=colour)
    fig.suptitle(f"What each cluster holds ({split} images): best row {best.features} + "
                 f"{best.reduction} + {best.clusterer}, ACC {best.scores['acc']:.3f}\n(left: each "
                 "cluster's majority digit and purity, the share of its images that are that "
                 "digit)", fontsize=10)
    save(fig, path, dpi=110)


def save(fig: plt.Figure, path: Path, dpi: int) -> None:
    """Write a plot and free it."""
    fig.savefig(path, dpi=dpi, bbox_inches="tight")
    plt.close(fig)


# ---- Report --------------------------------------------------------------------------------------


def format_table(rows: list[dict], markdown: bool = False) -> str:
    """The clustering rows as an aligned text table, or a Markdown one."""
    header = ["features", "reduction", "clusterer", "silhouette", "ARI", "NMI", "ACC", "seconds"]
    lines = [[row["features"], row["reduction"], row["clusterer"],
              *(f"{row[name]:.3f}" for name in ("silhouette", "ari", "nmi", "acc")),
              f"{row['seconds']:.1f}"] for row in rows]
    if markdown:
        return "\n".join(f"| {' | '.join(line)} |" for line in [header, ["---"] * 8, *lines])
    widths = [max(map(len, column)) for column in zip(header, *lines)]
    return "\n".join("  ".join(cell.ljust(width) if i < 3 else cell.rjust(width)
                               for i, (cell, width) in enumerate(zip(line, widths)))
                     for line in [header, *lines])


def report_markdown(metrics: dict, best: dict) -> str:
    """report.md: a page that reads on its own beside the plots; `best` is confusion.png's row."""
    config, recon, data = metrics["config"], metrics["reconstruction"], metrics["data"]
    split = config["evaluate_on"]
    widths = "-".join(map(str, (784, *DENSE_WIDTHS, config["bottleneck"])))
    model = (f"N2D's fully connected autoencoder, {widths} and mirrored"
             if config["architecture"] == "dense" else "the seed's, 7x7x32 codes"
             if not config["bottleneck"] else
             f"the seed's with a dense bottleneck of {config['bottleneck']} numbers")
    model += (f"; denoising, Gaussian noise of standard deviation {config['noise']} on the "
              "training input" if config["noise"] else "")
    trained = (f"no training: the model was reused from {metrics['reused_model']}/"
               if metrics["reused_model"] else
               f"of which training {metrics['timings']['train']:.0f} s")
    stage = "".join(
        f"\nA student of {config['student']} epochs learned the clusters of the training "
        f"{NAMES[kind]} on the {done['clean']:.1%} of the images "
        f"whose targets are clean, of which it gave back {done['kept']:.1%}; {done['changed']:.2%} "
        "of the images changed cluster." for kind, done in (metrics["student"] or {}).items())
    sampled = (f" (on {data['silhouette_points']:,} of the points, drawn with the seed)"
               if data["silhouette_points"] < data["n_test"] else "")
    return f"""# Autoencoder on MNIST: results

Data: {data['source']}; {data['n_train']:,} training and {data['n_test']:,} {split} images, \
{data['n_classes']} classes.
Model: {model}.
Training: {config['epochs']} epochs, batch {config['batch_size']}, Adam, binary cross-entropy; \
seed {config['seed']}.{stage}
Wall time {metrics['timings']['total']:.0f} s, {trained}.

## Reconstruction ({split} set)

| BCE per pixel | MSE per pixel | PSNR (dB) |
| --- | --- | --- |
| {recon['bce']:.4f} | {recon['mse']:.4f} | {recon['psnr']:.2f} |

![reconstructions](reconstructions.png)

![training curves](training_curves.png)

## Clustering (k = {data['n_classes']}, {split} set)

`features`: raw pixels or the autoencoder's codes; `reduction`: none, 2-D PCA, t-SNE / UMAP to 2-D,
or UMAP to 10-d for clustering (`umap10`; `umap10+train`: with the training images' codes as
unlabelled context, scored on the {split} images only), t-SNE and UMAP on
{config['pca_dims'] or 'all'} principal components; `clusterer`: KMeans or a Gaussian mixture
(`gmm`), each the best of 10 initialisations; `student` + `softmax`: a small convolutional
network trained on the training images' clean clusters (of the codes, or of the pixels), each image
in its most probable cluster. Silhouette in the space that was
clustered{sampled}; ARI, NMI and ACC against the true labels; seconds are the reduction's.

{format_table(metrics['clustering'], markdown=True)}

Best row by ACC: {best['features']} + {best['reduction']} + {best['clusterer']}.

![embeddings](embeddings.png)

![confusion](confusion.png)

What the best row's clusters hold, and the images each got wrong:

![what each cluster holds](clusters.png)
"""


# ---- Run -----------------------------------------------------------------------------------------


def run(config: Config) -> None:
    """The pipeline: load -> build -> train -> encode -> reduce and cluster -> train for clustering
    -> plot -> report."""
    stages = Stages()
    with stages("data"):
        data = load_data(config)
        refuse_if_written(config)
        reused = None if config.reuse_model is None else read_reused_run(config)
        if config.resume and reused is None:
            read_checkpoint(config)
    with stages("imports", "importing TensorFlow, Keras and umap-learn"):
        import_stack()
    import keras

    keras.utils.set_random_seed(config.seed)
    if reused is not None:
        with stages("load model"):
            path = config.reuse_model / "autoencoder.keras"
            try:
                autoencoder = keras.saving.load_model(path)
                autoencoder.get_layer("encoder")  # a model of another script has none
            except Exception as error:  # what a damaged file raises depends on where it is damaged
                raise InputError(f"{path} is damaged and cannot be loaded "
                                 f"({type(error).__name__}); train again, or name the --out "
                                 "folder of a run that finished") from None
    with run_folders(config) as (staging, checkpoint):
        if reused is None:
            autoencoder, _ = build_autoencoder(config.bottleneck, config.architecture, config.noise)
            with stages("train"):
                history = train(autoencoder, data, config, checkpoint)
        else:
            history = reused["history"]
        encoder = autoencoder.get_layer("encoder")
        write_outputs(staging, {"autoencoder.keras": autoencoder.save})
        with stages("encode"):
            codes = encode(encoder, data.x_test)
            reconstructions = autoencoder.predict(data.x_test, batch_size=1024, verbose=0)
            training = {"latent": encode(encoder, data.x_train)} if (
                config.embed_train or config.student) else {}
        if config.pixel_twin:  # the same steps on the raw pixels, the autoencoder's baseline
            training["pixels"] = data.x_train.reshape(len(data.x_train), -1)
        with stages("reduce and cluster", f"reducing and clustering in {WORKERS} worker processes"):
            clusterings, shared = reduce_and_cluster(
                {"pixels": data.x_test.reshape(len(data.x_test), -1), "latent": codes},
                training if config.embed_train else {}, data.y_test, config)
        students, student = {}, None
        for kind, features in (training if config.student else {}).items():
            with stages(f"student of the {NAMES[kind]}", "training a student on the clusters of "
                        f"the training {NAMES[kind]}, {len(features):,} points"):
                start, n_clusters = time.perf_counter(), len(np.unique(data.y_test))
                network, students[kind] = train_for_clustering(features, data.x_train, n_clusters,
                                                               config)
            if network is not None:
                clusterings.append(assign_clusters(network, kind, data.x_test, data.y_test,
                                                   time.perf_counter() - start, config.seed))
                if kind == "latent":
                    student = network
                    write_outputs(staging, {"student.keras": network.save})
        best = max(clusterings, key=lambda clustering: clustering.scores["acc"])  # display only
        scores = score_reconstruction(data.x_test, reconstructions)
        with stages("outputs"):
            write_results(staging, data, codes, reconstructions, scores, history, clusterings, best,
                          config.evaluate_on)
        stages.seconds["total"] = round(time.perf_counter() - stages.start, 2)
        metrics = metrics_record(config, data, stages.seconds, scores, history, shared, clusterings,
                                 students)
        write_outputs(staging, {
            "report.md": lambda path: path.write_text(report_markdown(metrics, best.row)),
            "metrics.json": lambda path: path.write_text(json.dumps(metrics, indent=2) + "\n")})
    print(f"\n{format_table(metrics['clustering'])}\n\nReconstruction ({config.evaluate_on} set): "
          f"BCE {scores['bce']:.4f}, MSE {scores['mse']:.4f}, PSNR {scores['psnr']:.2f} dB\n"
          f"Outputs in {config.out}/: metrics.json, report.md, autoencoder.keras, codes.npz, "
          "reconstructions.png, training_curves.png, embeddings.png, confusion.png, clusters.png"
          + (", student.keras" if student is not None else ""))


def metrics_record(config: Config, data: Dataset, timings: dict[str, float],
                   reconstruction: dict[str, float], history: dict[str, list[float]], shared: dict,
                   clusterings: list[Clustering], students: dict[str, dict]) -> dict:
    """What metrics.json records of a run (README.md lists it); the libraries' versions as each
    module states its own (a distribution's name varies: tensorflow, tensorflow-cpu)."""
    import keras
    import tensorflow
    import umap

    modules = {"numpy": np, "tensorflow": tensorflow, "keras": keras, "scikit-learn": sklearn,
               "umap-learn": umap}
    return {"config": config_record(config),
            "versions": {"python": platform.python_version(),
                         **{name: module.__version__ for name, module in modules.items()}},
            "data": {"source": data.source, "n_train": len(data.y_train),
                     "n_test": len(data.y_test), "n_classes": len(np.unique(data.y_test)),
                     "silhouette_points": min(len(data.y_test), SILHOUETTE_POINTS)},
            "timings": timings, "peak_rss_mb": peak_memory_mb(), **shared,
            "reconstruction": reconstruction, "history": history,
            "reused_model": None if config.reuse_model is None else str(config.reuse_model),
            "clustering": [clustering.row for clustering in clusterings],
            "student": students or None}


def main(argv: list[str] | None = None) -> int:
    """Run, and turn each way a run can end early into one line on stderr and an exit status."""
    config = parse_config(argv)
    signal.signal(signal.SIGTERM, raise_terminated)
    try:
        run(config)
    except InputError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    except WriteError as error:
        print(f"error: {error}; earlier results in {config.out}/ are untouched"
              f"{saved_training(config)}", file=sys.stderr)
        return 1
    except (KeyboardInterrupt, Terminated) as stop:
        name, status = ("SIGTERM", 143) if isinstance(stop, Terminated) else ("Ctrl-C", 130)
        print(f"\nstopped by {name}; earlier results in {config.out}/ are untouched"
              f"{saved_training(config)}", file=sys.stderr)
        return status
    return 0


# ---- Machinery: what keeps a run safe and its terminal clean -------------------------------------


class Stages:
    """Why: a user sees progress, and metrics.json where the time went. Wall seconds per stage, a
    line as each ends, and what a long one does as it starts."""

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


def import_stack() -> None:
    """Why: a bad flag fails at once, and a good run's stderr stays empty. Imports TensorFlow, Keras
    and umap-learn (which imports TensorFlow too) once, muted."""
    with quiet_stderr():
        import tensorflow as tf
        import umap  # noqa: F401

        tf.config.list_physical_devices()  # prints a CUDA line on machines without a GPU driver
    tf.get_logger().setLevel("ERROR")  # its Python warnings advise its programmers, not our users
    cache_umap_compilation()


def cache_umap_compilation() -> None:
    """Why: umap-learn compiles its graph and layout code with numba afresh in every process, 5-10 s
    before each process's first fit. With numba's cache on (beside the package, else in the user's
    cache folder), later processes load the same compiled code in under a second."""
    import numba
    import umap.layouts
    import umap.umap_
    import umap.utils

    for module in (umap.umap_, umap.layouts, umap.utils):
        for function in vars(module).values():
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
    one that raised too would print a traceback. umap-learn imports TensorFlow for ParametricUMAP,
    which no worker uses: barred, it costs each worker 3 s less; its compiled code is cached."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    sys.modules["tensorflow"] = None
    cache_umap_compilation()


def peak_memory_mb() -> float | None:
    """Why: metrics.json tells how much memory a run of this size needs. This process's peak in MB,
    Linux's VmHWM (getrusage would count the process it was forked from); None without /proc."""
    with contextlib.suppress(OSError, StopIteration):
        with open("/proc/self/status") as status:
            return next(round(int(line.split()[1]) / 1024, 1) for line in status
                        if line.startswith("VmHWM:"))
    return None


@contextlib.contextmanager
def run_folders(config: Config) -> Iterator[tuple[Path, Path]]:
    """Why: an earlier run's results stay whole until a new run has finished, --resume finds
    training's checkpoint, and one run at a time writes --out. Holds --out's lock file (LOCK,
    with this process's id in it) and yields a private staging folder, whose outputs replace the
    old ones at the end, and the checkpoint folder, removed then; a run that reuses a model leaves
    it."""
    checkpoint = config.out / ".checkpoint"
    try:
        config.out.mkdir(parents=True, exist_ok=True)
        lock = os.open(config.out / LOCK, os.O_RDWR | os.O_CREAT, 0o644)
    except OSError as error:
        raise InputError(f"--out {config.out} cannot be written ({error.strerror}); name a folder "
                         "you can write to") from None
    try:
        # A run may have started since refuse_if_written looked.
        lock_or_refuse(lock, "--out", config.out, "choose another --out")
        os.ftruncate(lock, 0)
        os.write(lock, str(os.getpid()).encode())
        staging = Path(tempfile.mkdtemp(prefix=".partial-", dir=config.out))
        try:
            if config.reuse_model is None and not (config.resume and
                                                   (checkpoint / "config.json").is_file()):
                if config.resume:
                    print(f"note: no checkpoint in {checkpoint}; training starts at epoch 1",
                          flush=True)
                shutil.rmtree(checkpoint, ignore_errors=True)
                checkpoint.mkdir()
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


def refuse_if_written(config: Config) -> None:
    """Why: a second run must fail at once, not after the imports. Refuses --out or --reuse-model
    while a live run writes it; the lock is let go at once (run_folders takes it to write)."""
    for name, folder, fix in (("--out", config.out, "choose another --out"), (
            "--reuse-model", config.reuse_model, "name a finished run's folder")):
        if folder is not None and (folder / LOCK).is_file():
            with open(folder / LOCK) as probe:
                lock_or_refuse(probe.fileno(), name, folder, fix)


def read_checkpoint(config: Config) -> None:
    """Why: a damaged checkpoint must not end a resumed run in a traceback, an epoch later. Checks
    the checkpoint's config.json (made with this run's training flags), that its weights open, and
    that its history.csv holds a line of numbers per epoch its training metadata says were saved."""
    checkpoint, lines = config.out / ".checkpoint", []
    if not (checkpoint / "config.json").is_file():
        return
    try:
        saved = json.loads((checkpoint / "config.json").read_text())
        if mismatch := training_mismatch(saved, config):
            raise InputError(f"the checkpoint in {checkpoint} {mismatch}; rerun with the same "
                             "flags, or without --resume to start afresh")
        if (weights := checkpoint / "backup" / "latest.weights.h5").is_file():
            import h5py  # Keras' own reader: a file cut short fails to open

            h5py.File(weights, "r").close()
        metadata = checkpoint / "backup" / "training_metadata.json"
        if (epochs := json.loads(metadata.read_text())["epoch"] if metadata.is_file() else 0):
            with (checkpoint / "history.csv").open(newline="") as stream:
                lines = list(csv.DictReader(stream))
        numbers = [float(line[name]) for line in lines
                   for name in ("loss", "val_loss", "images_per_second")]
        if len(lines) != epochs or not all(map(math.isfinite, numbers)):
            raise ValueError
    except InputError:
        raise
    except (OSError, ValueError, TypeError, KeyError, IndexError) as error:
        raise InputError(f"the checkpoint in {checkpoint} is damaged ({type(error).__name__}); "
                         "rerun without --resume to start afresh") from None


def read_reused_run(config: Config) -> dict:
    """Why: --reuse-model must never score a model that other data or flags made. The metrics.json
    of the finished run in --reuse-model, checked to match this run's training flags."""
    folder = config.reuse_model
    if not (folder / "metrics.json").is_file() or not (folder / "autoencoder.keras").is_file():
        raise InputError(f"--reuse-model {folder} holds no finished run (metrics.json and "
                         "autoencoder.keras); name the --out folder of a run that finished")
    try:
        reused = json.loads((folder / "metrics.json").read_text())
        curves = [reused["history"][name] for name in ("loss", "val_loss", "images_per_second")]
        numbers = [float(number) for curve in curves for number in curve]
        if not isinstance(reused["config"], dict) or not 3 * len(curves[0]) == len(numbers) > 0:
            raise ValueError
    except (ValueError, TypeError, KeyError, IndexError):
        raise InputError(f"{folder}/metrics.json is damaged or not a metrics file of this version "
                         "of the script; name the --out folder of a run that finished") from None
    if mismatch := training_mismatch(reused["config"], config):
        raise InputError(f"the model in {folder} {mismatch}; give the same data and training "
                         "flags, or drop --reuse-model")
    return reused


def training_mismatch(saved: dict, config: Config) -> str | None:
    """How a saved run's config differs from `config` in its data and training flags ("was made
    with --epochs 3, this run has 20"), or None. A flag it predates had its default."""
    saved, ours = {**config_record(Config()), **saved}, config_record(config)
    for name in TRAINING_FLAGS:
        if str(saved[name]) != str(ours[name]):
            theirs, mine = ("unset" if value is None else value
                            for value in (saved[name], ours[name]))
            return f"was made with {flag(name)} {theirs}, this run has {mine}"
    return None


@contextlib.contextmanager
def signals_deferred() -> Iterator[Callable[[], None]]:
    """Why: a handler that raised inside TensorFlow's C++ calls crashed the process (a segmentation
    fault, one stop in eight). Ctrl-C and SIGTERM are noted instead; the function yielded raises
    the noted one (KeyboardInterrupt or Terminated), and training calls it between batches."""
    noted, deferred = [], [signal.SIGTERM]
    if signal.getsignal(signal.SIGINT) is not signal.SIG_IGN:  # a background job ignores Ctrl-C
        deferred.append(signal.SIGINT)
    previous = {signum: signal.signal(signum, lambda signum, frame: noted.append(signum))
                for signum in deferred}

    def raise_noted() -> None:
        if noted:
            raise KeyboardInterrupt if noted[0] == signal.SIGINT else Terminated

    try:
        yield raise_noted
    finally:
        for signum, handler in previous.items():
            signal.signal(signum, handler)


class Terminated(Exception):
    """Raised on SIGTERM, so that a `kill` unwinds like Ctrl-C."""


def raise_terminated(signum: int, frame) -> None:
    raise Terminated


def saved_training(config: Config) -> str:
    """Why: a stopped run says what --resume would continue. What the checkpoint's history.csv (a
    header, then a line per saved epoch) holds, as the end of a sentence."""
    log = config.out / ".checkpoint" / "history.csv"
    if config.reuse_model is not None or not log.is_file():
        return ""
    finished = len(log.read_text().splitlines()) - 1
    if finished >= config.epochs:
        return ("; training had finished: rerun with --resume to score its model without "
                "training again")
    if finished > 0:
        return f"; {finished} of {config.epochs} epochs are saved: rerun with --resume to continue"
    return ""


def write_outputs(folder: Path, outputs: dict[str, Callable[[Path], object]]) -> None:
    """Why: a full disk ends in one line naming the file. Writes each output into `folder`."""
    for name, write in outputs.items():
        try:
            write(folder / name)
        except OSError as error:
            raise WriteError(f"could not write {name} ({error.strerror or error})") from None


if __name__ == "__main__":
    sys.exit(main())
