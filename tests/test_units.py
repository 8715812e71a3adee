"""Unit tests: the seed's architecture, the bottleneck, dense and noise options, the
clustering accuracy, the data loader, which seeds benchmarks/seeds.py runs, and two pieces of
benchmarks/stage_levers.py (the label-free matching of two clusterings, SCAN's balance term), and
benchmarks/scale.py's moved images, growth exponents and peak memory per stage."""
import functools
import gzip
import json
import sys
from dataclasses import replace

import numpy as np
import pytest

import autoencoder_mnist as am
from conftest import REPO

sys.path.insert(0, str(REPO / "benchmarks"))
import fashion_mnist  # noqa: E402
import scale  # noqa: E402
import seeds  # noqa: E402
import stage_levers  # noqa: E402


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


def numpy(tensor):
    """A backend's tensor as a NumPy array (TensorFlow's, JAX's or PyTorch's alike)."""
    import keras
    return keras.ops.convert_to_numpy(tensor)


def test_noise_corrupts_the_training_input_only():
    autoencoder, encoder = am.build_autoencoder(bottleneck=10, architecture="dense", noise=0.2)
    assert autoencoder.get_layer("noise").stddev == 0.2
    assert "GaussianNoise" not in [type(layer).__name__ for layer in encoder.layers]
    images = np.random.default_rng(0).random((8, 28, 28, 1), dtype=np.float32)
    clean = numpy(autoencoder(images, training=False))
    assert np.allclose(clean, numpy(autoencoder.get_layer("decoder")(encoder(images))), atol=1e-6)
    assert not np.allclose(numpy(autoencoder(images, training=True)), clean, atol=1e-3)


def test_bfloat16_computes_the_hidden_layers_and_keeps_codes_reconstructions_and_weights_float32():
    images = np.random.default_rng(0).random((8, 28, 28, 1), dtype=np.float32)
    for bottleneck, architecture in ((0, "conv"), (10, "conv"), (10, "dense")):
        autoencoder, encoder = am.build_autoencoder(bottleneck, architecture, 0.2, "bfloat16")
        decoder = autoencoder.get_layer("decoder")
        # Every layer with weights computes in bfloat16 but those that make the code (the bottleneck's
        # Dense, or the seed's last pooling) and the reconstruction.
        for model in (encoder, decoder):
            weighted = [layer.dtype_policy.compute_dtype for layer in model.layers if layer.weights]
            assert weighted[:-1] == ["bfloat16"] * (len(weighted) - 1) and len(weighted) > 1, (architecture, model.name)
        assert encoder.layers[-1].dtype_policy.compute_dtype == "float32"
        assert [layer for layer in decoder.layers if layer.weights][-1].dtype_policy.compute_dtype == "float32"
        assert encoder.output.dtype == autoencoder.output.dtype == "float32"
        assert {weight.dtype for weight in autoencoder.weights} == {"float32"}
        assert numpy(encoder(images)).dtype == numpy(autoencoder(images)).dtype == np.float32
    # Where the default builds the seed's model, float32 throughout.
    assert {layer.dtype_policy.name for layer in am.build_autoencoder()[0].layers[1:]} == {"float32"}


def test_student_is_a_small_conv_network_that_sees_augmented_images_in_training_only():
    student = am.build_student(10)
    kinds = [type(layer).__name__ for layer in student.layers]
    assert kinds == ["InputLayer", "Sequential", "Conv2D", "Conv2D", "MaxPooling2D", "Conv2D", "Conv2D",
                     "MaxPooling2D", "Flatten", "Dense", "Dropout", "Dense"]
    assert [getattr(layer, "filters", None) for layer in student.layers][2:7] == [32, 32, None, 64, 64]
    assert student.layers[-3].units == 128 and student.layers[-2].rate == 0.5
    images = np.random.default_rng(0).random((8, 28, 28, 1), dtype=np.float32)
    probabilities = numpy(student(images, training=False))
    assert probabilities.shape == (8, 10) and np.array_equal(probabilities, numpy(student(images, training=False)))
    # In training each image is shifted and rotated afresh: the first layer's view of it differs
    # from the image, and from one call to the next; in inference it is the image.
    augment = student.get_layer("augment")
    views = [numpy(augment(images, training=True)) for _ in range(2)]
    assert not np.allclose(views[0], images, atol=1e-3) and not np.allclose(views[0], views[1], atol=1e-3)
    assert np.array_equal(numpy(augment(images, training=False)), images)


