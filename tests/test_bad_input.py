"""Every bad input: exit status 2, one line on stderr naming the problem and the fix, nothing written.

Each case calls the script's main() in this process, as the command does, for it fails before the
stack is imported; a few run the command itself, to show that the process says the same."""
import json
import subprocess
import zipfile
from pathlib import Path

import numpy as np
import pytest

import autoencoder_mnist as am
from conftest import main_here, run_script


@pytest.fixture
def refuse(capsys):
    """Run main() with the given flags; returns what the command would: exit status, stdout, stderr."""
    def run(*args):
        try:
            status = main_here(*args)
        except SystemExit as stop:  # argparse's own exit on a bad flag
            status = stop.code
        captured = capsys.readouterr()
        return subprocess.CompletedProcess(args, status, captured.out, captured.err)
    return run


def good_arrays():
    rng = np.random.default_rng(0)
    return {"x_train": rng.integers(0, 256, (300, 28, 28), dtype=np.uint8),
            "y_train": np.arange(300, dtype=np.uint8) % 3,
            "x_test": rng.integers(0, 256, (200, 28, 28), dtype=np.uint8),
            "y_test": np.arange(200, dtype=np.uint8) % 3}


def npz_with(**changes):
    """A data file that is good but for `changes` (a value of None drops that array)."""
    def write(path):
        arrays = {**good_arrays(), **changes}
        np.savez(path, **{key: value for key, value in arrays.items() if value is not None})
        return path
    return write


def nan_images():
    images = good_arrays()["x_test"].astype(np.float32)
    images[3, 4, 5] = np.nan
    return images


def write_text(path):
    path.write_text("x_train,y_train\n1,2\n")
    return path


def truncated_npz(path):
    npz_with()(path)
    path.write_bytes(path.read_bytes()[:-200])
    return path


