"""Write scikit-learn's bundled 8x8 digits in Keras' mnist.npz layout: a second data set at hand, for
checking that a recipe generalises beyond MNIST (`--data`).

    python benchmarks/digits8x8.py [--out digits8x8.npz] [--test 500]

The 1,797 images (16 grey levels) are scaled to 20x20 pixels and centred in a 28x28 frame, as MNIST's
digits are, with intensities 0-255 as uint8; --test of them, drawn by label with seed 0, are the test
split, the rest the training split. Writers of the recipe never chose anything on this set.
"""
import argparse
from pathlib import Path

import numpy as np
from scipy.ndimage import zoom
from sklearn.datasets import load_digits


def mnist_layout(test: int) -> dict[str, np.ndarray]:
    """The digits as x_train (n, 28, 28) uint8, y_train (n,) uint8, x_test and y_test."""
    digits = load_digits()
    scaled = np.clip(zoom(digits.images / 16.0, (1, 2.5, 2.5), order=1), 0, 1)
    images = np.zeros((len(scaled), 28, 28), dtype=np.uint8)
    images[:, 4:24, 4:24] = np.round(scaled * 255).astype(np.uint8)
    rng = np.random.default_rng(0)
    held = np.zeros(len(images), dtype=bool)
    for label in np.unique(digits.target):  # the same share of each digit in the test split
        members = np.flatnonzero(digits.target == label)
        held[rng.choice(members, round(test * len(members) / len(images)), replace=False)] = True
    labels = digits.target.astype(np.uint8)
    return {"x_train": images[~held], "y_train": labels[~held], "x_test": images[held], "y_test": labels[held]}


def main() -> None:
    arguments = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    arguments.add_argument("--out", type=Path, default=Path("digits8x8.npz"), help="the .npz to write")
    arguments.add_argument("--test", type=int, default=500, help="images in the test split (default: 500)")
    args = arguments.parse_args()
    arrays = mnist_layout(args.test)
    np.savez_compressed(args.out, **arrays)
    print(f"{args.out}: {len(arrays['y_train'])} training and {len(arrays['y_test'])} test images")


if __name__ == "__main__":
    main()