def test_clean_targets_are_those_their_neighbours_share():
    # Six points in two groups; point 2 is in the first group but carries the second group's target.
    targets = np.array([0, 0, 1, 1, 1, 1])
    neighbours = np.array([[0, 1, 2], [1, 0, 2], [2, 0, 1], [3, 4, 5], [4, 3, 5], [5, 4, 3]])  # itself first
    shares = am.agreement(targets, neighbours)
    assert shares.tolist() == [0.5, 0.5, 0.0, 1.0, 1.0, 1.0]
    # The mislabelled point is not clean, nor are its neighbours at the 95% the recipe asks; the other group is.
    assert (shares >= 0.95).tolist() == [False, False, False, True, True, True]


def test_two_clusterings_are_matched_by_their_overlap_without_a_label():
    # The start numbers the groups 0, 1, 2 where the student numbers them 2, 0, 1; one image of each
    # disagrees, which leaves the matching as it is.
    start = np.array([0, 0, 0, 1, 1, 1, 2, 2, 2])
    student = np.array([2, 2, 0, 0, 0, 1, 1, 1, 2])
    assert stage_levers.matched(start, student, 3).tolist() == [2, 0, 1]


def test_the_balance_term_is_lowest_when_the_batch_spreads_evenly_over_the_clusters():
    from keras import ops

    def loss(predictions, targets):
        balance, predictions = stage_levers.balance_term(), np.array(predictions, "float32")
        assert np.array_equal(balance(predictions), predictions) and len(balance.losses) == 1
        cross_entropy = ops.mean(ops.sparse_categorical_crossentropy(np.array(targets), predictions))
        return float(cross_entropy) + float(balance.losses[0])

    # Two sure images in two clusters: cross-entropy 0, the batch's mean (0.5, 0.5) has entropy log 2.
    assert loss([[1.0, 0.0], [0.0, 1.0]], [0, 1]) == pytest.approx(-stage_levers.BALANCE * np.log(2), abs=1e-5)
    # Both in one cluster: cross-entropy 0 and entropy 0; one sure and one at (0.5, 0.5): -log 0.5 / 2
    # of cross-entropy, and the mean (0.75, 0.25).
    assert loss([[1.0, 0.0], [1.0, 0.0]], [0, 0]) == pytest.approx(0, abs=1e-5)
    entropy = -(0.75 * np.log(0.75) + 0.25 * np.log(0.25))
    assert loss([[1.0, 0.0], [0.5, 0.5]], [0, 1]) == pytest.approx(np.log(2) / 2 - stage_levers.BALANCE * entropy,
                                                                    abs=1e-5)


def small_dataset(labels, class_names=None, noun="digit"):
    images = np.random.default_rng(0).random((15, 28, 28, 1))
    return am.Dataset(images, None, images, labels, np.arange(15), 2, 1.0, "floats in [0, 1]", "made",
                      class_names, noun)


def plotted(monkeypatch, plot, *args):
    """The figure a plot function draws, caught before it is saved."""
    shown = {}
    monkeypatch.setattr(am.plt.Figure, "savefig", lambda figure, path, **kwargs: shown.update(figure=figure))
    plot(*args)
    return shown["figure"]


