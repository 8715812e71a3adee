"""Unit tests: the seed's architecture, the bottleneck, dense and noise options, the
clustering accuracy, the data loader, and which seeds benchmarks/seeds.py runs."""
import gzip
import json
import multiprocessing
import sys
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest

import autoencoder_mnist as am
from conftest import REPO

sys.path.insert(0, str(REPO / "benchmarks"))
import fashion_mnist  # noqa: E402
import seeds  # noqa: E402


def test_architecture_is_the_seeds_layer_by_layer():
    autoencoder, encoder = am.build_autoencoder()
    decoder = autoencoder.get_layer("decoder")
    assert encoder.name == "encoder" and autoencoder.get_layer("encoder") is encoder
    expected = [  # (type, filters, kernel, activation, padding, output shape)
        ("Conv2D", 32, (3, 3), "relu", "same", (28, 28, 32)),
        ("MaxPooling2D", None, None, None, "same", (14, 14, 32)),
        ("Conv2D", 32, (3, 3), "relu", "same", (14, 14, 32)),
        ("MaxPooling2D", None, None, None, "same", (7, 7, 32)),
        ("Conv2D", 32, (3, 3), "relu", "same", (7, 7, 32)),
        ("UpSampling2D", None, None, None, None, (14, 14, 32)),
        ("Conv2D", 32, (3, 3), "relu", "same", (14, 14, 32)),
        ("UpSampling2D", None, None, None, None, (28, 28, 32)),
        ("Conv2D", 1, (3, 3), "sigmoid", "same", (28, 28, 1)),
    ]
    layers = [layer for model in (encoder, decoder) for layer in model.layers
              if type(layer).__name__ != "InputLayer"]
    found = [(type(layer).__name__, getattr(layer, "filters", None), getattr(layer, "kernel_size", None),
              getattr(getattr(layer, "activation", None), "__name__", None), getattr(layer, "padding", None),
              tuple(layer.output.shape[1:])) for layer in layers]
    assert found == expected
    for layer in layers:
        if type(layer).__name__ == "MaxPooling2D":
            assert layer.pool_size == (2, 2)
        if type(layer).__name__ == "UpSampling2D":
            assert layer.size == (2, 2)
    assert tuple(encoder.input.shape[1:]) == (28, 28, 1) and tuple(encoder.output.shape[1:]) == (7, 7, 32)
    assert tuple(autoencoder.output.shape[1:]) == (28, 28, 1)


def test_bottleneck_option_squeezes_the_seeds_maps():
    autoencoder, encoder = am.build_autoencoder(bottleneck=10)
    seed_layers = [type(layer).__name__ for layer in am.build_autoencoder()[1].layers]
    assert [type(layer).__name__ for layer in encoder.layers] == seed_layers + ["Flatten", "Dense"]
    assert tuple(encoder.output.shape[1:]) == (10,)
    decoder = autoencoder.get_layer("decoder")
    assert [type(layer).__name__ for layer in decoder.layers[1:3]] == ["Dense", "Reshape"]
    assert tuple(decoder.layers[2].output.shape[1:]) == (7, 7, 32)
    assert tuple(autoencoder.output.shape[1:]) == (28, 28, 1)


def test_dense_architecture_is_n2ds_autoencoder():
    autoencoder, encoder = am.build_autoencoder(bottleneck=10, architecture="dense")
    decoder = autoencoder.get_layer("decoder")
    widths = [layer.units for model in (encoder, decoder) for layer in model.layers
              if type(layer).__name__ == "Dense"]
    assert widths == [500, 500, 2000, 10, 2000, 500, 500, 784]
    assert encoder.layers[-1].activation.__name__ == "linear"
    assert decoder.layers[-2].activation.__name__ == "sigmoid"
    assert tuple(encoder.output.shape[1:]) == (10,) and tuple(autoencoder.output.shape[1:]) == (28, 28, 1)


def test_noise_corrupts_the_training_input_only():
    autoencoder, encoder = am.build_autoencoder(bottleneck=10, architecture="dense", noise=0.2)
    assert autoencoder.get_layer("noise").stddev == 0.2
    assert "GaussianNoise" not in [type(layer).__name__ for layer in encoder.layers]
    images = np.random.default_rng(0).random((8, 28, 28, 1), dtype=np.float32)
    clean = autoencoder(images, training=False).numpy()
    assert np.allclose(clean, autoencoder.get_layer("decoder")(encoder(images)).numpy(), atol=1e-6)
    assert not np.allclose(autoencoder(images, training=True).numpy(), clean, atol=1e-3)


