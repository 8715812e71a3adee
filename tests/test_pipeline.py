"""End to end: the real command on a small sample, its outputs, reproducibility, interruption, resume.

Three cold starts of the command, in processes of their own: a run stopped by Ctrl-C (in a process
group of its own, as a terminal's Ctrl-C needs) and a run on JAX, both started with the session beside
the other tests (conftest.BACKGROUND), and one killed by SIGKILL. Every other run calls the script's
main() in this process, sharing one TensorFlow start and one pool of worker processes."""
import base64
import json
import math
import os
import re
import resource
import shutil
import signal
import subprocess
import sys
import time

import numpy as np
import pytest

import autoencoder_mnist as am
from conftest import BACKGROUND, EARLIER, REPO, SCRIPT, SMALL, main_here, script_env, stderr_lines

sys.path.insert(0, str(REPO / "benchmarks"))
import epochs  # noqa: E402
import refine  # noqa: E402
import seeds  # noqa: E402
import student  # noqa: E402

OUTPUTS = ["metrics.json", "report.md", "autoencoder.keras", "encoder.keras", "codes.npz", "reconstructions.png",
           "training_curves.png", "embeddings.png", "confusion.png", "clusters.png", "embeddings.html"]
# Bokeh draws embeddings.html into shadow roots: every element of the page, theirs included.
EVERY_ELEMENT = """function every(root) { return [...root.querySelectorAll('*')].flatMap(
    element => [element, ...(element.shadowRoot ? every(element.shadowRoot) : [])]); }"""


def scores(out):
    """The numbers of a run that must repeat with the same seed: all but the timings."""
    metrics = json.loads((out / "metrics.json").read_text())
    rows = [{k: v for k, v in row.items() if not k.endswith("seconds")} for row in metrics["clustering"]]
    return rows, metrics["reconstruction"], metrics["history"]["loss"], metrics["history"]["val_loss"]


def rows_beyond(earlier, later):
    """Assert that `later` scores repeat `earlier`'s, rows and all, and return its extra rows."""
    (rows, *rest), (earlier_rows, *earlier_rest) = later, earlier
    assert rows[:len(earlier_rows)] == earlier_rows and rest == earlier_rest
    return rows[len(earlier_rows):]


def earlier_results(run, out):
    """A folder `out` holding a copy of a finished run's outputs, and those outputs' bytes by name."""
    out.mkdir()
    earlier = {name: (run / name).read_bytes() for name in OUTPUTS}
    for name, content in earlier.items():
        (out / name).write_bytes(content)
    return out, earlier


def test_small_run_writes_every_output(small_run):
    assert sorted(path.name for path in small_run.iterdir()) == sorted(OUTPUTS + [am.LOCK])
    metrics = json.loads((small_run / "metrics.json").read_text())
    assert metrics["peak_rss_mb"] > 100, "the main process imports the stack: hundreds of MB"
    assert {"train", "total"} <= set(metrics["timings"]) and metrics["latent_pca_variance_kept"] < 1
    import keras

    backend = keras.config.backend()  # TensorFlow unless KERAS_BACKEND names another
    assert set(metrics["versions"]) == {"python", "backend", "numpy", backend, "keras", "scikit-learn",
                                        "umap-learn"} and metrics["versions"]["backend"] == backend
    assert metrics["data"] == {"source": "data/mnist.npz (bundled, sha256 checked)", "scaling": "uint8 in 0..255, "
                               "divided by 255", "n_train": 1000, "n_test": 300, "labelled": True, "n_classes": 10,
                               "clusters": 10, "class_names": None, "silhouette_points": 300}
    history = metrics["history"]
    assert len(history["loss"]) == len(history["val_loss"]) == len(history["images_per_second"]) == 2
    assert history["loss"][-1] < history["loss"][0] and history["val_loss"][-1] < history["val_loss"][0]
    recon = metrics["reconstruction"]
    assert 0 < recon["bce"] < math.log(2) and 0 < recon["mse"] < 1 and recon["psnr"] > 0
    # The reported BCE is Keras' own validation loss of the final model: autoencoder.predict
    # reconstructs as the decoder of the codes does.
    assert abs(recon["bce"] - history["val_loss"][-1]) < 1e-4
    expected_rows = [
        ("pixels", "none", "kmeans"), ("pixels", "pca", "kmeans"), ("pixels", "umap", "kmeans"),
        ("pixels", "umap10", "kmeans"), ("pixels", "umap10", "gmm"),
        ("latent", "none", "kmeans"), ("latent", "pca", "kmeans"), ("latent", "tsne", "kmeans"),
        ("latent", "umap", "kmeans"), ("latent", "umap10", "kmeans"), ("latent", "umap10", "gmm"),
    ]
    assert [(row["features"], row["reduction"], row["clusterer"]) for row in metrics["clustering"]] == expected_rows
    for row in metrics["clustering"]:
        # Even two epochs on 1,000 images cluster far better than chance (ACC 0.1).
        assert row["acc"] > 0.25, row
    report = (small_run / "report.md").read_text()
    for image in ("reconstructions.png", "training_curves.png", "embeddings.png", "confusion.png", "clusters.png"):
        assert f"]({image})" in report
    assert report.startswith("# Autoencoder on MNIST: results\n")
    assert "uint8 in 0..255, divided by 255" in report and "10 classes" in report