def test_clusters_plot_shows_each_clusters_majority_purity_and_mistakes(tmp_path, monkeypatch):
    labels = np.array([0] * 6 + [1] * 4 + [1] * 5)
    clusters = np.array([0] * 6 + [0] * 4 + [1] * 5)  # cluster 0: six 0s and four 1s; cluster 1: all 1s
    best = am.Clustering("latent", "student", "softmax", {"acc": 0.7, "nmi": 0.5, "ari": 0.4, "silhouette": 0.1},
                         1.0, 0.1, clusters, np.zeros((15, 2)))
    data = small_dataset(labels)
    first, second = plotted(monkeypatch, am.plot_clusters, data, best, "test", tmp_path / "c.png", 4).axes
    assert first.get_ylabel() == "digit 0\n60.0% of 10" and second.get_ylabel() == "digit 1\n100.0% of 5"
    # The first row: four 0s, a gap, then four of its 1s, each framed in red under its true digit.
    strip = first.get_images()[0].get_array()
    assert np.allclose(strip[:, :28], data.x_test[0, ..., 0])
    assert np.allclose(strip[:, 5 * 31:5 * 31 + 28], data.x_test[6, ..., 0])
    assert [text.get_text() for text in first.texts if text.get_color() == "crimson"][:4] == ["1"] * 4
    assert sum(patch.get_edgecolor()[:3] == (0.8627450980392157, 0.0784313725490196, 0.23529411764705882)
               for patch in first.patches) == 4
    assert "no image of another digit" in [text.get_text() for text in second.texts]
    # The file's class names, where it gives them, name the rows and the mistakes.
    named = small_dataset(labels, ["T-shirt/top", "Trouser"], "class")
    first, _ = plotted(monkeypatch, am.plot_clusters, named, best, "test", tmp_path / "c.png", 4).axes
    assert first.get_ylabel() == "T-shirt/top\n60.0% of 10" and "Trouser" in [text.get_text() for text in first.texts]
    assert "its images of other classes: what each truly is" in [text.get_text() for text in first.texts]
    # Without labels: a row per cluster of its images, none marked wrong.
    unlabelled = small_dataset(None)
    best.scores = {"silhouette": 0.1}
    first, second = plotted(monkeypatch, am.plot_clusters, unlabelled, best, "test", tmp_path / "c.png", 4).axes
    assert first.get_ylabel() == "cluster 0\n10 images" and second.get_ylabel() == "cluster 1\n5 images"
    assert not [text for text in first.texts if text.get_color() == "crimson"]
    assert np.allclose(first.get_images()[0].get_array()[:, 7 * 31:7 * 31 + 28], unlabelled.x_test[7, ..., 0])


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


def test_codes_that_do_not_vary_are_refused_before_pca_divides_by_their_zero_variance():
    # An autoencoder that learned nothing from its images gives every image the same code.
    with pytest.raises(am.InputError, match="the codes are all the same: nothing to cluster"):
        am.spaces(np.ones((200, 10), np.float32), None, seed=0)


def test_report_names_the_classes_the_file_names():
    metrics = {"config": am.config_record(am.Config()), "reconstruction": {"bce": 0.1, "mse": 0.01, "psnr": 20.0},
               "data": {"source": "f.npz", "scaling": "uint8 in 0..255, divided by 255", "n_train": 500,
                        "n_test": 100, "clusters": 2, "labelled": True, "n_classes": 2,
                        "class_names": ["T-shirt/top", "Trouser"]},
               "versions": {"backend": "tensorflow"}, "reused_model": None, "timings": {"train": 1, "total": 2},
               "student": None, "clustering": []}
    assert "2 classes (T-shirt/top, Trouser)" in am.report_markdown(metrics)


