"""Write Fashion-MNIST in Keras' mnist.npz layout: the project's second benchmark, pictures of clothes
unlike digits, for checking that a recipe does not hold for MNIST alone (`--data`).

    python benchmarks/fashion_mnist.py [--out fashion_mnist.npz] [--idx FOLDER]

Zalando's 60,000 training and 10,000 test images (28x28, uint8), labels 0-9 and their names, as they come: from
Keras' loader where it can download them, else from the idx files of a folder: by default Debian's
(`apt-get install dataset-fashion-mnist`, which puts them in /usr/share/datasets/fashion-mnist).
Writers of the recipes chose nothing on this set before it became a benchmark.
"""
import argparse
import gzip
import sys
from pathlib import Path

import numpy as np

DEBIAN = Path("/usr/share/datasets/fashion-mnist")
CLASS_NAMES = ["T-shirt/top", "Trouser", "Pullover", "Dress", "Coat", "Sandal", "Shirt", "Sneaker", "Bag",
               "Ankle boot"]  # Zalando's names of the labels 0-9, which the script's plots show
FILES = {"x_train": "train-images-idx3-ubyte.gz", "y_train": "train-labels-idx1-ubyte.gz",
         "x_test": "t10k-images-idx3-ubyte.gz", "y_test": "t10k-labels-idx1-ubyte.gz"}


def read_idx(path: Path) -> np.ndarray:
    """A gzipped idx file of unsigned bytes: its magic number gives the count of dimensions, then one
    big-endian 32-bit size per dimension, then the data."""
    raw = gzip.decompress(path.read_bytes())
    if raw[:3] != b"\0\0\x08":
        raise ValueError(f"{path} is not an idx file of unsigned bytes")
    shape = tuple(int.from_bytes(raw[4 + 4 * axis:8 + 4 * axis], "big") for axis in range(raw[3]))
    return np.frombuffer(raw, np.uint8, offset=4 + 4 * len(shape)).reshape(shape)


def from_keras() -> dict[str, np.ndarray] | None:
    """The four arrays from keras.datasets.fashion_mnist, or None where it cannot download them."""
    try:
        from keras.datasets import fashion_mnist

        (x_train, y_train), (x_test, y_test) = fashion_mnist.load_data()
    except Exception:  # no network, a proxy, a half-written cache: the idx files are the fallback
        return None
    return {"x_train": x_train, "y_train": y_train, "x_test": x_test, "y_test": y_test}


def main() -> None:
    arguments = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    arguments.add_argument("--out", type=Path, default=Path("fashion_mnist.npz"), help="the .npz to write")
    arguments.add_argument("--idx", type=Path, help=f"a folder of the four idx files (default: Keras' "
                           f"download, else {DEBIAN})")
    args = arguments.parse_args()
    arrays, source = None if args.idx else from_keras(), "Keras' download"
    if arrays is None:
        folder = args.idx or DEBIAN
        if missing := [name for name in FILES.values() if not (folder / name).is_file()]:
            why = "" if args.idx else " and Keras could not download Fashion-MNIST"
            print(f"error: {folder} lacks {', '.join(missing)}{why}; run `apt-get install "
                  "dataset-fashion-mnist`, or pass --idx a folder of the four files", file=sys.stderr)
            sys.exit(2)
        try:
            arrays, source = {key: read_idx(folder / name) for key, name in FILES.items()}, str(folder)
        except (ValueError, OSError, EOFError) as error:  # not idx, not gzip, cut short
            print(f"error: {folder} holds a damaged idx file ({error}); reinstall "
                  "dataset-fashion-mnist, or pass --idx a folder of good files", file=sys.stderr)
            sys.exit(2)
    partial = args.out.with_name(args.out.name + ".partial.npz")  # written whole, then renamed
    np.savez_compressed(partial, **arrays, class_names=np.array(CLASS_NAMES))
    partial.replace(args.out)
    print(f"{args.out}: {len(arrays['y_train']):,} training and {len(arrays['y_test']):,} test images "
          f"of Fashion-MNIST, from {source}")


if __name__ == "__main__":
    main()