def test_student_is_a_small_conv_network_that_sees_augmented_images_in_training_only():
    student = am.build_student(10)
    kinds = [type(layer).__name__ for layer in student.layers]
    assert kinds == ["InputLayer", "Sequential", "Conv2D", "Conv2D", "MaxPooling2D", "Conv2D", "Conv2D",
                     "MaxPooling2D", "Flatten", "Dense", "Dropout", "Dense"]
    assert [getattr(layer, "filters", None) for layer in student.layers][2:7] == [32, 32, None, 64, 64]
    assert student.layers[-3].units == 128 and student.layers[-2].rate == 0.5
    images = np.random.default_rng(0).random((8, 28, 28, 1), dtype=np.float32)
    probabilities = student(images, training=False).numpy()
    assert probabilities.shape == (8, 10) and np.array_equal(probabilities, student(images, training=False).numpy())


def test_clean_targets_are_those_their_neighbours_share():
    # Six points in two groups; point 2 is in the first group but carries the second group's target.
    targets = np.array([0, 0, 1, 1, 1, 1])
    neighbours = np.array([[0, 1, 2], [1, 0, 2], [2, 0, 1], [3, 4, 5], [4, 3, 5], [5, 4, 3]])  # itself first
    shares = am.agreement(targets, neighbours)
    assert shares.tolist() == [0.5, 0.5, 0.0, 1.0, 1.0, 1.0]
    # The mislabelled point is not clean, nor are its neighbours at the 95% the recipe asks; the other group is.
    assert (shares >= 0.95).tolist() == [False, False, False, True, True, True]


def test_spread_labels_carry_each_clean_target_along_its_own_chain_only():
    # Two chains of five points, 0-1-2-3-4 and 5-6-7-8-9, no edge between them; only their ends 0 and
    # 9 are clean. The unclean points carry the other chain's target, and the spread corrects them all.
    neighbours = np.array([[0, 1, 1], [1, 0, 2], [2, 1, 3], [3, 2, 4], [4, 3, 3],
                           [5, 6, 6], [6, 5, 7], [7, 6, 8], [8, 7, 9], [9, 8, 8]])  # itself first
    targets = np.array([0, 1, 1, 1, 1, 0, 0, 0, 0, 1])
    clean = np.isin(np.arange(10), [0, 9])
    labels, weights = am.spread_labels(targets, clean, neighbours)
    assert labels.tolist() == [0] * 5 + [1] * 5 and weights.tolist() == [1.0] * 10
    # A point that two clusters reach equally weighs half; one that nothing reaches in time, nothing.
    mixed = np.array([[0, 0, 0], [1, 0, 2], [2, 2, 2], [3, 3, 3]])
    labels, weights = am.spread_labels(np.array([0, 0, 1, 1]), np.array([True, False, True, False]), mixed)
    assert labels.tolist() == [0, 0, 1, 0] and weights.tolist() == [1.0, 0.5, 1.0, 0.0]


def test_clusters_plot_shows_each_clusters_majority_purity_and_mistakes(tmp_path, monkeypatch):
    labels = np.array([0] * 6 + [1] * 4 + [1] * 5)
    clusters = np.array([0] * 6 + [0] * 4 + [1] * 5)  # cluster 0: six 0s and four 1s; cluster 1: all 1s
    best = am.Clustering("latent", "student", "softmax", {"acc": 0.7, "nmi": 0.5, "ari": 0.4, "silhouette": 0.1},
                         1.0, clusters, np.zeros((15, 2)))
    shown = {}
    monkeypatch.setattr(am.plt.Figure, "savefig", lambda figure, path, **kwargs: shown.update(figure=figure))
    images = np.random.default_rng(0).random((15, 28, 28, 1))
    am.plot_clusters(images, labels, best, "test", tmp_path / "c.png", shown=4)
    first, second = shown["figure"].axes  # a row per cluster, each one strip of images
    assert first.get_ylabel() == "digit 0\n60.0% of 10" and second.get_ylabel() == "digit 1\n100.0% of 5"
    # The first row: four 0s, a gap, then four of its 1s, each framed in red under its true digit.
    strip = first.get_images()[0].get_array()
    assert np.allclose(strip[:, :28], images[0, ..., 0]) and np.allclose(strip[:, 5 * 31:5 * 31 + 28], images[6, ..., 0])
    assert [text.get_text() for text in first.texts if text.get_color() == "crimson"][:4] == ["1"] * 4
    assert sum(patch.get_edgecolor()[:3] == (0.8627450980392157, 0.0784313725490196, 0.23529411764705882)
               for patch in first.patches) == 4
    assert "no image of another digit" in [text.get_text() for text in second.texts]