def test_neighbour_graph_is_exact_with_each_point_first_at_distance_zero():
    points = np.random.default_rng(0).normal(size=(200, 5)).astype(np.float32)
    indices, distances = am.nearest_neighbours(points, 8, 0)
    assert indices.shape == distances.shape == (200, 8)
    # UMAP reads the first neighbour at a non-zero distance as its rho: the point itself must sit at 0.
    assert (indices[:, 0] == np.arange(200)).all() and (distances[:, 0] == 0).all()
    full = np.linalg.norm(points[:, None, :].astype(np.float64) - points[None, :, :], axis=-1)
    assert np.allclose(distances, np.sort(full, axis=1)[:, :8], atol=1e-5)
    assert np.allclose(np.take_along_axis(full, indices, axis=1), distances, atol=1e-5)


def test_past_the_exact_limit_the_neighbour_graph_is_pynndescents_in_the_same_form(monkeypatch):
    # pynndescent's graph (a stand-in here: its numba code takes 10-30 s to compile) need not hold a
    # point first, or at all, where others lie at distance 0: each point comes first all the same,
    # then its nearest others in the order found.
    import pynndescent

    points = np.zeros((3, 2), dtype=np.float32)  # three points in one place

    class Found:
        def __init__(self, data, n_neighbors, random_state, n_jobs):
            assert data is points and n_neighbors == 3 and random_state == 7 and n_jobs == 1
            self.neighbor_graph = (np.array([[1, 0, 2], [0, 2, 1], [0, 1, 2]]),
                                   np.array([[0.0, 0.0, 0.1], [0.0, 0.2, 0.3], [0.0, 0.4, 0.5]],
                                            dtype=np.float32))

    monkeypatch.setattr(pynndescent, "NNDescent", Found)
    monkeypatch.setattr(am, "LARGE", 2)
    indices, distances = am.nearest_neighbours(points, 3, seed=7)
    assert indices.tolist() == [[0, 1, 2], [1, 0, 2], [2, 0, 1]]
    assert np.allclose(distances, [[0, 0, 0.1], [0, 0, 0.2], [0, 0, 0.4]])


def test_past_the_limit_clusterers_fit_a_seeded_sample_and_assign_every_point(monkeypatch):
    class Recorded:  # the mixture, recording what it was fitted to
        def __init__(self):
            self.mixture, self.fitted = am.clusterers(3, seed=0)["gmm"], []

        def fit(self, points):
            self.fitted.append(points)
            return self.mixture.fit(points)

    rng = np.random.default_rng(0)
    labels = np.repeat(np.arange(3), 100)
    points = rng.normal(size=(300, 4)) + 6 * labels[:, None]
    monkeypatch.setattr(am, "LARGE", 300)
    whole = am.fit_predict(am.clusterers(3, seed=0)["gmm"], points, seed=0)
    assert np.array_equal(whole, am.clusterers(3, seed=0)["gmm"].fit_predict(points))
    monkeypatch.setattr(am, "LARGE", 60)
    recorded = Recorded()
    sampled = am.fit_predict(recorded, points, seed=0)
    assert [len(np.unique(fitted, axis=0)) for fitted in recorded.fitted] == [60]
    assert len(sampled) == 300 and am.score(labels, sampled)["acc"] == 1.0


def test_past_the_limit_umap_starts_from_principal_components(monkeypatch):
    import umap

    inits = []
    monkeypatch.setattr(umap, "UMAP", lambda init, **settings: inits.append(init) or am.PCA(2))
    points = np.random.default_rng(0).random((40, 5))
    monkeypatch.setattr(am, "LARGE", 40)
    am.reduce("umap", points, None, seed=0)
    monkeypatch.setattr(am, "LARGE", 39)
    am.reduce("umap10", points, None, seed=0)
    assert inits == ["spectral", "spectral", "pca", "pca"]  # reduce builds both of its UMAPs