def test_report_says_what_each_student_learned(small_run):
    metrics = json.loads((small_run / "metrics.json").read_text())
    assert "student" not in am.report_markdown(metrics)
    ran = {**metrics, "student": {"latent": {"clean": 0.857, "kept": 0.998, "changed": 0.0213},
                                  "pixels": {"clean": 0.802, "kept": 0.95, "changed": 0.04}}}
    report = am.report_markdown(ran)
    assert ("A student learned the training codes' clean clusters (85.7% of the images) and gave back 99.8% of "
            "them.") in report
    assert "the training pixels' clean clusters (80.2% of the images)" in report


def test_codes_npz_holds_the_scored_images_and_every_rows_clusters(small_run):
    from sklearn.metrics import adjusted_rand_score, normalized_mutual_info_score

    metrics = json.loads((small_run / "metrics.json").read_text())
    with np.load(small_run / "codes.npz") as saved:
        arrays = dict(saved)
    assert arrays["codes"].shape == (300, 1568) and arrays["labels"].shape == (300,)
    # The scored images' positions in the data file, and their labels, in the order the loader gives them.
    data = am.load_data(am.parse_config(SMALL))
    with np.load(REPO / "data" / "mnist.npz") as mnist:
        assert arrays["labels"].tolist() == mnist["y_test"][arrays["indices"]].tolist() == data.y_test.tolist()
    assert arrays["latent_tsne"].shape == (300, 2) and arrays["pixels_umap10"].shape == (300, 10)
    # Each row's scores follow from its saved clusters and the saved labels.
    for row in metrics["clustering"]:
        clusters = arrays[f"clusters_{row['features']}_{row['reduction']}_{row['clusterer']}"]
        assert normalized_mutual_info_score(arrays["labels"], clusters) == pytest.approx(row["nmi"], abs=1e-12)
        assert adjusted_rand_score(arrays["labels"], clusters) == pytest.approx(row["ari"], abs=1e-12)


def test_saved_encoder_takes_images_as_the_file_stores_them_and_gives_the_runs_codes(small_run):
    # The README's two lines: images as the .npz holds them (uint8, (n, 28, 28)) in, flat codes out.
    import keras

    encoder = keras.saving.load_model(small_run / "encoder.keras")
    with np.load(small_run / "codes.npz") as saved, np.load(REPO / "data" / "mnist.npz") as mnist:
        images, codes = mnist["x_test"][saved["indices"]], saved["codes"]
    assert images.dtype == np.uint8 and images.shape == (300, 28, 28)
    assert np.allclose(encoder.predict(images, verbose=0), codes, atol=1e-5)
    autoencoder = keras.saving.load_model(small_run / "autoencoder.keras")
    assert tuple(autoencoder.get_layer("encoder").output.shape) == (None, 7, 7, 32)


