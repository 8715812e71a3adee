"""Autoencoder on MNIST: learn codes, reduce them, cluster them, score the clusters.

The script trains an autoencoder on the 60,000 MNIST training images, encodes the 10,000 held-out test
images, reduces the codes with PCA, t-SNE and UMAP, clusters each space with KMeans (the 10-d clustering
embedding with a Gaussian mixture too) and scores the clusters against the true digits. Raw pixels go
through the same clustering, so the table shows what the autoencoder adds. The default is the seed's
recipe, a small convolutional autoencoder. `--recipe headline` (N2D's dense autoencoder trained with
input noise, and a 10-d UMAP fitted with the training codes as context, each chosen on a validation
split) clusters the held-out test images at ACC 0.973 / NMI 0.931, the mean of seeds 0-4 (README.md).
`--recipe self-label` then trains a copy of its encoder for clustering, on the training images alone
(`--self-label`). Every output of a run lands in one folder (`--out`, default `results/`).

Commands:
    # the seed's recipe: 20 epochs on all 60,000 training images, scored on the 10,000 test images
    python autoencoder_mnist.py
    # a quick run, about half a minute on two cores
    python autoencoder_mnist.py --epochs 3 --train-size 10000 --test-size 1000 --out quick
    # the headline recipe, and the same over seeds 0 to 4 (the README's table)
    python autoencoder_mnist.py --recipe headline --out headline
    python benchmarks/seeds.py --seeds 0 1 2 3 4 --jobs 2 -- --recipe headline
    # the headline recipe, then its encoder trained for clustering
    python autoencoder_mnist.py --recipe self-label --out self-label
    # choose on a validation split; the deep-clustering papers' transductive protocol
    python autoencoder_mnist.py --recipe headline --evaluate-on validation
    python autoencoder_mnist.py --recipe headline --evaluate-on train+test
    # a local .npz in Keras' mnist.npz layout; continue an interrupted run; re-score a saved model
    python autoencoder_mnist.py --data my_digits.npz
    python autoencoder_mnist.py --resume
    python autoencoder_mnist.py --reuse-model results --embed-train --out rescored

Metrics:
    BCE         binary cross-entropy per pixel between image and reconstruction (the training loss)
    MSE         mean squared error per pixel, intensities in [0, 1]
    PSNR        peak signal-to-noise ratio, 10 * log10(1 / MSE), in dB (higher is better)
    silhouette  mean silhouette coefficient in the space that was clustered (-1..1, higher = tighter)
    ARI         adjusted Rand index between clusters and true labels (0 = chance, 1 = identical)
    NMI         normalized mutual information between clusters and true labels (0..1)
    ACC         clustering accuracy: the fraction of images labelled right under the best one-to-one
                matching of clusters to labels (Hungarian algorithm, as in the deep-clustering papers)
"""
from __future__ import annotations

import argparse
import contextlib
import csv
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
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import TYPE_CHECKING, Callable, Iterator

import numpy as np

if TYPE_CHECKING:  # imported for real only once the flags and the data are checked (see import_stack)
    import keras

# TensorFlow reads this when it is first imported. Level 3 keeps all but fatal C++ log lines off the
# terminal: on AVX-512 CPUs TensorFlow logs an "E" line when it falls back from oneDNN for int32 ops,
# which is no error. A failure that matters still raises a Python exception, reported as usual.
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

# Data
BUNDLED_DATA = Path(__file__).resolve().parent / "data" / "mnist.npz"
BUNDLED_SHA256 = "06af5dfe73b70e3bc1c36439982b18a8d76803db9b544f6fdf838a37fbb01b64"
IMAGE_SHAPE = (28, 28)
# t-SNE's default perplexity (30) needs more than 90 points, UMAP's 30 neighbours (umap10) more than 30.
MIN_TEST_IMAGES = 100
# Model: --architecture dense is N2D's fully connected encoder (McConville et al.), 784 -> these -> the
# code; the decoder mirrors it.
DENSE_WIDTHS = (500, 500, 2000)
# --augment: DEC-DA's shifts (a fraction of the width and of the height) and rotations (of a full turn).
SHIFT, ROTATION = 0.1, 10 / 360
# Reduce: which reductions each kind of features goes through; pixels are the baseline. The 2-D ones are
# the seed's (and the plots'); "umap10" is an embedding for clustering only: UMAP to 10-d, min_dist 0.
# --embed-train adds "umap10+train" to the codes' list: the same embedding, fitted with training codes.
REDUCTIONS = {"pixels": ("none", "pca", "umap", "umap10"), "latent": ("none", "pca", "tsne", "umap", "umap10")}
# The most neighbours a UMAP fit asks for (umap10's 30), counting each point itself: one graph of them
# serves the 2-D UMAP's 15 too.
UMAP_NEIGHBOURS = 30
# Cluster: every space with KMeans, as the seed did; the clustering embedding with a Gaussian mixture
# too, which the validation split chose.
CLUSTERERS = {"umap10": ("kmeans", "gmm"), "umap10+train": ("kmeans", "gmm")}
# Silhouette compares every pair of points; on more scored points than this (--evaluate-on train+test's
# 70,000) it is computed on this many, drawn with the seed. Every other score uses every point.
SILHOUETTE_POINTS = 10_000
# Reductions and clusterings run in this many worker processes at once, one thread each: a seeded UMAP
# uses one core anyway, and one thread everywhere gives the same rows on any machine. Longest first, by
# their time on MNIST, so that none starts last.
WORKERS = 2
SLOWEST_FIRST = ("umap10+train", "tsne", "umap10", "none", "umap", "pca")


class InputError(ValueError):
    """A problem with the user's flags or data: reported as one line, exit status 2."""


class WriteError(OSError):
    """A file of the run could not be written (a full disk, say): reported as one line, exit status 1."""


# ----------------------------------------------------------------------------------------------------
# Config
# ----------------------------------------------------------------------------------------------------

# Named sets of flags. "seed" is the seed's recipe (every default); "headline" and "self-label" (the
# headline recipe, then its encoder trained for clustering) were chosen on the validation split
# (docs/EXPERIMENTS.md). Flags given beside --recipe override its values.
HEADLINE = {"architecture": "dense", "bottleneck": 10, "noise": 0.2, "epochs": 50, "embed_train": True}
RECIPES = {"seed": {}, "headline": HEADLINE, "self-label": {**HEADLINE, "self_label": 3}}
# The flags that decide which model training makes; --resume and --reuse-model check them.
TRAINING_FLAGS = ("data", "train_size", "evaluate_on", "architecture", "bottleneck", "epochs", "batch_size", "noise",
                  "augment", "seed")


def flag_of(name: str) -> str:
    """The command-line flag of a Config field: batch_size -> --batch-size."""
    return "--" + name.replace("_", "-")


def recipe_flags(recipe: str) -> str:
    """A recipe as the flags it stands for: "--architecture dense --bottleneck 10 ..."."""
    return " ".join(flag_of(name) if value is True else f"{flag_of(name)} {value}"
                    for name, value in RECIPES[recipe].items())


def at_least(minimum: float, kind: type = int) -> Callable[[str], int | float]:
    """A flag parser that accepts finite numbers of `kind` (int: whole numbers) of at least `minimum`."""
    name = "a whole number" if kind is int else "a number"

    def parse(text: str) -> int | float:
        try:
            value = kind(text)
        except ValueError:
            value = math.nan
        if not math.isfinite(value):
            raise argparse.ArgumentTypeError(f"{text!r} is not {name}")
        if value < minimum:
            raise argparse.ArgumentTypeError(f"{value} must be {minimum} or more")
        return value

    return parse