def test_rows_of_every_reduction_come_from_the_workers_as_the_main_process_computes_them(monkeypatch):
    # Every array memory-mapped to the workers, as joblib maps those over 1 MB (UMAP writes into its
    # graph: the script maps them copy-on-write).
    monkeypatch.setattr(am, "Parallel", functools.partial(am.Parallel, max_nbytes=0))
    rng = np.random.default_rng(0)
    labels = np.repeat(np.arange(3), 40)
    blobs = (rng.normal(size=(200, 6)) + 4 * np.repeat(np.arange(3), [70, 70, 60])[:, None]).astype(np.float32)
    codes, context = blobs[np.r_[0:40, 70:110, 140:180]], blobs[np.r_[40:70, 110:140, 180:200]]
    images = rng.random((120, 28, 28, 1), dtype=np.float32)
    clusterings, shared = am.reduce_and_cluster({"pixels": images.reshape(120, -1), "latent": codes},
                                                {"latent": context}, labels, 3, seed=0)
    assert [(c.features, c.reduction, c.clusterer) for c in clusterings] == [
        ("pixels", "none", "kmeans"), ("pixels", "pca", "kmeans"), ("pixels", "umap", "kmeans"),
        ("pixels", "umap10", "kmeans"), ("pixels", "umap10", "gmm"), ("latent", "none", "kmeans"),
        ("latent", "pca", "kmeans"), ("latent", "tsne", "kmeans"), ("latent", "umap", "kmeans"),
        ("latent", "umap10", "kmeans"), ("latent", "umap10", "gmm"), ("latent", "umap10+train", "kmeans"),
        ("latent", "umap10+train", "gmm")]
    assert shared["latent_pca_variance_kept"] == pytest.approx(1) and 0 < shared["pixels_pca_variance_kept"] < 1
    by_row = {(c.features, c.reduction, c.clusterer): c for c in clusterings}
    assert by_row["latent", "none", "kmeans"].scores["acc"] == 1.0  # the three blobs, found
    assert by_row["latent", "none", "kmeans"].embedding is None  # the codes themselves: not sent back
    assert by_row["latent", "umap10+train", "gmm"].embedding.shape == (120, 10)  # scored points only
    # A worker's task, run here, gives the same row: the points' principal components, then PCA to 2-D.
    compact = am.spaces(codes, None, 0)[0]["tsne"][0]
    [direct] = am.embed_and_cluster("latent", "pca", codes, None, 120, labels, 3, 0)
    assert np.allclose(by_row["latent", "pca", "kmeans"].embedding, direct.embedding, atol=1e-5)
    assert np.array_equal(by_row["latent", "pca", "kmeans"].clusters, direct.clusters)
    assert by_row["latent", "pca", "kmeans"].scores == pytest.approx(direct.scores)
    assert compact.shape == (120, 6)


def test_stratified_sample_keeps_class_shares_and_order():
    labels = np.repeat([0, 1, 2], [600, 300, 100])
    picked = am.sample(labels, 1000, 100, np.random.default_rng(0))
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
    assert data.x_train.dtype == np.uint8 and data.x_test.dtype == np.float32  # integers kept as bytes
    assert np.array_equal(am.intensities(data.x_train), data.x_train / np.float32(255))
    assert 0 <= data.x_test.min() and data.x_test.max() <= 1
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


def test_images_stored_as_floats_load_as_the_same_images_as_uint8(tmp_path):
    path = write_npz(tmp_path / "bytes.npz")
    arrays = dict(np.load(path))
    bytes_ = am.load_data(am.Config(data=path))
    for name, scale in (("floats255.npz", 1), ("floats01.npz", 255)):
        np.savez(tmp_path / name, **{**arrays, "x_train": arrays["x_train"] / np.float64(scale),
                                     "x_test": arrays["x_test"].astype(np.float32) / np.float32(scale)})
        data = am.load_data(am.Config(data=tmp_path / name))
        assert np.allclose(data.x_train, am.intensities(bytes_.x_train), atol=1e-7) and np.allclose(
            data.x_test, bytes_.x_test, atol=1e-7), name
    assert am.load_data(am.Config(data=tmp_path / "floats01.npz")).scaling == "floats in [0, 1], taken as they are"
    assert am.load_data(am.Config(data=tmp_path / "floats255.npz")).scaling == "floats in 0..255, divided by 255"