def test_reused_model_scores_the_same_and_trains_students_after_a_full_disk_kept_the_earlier_results(
        small_run, tmp_path, capsys, monkeypatch):
    out, earlier = earlier_results(small_run, tmp_path / "rescored")
    flags = [*SMALL, "--reuse-model", small_run, "--embed-train", "--student", "1", "--pixel-twin", "--out", out]
    # On a disk that takes no file over 100 kB, as on a full one: the first output, autoencoder.keras,
    # cannot be written. One line; the earlier results whole, nothing half-written beside them.
    # (Python ignores SIGXFSZ, so a write past the limit raises.)
    soft, hard = resource.getrlimit(resource.RLIMIT_FSIZE)
    resource.setrlimit(resource.RLIMIT_FSIZE, (10**5, hard))
    try:
        status = main_here(*flags)
    finally:
        resource.setrlimit(resource.RLIMIT_FSIZE, (soft, hard))
    assert status == 1 and stderr_lines(capsys.readouterr().err) == [
        f"error: could not write autoencoder.keras (File too large); earlier results in {out}/ are untouched"]
    assert sorted(path.name for path in out.iterdir()) == sorted(OUTPUTS + [am.LOCK])
    assert {name: (out / name).read_bytes() for name in OUTPUTS} == earlier

    # SIGTERM while the student trains: one line, status 143, the earlier results whole.
    progress = am.progress

    def killed_in_the_students_first_epoch(what, epochs, images):
        callback = progress(what, epochs, images)
        if what == "student ":
            callback.on_epoch_end = lambda epoch, logs: os.kill(os.getpid(), signal.SIGTERM)
        return callback

    with monkeypatch.context() as patched:  # the reductions, done below, are not needed to get there
        patched.setattr(am, "progress", killed_in_the_students_first_epoch)
        patched.setattr(am, "reduce_and_cluster", lambda *args: ([], {}))
        status = main_here(*flags)
    lines = stderr_lines(capsys.readouterr().err)
    assert status == 143 and lines == [f"stopped by SIGTERM; earlier results in {out}/ are untouched"], lines
    assert {name: (out / name).read_bytes() for name in OUTPUTS} == earlier

    # The stage is given the training images and their codes or pixels, nothing else: no label, no
    # scored image. One epoch teaches a student too little to be trusted (checked below): here every
    # student is trusted, so that its row, student.keras and report follow.
    given, stage = [], am.train_for_clustering
    monkeypatch.setattr(am, "train_for_clustering", lambda *args: given.append(args) or stage(*args))
    monkeypatch.setattr(am, "TRUSTED", 0.0)
    assert main_here(*flags) == 0
    captured = capsys.readouterr()
    assert not stderr_lines(captured.err), captured.err
    assert "  epoch 1/2" not in captured.out  # each epoch's line: its loss and speed
    assert re.search(r"student epoch 1/1  loss \d\.\d{4}  [\d,]+ images/s, ", captured.out)
    assert "student of the codes done" in captured.out and "student of the pixels done" in captured.out
    data = am.load_data(am.parse_config(SMALL))
    (codes, images, n_clusters, config), (pixels, *same) = given
    assert codes.shape == (1000, 1568) and np.array_equal(pixels, am.intensities(data.x_train).reshape(1000, 784))
    assert np.array_equal(images, data.x_train) and n_clusters == 10 and config.student == 1
    assert all(a is b for a, b in zip(same, (images, n_clusters, config)))
    scored = {image.tobytes() for image in data.x_test}
    assert not any(image.tobytes() in scored for image in am.intensities(images))
    # The same model, the same seed: every row of the trained run again, each kind's umap10+train
    # rows after its umap10 rows, then the students of the codes and of the pixels.
    rows = scores(out)[0]
    assert [row for row in rows if row["reduction"] not in ("umap10+train", "student")] == scores(small_run)[0]
    assert [(row["features"], row["reduction"]) for row in rows][5:7] == [("pixels", "umap10+train")] * 2
    assert [(row["features"], row["reduction"]) for row in rows][13:] == [
        ("latent", "umap10+train"), ("latent", "umap10+train"), ("latent", "student"), ("pixels", "student")]
    assert all(row["acc"] > 0.25 for row in rows[5:7] + rows[13:15])
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["reused_model"] == str(small_run) and "train" not in metrics["timings"]
    assert f"reused from {small_run}/" in (out / "report.md").read_text()
    assert (out / "student.keras").is_file() and set(metrics["student"]) == {"latent", "pixels"}
    # The saved student, like the encoder, takes images as the file stores them.
    import keras

    with np.load(out / "codes.npz") as saved, np.load(REPO / "data" / "mnist.npz") as mnist:
        clusters = keras.saving.load_model(out / "student.keras").predict(
            mnist["x_test"][saved["indices"]], verbose=0).argmax(axis=1)
        assert np.array_equal(clusters, saved["clusters_latent_student_softmax"])
    assert all(0 < metrics["student"][kind]["clean"] <= 1 for kind in ("latent", "pixels"))

    # The stage's benchmark runs the script's stage on the saved model with the training images alone
    # (no scored image, no label): the same codes, the same config, so the same student.
    handed = []
    monkeypatch.setattr(am, "train_for_clustering", lambda *args: handed.append(args) or (None, {"clean": 0.5}))
    result = student.student_seed(am.parse_config([str(flag) for flag in flags[:-3]]), small_run / "autoencoder.keras")
    assert set(result) == {"seed", "latent"} and math.isnan(result["latent"]["acc"])
    assert np.array_equal(handed[0][0], codes) and np.array_equal(handed[0][1], images)
    assert handed[0][2:] == (10, am.parse_config([str(flag) for flag in flags[:-3]]))
    # Trained again from the same codes under the real rule: one epoch of a few batches leaves the
    # student out, with a note (it gives back under 99.5% of its clean targets). The same seed gave
    # the same student: it puts every scored image in the cluster the run's student.keras did.
    monkeypatch.undo()
    learned, learn = [], am.learn
    monkeypatch.setattr(am, "learn", lambda *args: learned.append(learn(*args)) or learned[0])
    assert am.train_for_clustering(codes, images, 10, config)[0] is None
    assert "of its clean targets (under 99.5%); its row is left out" in capsys.readouterr().out
    assert np.array_equal(learned[0].predict(data.x_test, verbose=0).argmax(axis=1), clusters)