def test_accuracy_is_one_for_a_permuted_labelling():
    labels = np.repeat(np.arange(10), 7)
    permutation = np.array([3, 7, 0, 9, 1, 4, 8, 2, 6, 5])
    assert am.score(labels, permutation[labels])["acc"] == 1.0


def test_accuracy_matches_a_hand_computed_confusion():
    # Clusters x labels: cluster 0 holds labels a,a,a,b; cluster 1 holds b,b,c; cluster 2 holds c,c,a.
    labels = np.array(list("aaab" "bbc" "cca"))
    clusters = np.array([0, 0, 0, 0, 1, 1, 1, 2, 2, 2])
    # Best matching: 0->a (3), 1->b (2), 2->c (2): 7 of 10 right.
    assert am.score(labels, clusters)["acc"] == pytest.approx(0.7)
    # With fewer clusters than labels, the unmatched label's items all count as wrong.
    assert am.score(np.array([0, 0, 1, 1, 2, 2]), np.array([0, 0, 1, 1, 1, 1]))["acc"] == pytest.approx(4 / 6)


def test_reconstruction_scores_match_hand_computed_values():
    images = np.array([0.0, 1.0, 0.5, 0.25], dtype=np.float32).reshape(1, 2, 2, 1)
    reconstructions = np.array([0.1, 0.8, 0.5, 0.5], dtype=np.float32).reshape(1, 2, 2, 1)
    scores = am.score_reconstruction(images, reconstructions)
    # BCE per pixel: -ln 0.9, -ln 0.8, ln 2, ln 2; squared errors: 0.01, 0.04, 0, 0.0625.
    assert scores["bce"] == pytest.approx((0.1053605 + 0.2231436 + 2 * 0.6931472) / 4, abs=1e-6)
    assert scores["mse"] == pytest.approx(0.1125 / 4, abs=1e-7)
    assert scores["psnr"] == pytest.approx(15.50907, abs=1e-4)  # 10 log10(1 / 0.028125)
    # A saturated reconstruction costs Keras' clipped log, not infinity.
    assert am.score_reconstruction(images[..., :1, :1, :], np.ones((1, 1, 1, 1)))["bce"] == pytest.approx(
        -np.log(1e-7), rel=1e-6)


def test_neighbour_graph_is_exact_with_each_point_first_at_distance_zero():
    points = np.random.default_rng(0).normal(size=(200, 5)).astype(np.float32)
    indices, distances = am.nearest_neighbours(points, 8)
    assert indices.shape == distances.shape == (200, 8)
    # UMAP reads the first neighbour at a non-zero distance as its rho: the point itself must sit at 0.
    assert (indices[:, 0] == np.arange(200)).all() and (distances[:, 0] == 0).all()
    full = np.linalg.norm(points[:, None, :].astype(np.float64) - points[None, :, :], axis=-1)
    assert np.allclose(distances, np.sort(full, axis=1)[:, :8], atol=1e-5)
    assert np.allclose(np.take_along_axis(full, indices, axis=1), distances, atol=1e-5)