def test_unlabelled_images_are_sampled_at_random_and_their_positions_kept(tmp_path):
    path = write_npz(tmp_path / "three.npz", n_train=600, n_test=150)
    arrays = dict(np.load(path))
    np.savez(tmp_path / "none.npz", x_train=arrays["x_train"], x_test=arrays["x_test"])
    data = am.load_data(am.Config(data=tmp_path / "none.npz", evaluate_on="validation", clusters=3))
    assert data.y_test is None and data.y_train is None and len(data.x_test) == 150 and len(data.x_train) == 450
    assert np.allclose(data.x_test[..., 0] * 255, arrays["x_train"][data.indices], atol=1e-4)
    sampled = am.load_data(am.Config(data=tmp_path / "none.npz", test_size=120, clusters=3))
    assert np.allclose(sampled.x_test[..., 0] * 255, arrays["x_test"][sampled.indices], atol=1e-4)
    assert len(sampled.indices) == 120 and np.all(np.diff(sampled.indices) > 0)


def test_loader_holds_out_a_validation_split_from_training(tmp_path):
    path = write_npz(tmp_path / "three.npz", n_train=600, n_test=150)
    data = am.load_data(am.Config(data=path, evaluate_on="validation"))
    assert len(data.y_test) == 150 and len(data.y_train) == 450
    train = {image.tobytes() for image in am.intensities(data.x_train)}
    assert not any(image.tobytes() in train for image in data.x_test)


def test_loader_trains_on_and_scores_training_and_test_images_together_for_train_plus_test(tmp_path):
    path = write_npz(tmp_path / "three.npz", n_train=300, n_test=150)
    data = am.load_data(am.Config(data=path, evaluate_on="train+test", train_size=240))
    assert len(data.y_train) == 390 and np.array_equal(data.x_test, am.intensities(data.x_train)) and np.array_equal(data.y_test, data.y_train)
    assert data.indices[-150:].tolist() == list(range(300, 450))
    test = am.load_data(am.Config(data=path))
    assert np.array_equal(am.intensities(data.x_train[240:]), test.x_test) and np.array_equal(data.y_train[240:], test.y_test)


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
    with pytest.raises(am.InputError, match=r"x_test has shape \(200, 28, 27\), not \(n, 28, 28\)"):
        am.load_data(am.Config(data=path))


def test_seeds_keeps_a_finished_run_rescores_a_trained_model_continues_a_stopped_one_and_trains_the_rest(tmp_path):
    flags = ["--epochs", "2", "--embed-train"]
    wanted = am.parse_config([*flags, "--out", str(tmp_path)])
    earlier = {
        "same flags": am.config_record(wanted),
        "same flags, resumed": {**am.config_record(wanted), "resume": str(tmp_path)},
        "other scoring flags": am.config_record(replace(wanted, embed_train=False)),
        "other training flags": am.config_record(replace(wanted, epochs=3)),
    }
    run = [*flags, "--seed", "0", "--out", str(tmp_path)]
    expected = {"same flags": None, "same flags, resumed": None,
                "other scoring flags": [*run, "--reuse-model", str(tmp_path)],
                "other training flags": run}
    for case, config in earlier.items():
        (tmp_path / "metrics.json").write_text(json.dumps({"config": config}))
        assert seeds.script_flags(wanted, flags) == expected[case], case
    (tmp_path / "metrics.json").unlink()
    assert seeds.script_flags(wanted, flags) == run, "no earlier run: nothing to reuse"
    (tmp_path / ".checkpoint").mkdir()
    (tmp_path / ".checkpoint" / "config.json").write_text("{}")
    assert seeds.script_flags(wanted, flags) == [*flags, "--seed", "0", "--resume", str(tmp_path)]