@dataclass(frozen=True)
class Config:
    """Every setting of a run. The defaults are the seed's recipe (but for UMAP's 200 layout epochs, a
    shortcut measured in docs/EXPERIMENTS.md); each field is one command-line flag."""

    recipe: str = field(default="seed", metadata={"parse": str, "choices": tuple(RECIPES), "help": (
        "a named set of the flags below: seed, the seed's recipe (every default); headline, "
        f"{recipe_flags('headline')}; self-label, {recipe_flags('self-label')} (a recipe's --embed-train is "
        "left out under --evaluate-on train+test). Flags given beside it win (default: seed)")})
    # Data
    data: Path | None = field(default=None, metadata={"parse": Path, "metavar": "PATH", "help": (
        "a local .npz in Keras' mnist.npz layout (default: the bundled data/mnist.npz)")})
    train_size: int | None = field(default=None, metadata={"parse": at_least(1), "help": (
        "train on N training images, sampled by label with --seed (default: all)")})
    test_size: int | None = field(default=None, metadata={"parse": at_least(1), "help": (
        f"score N test images, sampled the same way, at least {MIN_TEST_IMAGES} (default: all)")})
    evaluate_on: str = field(default="test", metadata={"parse": str, "choices": ("test", "validation", "train+test"),
                                                       "help": (
        "score the test set, or as many training images held out of training: choose on validation, "
        "report on test; or train on the training and test images together and score them all, the "
        "transductive protocol of the deep-clustering papers (default: test)")})
    # Model: the seed's, unless another architecture or a bottleneck is asked for
    architecture: str = field(default="conv", metadata={"parse": str, "choices": ("conv", "dense"), "help": (
        "the seed's convolutional autoencoder, or N2D's fully connected 784-500-500-2000-N one "
        "(default: conv)")})
    bottleneck: int = field(default=0, metadata={"parse": at_least(0), "help": (
        "a code of N numbers: conv squeezes its 7x7x32 maps through a dense layer; dense needs it "
        "(default: 0, the seed's codes)")})
    # Training: the seed's recipe, Adam and binary cross-entropy
    epochs: int = field(default=20, metadata={"parse": at_least(1), "help": "training epochs (default: 20)"})
    batch_size: int = field(default=256, metadata={"parse": at_least(1), "help": "images per step (default: 256)"})
    noise: float = field(default=0.0, metadata={"parse": at_least(0, float), "metavar": "SIGMA", "help": (
        "denoising: Gaussian noise of this standard deviation on the training input only (default: 0)")})
    augment: bool = field(default=False, metadata={"help": (
        "train on each image shifted by up to 10%% of its width and height and rotated by up to 10 degrees, "
        "afresh every epoch, reconstructing the shifted image (DEC-DA's augmentation) (default: off)")})
    reuse_model: Path | None = field(default=None, metadata={"parse": Path, "metavar": "FOLDER", "help": (
        "score the model a finished run saved in FOLDER instead of training; its data and training flags ("
        + ", ".join(map(flag_of, TRAINING_FLAGS)) + ") must be given and match (default: off)")})
    # Reduction: t-SNE and UMAP search neighbours; on 50 principal components instead of 1,568 code
    # numbers that search is many times faster, as scikit-learn's TSNE documentation advises.
    pca_dims: int = field(default=50, metadata={"parse": at_least(0), "help": (
        "principal components that t-SNE and UMAP start from; 0: the features themselves (default: 50)")})
    tsne_angle: float = field(default=0.5, metadata={"parse": at_least(0, float), "metavar": "THETA", "help": (
        "t-SNE's Barnes-Hut angle, at most 1: larger is faster and coarser (default: 0.5, scikit-learn's)")})
    umap_epochs: int = field(default=200, metadata={"parse": at_least(0), "help": (
        "UMAP's layout epochs; 0: umap-learn's choice, 500 up to 10,000 points and 200 above (default: 200 "
        "at every size, in about half the time; see docs/EXPERIMENTS.md)")})
    embed_train: bool = field(default=False, metadata={"help": (
        "add rows umap10+train: the 10-d UMAP fitted with the training codes as unlabelled context "
        "(default: off)")})
    # Train for clustering: a stage after pretraining, off unless asked for
    self_label: int = field(default=0, metadata={"parse": at_least(0), "metavar": "ROUNDS", "help": (
        "after pretraining, train a copy of the encoder, with a softmax layer, for clustering: ROUNDS rounds "
        "of self-labelling on shifted and rotated training images, the first learning the Gaussian mixture's "
        "clusters of the training codes in umap10, each later one the previous round's assignments; adds "
        "the row latent + self-label + softmax (default: 0, off)")})
    self_label_epochs: int = field(default=4, metadata={"parse": at_least(1), "help": (
        "epochs per round of --self-label (default: 4)")})
    # Run
    seed: int = field(default=0, metadata={"parse": at_least(0), "help": (
        "seed for sampling, weights, shuffling and every estimator (default: 0)")})
    out: Path = field(default=Path("results"), metadata={"parse": Path, "metavar": "FOLDER", "help": (
        "folder for every output of the run (default: results)")})
    resume: bool = field(default=False, metadata={"help": (
        "continue an interrupted run in --out from its last saved epoch (default: off)")})


