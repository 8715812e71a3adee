"""End to end: the real command on a small sample, its outputs, reproducibility, interruption, resume."""
import json
import math
import os
import resource
import signal
import subprocess
import sys

import pytest

import autoencoder_mnist as am
from conftest import REPO, SCRIPT, SMALL, run_script, script_env, stderr_lines

sys.path.insert(0, str(REPO / "benchmarks"))
import epochs  # noqa: E402
import refine  # noqa: E402
import selflabel  # noqa: E402

OUTPUTS = ["metrics.json", "report.md", "autoencoder.keras", "codes.npz", "reconstructions.png",
           "training_curves.png", "embeddings.png", "confusion.png", "clusters.png"]


def scores(out):
    """The numbers of a run that must repeat with the same seed: all but the timings."""
    metrics = json.loads((out / "metrics.json").read_text())
    rows = [{k: v for k, v in row.items() if k != "seconds"} for row in metrics["clustering"]]
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


def stop_run(out, signum, at="epoch 1/2"):
    """Start the small run, send `signum` once a line of its output starts with `at` (by default: its
    first epoch is reported), and return its exit status and its stderr lines. SIGINT goes to the run's
    whole process group, worker processes and all, as a terminal's Ctrl-C does; SIGTERM to the run only,
    as `kill` does."""
    # A terminal delivers Ctrl-C to a foreground job whose SIGINT is at its default. Set it so: a
    # harness that starts this suite as a background job of a non-interactive shell (as CI may) leaves
    # SIGINT ignored, children inherit that, and Python then, rightly, ignores the signal too.
    process = subprocess.Popen([sys.executable, str(SCRIPT), *SMALL, "--out", str(out)],
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=script_env(),
                               start_new_session=True, preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
    for line in process.stdout:
        if line.strip().startswith(at):
            if signum == signal.SIGINT:
                os.killpg(process.pid, signum)
            else:
                process.send_signal(signum)
            break
    _, stderr = process.communicate(timeout=300)
    return process.returncode, stderr_lines(stderr)


def test_small_run_writes_every_output(small_run):
    assert sorted(path.name for path in small_run.iterdir()) == sorted(OUTPUTS)
    metrics = json.loads((small_run / "metrics.json").read_text())
    for key in ("config", "versions", "timings", "reconstruction", "history", "clustering", "reduce_shared_seconds"):
        assert key in metrics
    # The workers import the stack and hold a space's points: hundreds of MB, not nothing.
    assert metrics["peak_rss_mb"] > 100 and metrics["worker_peak_rss_mb"] > 100
    assert {"train", "total"} <= set(metrics["timings"])
    assert set(metrics["versions"]) == {"python", "numpy", "tensorflow", "keras", "scikit-learn", "umap-learn"}
    assert metrics["data"] == {"source": "data/mnist.npz (bundled, sha256 checked)", "n_train": 2000,
                               "n_test": 500, "n_classes": 10, "silhouette_points": 500}
    history = metrics["history"]
    assert len(history["loss"]) == len(history["val_loss"]) == len(history["images_per_second"]) == 2
    assert history["loss"][-1] < history["loss"][0] and history["val_loss"][-1] < history["val_loss"][0]
    recon = metrics["reconstruction"]
    assert 0 < recon["test_bce"] < math.log(2) and 0 < recon["test_mse"] < 1 and recon["test_psnr"] > 0
    # The reported test BCE is Keras' own validation loss of the final model.
    assert abs(recon["test_bce"] - history["val_loss"][-1]) < 1e-4
    expected_rows = [
        ("pixels", "none", "kmeans"), ("pixels", "pca", "kmeans"), ("pixels", "umap", "kmeans"),
        ("pixels", "umap10", "kmeans"), ("pixels", "umap10", "gmm"),
        ("latent", "none", "kmeans"), ("latent", "pca", "kmeans"), ("latent", "tsne", "kmeans"),
        ("latent", "umap", "kmeans"), ("latent", "umap10", "kmeans"), ("latent", "umap10", "gmm"),
    ]
    assert [(row["features"], row["reduction"], row["clusterer"]) for row in metrics["clustering"]] == expected_rows
    for row in metrics["clustering"]:
        # Even two epochs on 2,000 images cluster far better than chance (ACC 0.1).
        assert row["acc"] > 0.3
    report = (small_run / "report.md").read_text()
    for image in ("reconstructions.png", "training_curves.png", "embeddings.png", "confusion.png", "clusters.png"):
        assert f"]({image})" in report


def test_codes_npz_holds_the_scored_images_and_every_rows_clusters(small_run):
    import numpy as np
    from sklearn.metrics import adjusted_rand_score, normalized_mutual_info_score

    metrics = json.loads((small_run / "metrics.json").read_text())
    with np.load(small_run / "codes.npz") as saved:
        arrays = dict(saved)
    assert arrays["codes"].shape == (500, 1568) and arrays["labels"].shape == (500,)
    # The scored images' labels, in the order the loader gives them.
    assert arrays["labels"].tolist() == am.load_data(am.parse_config(SMALL)).y_test.tolist()
    assert arrays["latent_tsne"].shape == (500, 2) and arrays["pixels_umap10"].shape == (500, 10)
    # Each row's scores follow from its saved clusters and the saved labels.
    for row in metrics["clustering"]:
        clusters = arrays[f"clusters_{row['features']}_{row['reduction']}_{row['clusterer']}"]
        assert normalized_mutual_info_score(arrays["labels"], clusters) == pytest.approx(row["nmi"], abs=1e-12)
        assert adjusted_rand_score(arrays["labels"], clusters) == pytest.approx(row["ari"], abs=1e-12)


def test_saved_autoencoder_loads_and_reconstructs(small_run):
    import keras
    import numpy as np

    autoencoder = keras.saving.load_model(small_run / "autoencoder.keras")
    assert autoencoder.predict(np.zeros((2, 28, 28, 1), "float32"), verbose=0).shape == (2, 28, 28, 1)
    assert tuple(autoencoder.get_layer("encoder").output.shape) == (None, 7, 7, 32)


def test_reused_model_scores_the_same_and_trains_for_clustering_after_a_full_disk_kept_the_earlier_results(
        small_run, tmp_path, capsys):
    out, earlier = earlier_results(small_run, tmp_path / "rescored")
    flags = [*SMALL, "--reuse-model", small_run, "--embed-train", "--self-label", "2", "--self-label-epochs", "5",
             "--out", out]
    # On a disk that takes no file over 100 kB, as on a full one: the first output, autoencoder.keras,
    # cannot be written. One line; the earlier results whole, nothing half-written beside them. In this
    # process (Python ignores SIGXFSZ, so a write past the limit raises), sparing a cold start.
    soft, hard = resource.getrlimit(resource.RLIMIT_FSIZE)
    handler = signal.getsignal(signal.SIGTERM)
    resource.setrlimit(resource.RLIMIT_FSIZE, (10**5, hard))
    try:
        status = am.main([str(flag) for flag in flags])
    finally:
        resource.setrlimit(resource.RLIMIT_FSIZE, (soft, hard))
        signal.signal(signal.SIGTERM, handler)
    assert status == 1 and stderr_lines(capsys.readouterr().err) == [
        f"error: could not write autoencoder.keras (File too large); earlier results in {out}/ are untouched"]
    assert sorted(path.name for path in out.iterdir()) == sorted(OUTPUTS)
    assert {name: (out / name).read_bytes() for name in OUTPUTS} == earlier

    finished = run_script(*flags)
    assert finished.returncode == 0, finished.stderr
    assert "epoch 1/2" not in finished.stdout and "load model done" in finished.stdout
    assert "round 2/2" in finished.stdout and "self-label done" in finished.stdout
    # The same model, the same seed: every row of the trained run again, then the three new rows.
    added = rows_beyond(scores(small_run), scores(out))
    assert [(row["features"], row["reduction"], row["clusterer"]) for row in added] == [
        ("latent", "umap10+train", "kmeans"), ("latent", "umap10+train", "gmm"), ("latent", "self-label", "softmax")]
    assert all(row["acc"] > 0.3 for row in added)
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["reused_model"] == str(small_run) and "train" not in metrics["timings"]
    assert f"no training: the model was reused from {small_run}/" in (out / "report.md").read_text()
    assert len(metrics["self_label_changed"]) == 2 and (out / "classifier.keras").is_file()

    # The self-labelling benchmark runs the stage here, on the saved model, with the training images
    # alone (no scored image, no label): the same classifier as the script's process trained, so the
    # same changed shares and the same row for the scored images.
    result = selflabel.self_label_seed(am.parse_config([str(flag) for flag in flags[:-2]]),
                                       small_run / "autoencoder.keras")
    assert result["changed"] == metrics["self_label_changed"]
    assert [result[name] for name in ("ari", "nmi", "acc")] == [added[-1][name] for name in ("ari", "nmi", "acc")]


def test_sigterm_in_training_keeps_old_results_and_resume_finishes_the_same(small_run, tmp_path):
    # A second process with the same seed trains epoch 1 afresh and, resumed, ends with every score of
    # the first run: this is also the suite's check that a seed reproduces a run.
    out, earlier = earlier_results(small_run, tmp_path / "results")

    status, lines = stop_run(out, signal.SIGTERM)
    # A signal handler that raised inside TensorFlow's calls once crashed the run here (status -11).
    assert status == 143
    assert len(lines) == 1, "expected one line on stderr, got:\n" + "\n".join(lines)
    assert "stopped by SIGTERM" in lines[0] and "1 of 2 epochs are saved: rerun with --resume" in lines[0]
    # The earlier run's results are whole, and nothing half-written lies beside them.
    assert {name: (out / name).read_bytes() for name in OUTPUTS} == earlier
    assert sorted(path.name for path in out.iterdir()) == sorted(OUTPUTS + [".checkpoint"])

    # A scoring flag may change on resume: only training's flags are the checkpoint's.
    resumed = run_script(*SMALL, "--out", out, "--resume", "--embed-train")
    assert resumed.returncode == 0, resumed.stderr
    assert "epoch 1/2" not in resumed.stdout and "epoch 2/2" in resumed.stdout
    added = rows_beyond(scores(small_run), scores(out))
    assert [row["reduction"] for row in added] == ["umap10+train", "umap10+train"]
    assert sorted(path.name for path in out.iterdir()) == sorted(OUTPUTS)


def test_ctrl_c_while_the_workers_reduce_stops_every_process_and_writes_nothing(tmp_path):
    # Stopping the worker pool once waited for ever on tasks still in its pipe; communicate's timeout
    # in stop_run fails this test if the run hangs. The workers get Ctrl-C too, and stay silent.
    out = tmp_path / "results"
    status, lines = stop_run(out, signal.SIGINT, at="t-SNE to 2-D")
    assert status == 130
    assert len(lines) == 1, "expected one line on stderr, got:\n" + "\n".join(lines)
    assert "stopped by Ctrl-C" in lines[0] and "training had finished" in lines[0]
    assert [path.name for path in out.iterdir()] == [".checkpoint"]


def test_seeds_summarises_finished_runs_as_mean_and_std(small_run, tmp_path):
    # Two finished runs with the flags given: the command keeps them (trains nothing) and summarises.
    metrics = json.loads((small_run / "metrics.json").read_text())
    for seed, shift in ((0, 0.0), (1, 0.1)):
        folder = tmp_path / f"seed-{seed}"
        folder.mkdir()
        metrics["config"].update(seed=seed, out=str(folder), resume=True)
        run = json.loads(json.dumps(metrics))
        for row in run["clustering"]:
            row["acc"] += shift
        (folder / "metrics.json").write_text(json.dumps(run))
    finished = subprocess.run([sys.executable, str(REPO / "benchmarks" / "seeds.py"), "--seeds", "0", "1",
                               "--out", str(tmp_path), "--", *SMALL], capture_output=True, text=True, timeout=120)
    assert finished.returncode == 0, finished.stderr
    assert finished.stdout.count("finished run kept") == 2 and "running" not in finished.stdout
    first = metrics["clustering"][0]
    row = f"| {first['features']} | {first['reduction']} | {first['clusterer']} | {first['acc'] + 0.05:.3f} +- 0.071 |"
    assert row in (tmp_path / "summary.md").read_text()


def test_epochs_benchmark_stopped_and_continued_and_refined_scores_as_the_script(small_run, tmp_path):
    # Scored after epoch 1, stopped, and continued to epoch 2 from the checkpoint by a second call, as a
    # second command would: the model of epoch 2 is the script's own 2-epoch model, so its validation
    # BCE and clustering embedding's rows repeat the script's. In this process: no second cold start.
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