def test_a_damaged_model_or_checkpoint_is_refused_in_one_line_and_nothing_is_written(small_run, tmp_path, capsys):
    # A truncated autoencoder.keras beside a good metrics.json, handed to --reuse-model.
    damaged = tmp_path / "damaged"
    damaged.mkdir()
    (damaged / "metrics.json").write_bytes((small_run / "metrics.json").read_bytes())
    (damaged / "autoencoder.keras").write_bytes((small_run / "autoencoder.keras").read_bytes()[:5000])
    out = tmp_path / "rescored"
    assert main_here(*SMALL, "--reuse-model", damaged, "--out", out) == 2
    lines = stderr_lines(capsys.readouterr().err)
    assert lines == [f"error: {damaged / 'autoencoder.keras'} is damaged and cannot be loaded (ValueError); "
                     "train again, or name the --out folder of a run that finished"]
    assert not out.exists()

    # A checkpoint whose weights file is cut short, handed to --resume: the checkpoint is left as it
    # was, and nothing else is written.
    out = tmp_path / "results"
    backup = out / ".checkpoint" / "backup"
    backup.mkdir(parents=True)
    (out / ".checkpoint" / "config.json").write_text(json.dumps(am.config_record(am.parse_config(SMALL))))
    (backup / "latest.weights.h5").write_bytes(b"\x89HDF\r\n\x1a\n" + bytes(100))
    (backup / "training_metadata.json").write_text('{"epoch": 1, "batch": -1}')
    before = {path: path.read_bytes() for path in out.rglob("*") if path.is_file()}
    assert main_here("--resume", out) == 2
    lines = stderr_lines(capsys.readouterr().err)
    assert len(lines) == 1 and lines[0].startswith(f"error: the checkpoint in {out / '.checkpoint'} is damaged")
    assert lines[0].endswith("start afresh with --out")
    assert {path: path.read_bytes() for path in out.rglob("*") if path.is_file()} == before