def parse_config(argv: list[str] | None = None) -> Config:
    """Build the command line from Config's fields and parse it; argparse exits 2 on a bad flag."""
    parser = argparse.ArgumentParser(
        prog="autoencoder_mnist.py",
        allow_abbrev=False,
        description=__doc__.split("\n\n")[0],
        epilog=__doc__[__doc__.index("Commands:"):__doc__.index("Metrics:")]
        + "Metrics, outputs and how each option was chosen: README.md and docs/EXPERIMENTS.md.",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    for option in fields(Config):
        flag = flag_of(option.name)
        if isinstance(option.default, bool):
            parser.add_argument(flag, action="store_true", help=option.metadata["help"])
        else:
            parser.add_argument(flag, type=option.metadata["parse"], default=option.default,
                                choices=option.metadata.get("choices"), help=option.metadata["help"],
                                metavar=None if "choices" in option.metadata
                                else option.metadata.get("metavar", "N"))
    # A recipe sets the defaults of the flags it names, so that a flag given beside it wins.
    chosen = parser.parse_known_args(argv)[0]
    preset = dict(RECIPES[chosen.recipe])
    if chosen.evaluate_on == "train+test":  # every image is scored there: no context left to add
        preset.pop("embed_train", None)
    parser.set_defaults(**preset)
    config = Config(**vars(parser.parse_args(argv)))
    if config.tsne_angle > 1:
        parser.error(f"--tsne-angle {config.tsne_angle} is above 1, the coarsest t-SNE allows; give 0 to 1")
    if config.bottleneck == 1:
        parser.error("--bottleneck 1 leaves no second dimension for the 2-D plots; give 0 or 2 or more")
    if config.embed_train and config.evaluate_on == "train+test":
        parser.error("--embed-train adds the training images as context, and --evaluate-on train+test already "
                     "scores them; drop --embed-train")
    if config.architecture == "dense" and not config.bottleneck:
        parser.error("--architecture dense needs --bottleneck N, the size of its code (N2D uses 10)")
    if config.out.exists() and not config.out.is_dir():
        parser.error(f"--out {config.out} is a file; name a folder")
    return config


def config_record(config: Config) -> dict:
    """The config as metrics.json records it: every field, paths as text."""
    return {key: (str(value) if isinstance(value, Path) else value) for key, value in asdict(config).items()}


# ----------------------------------------------------------------------------------------------------
# Data
# ----------------------------------------------------------------------------------------------------


@dataclass
class Dataset:
    """Images scaled to [0, 1] with shape (n, 28, 28, 1), integer labels with shape (n,)."""

    x_train: np.ndarray
    y_train: np.ndarray
    x_test: np.ndarray
    y_test: np.ndarray
    source: str


def read_npz(path: Path) -> dict[str, np.ndarray]:
    """Read the four arrays of a Keras-layout .npz, never unpickling anything."""
    if not path.is_file():
        reason = "is a folder" if path.is_dir() else "does not exist"
        raise InputError(f"--data {path} {reason}; pass the path of an .npz file")
    if not os.access(path, os.R_OK):
        raise InputError(f"--data {path} cannot be read (permission denied); make it readable")
    if not zipfile.is_zipfile(path):
        raise InputError(f"--data {path} is not an .npz file; save the arrays with numpy.savez")
    keys = ("x_train", "y_train", "x_test", "y_test")
    try:
        with np.load(path, allow_pickle=False) as npz:
            missing = [key for key in keys if key not in npz.files]
            if missing:
                raise InputError(f"--data {path} lacks {', '.join(missing)}; an .npz needs the arrays "
                                 f"{', '.join(keys)}, as in Keras' mnist.npz")
            return {key: npz[key] for key in keys}
    except ValueError as error:
        if isinstance(error, InputError):
            raise
        raise InputError(f"--data {path} holds object arrays, which are never unpickled; save plain "
                         "numeric arrays") from None
    except (OSError, zipfile.BadZipFile, EOFError) as error:
        raise InputError(f"--data {path} is a damaged .npz ({error}); save it again with numpy.savez") from None


def check_split(images: np.ndarray, labels: np.ndarray, split: str) -> None:
    """Refuse images that are not (n, 28, 28) intensities in 0..255, or labels that don't match them."""
    x, y = f"x_{split}", f"y_{split}"
    if images.dtype.kind not in "uif":
        raise InputError(f"{x} has dtype {images.dtype}; images must be numbers 0..255 (uint8 as in Keras)")
    if images.ndim != 3 or images.shape[1:] != IMAGE_SHAPE or len(images) == 0:
        raise InputError(f"{x} has shape {images.shape}; images must be (n, 28, 28) with n >= 1")
    if images.dtype.kind == "f" and not np.isfinite(images).all():
        raise InputError(f"{x} contains NaN or infinity; images must be finite intensities 0..255")
    if images.min() < 0 or images.max() > 255:
        raise InputError(f"{x} has values {images.min()}..{images.max()}; intensities must lie in 0..255")
    if labels.dtype.kind not in "ui" or labels.ndim != 1:
        raise InputError(f"{y} has dtype {labels.dtype} and shape {labels.shape}; labels must be a 1-D "
                         "integer array")
    if len(labels) != len(images):
        raise InputError(f"{y} has {len(labels)} labels for {len(images)} images in {x}; give one label "
                         "per image")
    if labels.min() < 0 or labels.max() > 255:
        raise InputError(f"{y} has labels {labels.min()}..{labels.max()}; labels must be class numbers 0..255")


def stratified_sample(labels: np.ndarray, size: int, rng: np.random.Generator) -> np.ndarray:
    """Indices of `size` items drawn without replacement, each class in proportion, in original order.

    Not scikit-learn's train_test_split(stratify=...): it would draw another validation split, and every
    choice in docs/EXPERIMENTS.md was made on this one."""
    order = rng.permutation(len(labels))
    # Each item's position within its own class, as a fraction: taking the smallest fractions first
    # draws every class at the same rate.
    position = np.empty(len(labels))
    for label in np.unique(labels):
        members = order[labels[order] == label]
        position[members] = (np.arange(len(members)) + 0.5) / len(members)
    chosen = order[np.argsort(position[order], kind="stable")[:size]]
    return np.sort(chosen)


def load_data(config: Config) -> Dataset:
    """Load, check and sample the data: images (n, 28, 28, 1) in [0, 1], labels (n,)."""
    if config.data is not None:
        arrays, source = read_npz(config.data), str(config.data)
    elif BUNDLED_DATA.is_file():
        digest = hashlib.sha256(BUNDLED_DATA.read_bytes()).hexdigest()
        if digest != BUNDLED_SHA256:
            raise InputError(f"{BUNDLED_DATA} is damaged (sha256 {digest[:12]}...); restore it with "
                             "`git checkout data/mnist.npz` or pass a copy with --data")
        arrays, source = read_npz(BUNDLED_DATA), "data/mnist.npz (bundled, sha256 checked)"
    else:
        arrays, source = download_mnist(), "keras.datasets.mnist"
    for split in ("train", "test"):
        check_split(arrays[f"x_{split}"], arrays[f"y_{split}"], split)

    rng = np.random.default_rng(config.seed)
    if config.evaluate_on == "validation":
        if len(arrays["y_train"]) < 2 * len(arrays["y_test"]):
            raise InputError(f"{source} has {len(arrays['y_train'])} training images, too few to hold out "
                             f"{len(arrays['y_test'])} (as many as its test set) and train on the rest; "
                             "use --evaluate-on test")
        held_out = np.zeros(len(arrays["y_train"]), dtype=bool)
        held_out[stratified_sample(arrays["y_train"], len(arrays["y_test"]), rng)] = True
        arrays["x_test"], arrays["y_test"] = arrays["x_train"][held_out], arrays["y_train"][held_out]
        arrays["x_train"], arrays["y_train"] = arrays["x_train"][~held_out], arrays["y_train"][~held_out]
        source += f" (validation: {held_out.sum()} training images held out)"
    sizes = {"train": config.train_size, "test": config.test_size}
    for split, size in sizes.items():
        available = len(arrays[f"y_{split}"])
        if size is not None and size > available:
            raise InputError(f"--{split}-size {size} is larger than the {available} {split} images in "
                             f"{source}; use at most {available}")
        if size is not None and size < available:
            keep = stratified_sample(arrays[f"y_{split}"], size, rng)
            arrays[f"x_{split}"], arrays[f"y_{split}"] = arrays[f"x_{split}"][keep], arrays[f"y_{split}"][keep]
    if config.evaluate_on == "train+test":  # transductive: the images trained on are the ones scored
        for axis in ("x", "y"):
            arrays[f"{axis}_train"] = arrays[f"{axis}_test"] = np.concatenate([arrays[f"{axis}_train"],
                                                                               arrays[f"{axis}_test"]])
        source += " (train+test: training and test images together, trained on and scored)"
    if len(arrays["y_test"]) < MIN_TEST_IMAGES:
        raise InputError(f"only {len(arrays['y_test'])} test images; t-SNE and UMAP need at least "
                         f"{MIN_TEST_IMAGES}: use --test-size {MIN_TEST_IMAGES} or more")
    if config.self_label and len(arrays["y_train"]) < MIN_TEST_IMAGES:
        raise InputError(f"--self-label clusters the training images, and {len(arrays['y_train'])} are too few for "
                         f"UMAP: use --train-size {MIN_TEST_IMAGES} or more")
    n_classes, n_test = len(np.unique(arrays["y_test"])), len(arrays["y_test"])
    if n_classes < 2:
        raise InputError("the test labels hold a single class; clustering needs at least two")
    if n_classes * 2 > n_test:
        raise InputError(f"{n_test} test images for {n_classes} classes; clustering needs at least two "
                         f"images per class on average: use --test-size {n_classes * 2} or more")

    def scale(images: np.ndarray) -> np.ndarray:
        return (images.astype("float32") / 255.0)[..., np.newaxis]

    x_train, y_train = scale(arrays["x_train"]), arrays["y_train"].astype("int64")
    if arrays["x_test"] is arrays["x_train"]:  # train+test: one copy
        return Dataset(x_train, y_train, x_train, y_train, source)
    return Dataset(x_train, y_train, scale(arrays["x_test"]), arrays["y_test"].astype("int64"), source)


def download_mnist() -> dict[str, np.ndarray]:
    """Fall back to Keras' own MNIST download (cached in ~/.keras) when the bundled file is missing."""
    import_stack()
    import keras

    try:
        (x_train, y_train), (x_test, y_test) = keras.datasets.mnist.load_data()
    except Exception as error:  # any network or cache failure means the same thing to the user
        reason = str(error).splitlines()[0] if str(error) else type(error).__name__
        raise InputError(f"data/mnist.npz is missing and Keras could not download MNIST ({reason}); "
                         "pass a local copy with --data PATH") from None
    return {"x_train": x_train, "y_train": y_train, "x_test": x_test, "y_test": y_test}


# ----------------------------------------------------------------------------------------------------
# Model
# ----------------------------------------------------------------------------------------------------


def build_autoencoder(bottleneck: int = 0, architecture: str = "conv",
                      noise: float = 0.0) -> tuple[keras.Model, keras.Model]:
    """The autoencoder for images (n, 28, 28, 1): by default the seed's convolutional one.

    Returns the autoencoder and its encoder, a named model of its own; the decoder is the autoencoder's
    layer "decoder". See `build_conv` and `build_dense` for the architectures. With `noise` > 0 the
    autoencoder adds Gaussian noise of that standard deviation to its input in training (a denoising
    autoencoder); the encoder, and the autoencoder outside training, see the image as it is.
    """
    import keras
    from keras import layers

    build = {"conv": build_conv, "dense": build_dense}[architecture]
    image = keras.Input(shape=(*IMAGE_SHAPE, 1), name="image")
    encoder, decoder = build(image, bottleneck)
    corrupted = layers.GaussianNoise(noise, name="noise")(image) if noise else image
    autoencoder = keras.Model(image, decoder(encoder(corrupted)), name="autoencoder")
    return autoencoder, encoder


def build_conv(image: keras.KerasTensor, bottleneck: int) -> tuple[keras.Model, keras.Model]:
    """The seed's encoder and decoder: images -> codes (n, 7, 7, 32) -> images.

    With `bottleneck` > 0 (an option, not the seed's model) a dense layer squeezes the 7x7x32 maps into
    that many numbers, and the decoder begins with a dense layer back to 7x7x32.
    """
    import keras
    from keras import layers

    x = layers.Conv2D(32, 3, activation="relu", padding="same")(image)
    x = layers.MaxPooling2D(2, padding="same")(x)
    x = layers.Conv2D(32, 3, activation="relu", padding="same")(x)
    code = layers.MaxPooling2D(2, padding="same")(x)
    if bottleneck:
        code = layers.Dense(bottleneck)(layers.Flatten()(code))
    encoder = keras.Model(image, code, name="encoder")

    code_input = keras.Input(shape=code.shape[1:], name="code")
    x = code_input
    if bottleneck:
        x = layers.Reshape((7, 7, 32))(layers.Dense(7 * 7 * 32, activation="relu")(x))
    x = layers.Conv2D(32, 3, activation="relu", padding="same")(x)
    x = layers.UpSampling2D(2)(x)
    x = layers.Conv2D(32, 3, activation="relu", padding="same")(x)
    x = layers.UpSampling2D(2)(x)
    reconstruction = layers.Conv2D(1, 3, activation="sigmoid", padding="same")(x)
    return encoder, keras.Model(code_input, reconstruction, name="decoder")


def build_dense(image: keras.KerasTensor, bottleneck: int) -> tuple[keras.Model, keras.Model]:
    """N2D's fully connected encoder and decoder (an option): 784 pixels -> 500 -> 500 -> 2000 (relu)
    -> a linear code of `bottleneck` numbers, and back through 2000 -> 500 -> 500 (relu) to 784 sigmoid
    pixels. Its matrix products run far faster on a CPU than the seed's narrow convolutions."""
    import keras
    from keras import layers

    x = layers.Flatten()(image)
    for width in DENSE_WIDTHS:
        x = layers.Dense(width, activation="relu")(x)
    code = layers.Dense(bottleneck)(x)
    encoder = keras.Model(image, code, name="encoder")

    code_input = keras.Input(shape=(bottleneck,), name="code")
    x = code_input
    for width in reversed(DENSE_WIDTHS):
        x = layers.Dense(width, activation="relu")(x)
    pixels = layers.Dense(IMAGE_SHAPE[0] * IMAGE_SHAPE[1], activation="sigmoid")(x)
    reconstruction = layers.Reshape((*IMAGE_SHAPE, 1))(pixels)
    return encoder, keras.Model(code_input, reconstruction, name="decoder")


# ----------------------------------------------------------------------------------------------------
# Train
# ----------------------------------------------------------------------------------------------------


def augmenter() -> keras.Sequential:
    """Layers that shift and rotate images (n, 28, 28, 1) at random, afresh on every call in training;
    what the shifts uncover is black, as MNIST's background."""
    import keras
    from keras import layers

    return keras.Sequential([layers.RandomTranslation(SHIFT, SHIFT, fill_mode="constant"),
                             layers.RandomRotation(ROTATION, fill_mode="constant")], name="augment")


def training_batches(images: np.ndarray, config: Config) -> dict:
    """fit()'s training data: the images as input and target, or with --augment a tf.data pipeline whose
    batches are shifted and rotated afresh every epoch, each input its own target."""
    if not config.augment:
        return {"x": images, "y": images, "batch_size": config.batch_size, "shuffle": True}
    import tensorflow as tf

    augment = augmenter()

    def pair(batch):
        shifted = augment(batch, training=True)
        return shifted, shifted

    batches = tf.data.Dataset.from_tensor_slices(images).shuffle(len(images), seed=config.seed)
    # shuffle=False: the pipeline shuffles itself, anew each epoch; fit() would only warn that it can't.
    return {"x": batches.batch(config.batch_size).map(pair).prefetch(tf.data.AUTOTUNE), "shuffle": False}


def train(autoencoder: keras.Model, data: Dataset, config: Config,
          checkpoint_dir: Path) -> dict[str, list[float]]:
    """Fit the autoencoder to reproduce its input; returns loss, val_loss and images/s per epoch.

    After each epoch Keras' BackupAndRestore saves the weights, the optimizer and the epoch in
    `checkpoint_dir`, and the epoch's numbers are added to its history.csv. With a checkpoint there,
    training continues from it (a run that had finished trains no more); the history is read back from
    the CSV because fit() knows only the epochs of this process, not those before a --resume.
    """
    import keras

    autoencoder.compile(optimizer="adam", loss="binary_crossentropy")
    log_path = checkpoint_dir / "history.csv"
    try:
        with signals_deferred() as stop_if_signalled:
            autoencoder.fit(
                **training_batches(data.x_train, config), epochs=config.epochs,
                validation_data=(data.x_test, data.x_test), verbose=0,
                # In this order: an epoch's line on the terminal means the epoch is saved and logged.
                callbacks=[keras.callbacks.BackupAndRestore(str(checkpoint_dir / "backup"), delete_checkpoint=False),
                           epoch_log(log_path, len(data.x_train), config.epochs, stop_if_signalled)],
            )
            stop_if_signalled()
    except OSError as error:
        raise WriteError(f"could not save training's checkpoint in {checkpoint_dir} ({error.strerror or error})"
                         ) from None
    with log_path.open(newline="") as stream:
        table = list(csv.DictReader(stream))
    return {name: [float(line[name]) for line in table] for name in ("loss", "val_loss", "images_per_second")}


def epoch_log(path: Path, n_images: int, epochs: int, between_batches: Callable[[], None]) -> keras.callbacks.Callback:
    """A callback that times each epoch, adds its loss, val_loss and images/s to the CSV at `path` and
    prints them; between batches it calls `between_batches` (which stops on a noted Ctrl-C)."""
    import keras

    started = {}

    def log_epoch(epoch: int, logs: dict) -> None:
        line = {"epoch": epoch, "images_per_second": n_images / (time.perf_counter() - started[epoch]),
                "loss": logs["loss"], "val_loss": logs["val_loss"]}
        new = not path.is_file()
        with path.open("a", newline="") as stream:
            writer = csv.DictWriter(stream, fieldnames=list(line))
            if new:
                writer.writeheader()
            writer.writerow(line)
        print(f"  epoch {epoch + 1}/{epochs}  loss {line['loss']:.4f}  val_loss {line['val_loss']:.4f}"
              f"  {line['images_per_second']:,.0f} images/s", flush=True)

    return keras.callbacks.LambdaCallback(
        on_epoch_begin=lambda epoch, logs: started.update({epoch: time.perf_counter()}),
        on_epoch_end=log_epoch,
        on_train_batch_end=lambda batch, logs: between_batches(),
        on_test_batch_end=lambda batch, logs: between_batches(),
    )


# ----------------------------------------------------------------------------------------------------
# Encode
# ----------------------------------------------------------------------------------------------------


def encode(encoder: keras.Model, images: np.ndarray) -> np.ndarray:
    """Images (n, 28, 28, 1) -> flat codes (n, 1568), or (n, bottleneck) with a bottleneck."""
    return encoder.predict(images, batch_size=1024, verbose=0).reshape(len(images), -1)


def reconstruct(autoencoder: keras.Model, codes: np.ndarray) -> np.ndarray:
    """Flat codes from `encode` -> reconstructed images (n, 28, 28, 1), through the autoencoder's decoder."""
    decoder = autoencoder.get_layer("decoder")
    return decoder.predict(codes.reshape(-1, *decoder.input.shape[1:]), batch_size=1024, verbose=0)


def score_reconstruction(images: np.ndarray, reconstructions: np.ndarray) -> dict[str, float]:
    """BCE and MSE per pixel, and PSNR in dB, of reconstructions against images, both in [0, 1]."""
    # Keras clips predictions by 1e-7 in its binary cross-entropy; do the same so BCE matches val_loss.
    p = np.clip(reconstructions.astype("float64"), 1e-7, 1 - 1e-7)
    x = images.astype("float64")
    bce = -np.mean(x * np.log(p) + (1 - x) * np.log(1 - p))
    mse = np.mean((x - reconstructions) ** 2)
    return {"test_bce": float(bce), "test_mse": float(mse), "test_psnr": float(10 * np.log10(1 / mse))}


# ----------------------------------------------------------------------------------------------------
# Reduce
# ----------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Space:
    """One reduction of one kind of features, with what the reduction starts from."""

    kind: str  # "pixels" or "latent"
    reduction: str  # a name from REDUCTIONS, or "umap10+train"
    points: np.ndarray  # (n, d): the features for "none" and "pca", their principal components otherwise
    graph: tuple[np.ndarray, np.ndarray] | None = None  # the points' neighbour graph, for UMAP

    @property
    def doing(self) -> str:
        """What reducing this space does, for the slow reductions; "" for the quick ones."""
        of = "the codes" if self.kind == "latent" else "the pixels"
        what = {"tsne": f"t-SNE to 2-D of {of}", "umap": f"UMAP to 2-D of {of}", "umap10": f"UMAP to 10-d of {of}",
                "umap10+train": "UMAP to 10-d of the codes and the training codes"}.get(self.reduction)
        return f"{what}, {len(self.points):,} points" if what else ""


def prepare_spaces(kind: str, features: np.ndarray, names: tuple[str, ...], config: Config,
                   context: np.ndarray | None = None) -> tuple[list[Space], dict]:
    """The spaces that reduce features (n, d) with each named reduction, and what they share.

    t-SNE and UMAP start from the `pca_dims` principal components of the features; the UMAP fits of one
    set of points share one exact neighbour graph. "umap10+train" embeds the features and then the
    unlabelled `context` (m, d) together: its points are (n + m, pca_dims), the features' points first.
    Returns the spaces in the order of `names`, and {"pca_variance_kept": the share of variance that the
    principal components keep, "seconds": what PCA and the neighbour graphs took}.
    """
    from sklearn.decomposition import PCA

    start = time.perf_counter()
    if config.pca_dims:
        pca = PCA(n_components=min(config.pca_dims, *features.shape), random_state=config.seed)
        compact, kept = pca.fit_transform(features), float(pca.explained_variance_ratio_.sum())
        project = pca.transform
    else:
        compact, kept, project = features, None, np.asarray
    seconds = {"pca_seconds": time.perf_counter() - start}
    start = time.perf_counter()
    graphs = {}  # point set -> its neighbour graph, shared by that set's UMAP fits
    spaces = []
    for name in names:
        if name in ("none", "pca"):
            spaces.append(Space(kind, name, features))
        elif name == "tsne":
            spaces.append(Space(kind, name, compact))
        else:
            on = "with context" if name == "umap10+train" else "scored"
            points = np.vstack([compact, project(context)]) if on == "with context" else compact
            if on not in graphs:
                graphs[on] = nearest_neighbours(points, UMAP_NEIGHBOURS)
            spaces.append(Space(kind, name, points, graphs[on]))
    seconds["neighbours_seconds"] = time.perf_counter() - start
    return spaces, {"pca_variance_kept": kept, "seconds": {key: round(value, 2) for key, value in seconds.items()}}


def prepare_all_spaces(images: np.ndarray, codes: np.ndarray, context: np.ndarray | None,
                       config: Config) -> tuple[list[Space], dict[str, dict]]:
    """The spaces of the scored images' pixels (n, 784), the baseline, and of their codes (n, d), each
    with the reductions in REDUCTIONS; with training codes as `context` (m, d), "umap10+train" too.
    Returns the spaces and, for each kind of features, what prepare_spaces says they share."""
    features = {"pixels": images.reshape(len(images), -1), "latent": codes}
    spaces, shared = [], {}
    for kind, names in REDUCTIONS.items():
        kind_context = context if kind == "latent" else None
        if kind_context is not None:
            names += ("umap10+train",)
        kind_spaces, shared[kind] = prepare_spaces(kind, features[kind], names, config, kind_context)
        spaces += kind_spaces
    return spaces, shared


def embed(space: Space, config: Config) -> np.ndarray:
    """The space's embedding: (n, 2), or (n, 10) for "umap10" and "umap10+train", or the points
    themselves for "none"."""
    from sklearn.decomposition import PCA
    from sklearn.manifold import TSNE

    def umap(dimensions: int, n_neighbors: int, **settings) -> np.ndarray:
        return fit_umap(space.points, space.graph, dimensions, n_neighbors, config.seed,
                        n_epochs=config.umap_epochs or None, **settings)

    reducers = {
        "none": lambda: space.points,
        "pca": lambda: PCA(n_components=2, random_state=config.seed).fit_transform(space.points),
        "tsne": lambda: TSNE(n_components=2, angle=config.tsne_angle,
                             random_state=config.seed).fit_transform(space.points),
        "umap": lambda: umap(2, 15),
        # For clustering, not for looking at: more room than 2-D, points packed tight, wider neighbourhoods.
        "umap10": lambda: umap(10, 30, min_dist=0.0),
        "umap10+train": lambda: umap(10, 30, min_dist=0.0),
    }
    return reducers[space.reduction]()


def nearest_neighbours(points: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """Exact k nearest neighbours of each point (n, d) among the points, itself first at distance 0 as
    UMAP expects: indices (n, k) and Euclidean distances (n, k). On tens of dimensions this is faster
    than UMAP's own approximate search, and the same graph serves every UMAP fit of these points."""
    from sklearn.neighbors import NearestNeighbors

    # Asked for the points' own neighbours, scikit-learn leaves each point out. Asked with the points
    # again it would find each at a rounding error's distance (about 1e-7 in float32), which UMAP would
    # take for its nearest neighbour's distance (rho): every membership in its graph would shift.
    others, indices = NearestNeighbors(n_neighbors=min(k, len(points)) - 1).fit(points).kneighbors()
    itself = np.arange(len(points))[:, np.newaxis]
    return np.hstack([itself, indices]), np.hstack([np.zeros_like(itself, dtype=others.dtype), others])


def fit_umap(points: np.ndarray, graph: tuple[np.ndarray, np.ndarray], dimensions: int, n_neighbors: int,
             seed: int, **settings) -> np.ndarray:
    """UMAP of points (n, d) to (n, dimensions), on the first `n_neighbors` of a neighbour graph from
    `nearest_neighbours`."""
    from umap import UMAP

    indices, distances = (part[:, :n_neighbors] for part in graph)
    with warnings.catch_warnings():
        # umap-learn warns that a graph without its search index cannot embed new points: none are.
        warnings.filterwarnings("ignore", message="precomputed_knn")
        # A fixed random_state makes UMAP single-threaded anyway; n_jobs=1 says so and spares the warning.
        return UMAP(n_components=dimensions, n_neighbors=n_neighbors, random_state=seed, n_jobs=1,
                    precomputed_knn=(indices, distances), **settings).fit_transform(points)


# ----------------------------------------------------------------------------------------------------
# Cluster and score
# ----------------------------------------------------------------------------------------------------


def contingency(labels: np.ndarray, clusters: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Counts (classes x clusters), and the best one-to-one matching of classes to clusters.

    The matching maximises the items on matched pairs (Hungarian algorithm). Returns the counts, then
    the row and column indices of the matched pairs, as `scipy.optimize.linear_sum_assignment` gives them.
    """
    from scipy.optimize import linear_sum_assignment
    from sklearn.metrics.cluster import contingency_matrix

    counts = contingency_matrix(labels, clusters)
    rows, columns = linear_sum_assignment(counts, maximize=True)
    return counts, rows, columns


def clustering_accuracy(labels: np.ndarray, clusters: np.ndarray) -> float:
    """ACC: the fraction of items whose cluster is matched to their label, under the best matching."""
    counts, rows, columns = contingency(labels, clusters)
    return float(counts[rows, columns].sum() / len(labels))


def clusterer_model(clusterer: str, n_clusters: int, seed: int):
    """An unfitted KMeans ("kmeans") or Gaussian mixture ("gmm", full covariances), each best of 10
    initialisations."""
    from sklearn.cluster import KMeans
    from sklearn.mixture import GaussianMixture

    models = {"kmeans": lambda: KMeans(n_clusters=n_clusters, n_init=10, random_state=seed),
              "gmm": lambda: GaussianMixture(n_components=n_clusters, n_init=10, random_state=seed)}
    return models[clusterer]()


def label_scores(labels: np.ndarray, clusters: np.ndarray) -> dict[str, float]:
    """ARI, NMI and ACC of clusters (n,) against labels (n,)."""
    from sklearn.metrics import adjusted_rand_score, normalized_mutual_info_score

    label_metrics = {"ari": adjusted_rand_score, "nmi": normalized_mutual_info_score, "acc": clustering_accuracy}
    return {name: float(metric(labels, clusters)) for name, metric in label_metrics.items()}


def cluster_and_score(points: np.ndarray, labels: np.ndarray, n_clusters: int, seed: int,
                      clusterer: str = "kmeans") -> tuple[np.ndarray, dict[str, float]]:
    """Cluster points (n, d) with `clusterer_model`; returns the labelled points' clusters (len(labels),)
    and their silhouette, ARI, NMI and ACC. Points past the labelled ones (unlabelled context) are
    clustered too, not scored."""
    clusters = clusterer_model(clusterer, n_clusters, seed).fit_predict(points)[:len(labels)]
    return clusters, score_clusters(points[:len(labels)], labels, clusters, seed)


def score_clusters(points: np.ndarray, labels: np.ndarray, clusters: np.ndarray, seed: int) -> dict[str, float]:
    """Silhouette of the clusters (n,) in the space of points (n, d), and their ARI, NMI and ACC."""
    from sklearn.metrics import silhouette_score

    scores = label_scores(labels, clusters)
    # Silhouette needs the points themselves, not only the labels. scikit-learn's pairwise distances
    # run about twice as fast on float64 as on the float32 that the embeddings come in.
    sample = SILHOUETTE_POINTS if len(points) > SILHOUETTE_POINTS else None
    scores["silhouette"] = (float(silhouette_score(points.astype("float64"), clusters, sample_size=sample,
                                                   random_state=seed))
                            if len(np.unique(clusters)) > 1 else math.nan)
    return scores


@dataclass
class Clustering:
    """One row of the table: a reduction of one kind of features, clustered and scored."""

    features: str  # "pixels" or "latent"
    reduction: str
    clusterer: str
    scores: dict[str, float]  # ari, nmi, acc and silhouette
    seconds: float  # what the reduction took
    clusters: np.ndarray  # (n,), one per scored image
    embedding: np.ndarray  # (n, d): the scored images in the reduced space

    @property
    def row(self) -> dict:
        """The row as metrics.json and the tables give it."""
        return {"features": self.features, "reduction": self.reduction, "clusterer": self.clusterer, **self.scores,
                "seconds": round(self.seconds, 2)}


def reduce_and_cluster(spaces: list[Space], labels: np.ndarray, config: Config) -> tuple[list[Clustering], float | None]:
    """Embed every space and cluster it with each of its clusterers, in WORKERS worker processes of one
    thread each (joblib's, which stop at once on an error or Ctrl-C), slowest space first. Returns the
    rows in the order of `spaces`, and the largest worker's peak memory in MB."""
    from joblib import Parallel, delayed, parallel_config

    slowest_first = sorted(range(len(spaces)), key=lambda index: SLOWEST_FIRST.index(spaces[index].reduction))
    # Each task's arrays go to its worker whole (max_nbytes=None), not through memory-mapped temporary
    # files. The workers' stderr is muted: a Ctrl-C that reaches one as it starts, before it can ignore
    # it, would print a traceback; an error in a task is raised here, and reported as usual.
    with parallel_config(backend="loky", inner_max_num_threads=1), quiet_stderr():
        done = Parallel(n_jobs=WORKERS, batch_size=1, max_nbytes=None, initializer=start_worker)(
            delayed(reduce_and_cluster_one)(spaces[index], labels, config) for index in slowest_first)
    by_space = dict(zip(slowest_first, done))
    clusterings = []
    for index, space in enumerate(spaces):
        embedding, seconds, clustered, _ = by_space[index]
        for clusterer, (clusters, scores) in clustered.items():
            clusterings.append(Clustering(space.kind, space.reduction, clusterer, scores, seconds, clusters,
                                          space.points if embedding is None else embedding))
    peaks = [peak for *_, peak in done]
    return clusterings, None if None in peaks else max(peaks)


def reduce_and_cluster_one(space: Space, labels: np.ndarray, config: Config
                           ) -> tuple[np.ndarray | None, float, dict[str, tuple[np.ndarray, dict]], float | None]:
    """A worker's task: the space's embedding of the scored points (None for "none": the points
    themselves), the seconds it took, {clusterer: (clusters, scores)}, and the worker's peak memory."""
    if space.doing:
        print(f"  {space.doing}", flush=True)
    start = time.perf_counter()
    embedding = embed(space, config)
    seconds = time.perf_counter() - start
    clustered = {clusterer: cluster_and_score(embedding, labels, len(np.unique(labels)), config.seed, clusterer)
                 for clusterer in CLUSTERERS.get(space.reduction, ("kmeans",))}
    # Sent back: the scored points only (context points are not scored), and no copy of the features.
    return (None if space.reduction == "none" else embedding[:len(labels)], seconds, clustered,
            peak_memory_mb())


# ----------------------------------------------------------------------------------------------------
# Train for clustering (--self-label)
# ----------------------------------------------------------------------------------------------------


def train_for_clustering(encoder: keras.Model, images: np.ndarray, n_clusters: int,
                         config: Config) -> tuple[keras.Model, list[float]]:
    """The stage after pretraining, on the training images (n, 28, 28, 1) alone: their codes' clusters
    as first targets, then a classifier built on a copy of the encoder and trained by self-labelling.
    Returns the classifier and, per round, the share of images whose cluster changed. Seeded afresh with
    --seed: the same classifier whether the autoencoder was just trained or reused."""
    import keras

    keras.utils.set_random_seed(config.seed)
    targets = cluster_training_codes(encode(encoder, images), n_clusters, config)
    classifier = build_classifier(encoder, n_clusters)
    return classifier, self_label(classifier, images, targets, config)


def cluster_training_codes(codes: np.ndarray, n_clusters: int, config: Config) -> np.ndarray:
    """Self-labelling's first targets: the training codes (n, d) embedded as umap10 and clustered by the
    Gaussian mixture, as in the table's rows but with no scored image among them. Returns clusters (n,)."""
    from threadpoolctl import threadpool_limits

    space = prepare_spaces("latent", codes, ("umap10",), config)[0][0]
    print(f"  {space.doing}", flush=True)
    with threadpool_limits(1):  # one thread, as in the workers: the same clusters on any machine
        return clusterer_model("gmm", n_clusters, config.seed).fit_predict(embed(space, config))


def build_classifier(encoder: keras.Model, n_clusters: int) -> keras.Model:
    """A copy of the pretrained encoder with a softmax layer of n_clusters units on its code: the
    probability of each cluster. In training it sees each image shifted and rotated (augmenter), afresh
    every time; outside training, the image as it is. The autoencoder's own encoder stays as it was."""
    import keras
    from keras import layers

    copy = keras.models.clone_model(encoder)
    copy.set_weights(encoder.get_weights())
    image = keras.Input(shape=(*IMAGE_SHAPE, 1), name="image")
    code = layers.Flatten()(copy(augmenter()(image)))
    return keras.Model(image, layers.Dense(n_clusters, activation="softmax", name="clusters")(code),
                       name="classifier")


def self_label(classifier: keras.Model, images: np.ndarray, targets: np.ndarray, config: Config) -> list[float]:
    """Train the classifier on the training images (n, 28, 28, 1) alone, never a scored image or a label:
    --self-label rounds of --self-label-epochs epochs, the first learning `targets` (n,), each later one
    the clusters the classifier gave the images after the round before. Adam's rate falls from 1e-3 to 0
    along one cosine over all rounds, so the last rounds settle. Returns, per round, the share of images
    whose cluster changed: a measure of convergence that needs no label."""
    import keras

    steps = config.self_label * config.self_label_epochs * math.ceil(len(images) / config.batch_size)
    classifier.compile(optimizer=keras.optimizers.Adam(keras.optimizers.schedules.CosineDecay(1e-3, steps)),
                       loss="sparse_categorical_crossentropy")
    changed = []
    with signals_deferred() as stop_if_signalled:
        for round_ in range(1, config.self_label + 1):
            start = time.perf_counter()
            classifier.fit(images, targets, epochs=config.self_label_epochs, batch_size=config.batch_size,
                           shuffle=True, verbose=0, callbacks=[keras.callbacks.LambdaCallback(
                               on_train_batch_end=lambda batch, logs: stop_if_signalled())])
            assigned = classifier.predict(images, batch_size=1024, verbose=0).argmax(axis=1)
            changed.append(float(np.mean(assigned != targets)))
            print(f"  round {round_}/{config.self_label}: {changed[-1]:.2%} of the training images changed "
                  f"cluster  ({time.perf_counter() - start:.0f} s)", flush=True)
            targets = assigned
            stop_if_signalled()
    return changed


def assign_clusters(classifier: keras.Model, images: np.ndarray, labels: np.ndarray, seconds: float,
                    seed: int) -> Clustering:
    """The row of the trained classifier: each scored image (n, 28, 28, 1) in its most probable cluster,
    scored against labels (n,); the silhouette in the space of cluster probabilities."""
    probabilities = classifier.predict(images, batch_size=1024, verbose=0)
    clusters = probabilities.argmax(axis=1)
    return Clustering("latent", "self-label", "softmax", score_clusters(probabilities, labels, clusters, seed),
                      seconds, clusters, probabilities)


# ----------------------------------------------------------------------------------------------------
# Plot
# ----------------------------------------------------------------------------------------------------


def pyplot():
    """matplotlib's pyplot on the Agg backend: the plots go to files, so no window system is loaded."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def plot_reconstructions(images: np.ndarray, reconstructions: np.ndarray, labels: np.ndarray,
                         scores: dict[str, float], split: str, path: Path) -> None:
    """The first scored image of each class (up to 10) above its reconstruction; `split` names the
    scored set ("test" or "validation"), as in the plots below."""
    plt = pyplot()

    picks = [int(np.flatnonzero(labels == label)[0]) for label in np.unique(labels)[:10]]
    fig, axes = plt.subplots(2, len(picks), figsize=(1.2 * len(picks), 2.8), squeeze=False)
    for column, index in enumerate(picks):
        for row, source in enumerate((images, reconstructions)):
            axes[row, column].imshow(source[index, ..., 0], cmap="gray", vmin=0, vmax=1)
            axes[row, column].set_xticks([])
            axes[row, column].set_yticks([])
        axes[0, column].set_title(f"label {labels[index]}", fontsize=9)
    axes[0, 0].set_ylabel(f"{split} image")
    axes[1, 0].set_ylabel("reconstruction")
    fig.suptitle(f"{split.capitalize()} images and their reconstructions - BCE {scores['test_bce']:.4f}, "
                 f"PSNR {scores['test_psnr']:.1f} dB")
    fig.savefig(path, dpi=120, bbox_inches="tight")
    plt.close(fig)


def plot_training_curves(history: dict[str, list[float]], split: str, path: Path) -> None:
    """Loss per epoch on the training images and on the scored set (Keras' validation data)."""
    plt = pyplot()

    epochs = np.arange(1, len(history["loss"]) + 1)
    fig, ax = plt.subplots(figsize=(6, 4))
    ax.plot(epochs, history["loss"], marker="o", label="training loss")
    ax.plot(epochs, history["val_loss"], marker="o", label=f"{split}-set loss")
    ax.set_xlabel("epoch")
    ax.xaxis.set_major_locator(plt.MaxNLocator(integer=True))
    ax.set_xlim(0.5, len(epochs) + 0.5)  # whole epochs on the axis, even after a single one
    ax.set_ylabel("binary cross-entropy per pixel")
    ax.set_title(f"Training curves - final {split}-set BCE {history['val_loss'][-1]:.4f}")
    ax.grid(alpha=0.3)
    ax.legend()
    fig.savefig(path, dpi=120, bbox_inches="tight")
    plt.close(fig)


def plot_embeddings(clusterings: list[Clustering], labels: np.ndarray, split: str, path: Path) -> None:
    """The codes' 2-D embeddings (n, 2), coloured by true label (top) and by KMeans cluster (bottom)."""
    plt = pyplot()

    titles = {"pca": "PCA", "tsne": "t-SNE", "umap": "UMAP"}
    plotted = [clustering for clustering in clusterings if clustering.features == "latent"
               and clustering.clusterer == "kmeans" and clustering.reduction in titles]
    classes = np.unique(labels)
    colours = plt.get_cmap("tab10" if len(classes) <= 10 else "tab20")
    label_colour = np.searchsorted(classes, labels)
    fig, axes = plt.subplots(2, len(plotted), figsize=(5 * len(plotted), 10), squeeze=False)
    for column, clustering in enumerate(plotted):
        # Colour each cluster like the class it is matched to, so the two rows compare at a glance.
        counts, matched_rows, matched_columns = contingency(labels, clustering.clusters)
        class_of_cluster = np.full(counts.shape[1], len(classes))
        class_of_cluster[matched_columns] = matched_rows
        cluster_colour = class_of_cluster[np.unique(clustering.clusters, return_inverse=True)[1]]
        points = clustering.embedding
        for row, colour in enumerate((label_colour, cluster_colour)):
            ax = axes[row, column]
            ax.scatter(points[:, 0], points[:, 1], c=colour, cmap=colours, vmin=0, vmax=colours.N - 1,
                       s=2, alpha=0.7, linewidths=0)
            ax.set_xticks([])
            ax.set_yticks([])
        name, scores = titles[clustering.reduction], clustering.scores
        axes[0, column].set_title(f"{name} of the codes, coloured by true digit")
        axes[1, column].set_title(f"{name}: KMeans clusters - NMI {scores['nmi']:.2f}, ACC {scores['acc']:.2f}")
    handles = [plt.Line2D([], [], marker="o", linestyle="", color=colours(i), label=str(label))
               for i, label in enumerate(classes)]
    fig.legend(handles=handles, title="digit (bottom: matched cluster)", loc="center left",
               bbox_to_anchor=(0.92, 0.5))
    fig.suptitle(f"{split.capitalize()}-set codes in 2-D (axes are arbitrary units)", fontsize=14)
    fig.savefig(path, dpi=100, bbox_inches="tight")
    plt.close(fig)


def plot_confusion(labels: np.ndarray, best: Clustering, split: str, path: Path) -> None:
    """Counts of true labels against the best row's clusters, each cluster in the column of the label it
    is matched to."""
    from scipy.optimize import linear_sum_assignment
    from sklearn.metrics import ConfusionMatrixDisplay, confusion_matrix

    plt = pyplot()
    classes, label_index = np.unique(labels, return_inverse=True)
    # Clusters are numbered 0..k-1 with k = the number of classes, so the matrix is square.
    counts = confusion_matrix(label_index, best.clusters, labels=range(len(classes)))
    _, cluster_of_class = linear_sum_assignment(counts, maximize=True)
    fig, ax = plt.subplots(figsize=(7, 6))
    display = ConfusionMatrixDisplay(counts[:, cluster_of_class], display_labels=classes)
    display.plot(ax=ax, cmap="Blues", values_format="d", text_kw={"fontsize": 7})
    ax.set_xticks(range(len(classes)), [f"c{cluster}" for cluster in cluster_of_class])
    ax.set_xlabel("cluster, ordered by matched digit")
    ax.set_ylabel("true digit")
    ax.set_title(f"Best row: {best.features} + {best.reduction} + {best.clusterer}\n"
                 f"ACC {best.scores['acc']:.3f}, NMI {best.scores['nmi']:.3f}")
    display.im_.colorbar.set_label(f"{split} images")
    fig.savefig(path, dpi=120, bbox_inches="tight")
    plt.close(fig)


def plot_clusters(images: np.ndarray, labels: np.ndarray, best: Clustering, split: str, path: Path,
                  shown: int = 8) -> None:
    """What each of the best row's clusters holds: a row per cluster, ordered by its majority digit, with
    that digit and the cluster's purity (the majority's share), `shown` of its images of that digit, and
    beside them up to `shown` of its images of other digits, each titled with the digit it truly is."""
    plt = pyplot()

    clusters = np.unique(best.clusters)
    majority = {cluster: np.bincount(labels[best.clusters == cluster]).argmax() for cluster in clusters}
    ordered = sorted(clusters, key=lambda cluster: (majority[cluster], cluster))
    fig, axes = plt.subplots(len(ordered), 2 * shown + 1, figsize=(0.62 * (2 * shown + 1) + 1.6, 0.78 * len(ordered)),
                             squeeze=False, gridspec_kw={"wspace": 0.08, "hspace": 0.35})
    for row, cluster in enumerate(ordered):
        members = np.flatnonzero(best.clusters == cluster)
        right = members[labels[members] == majority[cluster]]
        wrong = members[labels[members] != majority[cluster]]
        picks = [*right[:shown], *[None] * (shown - len(right[:shown])), None, *wrong[:shown]]
        for column, ax in enumerate(axes[row]):
            ax.set_xticks([])
            ax.set_yticks([])
            index = picks[column] if column < len(picks) else None
            if index is None:
                ax.axis("off")
                continue
            ax.imshow(images[index, ..., 0], cmap="gray_r", vmin=0, vmax=1)
            if column > shown:
                ax.set_title(str(labels[index]), fontsize=9, color="crimson", pad=2)
                for spine in ax.spines.values():
                    spine.set_color("crimson")
        axes[row, 0].set_ylabel(f"digit {majority[cluster]}\n{len(right) / len(members):.1%} of {len(members):,}",
                                rotation=0, ha="right", va="center", fontsize=9)
        if not len(wrong):
            axes[row, shown + 1].text(0, 0.5, "no image of another digit", fontsize=8, va="center")
    top = axes[0, 0].get_position().y1
    for (first, last), heading, colour in (((0, shown - 1), "its images of that digit", "black"),
                                           ((shown + 1, 2 * shown), "its images of other digits: what each truly is",
                                            "crimson")):
        middle = (axes[0, first].get_position().x0 + axes[0, last].get_position().x1) / 2
        fig.text(middle, top + 0.02, heading, ha="center", va="bottom", fontsize=9, color=colour)
    fig.suptitle(f"What each cluster holds ({split} images): best row {best.features} + {best.reduction} + "
                 f"{best.clusterer}, ACC {best.scores['acc']:.3f}\n(left: each cluster's majority digit and purity, "
                 "the share of its images that are that digit)", fontsize=10, y=top + 0.09)
    fig.savefig(path, dpi=110, bbox_inches="tight")
    plt.close(fig)


# ----------------------------------------------------------------------------------------------------
# Report
# ----------------------------------------------------------------------------------------------------


def format_table(rows: list[dict], markdown: bool = False) -> str:
    """The clustering rows as an aligned text table, or a Markdown one."""
    header = ["features", "reduction", "clusterer", "silhouette", "ARI", "NMI", "ACC", "seconds"]
    lines = [[row["features"], row["reduction"], row["clusterer"], f"{row['silhouette']:.3f}", f"{row['ari']:.3f}",
              f"{row['nmi']:.3f}", f"{row['acc']:.3f}", f"{row['seconds']:.1f}"] for row in rows]
    if markdown:
        return "\n".join(["| " + " | ".join(header) + " |", "|" + " --- |" * len(header)]
                         + ["| " + " | ".join(line) + " |" for line in lines])
    widths = [max(len(cell) for cell in column) for column in zip(header, *lines)]
    return "\n".join("  ".join(cell.ljust(width) if i < 3 else cell.rjust(width)
                               for i, (cell, width) in enumerate(zip(line, widths)))
                     for line in [header, *lines])


def library_versions() -> dict[str, str]:
    """Versions of Python and of the libraries whose numerics make the results, as each module states
    its own: a distribution's name differs between builds (tensorflow, tensorflow-cpu, tf-nightly)."""
    import keras
    import sklearn
    import tensorflow
    import umap

    modules = {"numpy": np, "tensorflow": tensorflow, "keras": keras, "scikit-learn": sklearn, "umap-learn": umap}
    return {"python": platform.python_version(),
            **{name: getattr(module, "__version__", "unknown") for name, module in modules.items()}}


def scored_arrays(codes: np.ndarray, labels: np.ndarray, clusterings: list[Clustering]) -> dict[str, np.ndarray]:
    """What codes.npz holds, so that a reader can plot or cluster the scored images again: their codes
    (n, d), true labels (n,), each reduction's embedding of them (FEATURES_REDUCTION, (n, 2) or (n, 10))
    and each row's clusters (clusters_FEATURES_REDUCTION_CLUSTERER, (n,))."""
    arrays = {"codes": codes, "labels": labels}
    for clustering in clusterings:
        name = f"{clustering.features}_{clustering.reduction}"
        if clustering.reduction != "none":
            arrays[name] = clustering.embedding.astype("float32")
        arrays[f"clusters_{name}_{clustering.clusterer}"] = clustering.clusters
    return arrays


def metrics_record(config: Config, data: Dataset, timings: dict[str, float], reconstruction: dict[str, float],
                   history: dict[str, list[float]], shared: dict[str, dict], clusterings: list[Clustering],
                   worker_peak_mb: float | None, self_label_changed: list[float] | None = None) -> dict:
    """Everything metrics.json records of a run (README.md lists the keys)."""
    return {
        "config": config_record(config),
        "versions": library_versions(),
        "data": {"source": data.source, "n_train": len(data.y_train), "n_test": len(data.y_test),
                 "n_classes": len(np.unique(data.y_test)), "silhouette_points": min(len(data.y_test), SILHOUETTE_POINTS)},
        "timings": timings,
        "peak_rss_mb": peak_memory_mb(),
        "worker_peak_rss_mb": worker_peak_mb,
        "reconstruction": reconstruction,
        "history": history,
        "pca_variance_kept": {kind: values["pca_variance_kept"] for kind, values in shared.items()},
        "reduce_shared_seconds": {kind: values["seconds"] for kind, values in shared.items()},
        "reused_model": None if config.reuse_model is None else str(config.reuse_model),
        "clustering": [clustering.row for clustering in clusterings],
        "self_label_changed": self_label_changed,
    }


def report_markdown(metrics: dict, best: dict) -> str:
    """report.md: a page that reads on its own next to the plots; `best` is the row confusion.png shows."""
    config, recon, data = metrics["config"], metrics["reconstruction"], metrics["data"]
    split = config["evaluate_on"]
    trained = (f"of which training {metrics['timings']['train']:.0f} s" if metrics["reused_model"] is None
               else f"no training: the model was reused from {metrics['reused_model']}/")
    if config["architecture"] == "dense":
        widths = "-".join(map(str, (IMAGE_SHAPE[0] * IMAGE_SHAPE[1], *DENSE_WIDTHS, config["bottleneck"])))
        model = f"N2D's fully connected autoencoder, {widths} and mirrored"
    elif config["bottleneck"]:
        model = f"the seed's with a dense bottleneck of {config['bottleneck']} numbers"
    else:
        model = "the seed's, 7x7x32 codes"
    sampled = (f" (on {data['silhouette_points']:,} of the points, drawn with the seed)"
               if data["silhouette_points"] < data["n_test"] else "")
    if config["noise"]:
        model += f"; denoising, Gaussian noise of standard deviation {config['noise']} on the training input"
    if config["augment"]:
        model += "; trained on shifted and rotated images"
    stage = ""
    if metrics["self_label_changed"] is not None:
        shares = ", ".join(f"{share:.2%}" for share in metrics["self_label_changed"])
        stage = (f"\nTrained for clustering (`self-label` row): {config['self_label']} rounds of "
                 f"{config['self_label_epochs']} epochs of self-labelling on the training images; share of them "
                 f"that changed cluster in each round: {shares}.")
    return f"""# Autoencoder on MNIST: results

Data: {data['source']}; {data['n_train']:,} training and {data['n_test']:,} {split} images, {data['n_classes']} classes.
Model: {model}.
Training: {config['epochs']} epochs, batch {config['batch_size']}, Adam, binary cross-entropy; seed {config['seed']}.{stage}
Wall time {metrics['timings']['total']:.0f} s, {trained}.

## Reconstruction ({split} set)

| BCE per pixel | MSE per pixel | PSNR (dB) |
| --- | --- | --- |
| {recon['test_bce']:.4f} | {recon['test_mse']:.4f} | {recon['test_psnr']:.2f} |

![reconstructions](reconstructions.png)

![training curves](training_curves.png)

## Clustering (k = {data['n_classes']}, {split} set)

`features`: raw pixels or the autoencoder's codes; `reduction`: none, 2-D PCA, t-SNE / UMAP to 2-D, or
UMAP to 10-d for clustering (`umap10`; `umap10+train`: fitted and clustered with the training images'
codes as unlabelled context, scored on the {split} images only), t-SNE and UMAP on
{config['pca_dims'] or 'all'} principal components; `clusterer`: KMeans or a Gaussian mixture (`gmm`),
each the best of 10 initialisations; `self-label` + `softmax`: the encoder trained for clustering, each
image in its most probable cluster (silhouette in the space of cluster probabilities). Silhouette is measured in the space that was clustered{sampled}; ARI, NMI
and ACC against the true labels; seconds are the reduction's.

{format_table(metrics['clustering'], markdown=True)}

Best row by ACC: {best['features']} + {best['reduction']} + {best['clusterer']}.

![embeddings](embeddings.png)

![confusion](confusion.png)

What the best row's clusters hold, and the images each got wrong:

![what each cluster holds](clusters.png)
"""


def write_outputs(folder: Path, outputs: dict[str, Callable[[Path], object]]) -> None:
    """Write each output file into `folder` with its function. A file that cannot be written (a full
    disk) stops the run with a WriteError that names it."""
    for name, write in outputs.items():
        try:
            write(folder / name)
        except OSError as error:
            raise WriteError(f"could not write {name} ({error.strerror or error})") from None


def print_summary(metrics: dict, out: Path) -> None:
    """The clustering table, the reconstruction scores and where the outputs are."""
    recon = metrics["reconstruction"]
    print()
    print(format_table(metrics["clustering"]))
    print(f"\nReconstruction ({metrics['config']['evaluate_on']} set): BCE {recon['test_bce']:.4f}, "
          f"MSE {recon['test_mse']:.4f}, PSNR {recon['test_psnr']:.2f} dB")
    print(f"Outputs in {out}/: metrics.json, report.md, autoencoder.keras, codes.npz, "
          "reconstructions.png, training_curves.png, embeddings.png, confusion.png, clusters.png"
          + (", classifier.keras" if metrics["self_label_changed"] is not None else ""))


# ----------------------------------------------------------------------------------------------------
# Run
# ----------------------------------------------------------------------------------------------------


def run(config: Config) -> None:
    """The pipeline: load -> build -> train -> encode -> reduce and cluster -> plot -> report."""
    stages = Stages()
    with stages("data"):
        data = load_data(config)
        reused = None if config.reuse_model is None else read_reused_run(config)
    with run_folders(config) as (staging, checkpoint):
        with stages("imports", "importing TensorFlow, Keras and umap-learn"):
            import_stack()
        import keras

        keras.utils.set_random_seed(config.seed)
        if reused is None:
            autoencoder, encoder = build_autoencoder(config.bottleneck, config.architecture, config.noise)
            with stages("train"):
                history = train(autoencoder, data, config, checkpoint)
        else:
            with stages("load model"):
                autoencoder = keras.saving.load_model(config.reuse_model / "autoencoder.keras")
                encoder, history = autoencoder.get_layer("encoder"), reused["history"]
        write_outputs(staging, {"autoencoder.keras": autoencoder.save})

        with stages("encode"):
            codes = encode(encoder, data.x_test)
            reconstructions = reconstruct(autoencoder, codes)
            reconstruction = score_reconstruction(data.x_test, reconstructions)
            context = encode(encoder, data.x_train) if config.embed_train else None

        with stages("reduce and cluster", f"reducing and clustering in {WORKERS} worker processes"):
            spaces, shared = prepare_all_spaces(data.x_test, codes, context, config)
            clusterings, worker_peak_mb = reduce_and_cluster(spaces, data.y_test, config)

        changed = None
        if config.self_label:
            with stages("self-label", f"training the encoder for clustering: {config.self_label} rounds of "
                                      f"{config.self_label_epochs} epochs"):
                start = time.perf_counter()
                classifier, changed = train_for_clustering(encoder, data.x_train, len(np.unique(data.y_test)),
                                                           config)
                clusterings.append(assign_clusters(classifier, data.x_test, data.y_test,
                                                   time.perf_counter() - start, config.seed))
            write_outputs(staging, {"classifier.keras": classifier.save})
        best = max(clusterings, key=lambda clustering: clustering.scores["acc"])  # on the labels: display only

        with stages("outputs"):
            split = config.evaluate_on
            write_outputs(staging, {
                "codes.npz": lambda path: np.savez_compressed(path, **scored_arrays(codes, data.y_test, clusterings)),
                "reconstructions.png": lambda path: plot_reconstructions(
                    data.x_test, reconstructions, data.y_test, reconstruction, split, path),
                "training_curves.png": lambda path: plot_training_curves(history, split, path),
                "embeddings.png": lambda path: plot_embeddings(clusterings, data.y_test, split, path),
                "confusion.png": lambda path: plot_confusion(data.y_test, best, split, path),
                "clusters.png": lambda path: plot_clusters(data.x_test, data.y_test, best, split, path),
            })
        stages.seconds["total"] = round(time.perf_counter() - stages.start, 2)
        metrics = metrics_record(config, data, stages.seconds, reconstruction, history, shared, clusterings,
                                 worker_peak_mb, changed)
        write_outputs(staging, {"report.md": lambda path: path.write_text(report_markdown(metrics, best.row)),
                                "metrics.json": lambda path: path.write_text(json.dumps(metrics, indent=2) + "\n")})
    print_summary(metrics, config.out)


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
        print(f"error: {error}; earlier results in {config.out}/ are untouched{saved_training(config)}",
              file=sys.stderr)
        return 1
    except (KeyboardInterrupt, Terminated) as stop:
        name, status = ("SIGTERM", 143) if isinstance(stop, Terminated) else ("Ctrl-C", 130)
        print(f"\nstopped by {name}; earlier results in {config.out}/ are untouched{saved_training(config)}",
              file=sys.stderr)
        return status
    return 0


# ----------------------------------------------------------------------------------------------------
# Machinery: what keeps a run safe and its terminal clean, apart from the pipeline
# ----------------------------------------------------------------------------------------------------


class Stages:
    """Why: a user sees progress and metrics.json records where the time went. Wall seconds per stage,
    and a line as each stage ends; a stage that can take more than a few seconds also says what it
    does as it starts."""

    def __init__(self) -> None:
        self.start = time.perf_counter()
        self.seconds: dict[str, float] = {}

    @contextlib.contextmanager
    def __call__(self, name: str, doing: str = "") -> Iterator[None]:
        if doing:
            print(f"  {doing}", flush=True)
        start = time.perf_counter()
        yield
        self.seconds[name] = round(time.perf_counter() - start, 2)
        print(f"[{time.perf_counter() - self.start:7.1f} s] {name} done in {self.seconds[name]:.1f} s",
              flush=True)


def import_stack() -> None:
    """Why: a bad flag or data file fails in a fraction of a second, and a good run's stderr stays empty.
    Imports TensorFlow, Keras and umap-learn (which imports TensorFlow too) once, quietly."""
    with quiet_stderr():
        import tensorflow as tf
        import umap  # noqa: F401

        # The device search prints a CUDA line on machines without a GPU driver; do it while muted.
        tf.config.list_physical_devices()
    # TensorFlow's own Python warnings (a function traced again for a smaller last batch) advise its
    # programmers, not this script's user; its errors still show.
    tf.get_logger().setLevel("ERROR")


@contextlib.contextmanager
def quiet_stderr() -> Iterator[None]:
    """Silence file descriptor 2: TensorFlow's native start-up lines bypass its log-level setting."""
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
    """Why: Ctrl-C reaches every process of the terminal, and the main process stops the workers itself;
    a worker that raised too would print its own traceback. And umap-learn imports TensorFlow for its
    ParametricUMAP, which no worker uses: barred, that import no longer costs each worker 3 s."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    sys.modules["tensorflow"] = None  # umap-learn then leaves ParametricUMAP out, with a silent ImportWarning


def peak_memory_mb() -> float | None:
    """Why: metrics.json tells a user how much memory a run of this size needs. Peak resident memory
    (RSS) of this process in MB; None where the system does not report it.

    On Linux, /proc's VmHWM: getrusage's ru_maxrss also keeps the peak of the process this one was
    forked from before it started this program. Elsewhere ru_maxrss, which may do the same."""
    try:
        with open("/proc/self/status") as status:
            return next(round(int(line.split()[1]) / 1024, 1) for line in status if line.startswith("VmHWM:"))
    except (OSError, StopIteration):
        pass
    try:
        import resource
    except ImportError:  # Windows
        return None
    # ru_maxrss counts kilobytes on Linux and bytes on macOS.
    scale = 1024 * 1024 if sys.platform == "darwin" else 1024
    return round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / scale, 1)


@contextlib.contextmanager
def run_folders(config: Config) -> Iterator[tuple[Path, Path]]:
    """Why: an earlier run's results stay whole until a new run has finished (Ctrl-C, an error or a full
    disk leave them as they were), and --resume finds training's checkpoint.

    Yields (staging folder, checkpoint folder) inside --out. Outputs are written to the private staging
    folder and moved into --out only once the run has finished; then the checkpoint is removed. A run
    that reuses a model trains nothing and leaves any checkpoint as it is.
    """
    checkpoint = config.out / ".checkpoint"
    saved_config = checkpoint / "config.json"
    if config.resume and config.reuse_model is None and saved_config.is_file():
        # The checkpoint holds training's state: only the flags that shape training must match.
        require_same_training(json.loads(saved_config.read_text()), config, f"the checkpoint in {checkpoint}",
                              "rerun with the same flags, or without --resume to start afresh")
    try:
        config.out.mkdir(parents=True, exist_ok=True)
        staging = Path(tempfile.mkdtemp(prefix=".partial-", dir=config.out))
    except OSError as error:
        raise InputError(f"--out {config.out} cannot be written ({error.strerror}); name a folder you "
                         "can write to") from None
    try:
        if config.reuse_model is None:
            if config.resume and not saved_config.is_file():
                print(f"note: no checkpoint in {checkpoint}; training starts at epoch 1", flush=True)
            if not config.resume:
                shutil.rmtree(checkpoint, ignore_errors=True)
            checkpoint.mkdir(exist_ok=True)
            write_outputs(checkpoint, {"config.json": lambda path: path.write_text(json.dumps(config_record(config)))})
        yield staging, checkpoint
        # Each finished output replaces its old version atomically; metrics.json, which marks a finished
        # run, comes last.
        for path in sorted(staging.iterdir(), key=lambda path: path.name == "metrics.json"):
            os.replace(path, config.out / path.name)
        if config.reuse_model is None:
            shutil.rmtree(checkpoint)
    finally:
        shutil.rmtree(staging, ignore_errors=True)


def read_reused_run(config: Config) -> dict:
    """Why: --reuse-model must never score a model that other data or flags made. The metrics.json of
    the finished run in --reuse-model, checked to match this run's training flags."""
    folder = config.reuse_model
    if not (folder / "metrics.json").is_file() or not (folder / "autoencoder.keras").is_file():
        raise InputError(f"--reuse-model {folder} holds no finished run (metrics.json and autoencoder.keras); "
                         "name the --out folder of a run that finished")
    try:
        reused = json.loads((folder / "metrics.json").read_text())
        if not {"config", "history", "timings"} <= set(reused):
            raise ValueError
    except (ValueError, TypeError):
        raise InputError(f"{folder}/metrics.json is not a metrics file this script wrote; name the --out "
                         "folder of a run that finished") from None
    require_same_training(reused["config"], config, f"the model in {folder}",
                          "give the same data and training flags, or drop --reuse-model")
    return reused


def changed_training_flag(saved: dict, config: Config) -> tuple[str, object, object] | None:
    """The first data or training flag on which a saved run's config (as config_record writes it, or
    as text) and `config` differ, as (name, saved value, this run's value); None when they agree. A run
    from before a flag existed ran with its default."""
    saved, ours = {**config_record(Config()), **saved}, config_record(config)
    for name in TRAINING_FLAGS:
        if str(saved[name]) != str(ours[name]):
            return name, saved[name], ours[name]
    return None


def require_same_training(saved: dict, config: Config, made: str, fix: str) -> None:
    """Refuse, naming the flag, when `made` (a saved model or checkpoint) came from other data or
    training flags than `config`'s; `fix` says what to do instead."""
    changed = changed_training_flag(saved, config)
    if changed is not None:
        name, theirs, ours = ["unset" if value is None else value for value in changed]
        raise InputError(f"{made} was made with {flag_of(name)} {theirs}, this run has {ours}; {fix}")


@contextlib.contextmanager
def signals_deferred() -> Iterator[Callable[[], None]]:
    """Why: a handler that raised inside TensorFlow's C++ calls crashed the process (a segmentation
    fault, about one stop in eight). Ctrl-C and SIGTERM are noted instead of raised at once; the
    function it yields raises the noted one (KeyboardInterrupt or Terminated), and training calls it
    between batches."""
    noted = []
    deferred = [signal.SIGTERM]
    if signal.getsignal(signal.SIGINT) is not signal.SIG_IGN:  # a background job keeps ignoring Ctrl-C
        deferred.append(signal.SIGINT)
    previous = {signum: signal.signal(signum, lambda signum, frame: noted.append(signum)) for signum in deferred}

    def raise_noted() -> None:
        if noted:
            raise KeyboardInterrupt if noted[0] == signal.SIGINT else Terminated

    try:
        yield raise_noted
    finally:
        for signum, handler in previous.items():
            signal.signal(signum, handler)


class Terminated(Exception):
    """Raised by the SIGTERM handler so that a `kill` unwinds like Ctrl-C."""


def raise_terminated(signum: int, frame) -> None:
    raise Terminated


def saved_training(config: Config) -> str:
    """Why: a stopped run tells its user what --resume would continue. What the checkpoint holds, read
    from its history.csv, as the end of a sentence."""
    log = config.out / ".checkpoint" / "history.csv"
    if config.reuse_model is not None or not log.is_file():
        return ""
    finished = len(log.read_text().splitlines()) - 1  # a header line, then one line per saved epoch
    if finished >= config.epochs:
        return "; training had finished: rerun with --resume to score its model without training again"
    if finished > 0:
        return f"; {finished} of {config.epochs} epochs are saved: rerun with --resume to continue"
    return ""


if __name__ == "__main__":
    sys.exit(main())