def corrupted_npz(path):
    npz_with()(path)
    content = bytearray(path.read_bytes())
    content[len(content) // 2: len(content) // 2 + 64] = bytes(64)
    path.write_bytes(bytes(content))
    return path


def header_promising_more(path):
    """An .npz whose x_test header claims a million images, stored uncompressed, the data short."""
    npz_with()(path)
    with zipfile.ZipFile(path) as archive:
        members = {info.filename: archive.read(info) for info in archive.infolist()}
    content = members["x_test.npy"]
    members["x_test.npy"] = content.replace(b"(200, 28, 28)", b"(1000000, 28, 28)", 1)
    with zipfile.ZipFile(path, "w") as archive:
        for name, data in members.items():
            archive.writestr(name, data)
    return path


BAD_DATA = {  # name: (how to make the file, words the message must hold)
    "missing file": (lambda path: path.parent / "nowhere.npz", "does not exist"),
    "a folder": (lambda path: path.parent, "is a folder"),
    "not an npz": (write_text, "is not an .npz"),
    "truncated npz": (truncated_npz, "is not an .npz"),
    "corrupted npz": (corrupted_npz, "is a damaged .npz"),
    "missing images": (npz_with(x_test=None), "lacks x_test"),
    "object arrays": (npz_with(y_train=np.array([object()] * 300, dtype=object)), "object arrays"),
    "a header promising more than the file": (header_promising_more,
                                              "x_test would take 784,000,000 bytes, more than the file holds"),
    "wrong image shape": (npz_with(x_train=np.zeros((300, 28, 27), np.uint8)), "x_train has shape (300, 28, 27)"),
    "wrong image rank": (npz_with(x_test=np.zeros((200, 784), np.uint8)), "x_test has shape (200, 784)"),
    "wrong image dtype": (npz_with(x_train=np.full((300, 28, 28), "a")), "x_train has dtype <U1"),
    "values out of range": (npz_with(x_test=np.full((200, 28, 28), 300, np.int16)), "values 300..300"),
    "negative values": (npz_with(x_test=np.full((200, 28, 28), -1.0)), "values -1.0..-1.0"),
    "NaN": (npz_with(x_test=nan_images()), "NaN or infinity"),
    "infinity": (npz_with(x_train=np.full((300, 28, 28), np.inf)), "NaN or infinity"),
    "all-black images": (npz_with(x_train=np.zeros((300, 28, 28), np.uint8)), "x_train holds one value (0)"),
    "few different images": (npz_with(x_test=np.repeat(good_arrays()["x_test"][:50], 4, axis=0)),
                             "the 200 scored images hold only 50 different ones"),
    "0/1 integers": (npz_with(x_test=(good_arrays()["x_test"] > 127).astype(np.uint8)),
                     "x_test holds integers 0..1: intensities 0..255 or 0/1 images?"),
    "scalings that differ": (npz_with(x_test=good_arrays()["x_test"] / np.float32(255)),
                             "x_train holds uint8 in 0..255 and x_test floats in [0, 1]; store both alike"),
    "counts differ": (npz_with(y_train=np.zeros(299, np.uint8)), "one per image of x_train (300)"),
    "no labels in the array": (npz_with(y_test=np.zeros(0, np.uint8)), "y_test has dtype uint8, shape (0,); labels"),
    "float labels": (npz_with(y_test=np.zeros(200, np.float32)), "labels must be class numbers 0..255"),
    "2-D labels": (npz_with(y_test=np.zeros((200, 1), np.uint8)), "shape (200, 1)"),
    "negative labels": (npz_with(y_test=np.full(200, -1, np.int64)), "values -1..-1"),
    "huge labels": (npz_with(y_train=np.full(300, 70000, np.int64)), "values 70000..70000"),
    "too few class names": (npz_with(class_names=np.array(["a", "b"])), "a name for each class 0..2"),
    "numbers as class names": (npz_with(class_names=np.arange(3)), "class_names has dtype int64"),
    "one class": (npz_with(y_test=np.zeros(200, np.uint8)), "single class"),
    "more classes than images": (npz_with(y_test=np.arange(200, dtype=np.uint8)), "200 test images for 200 clusters"),
}


def test_a_header_promising_more_than_the_memory_is_refused_before_numpy_allocates(tmp_path, refuse, monkeypatch):
    path = npz_with()(tmp_path / "digits.npz")  # 392.5 kB in all
    monkeypatch.setattr(am.os, "sysconf", lambda name: 1000 if name == "SC_PHYS_PAGES" else 100)
    out = tmp_path / "results"
    assert_refused(refuse("--data", path, "--out", out), "its arrays would take 392,500 bytes, more than this "
                   "machine's memory (100,000)", out)


def assert_refused(finished, words, out):
    assert finished.returncode == 2, finished.stdout + finished.stderr
    lines = finished.stderr.strip().splitlines()
    assert "Traceback" not in finished.stderr
    assert words in lines[-1], lines
    # argparse prints its usage line before the error; everything else says exactly one line.
    usage = lines[0].startswith("usage:") and all(line.startswith(" ") for line in lines[1:-1])
    assert len(lines) == 1 or usage, lines
    assert not out.exists() or not [path for path in out.iterdir()]


@pytest.mark.parametrize("name", BAD_DATA)
def test_bad_data_file_is_refused(name, tmp_path, refuse):
    make, words = BAD_DATA[name]
    (tmp_path / "data").mkdir()
    path = make(tmp_path / "data" / "digits.npz")
    out = tmp_path / "results"
    assert_refused(refuse("--data", path, "--out", out), words, out)


def test_validation_split_larger_than_half_the_training_set_is_refused(tmp_path, refuse):
    path = npz_with()(tmp_path / "digits.npz")  # 300 training images cannot spare 200 for validation
    out = tmp_path / "results"
    assert_refused(refuse("--data", path, "--evaluate-on", "validation", "--out", out), "too few to hold out", out)


BAD_FLAGS = {
    "zero epochs": (["--epochs", "0"], "0 must be 1 or more"),
    "negative epochs": (["--epochs", "-3"], "-3 must be 1 or more"),
    "non-numeric epochs": (["--epochs", "ten"], "'ten' is not a whole number"),
    "fractional train size": (["--train-size", "0.5"], "'0.5' is not a whole number"),
    "zero test size": (["--test-size", "0"], "must be 1 or more"),
    "negative seed": (["--seed", "-1"], "must be 0 or more"),
    "unknown split": (["--evaluate-on", "train"], "invalid choice: 'train'"),
    "train size larger than the data": (["--train-size", "60001"], "larger than the 60000 train images"),
    "test size larger than the data": (["--test-size", "10001"], "larger than the 10000 test images"),
    "test size too small to cluster": (["--test-size", "50"], "use --test-size 100 or more"),
    "unknown flag": (["--epoch", "2"], "unrecognized arguments"),
    "bottleneck of one number": (["--bottleneck", "1"], "--bottleneck 1 leaves no second dimension"),
    "dense model without a code size": (["--architecture", "dense"], "--architecture dense needs --bottleneck N"),
    "unknown recipe": (["--recipe", "best"], "invalid choice: 'best'"),
    "negative noise": (["--noise", "-0.1"], "-0.1 must be 0 or more"),
    "negative student epochs": (["--student", "-1"], "-1 must be 0 or more"),
    "too few training images for the student": (["--student", "1", "--train-size", "50"],
                                                 "use --train-size 100 or more"),
    "a pixel twin of nothing": (["--pixel-twin"], "--pixel-twin repeats --embed-train and --student"),
    "one cluster": (["--clusters", "1"], "1 must be 2 or more"),
    "noise that is not a number": (["--noise", "nan"], "'nan' is not a number"),
}


@pytest.mark.parametrize("name", BAD_FLAGS)
def test_bad_flag_is_refused(name, tmp_path, refuse):
    flags, words = BAD_FLAGS[name]
    out = tmp_path / "results"
    assert_refused(refuse(*flags, "--out", out), words, out)


def test_the_command_itself_refuses_with_one_line(tmp_path):
    out = tmp_path / "results"
    assert_refused(run_script("--data", "nowhere.npz", "--out", out), "does not exist", out)


def test_out_that_is_a_file_is_refused(tmp_path, refuse):
    out = tmp_path / "results"
    out.write_text("not a folder")
    finished = refuse("--out", out)
    assert finished.returncode == 2 and "is a file; name a folder" in finished.stderr
    assert out.read_text() == "not a folder"


@pytest.mark.parametrize("out", ["{file}/results", "/proc/autoencoder-results"])
def test_out_that_cannot_be_written_is_refused(out, tmp_path, refuse):
    blocker = tmp_path / "file"
    blocker.write_text("")
    finished = refuse("--epochs", "1", "--out", out.format(file=blocker))
    assert_refused(finished, "cannot be written", Path(out.format(file=blocker)))
    assert finished.stderr.startswith("error: --out") and len(finished.stderr.strip().splitlines()) == 1


def test_resume_with_other_training_flags_or_no_stopped_run_is_refused(tmp_path, refuse):
    out = tmp_path / "results"
    (out / ".checkpoint").mkdir(parents=True)
    (out / ".checkpoint" / "config.json").write_text('{"epochs": 3}')
    finished = refuse("--resume", out, "--epochs", "20")
    assert_refused(finished, f"--resume {out} continues a run made with --epochs 3; drop --epochs 20, or start "
                   "afresh with --out", out / "nothing")
    assert sorted(path.name for path in out.iterdir()) == [".checkpoint"]
    (tmp_path / "finished").mkdir()
    assert_refused(refuse("--resume", tmp_path / "finished"), "holds no stopped run (no .checkpoint/config.json); "
                   "start afresh with --out", tmp_path / "finished")


def test_reuse_model_from_a_folder_without_a_finished_run_is_refused(tmp_path, refuse):
    (tmp_path / "empty").mkdir()
    out = tmp_path / "results"
    assert_refused(refuse("--reuse-model", tmp_path / "empty", "--out", out), "holds no finished run", out)


DAMAGED_METRICS = {
    "cut short": lambda text: text[:len(text) // 3],
    "empty": lambda text: "",
    "of another version": lambda text: text.replace('"images_per_second"', '"speed"'),
    "not an object": lambda text: "[1, 2]",
}


@pytest.mark.parametrize("damage", DAMAGED_METRICS)
def test_reuse_model_with_a_damaged_metrics_file_is_refused_and_left_as_it_was(damage, tmp_path, refuse):
    saved = tmp_path / "earlier"
    saved.mkdir()
    (saved / "autoencoder.keras").write_bytes(b"")
    history = {"loss": [0.2], "val_loss": [0.2], "images_per_second": [900.0]}
    text = DAMAGED_METRICS[damage](json.dumps({"config": {}, "history": history, "timings": {}}))
    (saved / "metrics.json").write_text(text)
    out = tmp_path / "results"
    assert_refused(refuse("--reuse-model", saved, "--out", out),
                   "metrics.json is damaged or not a metrics file of this version of the script", out)
    assert (saved / "metrics.json").read_text() == text


def test_reuse_model_trained_with_other_flags_is_refused(tmp_path, refuse):
    saved = tmp_path / "earlier"
    saved.mkdir()
    (saved / "autoencoder.keras").write_bytes(b"")
    config = {"data": None, "train_size": None, "evaluate_on": "test", "bottleneck": 0, "epochs": 3, "seed": 0}
    history = {"loss": [0.2], "val_loss": [0.2], "images_per_second": [900.0]}
    (saved / "metrics.json").write_text(json.dumps({"config": config, "history": history, "timings": {}}))
    out = tmp_path / "results"
    assert_refused(refuse("--reuse-model", saved, "--out", out), "made with --epochs 3, this run has 20", out)


def test_missing_bundled_data_says_how_to_restore_it(tmp_path, refuse, monkeypatch):
    monkeypatch.setattr(am, "BUNDLED_DATA", tmp_path / "data" / "mnist.npz")
    finished = refuse("--out", tmp_path / "results")
    assert_refused(finished, "mnist.npz is missing; restore it with `git checkout data/mnist.npz`",
                   tmp_path / "results")
    assert "--data" in finished.stderr