def test_rows_of_every_reduction_come_from_the_workers_as_the_main_process_computes_them():
    rng = np.random.default_rng(0)
    labels = np.repeat(np.arange(3), 40)
    blobs = (rng.normal(size=(200, 6)) + 4 * np.repeat(np.arange(3), [70, 70, 60])[:, None]).astype(np.float32)
    codes, context = blobs[np.r_[0:40, 70:110, 140:180]], blobs[np.r_[40:70, 110:140, 180:200]]
    images = rng.random((120, 28, 28, 1), dtype=np.float32)
    config = am.parse_config(["--pca-dims", "5"])
    clusterings, shared = am.reduce_and_cluster({"pixels": images.reshape(120, -1), "latent": codes},
                                                {"latent": context}, labels, config)
    assert [(c.features, c.reduction, c.clusterer) for c in clusterings] == [
        ("pixels", "none", "kmeans"), ("pixels", "pca", "kmeans"), ("pixels", "umap", "kmeans"),
        ("pixels", "umap10", "kmeans"), ("pixels", "umap10", "gmm"), ("latent", "none", "kmeans"),
        ("latent", "pca", "kmeans"), ("latent", "tsne", "kmeans"), ("latent", "umap", "kmeans"),
        ("latent", "umap10", "kmeans"), ("latent", "umap10", "gmm"), ("latent", "umap10+train", "kmeans"),
        ("latent", "umap10+train", "gmm")]
    assert shared["worker_peak_rss_mb"] > 100  # a worker imports umap-learn, numba and scikit-learn
    assert 0 < shared["pca_variance_kept"]["latent"] < 1
    by_row = {(c.features, c.reduction, c.clusterer): c for c in clusterings}
    assert by_row["latent", "none", "kmeans"].scores["acc"] == 1.0  # the three blobs, found
    assert by_row["latent", "none", "kmeans"].embedding is None  # the codes themselves: not sent back
    assert by_row["latent", "umap10+train", "gmm"].embedding.shape == (120, 10)  # scored points only
    # A worker's task, run here, gives the same row: the points' principal components, then PCA to 2-D.
    compact, _ = am.principal_components(codes, config)
    [direct], _ = am.embed_and_cluster("latent", "pca", codes, None, labels, config)
    assert np.allclose(by_row["latent", "pca", "kmeans"].embedding, direct.embedding, atol=1e-5)
    assert np.array_equal(by_row["latent", "pca", "kmeans"].clusters, direct.clusters)
    assert by_row["latent", "pca", "kmeans"].scores == pytest.approx(direct.scores)
    assert compact.shape == (120, 5)


def test_umaps_compiled_code_is_cached_on_disk_for_the_next_process():
    # Each process compiled umap-learn's graph and layout code afresh, 5-10 s before its first fit.
    import numba
    import umap.layouts
    import umap.umap_

    am.cache_umap_compilation()
    for function in (umap.umap_.smooth_knn_dist, umap.umap_.compute_membership_strengths,
                     umap.layouts._nb_optimize_layout_euclidean_single_epoch):
        assert isinstance(function._cache, numba.core.caching.FunctionCache), function


def report_peak_memory(_):
    return am.peak_memory_mb()