def test_an_interrupt_says_how_to_continue_only_for_saved_epochs(tmp_path):
    config = am.Config(out=tmp_path, epochs=3)
    assert am.saved_training(config) == ""  # no checkpoint: nothing to resume
    log = tmp_path / ".checkpoint" / "history.csv"
    log.parent.mkdir()
    header = "epoch,images_per_second,loss,val_loss\n"  # as CSVLogger writes it
    log.write_text(header)
    assert am.saved_training(config) == ""  # interrupted in the first epoch
    log.write_text(header + "0,900,0.1,0.1\n")
    assert f"1 of 3 epochs are saved: `python autoencoder_mnist.py --resume {tmp_path}` continues" in (
        am.saved_training(config))
    log.write_text(header + "0,900,0.1,0.1\n1,900,0.09,0.09\n2,900,0.08,0.08\n")
    assert "training had finished" in am.saved_training(config)
    assert am.saved_training(am.Config(out=tmp_path, epochs=3, reuse_model=tmp_path)) == ""


def test_resume_takes_the_stopped_runs_flags_a_flag_it_predates_counting_as_its_default(tmp_path):
    # A checkpoint written before --architecture existed has no entry for it; it was made with conv.
    older = {key: value for key, value in am.config_record(am.parse_config(["--epochs", "3", "--embed-train"])).items()
             if key != "architecture"}
    (tmp_path / ".checkpoint").mkdir()
    (tmp_path / ".checkpoint" / "config.json").write_text(json.dumps(older))
    resumed = am.parse_config(["--resume", str(tmp_path), "--student", "2"])
    assert (resumed.architecture, resumed.epochs, resumed.embed_train, resumed.student) == ("conv", 3, True, 2)
    assert resumed.out == resumed.resume == tmp_path
    with pytest.raises(am.InputError, match="continues a run made with --architecture conv; drop --architecture "
                       "dense"):
        am.parse_config(["--resume", str(tmp_path), "--architecture", "dense", "--bottleneck", "10"])


def test_a_recipe_sets_its_flags_and_flags_beside_it_win():
    seed = am.parse_config([])
    assert seed.recipe == "seed" and seed == am.Config()
    headline = am.parse_config(["--recipe", "headline"])
    assert (headline.architecture, headline.bottleneck, headline.noise, headline.epochs, headline.embed_train) == (
        "dense", 10, 0.2, 50, True)
    assert am.parse_config(["--recipe", "headline", "--epochs", "3"]).epochs == 3
    # Under train+test every image is scored already: the training context is off, asked or not.
    transductive = am.parse_config(["--recipe", "headline", "--evaluate-on", "train+test"])
    assert not transductive.embed_train and transductive.architecture == "dense"
    assert not am.parse_config(["--evaluate-on", "train+test", "--embed-train"]).embed_train
    # The student recipe: 20 epochs of the headline's pretraining, then one student of six epochs.
    assert am.parse_config(["--recipe", "student"]) == replace(headline, recipe="student", epochs=20, student=6)


def test_help_gives_each_flag_its_default_within_sixty_lines(capsys):
    with pytest.raises(SystemExit):
        am.parse_config(["--help"])
    shown = capsys.readouterr().out
    assert len(shown.splitlines()) <= 60, len(shown.splitlines())
    assert "--epochs N training epochs (default: 20)" in " ".join(shown.split())


