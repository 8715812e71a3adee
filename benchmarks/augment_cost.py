"""What the student's augmentation costs under this Keras backend: its images/s with and without it.

    KERAS_BACKEND=jax python benchmarks/augment_cost.py [--images 20000] [--epochs 2]

The student as the script builds it, trained by the script's `learn` on random targets (the speed
does not depend on them), then the same network without its augmentation layers. Each line:
images/s of the last epoch (the first compiles). The machine's speed
drifts: compare backends only within a round, run back to back.
"""
import argparse
import sys

import numpy as np

from common import am


def main() -> None:
    arguments = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    arguments.add_argument("--images", type=int, default=20000, help="training images per epoch")
    arguments.add_argument("--epochs", type=int, default=2, help="epochs; the last one is timed")
    args = arguments.parse_args()
    am.import_stack()
    import keras

    am.set_seed(0)
    images = np.load(am.check_bundled_data())["x_train"][:args.images, ..., None] / np.float32(255)
    targets = np.random.default_rng(0).integers(0, 10, len(images))
    for augmented in (True, False):
        student = am.build_student(10)
        if not augmented:  # the same layers from the augmentation's output on
            student = keras.Model(student.get_layer("augment").output, student.output)
        am.learn(student, images, targets, args.epochs)  # progress() logs each epoch's images/s
        speed, backend = student.history.history["images_per_second"][-1], keras.config.backend()
        print(f"{backend} {sys.modules[backend].__version__}, augmentation "
              f"{'on ' if augmented else 'off'}: {speed:,.0f} images/s", flush=True)


if __name__ == "__main__":
    main()