@pytest.mark.skipif(not Path("/proc/self/status").is_file(), reason="Linux's /proc reports a process's own peak")
def test_a_worker_process_reports_its_own_peak_memory_not_the_main_processs():
    # getrusage would report a spawned process's peak as at least the main process's size when it started.
    ballast = np.ones(400_000_000 // 8)  # 400 MB, touched
    with multiprocessing.get_context("spawn").Pool(1) as pool:
        worker_mb = pool.map(report_peak_memory, [0])[0]
    assert am.peak_memory_mb() > 400 and worker_mb < 200, (am.peak_memory_mb(), worker_mb)
    del ballast


def test_stratified_sample_keeps_class_shares_and_order():
    labels = np.repeat([0, 1, 2], [600, 300, 100])
    picked = am.stratified_sample(labels, 100, np.random.default_rng(0))
    assert len(picked) == len(set(picked)) == 100 and np.all(np.diff(picked) > 0)
    assert np.bincount(labels[picked]).tolist() == [60, 30, 10]


def write_npz(path, n_train=300, n_test=200, classes=3, **overrides):
    rng = np.random.default_rng(0)
    arrays = {"x_train": rng.integers(0, 256, (n_train, 28, 28), dtype=np.uint8),
              "y_train": np.arange(n_train, dtype=np.uint8) % classes,
              "x_test": rng.integers(0, 256, (n_test, 28, 28), dtype=np.uint8),
              "y_test": np.arange(n_test, dtype=np.int64) % classes}
    arrays.update(overrides)
    np.savez(path, **arrays)
    return path


def test_loader_accepts_any_data_set_in_the_layout(tmp_path):
    path = write_npz(tmp_path / "three.npz", classes=3)
    data = am.load_data(am.Config(data=path, test_size=150))
    assert data.x_train.shape == (300, 28, 28, 1) and data.x_test.shape == (150, 28, 28, 1)
    assert data.x_train.dtype == np.float32 and 0 <= data.x_train.min() and data.x_train.max() <= 1
    assert sorted(np.unique(data.y_test)) == [0, 1, 2] and np.bincount(data.y_test).tolist() == [50, 50, 50]


def test_fashion_mnist_is_written_from_idx_files_in_the_loaders_layout(tmp_path, monkeypatch, capsys):
    # Idx files as Zalando's and Debian's: a magic number (unsigned bytes, then the count of
    # dimensions), one big-endian size per dimension, the bytes; gzipped.
    rng = np.random.default_rng(0)
    arrays = {"x_train": rng.integers(0, 256, (200, 28, 28), np.uint8), "y_train": np.arange(200, dtype=np.uint8) % 10,
              "x_test": rng.integers(0, 256, (100, 28, 28), np.uint8), "y_test": np.arange(100, dtype=np.uint8) % 10}
    for key, name in fashion_mnist.FILES.items():
        header = bytes([0, 0, 8, arrays[key].ndim]) + b"".join(size.to_bytes(4, "big") for size in arrays[key].shape)
        (tmp_path / name).write_bytes(gzip.compress(header + arrays[key].tobytes()))
    out = tmp_path / "fashion.npz"
    monkeypatch.setattr(sys, "argv", ["fashion_mnist.py", "--idx", str(tmp_path), "--out", str(out)])
    fashion_mnist.main()
    assert capsys.readouterr().out == f"{out}: 200 training and 100 test images of Fashion-MNIST, from {tmp_path}\n"
    written = am.read_npz(out)
    assert all(np.array_equal(written[key], arrays[key]) for key in arrays)
    assert sorted(path.name for path in tmp_path.iterdir()) == sorted([*fashion_mnist.FILES.values(), out.name])
    # A folder without them: one line, exit status 2, nothing written.
    monkeypatch.setattr(sys, "argv", ["fashion_mnist.py", "--idx", str(tmp_path / "none"), "--out", str(tmp_path / "x.npz")])
    with pytest.raises(SystemExit) as stop:
        fashion_mnist.main()
    lines = capsys.readouterr().err.splitlines()
    assert stop.value.code == 2 and len(lines) == 1 and "run `apt-get install dataset-fashion-mnist`" in lines[0]
    assert not (tmp_path / "x.npz").exists()
    # A file cut short: one line too.
    (tmp_path / fashion_mnist.FILES["x_test"]).write_bytes(gzip.compress(header[:6]))
    monkeypatch.setattr(sys, "argv", ["fashion_mnist.py", "--idx", str(tmp_path), "--out", str(tmp_path / "x.npz")])
    with pytest.raises(SystemExit) as stop:
        fashion_mnist.main()
    lines = capsys.readouterr().err.splitlines()
    assert stop.value.code == 2 and len(lines) == 1 and "holds a damaged idx file" in lines[0]
    assert not (tmp_path / "x.npz").exists()


def test_loader_holds_out_a_validation_split_from_training(tmp_path):
    path = write_npz(tmp_path / "three.npz", n_train=600, n_test=150)
    data = am.load_data(am.Config(data=path, evaluate_on="validation"))
    assert len(data.y_test) == 150 and len(data.y_train) == 450
    train = {image.tobytes() for image in data.x_train}
    assert not any(image.tobytes() in train for image in data.x_test)


def test_loader_trains_on_and_scores_training_and_test_images_together_for_train_plus_test(tmp_path):
    path = write_npz(tmp_path / "three.npz", n_train=300, n_test=150)
    data = am.load_data(am.Config(data=path, evaluate_on="train+test", train_size=240))
    assert len(data.y_train) == 390 and data.x_test is data.x_train and data.y_test is data.y_train
    test = am.load_data(am.Config(data=path))
    assert np.array_equal(data.x_train[240:], test.x_test) and np.array_equal(data.y_train[240:], test.y_test)


def test_silhouette_is_sampled_only_above_its_point_count(monkeypatch):
    rng = np.random.default_rng(0)
    labels = np.repeat([0, 1], 150)
    points = rng.normal(size=(300, 2)) + labels[:, np.newaxis] * 3
    everyone = am.score(labels, labels, points, seed=0)["silhouette"]
    monkeypatch.setattr(am, "SILHOUETTE_POINTS", 300)
    assert am.score(labels, labels, points, seed=0)["silhouette"] == everyone
    monkeypatch.setattr(am, "SILHOUETTE_POINTS", 50)
    sampled = [am.score(labels, labels, points, seed=seed)["silhouette"] for seed in (0, 1)]
    assert sampled[0] != everyone and sampled[0] != sampled[1] and abs(sampled[0] - everyone) < 0.1


def test_loader_rejects_a_malformed_file_with_a_clear_message(tmp_path):
    path = write_npz(tmp_path / "bad.npz", x_test=np.zeros((200, 28, 27), np.uint8))
    with pytest.raises(am.InputError, match=r"x_test has shape \(200, 28, 27\); images must be \(n, 28, 28\)"):
        am.load_data(am.Config(data=path))


def test_seeds_keeps_a_finished_run_rescores_a_trained_model_and_trains_the_rest(tmp_path):
    flags = ["--epochs", "2", "--embed-train"]
    wanted = am.parse_config([*flags, "--out", str(tmp_path), "--resume"])
    earlier = {
        "same flags": am.config_record(wanted),
        "other scoring flags": am.config_record(replace(wanted, embed_train=False)),
        "other training flags": am.config_record(replace(wanted, epochs=3)),
    }
    run = [*flags, "--seed", "0", "--out", str(tmp_path), "--resume"]
    expected = {"same flags": None,
                "other scoring flags": [*run, "--reuse-model", str(tmp_path)],
                "other training flags": run}
    for case, config in earlier.items():
        (tmp_path / "metrics.json").write_text(json.dumps({"config": config}))
        assert seeds.script_flags(wanted, flags) == expected[case], case
    (tmp_path / "metrics.json").unlink()
    assert seeds.script_flags(wanted, flags) == run, "no earlier run: nothing to reuse"


def test_an_interrupt_offers_resume_only_for_saved_epochs(tmp_path):
    config = am.Config(out=tmp_path, epochs=3)
    assert am.saved_training(config) == ""  # no checkpoint: nothing to resume
    log = tmp_path / ".checkpoint" / "history.csv"
    log.parent.mkdir()
    log.write_text("epoch,loss\n")
    assert am.saved_training(config) == ""  # interrupted in the first epoch
    log.write_text("epoch,loss\n0,0.1\n")
    assert "1 of 3 epochs are saved: rerun with --resume to continue" in am.saved_training(config)
    log.write_text("epoch,loss\n0,0.1\n1,0.09\n2,0.08\n")
    assert "training had finished" in am.saved_training(config)
    assert am.saved_training(am.Config(out=tmp_path, epochs=3, reuse_model=tmp_path)) == ""


def test_a_flag_missing_from_an_older_checkpoint_counts_as_its_default():
    # A checkpoint written before --architecture existed has no entry for it; it was made with conv.
    older = {key: str(value) for key, value in am.config_record(am.Config()).items()
             if key in am.TRAINING_FLAGS and key != "architecture"}
    assert am.training_mismatch(older, am.Config(resume=True)) is None
    assert am.training_mismatch(older, am.Config(architecture="dense", bottleneck=10)) == (
        "was made with --architecture conv, this run has dense")


def test_a_recipe_sets_its_flags_and_flags_beside_it_win():
    seed = am.parse_config([])
    assert seed.recipe == "seed" and seed == am.Config()
    headline = am.parse_config(["--recipe", "headline"])
    assert (headline.architecture, headline.bottleneck, headline.noise, headline.epochs, headline.embed_train) == (
        "dense", 10, 0.2, 50, True)
    assert am.parse_config(["--recipe", "headline", "--epochs", "3"]).epochs == 3
    # Under train+test every image is scored already: the recipe's training context is left out.
    transductive = am.parse_config(["--recipe", "headline", "--evaluate-on", "train+test"])
    assert not transductive.embed_train and transductive.architecture == "dense"
    assert am.recipe_flags("headline") == "--architecture dense --bottleneck 10 --noise 0.2 --epochs 50 --embed-train"
    # The student recipe: 20 epochs of the headline's pretraining, then one student of six epochs.
    assert am.parse_config(["--recipe", "student"]) == replace(headline, recipe="student", epochs=20, student=6)
