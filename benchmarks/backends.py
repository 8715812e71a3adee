"""Training images/s of the seed's autoencoder under the Keras backend that KERAS_BACKEND names.

    KERAS_BACKEND=tensorflow python benchmarks/backends.py
    KERAS_BACKEND=jax python benchmarks/backends.py     # needs jax, not in requirements.txt
    KERAS_BACKEND=torch python benchmarks/backends.py   # needs PyTorch, not in requirements.txt

The script trains on TensorFlow; this probe asks whether Keras on another backend would train the same
model faster on this CPU. It trains with the script's own train() (batch 256, Adam and binary
cross-entropy) on random images (the speed does not depend on the pixels): three epochs of 20,480
images, the first a warm-up; it reports the mean of the other two epochs' images/s, as the script
logs them. The machine's speed drifts, so compare backends only in runs made back to back, interleaved.
"""
import statistics
import sys
import tempfile
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
import keras  # noqa: E402

import autoencoder_mnist as am  # noqa: E402

IMAGES, EPOCHS = 20_480, 3


def main() -> None:
    images = np.random.default_rng(0).random((IMAGES, 28, 28, 1), dtype=np.float32)
    labels = np.zeros(IMAGES, dtype=np.int64)
    data = am.Dataset(images, labels, images[:am.MIN_IMAGES], labels[:am.MIN_IMAGES], np.arange(am.MIN_IMAGES),
                      10, 1.0, "floats in [0, 1]", "random images", None, "class")
    keras.utils.set_random_seed(0)
    autoencoder, _ = am.build_autoencoder()
    with tempfile.TemporaryDirectory() as checkpoint:
        history = am.train(autoencoder, data, EPOCHS, Path(checkpoint))
    speed = statistics.mean(history["images_per_second"][1:])
    print(f"{keras.backend.backend()} {keras.__version__}: {speed:,.0f} training images/s")


if __name__ == "__main__":
    main()