def test_sigterm_in_training_keeps_old_results_and_resume_finishes_the_same_while_refusing_second_runs(
        small_run, tmp_path, capsys, monkeypatch):
    # A run with the same seed trains epoch 1 afresh and, resumed, ends with every score of the first
    # run: this is also the suite's check that a seed reproduces a run. SIGTERM, as `kill` sends it,
    # comes as epoch 1 is logged, while TensorFlow is still training.
    import keras

    class KilledAfterEpochOne(keras.callbacks.CSVLogger):
        def on_epoch_end(self, epoch, logs=None):
            super().on_epoch_end(epoch, logs)
            if epoch == 0:
                os.kill(os.getpid(), signal.SIGTERM)

    out, earlier = earlier_results(small_run, tmp_path / "results")
    with monkeypatch.context() as patched:
        patched.setattr(keras.callbacks, "CSVLogger", KilledAfterEpochOne)
        status = main_here(*SMALL, "--out", out)
    lines = stderr_lines(capsys.readouterr().err)
    # A signal handler that raised inside TensorFlow's calls once crashed the run here (status -11).
    assert status == 143 and len(lines) == 1, "expected one line on stderr, got:\n" + "\n".join(lines)
    assert lines[0] == (f"stopped by SIGTERM; earlier results in {out}/ are untouched; 1 of 2 epochs are saved: "
                        f"`python autoencoder_mnist.py --resume {out}` continues")
    # The earlier run's results are whole, and nothing half-written lies beside them.
    assert {name: (out / name).read_bytes() for name in OUTPUTS} == earlier
    assert sorted(path.name for path in out.iterdir()) == sorted(OUTPUTS + [".checkpoint", am.LOCK])

    # Each of the checkpoint's four files damaged in turn, cut to a third of its size, in a copy of
    # the folder: --resume refuses in one line and leaves every file as it was.
    for name in ("config.json", "history.csv", "backup/latest.weights.h5", "backup/training_metadata.json"):
        copy = tmp_path / f"damaged-{name.replace('/', '-')}"
        shutil.copytree(out, copy)
        damaged = copy / ".checkpoint" / name
        damaged.write_bytes(damaged.read_bytes()[:damaged.stat().st_size // 3])
        before = {path: path.read_bytes() for path in copy.rglob("*") if path.is_file()}
        assert main_here("--resume", copy) == 2, name
        lines = stderr_lines(capsys.readouterr().err)
        assert len(lines) == 1 and lines[0].startswith(f"error: the checkpoint in {copy / '.checkpoint'} is damaged")
        assert lines[0].endswith("start afresh with --out"), lines
        assert {path: path.read_bytes() for path in copy.rglob("*") if path.is_file()} == before

    # Resumed with the command the stop line gave, it trains epoch 2 alone; a scoring flag may be
    # added, for only training's flags are the checkpoint's. While it runs, a second run into the
    # same folder, and one that would reuse its model, are refused at once, naming it; it finishes
    # as if alone.
    second, printed, reduce_and_cluster = [], [], am.reduce_and_cluster

    def second_runs(*args):
        printed.append(capsys.readouterr().out)  # what the resumed run printed up to here
        second.append(main_here(*SMALL, "--out", out))
        second.append(main_here(*SMALL, "--reuse-model", out, "--out", tmp_path / "other"))
        second.append(stderr_lines(capsys.readouterr().err))
        return reduce_and_cluster(*args)

    monkeypatch.setattr(am, "reduce_and_cluster", second_runs)
    assert main_here("--resume", out, "--embed-train") == 0
    assert "  epoch 1/2" not in printed[0] and "  epoch 2/2" in printed[0], printed[0]
    busy = f"is being written by another run (process {os.getpid()}); wait for it to finish, or"
    assert second == [2, 2, [f"error: --out {out} {busy} choose another --out",
                             f"error: --reuse-model {out} {busy} name a finished run's folder"]]
    assert not (tmp_path / "other").exists()
    added = rows_beyond(scores(small_run), scores(out))
    assert [row["reduction"] for row in added] == ["umap10+train", "umap10+train"]
    assert sorted(path.name for path in out.iterdir()) == sorted(OUTPUTS + [am.LOCK])


def test_ctrl_c_while_the_workers_reduce_stops_in_one_line_and_keeps_earlier_results():
    # The command, started with the session (conftest.BACKGROUND), pressed Ctrl-C as the workers
    # began t-SNE. Stopping the worker pool once waited for ever on tasks still in its pipe (the
    # timeout fails this test if the run hangs). The workers get Ctrl-C too, and stay silent.
    process, out, printed = BACKGROUND["ctrl-c"]
    stdout, stderr = process.communicate(timeout=300)
    lines = stderr_lines(stderr)
    assert any(line.strip().startswith("t-SNE to 2-D") for line in printed), "".join(printed) + stdout
    assert process.returncode == 130 and len(lines) == 1, "expected one line on stderr, got:\n" + stderr
    assert lines[0] == (f"stopped by Ctrl-C; earlier results in {out}/ are untouched; training had finished: "
                        f"`python autoencoder_mnist.py --resume {out}` scores its model without training again")
    assert (out / EARLIER).read_text() == "{}"
    assert sorted(path.name for path in out.iterdir()) == [".checkpoint", am.LOCK, EARLIER]


def test_seeds_summarises_finished_runs_as_mean_and_std(small_run, tmp_path, monkeypatch, capsys):
    # Two finished runs with the flags given: the command keeps them (trains nothing) and summarises.
    metrics = json.loads((small_run / "metrics.json").read_text())
    for seed, shift in ((0, 0.0), (1, 0.1)):
        folder = tmp_path / f"seed-{seed}"
        folder.mkdir()
        metrics["config"].update(seed=seed, out=str(folder))
        run = json.loads(json.dumps(metrics))
        for row in run["clustering"]:
            row["acc"] += shift
        run["clustering"] = run["clustering"][:-1] if seed else run["clustering"]  # as a student left out
        (folder / "metrics.json").write_text(json.dumps(run))
    monkeypatch.setattr(sys, "argv", ["seeds.py", "--seeds", "0", "1", "--out", str(tmp_path), "--", *SMALL])
    seeds.main()
    stdout = capsys.readouterr().out
    assert stdout.count("finished run kept") == 2 and "running" not in stdout
    first = metrics["clustering"][0]
    row = f"| {first['features']} | {first['reduction']} | {first['clusterer']} | {first['acc'] + 0.05:.3f} +- 0.071 |"
    last = metrics["clustering"][-1]
    summary = (tmp_path / "summary.md").read_text()
    assert row in summary and f"| {last['features']} | {last['reduction']} | {last['clusterer']} |" not in summary
    assert (f"Row {last['features']} {last['reduction']} {last['clusterer']} on seeds 0 only (left out on the "
            f"others): ACC {last['acc']:.4f}") in summary


def test_epochs_benchmark_stopped_and_continued_and_refined_scores_as_the_script(small_run, tmp_path):
    # Scored after epoch 1, stopped, and continued to epoch 2 from the checkpoint by a second call, as a
    # second command would: the model of epoch 2 is the script's own 2-epoch model, so its validation
    # BCE and clustering embedding's rows repeat the script's.
    config = am.parse_config(SMALL)
    for counts in ([1], [1, 2]):
        epochs.score_counts(config, counts, tmp_path)
    lines = [json.loads(line) for line in (tmp_path / "seed-0.jsonl").read_text().splitlines()]
    assert [line["epochs"] for line in lines] == [1, 2]
    metrics = json.loads((small_run / "metrics.json").read_text())
    assert lines[1]["val_bce"] == pytest.approx(metrics["history"]["val_loss"][-1], abs=1e-6)
    script_rows = {row["clusterer"]: row for row in metrics["clustering"]
                   if row["features"] == "latent" and row["reduction"] == "umap10"}
    for clusterer, row in lines[1]["rows"].items():
        assert row == pytest.approx({name: script_rows[clusterer][name] for name in row}, abs=1e-9)
    assert "| 2 | umap10 | gmm |" in epochs.summarise(lines, [0], "python benchmarks/epochs.py", "test")
    # The refinements benchmark starts from the saved model: its plain mixture row is the same row.
    rows = refine.refine_seed(config, tmp_path / "seed-0.keras")["rows"]
    assert rows["gmm"] == pytest.approx({name: lines[1]["rows"]["gmm"][name] for name in ("ari", "nmi", "acc")},
                                        abs=1e-9)
    assert set(rows) == {"gmm", "self-trained", "ensemble gmm", "ensemble self-trained"}
    assert all(0 < scores["acc"] <= 1 for scores in rows.values())


def test_the_same_images_unlabelled_as_floats_give_the_labelled_runs_clusters_scored_without_labels(
        small_run, tmp_path, capsys):
    # SMALL's images, stored as floats in [0, 1] without labels: the same images, the same seed, so
    # the same model and the same clusters in every row as the small run's; scored without labels.
    data = am.load_data(am.parse_config(SMALL))
    images = {"x_train": am.intensities(data.x_train)[..., 0], "x_test": data.x_test[..., 0]}
    np.savez(tmp_path / "unlabelled.npz", **images)
    flags = ["--epochs", "2", "--data", tmp_path / "unlabelled.npz", "--out", tmp_path / "none"]
    assert main_here(*flags) == 2
    assert stderr_lines(capsys.readouterr().err) == [
        "error: the data has no labels (y_test): give --clusters K, the number of clusters to find"]
    assert main_here(*flags, "--clusters", "10") == 0
    assert not stderr_lines(capsys.readouterr().err)
    labelled, unlabelled = (json.loads((out / "metrics.json").read_text()) for out in (small_run, tmp_path / "none"))
    assert unlabelled["data"]["scaling"] == "floats in [0, 1], taken as they are" and not unlabelled["data"]["labelled"]
    assert unlabelled["history"] == {**labelled["history"], "images_per_second": unlabelled["history"][
        "images_per_second"]}, "the same images and seed train the same model"
    with np.load(small_run / "codes.npz") as first, np.load(tmp_path / "none" / "codes.npz") as second:
        assert sorted(set(first) - set(second)) == ["labels"] and second["indices"].tolist() == list(range(300))
        for name in set(second) - {"indices"}:  # positions in its own file, which holds the sample alone
            assert np.array_equal(first[name], second[name]), name
    for row, twin in zip(labelled["clustering"], unlabelled["clustering"]):
        assert set(twin) == {"features", "reduction", "clusterer", "silhouette", "seconds",
                             "cluster_seconds"}, twin
        assert twin["silhouette"] == row["silhouette"]
    assert not (tmp_path / "none" / "confusion.png").exists() and (tmp_path / "none" / "clusters.png").is_file()
    report = (tmp_path / "none" / "report.md").read_text()
    assert report.startswith("# Autoencoder on unlabelled.npz: results\n")  # the file's name, not MNIST
    assert "no labels given, so no ARI, NMI or ACC" in report
    # The saved encoder takes the floats as the file stores them.
    import keras

    with np.load(tmp_path / "none" / "codes.npz") as saved:
        codes = keras.saving.load_model(tmp_path / "none" / "encoder.keras").predict(
            images["x_test"][saved["indices"]], verbose=0)
        assert np.allclose(codes, saved["codes"], atol=1e-5)


def test_a_run_killed_by_sigkill_leaves_a_staging_folder_that_the_next_run_removes(tmp_path, monkeypatch):
    out = tmp_path / "results"
    process = subprocess.Popen([sys.executable, str(SCRIPT), *SMALL, "--out", str(out)], stdout=subprocess.PIPE,
                               stderr=subprocess.PIPE, text=True, env=script_env())
    for line in process.stdout:
        if "importing Keras" in line:  # its staging folder and lock are made
            process.kill()
            break
    process.communicate(timeout=60)
    assert process.returncode == -signal.SIGKILL and len(list(out.glob(".partial-*"))) == 1
    # The next run into the folder takes the lock the dead run held, and clears what it left. Its
    # Ctrl-C comes as a terminal's does, whether or not the harness started pytest with SIGINT ignored.
    monkeypatch.setattr(am, "import_stack", lambda: os.kill(os.getpid(), signal.SIGINT))
    previous = signal.signal(signal.SIGINT, signal.default_int_handler)
    try:
        assert main_here(*SMALL, "--out", out) == 130
    finally:
        signal.signal(signal.SIGINT, previous)
    assert not list(out.glob(".partial-*")) and (out / am.LOCK).is_file()


def test_the_headline_recipe_runs_on_jax_with_a_silent_stderr():
    # Keras 3 runs the same models on another backend, here N2D's dense denoising autoencoder;
    # TensorFlow is then never imported. The run started with the session (conftest.BACKGROUND).
    process, out, _ = BACKGROUND["jax"]
    stdout, stderr = process.communicate(timeout=300)
    assert process.returncode == 0 and not stderr_lines(stderr), stderr
    assert not (out.parent / "tensorflow-imported").exists(), "TensorFlow was imported under JAX"
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["versions"]["backend"] == "jax" and "jax" in metrics["versions"]
    assert "tensorflow" not in metrics["versions"] and len(metrics["clustering"]) == 13
    assert all(row["acc"] > 0.2 for row in metrics["clustering"]), metrics["clustering"]
    assert "epoch 2/2  loss" in stdout and metrics["config"]["noise"] == 0.2


@pytest.mark.skipif(not (shutil.which("chromium") and shutil.which("chromedriver")),
                    reason="needs Debian's chromium and chromium-driver (.ci/run installs them)")
def test_the_embeddings_page_draws_the_points_and_shows_each_image_under_the_pointer(small_run, tmp_path):
    # The page as a person meets it: opened from the disk in a real browser, offline (its scripts are
    # inline), hovered over until a point's tooltip shows, whose image must be that data-file image.
    from io import BytesIO

    from PIL import Image
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    page = (small_run / "embeddings.html").read_text()
    assert "<script src=" not in page and "cdn.bokeh.org" not in page  # nothing to fetch
    options = webdriver.ChromeOptions()
    for option in ("--headless=new", "--no-sandbox", "--disable-gpu", "--window-size=1400,800"):
        options.add_argument(option)
    options.binary_location = shutil.which("chromium")
    driver = webdriver.Chrome(service=Service(shutil.which("chromedriver")), options=options)
    try:
        driver.get((small_run / "embeddings.html").as_uri())
        plot = None
        for _ in range(50):  # the plots are drawn once the page's scripts have run
            plot = driver.execute_script(EVERY_ELEMENT + """
                const shown = every(document).filter(element => element.tagName === 'CANVAS'
                    && element.width > 300 && element.checkVisibility());
                return shown.length ? shown[0].getBoundingClientRect().toJSON() : null;""")
            if plot:
                break
            time.sleep(0.2)
        assert plot, "no plot was drawn"
        screenshot = np.asarray(Image.open(BytesIO(driver.get_screenshot_as_png())).convert("RGB"))
        coloured = np.ptp(screenshot.astype(int), axis=2) > 60  # the points, not grey or white
        assert coloured.sum() > 2000, "the page shows few coloured points"
        # The pointer onto drawn points: coloured pixels inside the plot, a few of them at random.
        inside = np.zeros_like(coloured)
        inside[int(plot["top"]):int(plot["bottom"]), int(plot["left"]):int(plot["right"])] = True
        spots = np.argwhere(coloured & inside)
        tooltip = None
        for y, x in spots[np.random.default_rng(0).permutation(len(spots))[:40]]:
            driver.execute_cdp_cmd("Input.dispatchMouseEvent", {"type": "mouseMoved", "x": int(x), "y": int(y)})
            tooltip = driver.execute_script(EVERY_ELEMENT + """
                const image = every(document).find(element => element.tagName === 'IMG'
                    && element.src.startsWith('data:image/webp') && element.checkVisibility());
                return image ? [image.src, image.parentElement.innerText] : null;""")
            if tooltip:
                break
    finally:
        driver.quit()
    assert tooltip, "no tooltip showed an image"
    source, text = tooltip
    index = int(re.search(r"#(\d+) in the data file", text).group(1))
    shown = np.asarray(Image.open(BytesIO(base64.b64decode(source.split(",", 1)[1]))).convert("L"))
    with np.load(REPO / "data" / "mnist.npz") as mnist:
        assert np.array_equal(shown, mnist["x_test"][index])
        assert re.search(rf"digit {mnist['y_test'][index]}, cluster \d+ \(wrong: (true|false)\)", text), text