def test_scale_moves_an_image_within_the_students_shift_and_rotation_and_measures_exponents():
    image = np.zeros((28, 28), dtype=np.uint8)
    image[10:18, 12:16] = 255
    rng = np.random.default_rng(0)
    moved = [scale.moved(image, rng) for _ in range(50)]
    assert all(copy.dtype == np.uint8 and copy.shape == (28, 28) for copy in moved)
    centres = np.array([np.argwhere(copy > 127).mean(axis=0) for copy in moved]) - [13.5, 13.5]
    assert np.abs(centres).max() <= am.SHIFT * 28 + 1 and np.abs(centres).max() > 1  # moved, not far
    assert not all(np.array_equal(copy, moved[0]) for copy in moved)  # each afresh
    # A stage that doubles with the images grows with exponent 1; one that quadruples, 2.
    assert scale.exponent([10, 20, 40], [1.0, 2.0, 4.0]) == pytest.approx(1)
    assert scale.exponent([10, 20, 40], [1.0, 2.0, 8.0]) == pytest.approx(2)
    # A stage's peak memory: the largest sample in its window, the script's clock 1 s behind ours.
    log = "  loading\n[    1.5 s] data done in 1.5 s\n  epoch 1/1\n[   10.0 s] train done in 8.0 s\n"
    samples = [(0.5, 1 * 2**20), (2.0, 5 * 2**20), (4.0, 3 * 2**20), (7.0, 9 * 2**20), (12.0, 4 * 2**20)]
    assert scale.stage_peaks(log, 1.0, samples) == {"data": 5, "train": 9}


def page_data(path):
    """The columns of the one data source that embeddings.html holds, decoded from the page's JSON."""
    import base64
    import re

    document = json.loads(re.search(r'<script type="application/json"[^>]*>(.*?)</script>',
                                    path.read_text(), re.S).group(1))

    def sources(node):
        if isinstance(node, dict):
            if node.get("name") == "ColumnDataSource":
                yield node
            for value in node.values():
                yield from sources(value)
        elif isinstance(node, list):
            for value in node:
                yield from sources(value)

    [source] = {id(source): source for source in sources(document)}.values()

    def column(value):
        if isinstance(value, dict) and value.get("type") == "ndarray":
            packed = base64.b64decode(value["array"]["data"])  # gzipped where Bokeh found it pays
            return np.frombuffer(gzip.decompress(packed) if packed[:2] == b"\x1f\x8b" else packed,
                                 dtype=value["dtype"])
        return np.array(value)

    return {entry[0]: column(entry[1]) for entry in source["attributes"]["data"]["entries"]}


@pytest.mark.parametrize("labelled", [True, False])
def test_embeddings_page_holds_every_scored_image_once_with_its_cluster_and_class(tmp_path, monkeypatch, labelled):
    labels = np.array([0] * 6 + [1] * 4 + [1] * 5) if labelled else None
    clusters = np.array([0] * 6 + [0] * 4 + [1] * 5)  # cluster 0 holds four 1s: mistakes
    data = replace(small_dataset(labels, ["zero", "one"] if labelled else None, "class"), indices=np.arange(100, 115))
    rows = [am.Clustering("latent", name, "kmeans", {}, 1.0, 0.1, clusters, np.random.default_rng(0).random((15, 2)))
            for name in ("umap", "tsne")]
    am.plot_embeddings_page(rows, data, rows[0], "test", tmp_path / "page.html", seed=0)
    columns = page_data(tmp_path / "page.html")
    assert sorted(columns["index"]) == list(range(100, 115))  # every scored image once, by its position
    order = columns["index"] - 100
    assert list(columns["cluster"]) == [f"cluster {clusters[i]}" for i in order]
    assert np.allclose(columns["x umap"], rows[0].embedding[order, 0]) and len(columns["y tsne"]) == 15
    if labelled:
        assert list(columns["class"]) == [["zero", "one"][labels[i]] for i in order]
        assert list(columns["wrong"]) == [i in range(6, 10) for i in order]
    else:
        assert "class" not in columns and "wrong" not in columns
    # Past PAGE_POINTS a random sample, and the page says so.
    monkeypatch.setattr(am, "PAGE_POINTS", 10)
    am.plot_embeddings_page(rows, data, rows[0], "test", tmp_path / "sampled.html", seed=0)
    assert len(set(page_data(tmp_path / "sampled.html")["index"])) == 10
    assert "a random sample of 10 of the 15 scored images" in (tmp_path / "sampled.html").read_text()
