"""Training images/s of the seed's autoencoder under the Keras backend that KERAS_BACKEND names.

    KERAS_BACKEND=tensorflow python benchmarks/backends.py
    KERAS_BACKEND=jax python benchmarks/backends.py     # needs jax, not in requirements.txt
    KERAS_BACKEND=torch python benchmarks/backends.py   # needs PyTorch, not in requirements.txt

The script trains on TensorFlow; this probe asks whether Keras on another backend would train the same
model faster on this CPU. It trains on random images (the speed does not depend on the pixels), batch
256, Adam and binary cross-entropy as the script does: one warm-up epoch on 2,560 images, then two
timed epochs on 20,480. The machine's speed drifts, so compare backends only in runs made back to
back, interleaved.
"""
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
import keras  # noqa: E402

import autoencoder_mnist  # noqa: E402

IMAGES, EPOCHS, BATCH = 20_480, 2, 256


def main() -> None:
    images = np.random.default_rng(0).random((IMAGES, *autoencoder_mnist.IMAGE_SHAPE, 1), dtype=np.float32)
    keras.utils.set_random_seed(0)
    autoencoder, _ = autoencoder_mnist.build_autoencoder()
    autoencoder.compile(optimizer="adam", loss="binary_crossentropy")
    warm_up = images[:10 * BATCH]
    autoencoder.fit(warm_up, warm_up, epochs=1, batch_size=BATCH, verbose=0)
    start = time.perf_counter()
    autoencoder.fit(images, images, epochs=EPOCHS, batch_size=BATCH, verbose=0)
    seconds = time.perf_counter() - start
    print(f"{keras.backend.backend()} {keras.__version__}: {EPOCHS * IMAGES / seconds:,.0f} training images/s")


if __name__ == "__main__":
    main()
