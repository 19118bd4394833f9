"""Reconstruction metrics against scikit-image, probes on problems with known answers, and evaluate()."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
import torch
from skimage.metrics import mean_squared_error, peak_signal_noise_ratio, structural_similarity
from sklearn.neighbors import KNeighborsClassifier
from torch import nn

from benchmark.config import TrialConfig
from benchmark.data import Dataset
from benchmark.evaluation.evaluate import GRID_IMAGES, evaluate, represent_split
from benchmark.evaluation.mlp_probe import CodeFeatures, seen_pairs, train_classifier
from benchmark.evaluation.probe import knn_predict, probe_all
from benchmark.evaluation.probe_inputs import accuracy, holdout_split, predict_scores, standardise
from benchmark.evaluation.probe_settings import PROTOCOL, ProbeSettings
from benchmark.evaluation.reconstruction import mse_per_image, psnr_per_image, reconstruction_metrics, ssim_per_image
from benchmark.models import build_model
from benchmark.rate import vq_rates
from benchmark.train import scale

pytestmark = pytest.mark.usefixtures("one_torch_thread")


# ---------------------------------------------------------------- reconstruction vs scikit-image


def _pair(channels: int, n: int = 4, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    original = torch.rand(n, channels, 32, 32, generator=g)
    noise = 0.15 * torch.randn(n, channels, 32, 32, generator=g) * torch.linspace(0.2, 1.0, n).view(n, 1, 1, 1)
    return original, (original + noise).clamp(0, 1)


def _as_images(t: torch.Tensor) -> list[np.ndarray]:
    """(N, C, H, W) -> H x W (grey) or H x W x C (colour) float64 images, scikit-image's usual layout."""
    a = t.double().numpy()
    return [im[0] if im.shape[0] == 1 else im.transpose(1, 2, 0) for im in a]


@pytest.mark.parametrize("channels", [1, 3])
def test_metrics_match_scikit_image(channels):
    original, recon = _pair(channels)
    refs = list(zip(_as_images(original), _as_images(recon)))
    colour = {"channel_axis": -1} if channels == 3 else {}
    ssim_ref = np.array([structural_similarity(a, b, data_range=1.0, **colour) for a, b in refs])
    psnr_ref = np.array([peak_signal_noise_ratio(a, b, data_range=1.0) for a, b in refs])
    mse_ref = np.array([mean_squared_error(a, b) for a, b in refs])

    np.testing.assert_allclose(ssim_per_image(original, recon), ssim_ref, rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(psnr_per_image(original, recon).numpy(), psnr_ref, rtol=1e-5)
    np.testing.assert_allclose(mse_per_image(original, recon).numpy(), mse_ref, rtol=1e-5)
    assert len(set(np.round(ssim_ref, 6))) == len(ssim_ref)  # the images really differ in quality

    metrics = reconstruction_metrics(original, recon)
    assert set(metrics) == {"mse", "ssim", "psnr"}
    assert metrics["ssim"] == pytest.approx(ssim_ref.mean(), rel=1e-4)
    assert metrics["psnr"] == pytest.approx(psnr_ref.mean(), rel=1e-5)
    assert metrics["mse"] == pytest.approx(mse_ref.mean(), rel=1e-5)


def test_reconstruction_is_clamped_to_the_pixel_range():
    original, recon = _pair(3)
    wild = recon.clone()
    wild[:, :, :4] = 3.0  # decoders overshoot; the metrics see what an image can show
    wild[:, :, -4:] = -2.0
    clipped = wild.clamp(0, 1)
    assert reconstruction_metrics(original, wild) == pytest.approx(reconstruction_metrics(original, clipped))


@pytest.mark.parametrize("channels", [1, 3])
def test_perfect_reconstruction(channels):
    original, _ = _pair(channels)
    metrics = reconstruction_metrics(original, original.clone())
    assert metrics["mse"] == 0.0
    assert metrics["ssim"] == pytest.approx(1.0)
    assert metrics["psnr"] == pytest.approx(100.0)  # capped, never inf


# ---------------------------------------------------------------- probes


def blobs(num_classes: int, n_train: int, n_test: int, dim: int = 24, seed: int = 0, spread: float = 8.0):
    g = torch.Generator().manual_seed(seed)
    centres = torch.randn(num_classes, dim, generator=g) * spread

    def sample(n):
        y = torch.arange(n) % num_classes
        return centres[y] + torch.randn(n, dim, generator=g), y

    (train_x, train_y), (test_x, test_y) = sample(n_train), sample(n_test)
    return train_x, train_y, test_x, test_y


# one MLP grid member and no label budgets: the tests of those are their own
FAST = ProbeSettings(max_epochs=15, mlp_epochs=15, batch_size=32, mlp_lrs=(2e-3,), mlp_weight_decays=(1e-4,), label_budgets=())
LINEAR_KEYS = {"linear_l2", "linear_iters", "linear_grad_norm", "linear_capped", "linear_path_capped"}
MLP_KEYS = {"mlp_epochs", "mlp_lr", "mlp_weight_decay"}


def test_probes_solve_a_linearly_separable_problem():
    train_x, train_y, test_x, test_y = blobs(4, 2000, 200)  # a held-out tenth of 200 points would saturate at once
    # shift and scale features wildly: standardisation must cope
    train_x, test_x = train_x * 50 + 1000, test_x * 50 + 1000
    results = probe_all(train_x, train_y, test_x, test_y, 4, seed=0, settings=FAST).metrics
    assert set(results) == {"mlp_acc", "linear_acc", "knn_acc"} | MLP_KEYS | LINEAR_KEYS
    for name in ("mlp_acc", "linear_acc", "knn_acc"):
        assert results[name] >= 0.99, (name, results[name])


def test_probes_are_at_chance_on_random_labels():
    train_x, _, test_x, _ = blobs(4, 200, 400, seed=1)
    g = torch.Generator().manual_seed(5)
    train_y, test_y = torch.randint(0, 4, (200,), generator=g), torch.randint(0, 4, (400,), generator=g)
    results = probe_all(train_x, train_y, test_x, test_y, 4, seed=0, settings=FAST).metrics
    for name in ("mlp_acc", "linear_acc", "knn_acc"):
        assert results[name] < 0.4, (name, results[name])  # chance is 0.25


def test_probe_with_a_hundred_classes_reports_top5():
    train_x, train_y, test_x, test_y = blobs(100, 500, 200, dim=32, seed=2)
    settings = dataclasses.replace(FAST, max_epochs=10, mlp_epochs=10, batch_size=64)
    results = probe_all(train_x, train_y, test_x, test_y, 100, seed=0, settings=settings).metrics
    assert set(results) == {f"{p}_{m}" for p in ("mlp", "linear", "knn") for m in ("acc", "top5")} | MLP_KEYS | LINEAR_KEYS
    for p in ("mlp", "linear", "knn"):
        assert 0 <= results[f"{p}_acc"] <= results[f"{p}_top5"] <= 1
    assert results["knn_acc"] > 0.9


def test_probes_are_reproducible_for_a_seed():
    train_x, train_y, test_x, test_y = blobs(3, 90, 60, seed=3, spread=1.0)
    a = probe_all(train_x, train_y, test_x, test_y, 3, seed=4, settings=ProbeSettings(max_epochs=3, mlp_epochs=3, knn_train_size=50))
    b = probe_all(train_x, train_y, test_x, test_y, 3, seed=4, settings=ProbeSettings(max_epochs=3, mlp_epochs=3, knn_train_size=50))
    assert a == b
    net1 = train_classifier(train_x, train_y, 3, 16, seed=4, settings=ProbeSettings(max_epochs=2)).net
    net2 = train_classifier(train_x, train_y, 3, 16, seed=4, settings=ProbeSettings(max_epochs=2)).net
    for p1, p2 in zip(net1.parameters(), net2.parameters()):
        assert torch.equal(p1, p2)


def test_probe_stops_at_a_plateau_and_keeps_its_best_held_out_epoch():
    # Few, noisy points: a probe that keeps training overfits, and the held-out share notices.
    train_x, train_y, test_x, test_y = blobs(3, 120, 300, dim=64, seed=6, spread=0.6)
    settings = ProbeSettings(max_epochs=60, patience=3, lr_cuts=0, batch_size=16, lr=1e-2)
    fitted = train_classifier(train_x, train_y, 3, 64, seed=0, settings=settings)
    assert fitted.epochs_run < settings.max_epochs
    assert fitted.epochs_run == fitted.best_epoch + settings.patience
    # the kept weights are the best epoch's: retraining for exactly that many epochs reproduces them
    fixed = train_classifier(
        train_x, train_y, 3, 64, seed=0, settings=ProbeSettings(max_epochs=fitted.best_epoch, patience=10**6, batch_size=16, lr=1e-2)
    )
    for kept, again in zip(fitted.net.parameters(), fixed.net.parameters()):
        assert torch.equal(kept, again)


def test_probe_cuts_its_learning_rate_at_each_plateau_before_stopping():
    train_x, train_y, _, _ = blobs(3, 120, 300, dim=64, seed=6, spread=0.6)
    base = ProbeSettings(max_epochs=200, patience=3, batch_size=16, lr=1e-2)
    first_plateau = train_classifier(train_x, train_y, 3, 64, seed=0, settings=dataclasses.replace(base, lr_cuts=0)).epochs_run
    cut_twice = train_classifier(train_x, train_y, 3, 64, seed=0, settings=dataclasses.replace(base, lr_cuts=2))
    # the same run up to the first plateau, then two more plateaus of at least `patience` epochs each
    assert cut_twice.epochs_run >= first_plateau + 2 * base.patience
    assert cut_twice.epochs_run < base.max_epochs


def test_fixed_schedule_runs_every_epoch_and_keeps_the_last():
    train_x, train_y, _, _ = blobs(3, 120, 300, dim=64, seed=6, spread=0.6)
    fitted = train_classifier(train_x, train_y, 3, 64, seed=0, settings=ProbeSettings(max_epochs=7, patience=0, batch_size=16))
    assert fitted.epochs_run == fitted.best_epoch == 7


def test_probe_choices_never_see_the_test_split():
    train_x, train_y, test_x, test_y = blobs(4, 200, 200, seed=7, spread=1.0)
    settings = ProbeSettings(
        max_epochs=8, mlp_epochs=8, patience=2, batch_size=32, mlp_lrs=(1e-3, 3e-3), mlp_weight_decays=(1e-4,), label_budgets=(40,)
    )
    base = probe_all(train_x, train_y, test_x, test_y, 4, seed=1, settings=settings)
    # scrambled test labels change the test accuracies only: never the kept epoch, the grid's choice, the L2
    # strength, its iterations or gradient norm, nor any prediction
    g = torch.Generator().manual_seed(0)
    scrambled = probe_all(train_x, train_y, test_x, test_y[torch.randperm(len(test_y), generator=g)], 4, seed=1, settings=settings)
    choices = lambda m: {k: v for k, v in m.items() if not k.endswith(("_acc", "_top5"))}  # noqa: E731
    assert set(choices(base.metrics)) >= MLP_KEYS | LINEAR_KEYS | {"linear_n40_l2", "linear_n40_capped"}
    assert choices(base.metrics) == choices(scrambled.metrics)
    assert base.predictions.keys() == scrambled.predictions.keys()
    assert all(torch.equal(base.predictions[k], scrambled.predictions[k]) for k in base.predictions)
    assert scrambled.metrics["mlp_acc"] < base.metrics["mlp_acc"] and scrambled.metrics["linear_acc"] < base.metrics["linear_acc"]


def test_holdout_split_is_seeded_disjoint_and_complete():
    fit, held = holdout_split(1000, 0.1, seed=3, device=torch.device("cpu"))
    assert len(held) == 100 and len(fit) == 900
    assert set(fit.tolist()).isdisjoint(held.tolist()) and set(fit.tolist()) | set(held.tolist()) == set(range(1000))
    again, _ = holdout_split(1000, 0.1, seed=3, device=torch.device("cpu"))
    assert torch.equal(fit, again)
    assert not torch.equal(held, holdout_split(1000, 0.1, seed=4, device=torch.device("cpu"))[1])


def test_knn_ignores_near_prior_dimensions_that_standardising_would_turn_into_noise():
    # Two informative dimensions, and 200 near-prior ones (mean ~0, tiny spread) as a VAE's
    # inactive posterior means are. Standardised, the 200 become unit noise and swamp the distance.
    g = torch.Generator().manual_seed(0)

    def sample(n):
        y = torch.arange(n) % 4
        centres = torch.tensor([[0.0, 0.0], [3.0, 0.0], [0.0, 3.0], [3.0, 3.0]])
        informative = centres[y] + 0.5 * torch.randn(n, 2, generator=g)
        return torch.cat([informative, 1e-3 * torch.randn(n, 200, generator=g)], 1), y

    (train_x, train_y), (test_x, test_y) = sample(400), sample(400)
    naive_train, naive_test = standardise(train_x, test_x)
    naive = accuracy(knn_predict(naive_train, train_y, naive_test, 5, 4), test_y)
    ours = probe_all(train_x, train_y, test_x, test_y, 4, seed=0, settings=dataclasses.replace(FAST, max_epochs=2, mlp_epochs=2)).metrics[
        "knn_acc"
    ]
    assert naive < 0.5  # near chance (0.25)
    assert ours > 0.95


def test_standardise_uses_train_statistics_only():
    g = torch.Generator().manual_seed(0)
    train = torch.randn(200, 5, generator=g) * torch.tensor([1.0, 10.0, 0.1, 3.0, 1.0]) + 7
    test = train[:50] + 100.0  # shifted test data must stay shifted
    tr, te = standardise(train, test)
    torch.testing.assert_close(tr.mean(0), torch.zeros(5), atol=1e-5, rtol=0)
    torch.testing.assert_close(tr.std(0), torch.ones(5), atol=1e-5, rtol=0)
    torch.testing.assert_close(te, tr[:50] + 100.0 / train.std(0), rtol=1e-4, atol=1e-4)
    # a constant feature does not divide by zero
    tr, te = standardise(torch.ones(10, 2), torch.ones(3, 2))
    assert torch.isfinite(tr).all() and torch.isfinite(te).all()


def test_knn_agrees_with_scikit_learn():
    g = torch.Generator().manual_seed(0)
    train_x, test_x = torch.randn(80, 6, generator=g), torch.randn(200, 6, generator=g)
    train_y = torch.randint(0, 3, (80,), generator=g)
    k = 5
    ours = knn_predict(train_x, train_y, test_x, k, 3)
    assert ours.shape == (200, 3)
    sk = KNeighborsClassifier(n_neighbors=k).fit(train_x.numpy(), train_y.numpy())
    votes = sk.predict_proba(test_x.numpy()) * k
    # the vote counts agree (weights differ from 1 by < 1%)
    np.testing.assert_allclose(ours.numpy(), votes, atol=0.05)
    # and so do the decisions wherever scikit-learn's majority is not a tie
    decided = (np.sort(votes, axis=1)[:, -1] - np.sort(votes, axis=1)[:, -2]) > 0.5
    assert decided.sum() >= 100
    np.testing.assert_array_equal(ours.argmax(1).numpy()[decided], sk.predict(test_x.numpy())[decided])


def test_knn_works_in_chunks():
    g = torch.Generator().manual_seed(1)
    train_x, test_x = torch.randn(50, 3, generator=g), torch.randn(2500, 3, generator=g)  # > one 1024 chunk
    train_y = torch.randint(0, 4, (50,), generator=g)
    scores = knn_predict(train_x, train_y, test_x, 1, 4)
    nearest = torch.cdist(test_x, train_x).argmin(1)
    assert torch.equal(scores.argmax(1), train_y[nearest])


def _line(labels):
    """Train points on a line at distances 1, 2, 3, ... from the query at 0."""
    return torch.arange(1.0, len(labels) + 1).unsqueeze(1), torch.tensor(labels), torch.zeros(1, 1)


def test_knn_tie_goes_to_the_class_with_the_nearest_neighbour():
    # ranks 0, 2 (class 2) against ranks 1, 3 (class 1): class 2 has the nearest point
    train_x, train_y, query = _line([2, 1, 2, 1, 0])
    assert knn_predict(train_x, train_y, query, 5, 3).argmax(1).item() == 2


def test_knn_tie_with_equal_rank_sums_goes_to_the_nearest_neighbour():
    train_x, train_y, query = _line([2, 1, 1, 2, 0])
    assert knn_predict(train_x, train_y, query, 5, 3).argmax(1).item() == 2


def test_code_features_equal_a_linear_layer_on_the_one_hot():
    positions, num_codes, out = 16, 12, 5
    torch.manual_seed(0)
    fit = torch.randint(0, num_codes - 4, (30, positions))  # codes 8..11 never occur in the fit rows
    features = CodeFeatures(positions, num_codes, out, seen_pairs(fit, num_codes))
    codes = torch.randint(0, num_codes, (9, positions))
    one_hot = torch.nn.functional.one_hot(codes, num_codes).float().reshape(9, positions * num_codes)
    linear = nn.Linear(positions * num_codes, out, bias=False)
    with torch.no_grad():  # a seen pair's column is its weight row; an unseen pair's column is zero
        linear.weight.copy_(features.bag.weight[features.row].t())
    assert linear.weight[:, seen_pairs(fit, num_codes)].abs().min() > 0
    assert linear.weight[:, ~seen_pairs(fit, num_codes)].abs().max() == 0
    torch.testing.assert_close(features(codes), linear(one_hot))
    # the same position with another seen code changes the output; the same code at another position too
    other = codes.clone()
    other[:, 0] = (fit[:9, 0] + 1) % (num_codes - 4)
    assert not torch.allclose(features(other), features(codes))
    # unseen pairs add nothing, and get no gradient
    unseen = torch.full((2, positions), num_codes - 1)
    assert features(unseen).abs().max() == 0
    features(unseen).sum().backward()
    assert features.bag.weight.grad.abs().max() == 0


def test_code_probe_weights_only_the_pairs_its_fit_rows_hold():
    # 4 codes of 512 used: the first layer has 16 x 4 rows (+ the zero row), not 16 x 512
    codes = torch.randint(0, 4, (200, 16), generator=torch.Generator().manual_seed(1)) * 100
    fitted = train_classifier(codes, codes[:, 0] // 100, 4, 8, seed=0, settings=ProbeSettings(max_epochs=1), num_codes=512)
    assert fitted.net[0].bag.weight.shape == (16 * 4 + 1, 8)


def test_code_probe_learns_a_label_carried_by_one_position():
    g = torch.Generator().manual_seed(0)
    num_codes = 8
    codes = torch.randint(0, num_codes, (1200, 16), generator=g)
    labels = codes[:, 5] % 4  # the label is a function of one position's code
    settings = dataclasses.replace(FAST, max_epochs=10, mlp_epochs=10, mlp_lrs=(1e-2,))
    results = probe_all(codes[:1000], labels[:1000], codes[1000:], labels[1000:], 4, seed=0, settings=settings, num_codes=num_codes).metrics
    assert set(results) == {"mlp_acc", "linear_acc"} | MLP_KEYS | LINEAR_KEYS  # no kNN on code indices
    assert results["linear_acc"] >= 0.97 and results["mlp_acc"] >= 0.97


def test_accuracy_and_predict_scores():
    scores = torch.tensor([[0.1, 0.7, 0.2], [0.5, 0.3, 0.2], [0.2, 0.3, 0.5], [0.4, 0.35, 0.25]])
    labels = torch.tensor([1, 1, 2, 2])
    assert accuracy(scores, labels) == pytest.approx(0.5)
    assert accuracy(scores, labels, top=2) == pytest.approx(0.75)
    assert accuracy(scores, labels, top=3) == pytest.approx(1.0)
    net = nn.Linear(4, 3)
    x = torch.randn(10, 4)
    torch.testing.assert_close(predict_scores(net, x, batch=3), net(x))


# ---------------------------------------------------------------- evaluate()


def tiny_dataset(channels=1, n_train=64, n_test=40, num_classes=10, coarse=False, seed=0) -> Dataset:
    g = torch.Generator().manual_seed(seed)

    def images(n):
        return torch.randint(0, 256, (n, channels, 32, 32), generator=g, dtype=torch.uint8)

    train_y = torch.arange(n_train) % num_classes
    test_y = torch.arange(n_test) % num_classes
    extra = {"train_coarse": train_y // 5, "test_coarse": test_y // 5} if coarse else {}
    return Dataset("tiny", images(n_train), train_y, images(n_test), test_y, num_classes, **extra)


QUICK = ProbeSettings(
    max_epochs=1, mlp_epochs=1, batch_size=32, mlp_lrs=(2e-3,), mlp_weight_decays=(1e-4,), l2_grid=(1.0, 1e-2), label_budgets=(20,)
)


@pytest.mark.parametrize("model_name", ["vae", "vqvae"])
def test_evaluate_reports_every_metric(model_name):
    config = TrialConfig(model=model_name, num_codes=32, code_dim=8)
    data = tiny_dataset()
    torch.manual_seed(0)
    model = build_model(config, data.channels, data.num_classes)
    ev = evaluate(model, data, config, QUICK)

    reps = ("latent", "pixels", "codes") if model_name == "vqvae" else ("latent", "pixels")
    per_rep = {f"{p}_acc" for p in ("mlp", "linear", "linear_n20")} | MLP_KEYS | LINEAR_KEYS | {"linear_n20_l2", "linear_n20_capped"}
    probes = {f"{prefix}{rep}/{key}" for prefix in ("probe/", f"probe_v{PROTOCOL}/") for rep in reps for key in per_rep}
    probes |= {f"{prefix}{rep}/knn_acc" for prefix in ("probe/", f"probe_v{PROTOCOL}/") for rep in ("latent", "pixels")}
    expected = (
        probes | {"recon/mse", "recon/ssim", "recon/psnr"} | {f"cluster/{rep}/{m}" for rep in ("latent", "pixels") for m in ("ari", "nmi")}
    )
    if model_name == "vqvae":
        expected |= {"codebook/perplexity", "codebook/usage", "codebook/dead_codes", "rate/nominal_bits", "rate/effective_bits"}
        expected.add("rate/train_effective_bits")
    expected |= {"rate/bits", "rate/train_bits"}
    assert expected <= set(ev.metrics)
    assert all(key.startswith("time/") for key in set(ev.metrics) - expected), set(ev.metrics) - expected
    for key, value in ev.metrics.items():
        assert np.isfinite(value), key
        if key.endswith("_acc"):
            assert 0 <= value <= 1
        if key.startswith("probe/"):
            assert ev.metrics[f"probe_v{PROTOCOL}/" + key[len("probe/") :]] == value

    # per-image predictions: the labels in test order and one compact array per representation and probe
    preds = ev.predictions
    probes_of = {rep: {"mlp", "linear", "linear_n20"} | ({"knn"} if rep != "codes" else set()) for rep in reps}
    assert set(preds) == {"labels"} | {f"{rep}/{p}" for rep, names in probes_of.items() for p in names}
    assert np.array_equal(preds["labels"], data.test_y.numpy())
    for key, values in preds.items():
        assert values.dtype == np.uint8 and values.shape == (40,), key
        if key != "labels":
            assert ev.metrics[f"probe/{key}_acc"] == pytest.approx(float((values == preds["labels"]).mean()))

    # reconstruction metrics are those of the model's own reconstructions of the test split
    test = represent_split(model, data.test_x, data.test_y, config, decode=True)
    direct = reconstruction_metrics(scale(data.test_x), test["recon"])
    for key, value in direct.items():
        assert ev.metrics[f"recon/{key}"] == pytest.approx(value, rel=1e-5)

    if model_name == "vqvae":
        used = test["codes"].unique().numel()
        assert ev.metrics["codebook/usage"] == pytest.approx(used / 32)
        assert ev.metrics["codebook/dead_codes"] == 32 - used
        assert 1 <= ev.metrics["codebook/perplexity"] <= used + 1e-4
        # 16 positions of 32 codes: 80 bits nominal; what the used codes carry is at most that, and more than 0
        assert ev.metrics["rate/bits"] == ev.metrics["rate/nominal_bits"] == pytest.approx(16 * 5)
        assert 0 < ev.metrics["rate/effective_bits"] <= min(16 * 5, 16 * np.log2(used)) + 1e-6
        # the train split's, from its own codes (what an analysis may choose with)
        train_codes = represent_split(model, data.train_x, data.train_y, config, decode=False)["codes"]
        assert ev.metrics["rate/train_effective_bits"] == pytest.approx(vq_rates(train_codes, 32)["rate/effective_bits"])
        assert ev.metrics["rate/train_bits"] == ev.metrics["rate/bits"]
    else:  # the VAE's rate: its test images' mean KL to the prior, in bits
        with torch.no_grad():
            mean, logvar = model.posterior(scale(data.test_x), data.test_y)
        nats = 0.5 * (mean**2 + logvar.exp() - 1 - logvar).sum(dim=(1, 2, 3))
        assert ev.metrics["rate/bits"] == pytest.approx(float(nats.mean()) / np.log(2), rel=1e-5)
        with torch.no_grad():
            mean, logvar = model.posterior(scale(data.train_x), data.train_y)
        nats = 0.5 * (mean**2 + logvar.exp() - 1 - logvar).sum(dim=(1, 2, 3))
        assert ev.metrics["rate/train_bits"] == pytest.approx(float(nats.mean()) / np.log(2), rel=1e-5)
        assert "rate/nominal_bits" not in ev.metrics

    # figure data
    assert ev.originals.shape == (GRID_IMAGES, 1, 32, 32)
    torch.testing.assert_close(ev.originals, data.test_x[:GRID_IMAGES].float() / 255)
    assert ev.reconstructions.shape == ev.originals.shape
    assert ev.reconstructions.min() >= 0 and ev.reconstructions.max() <= 1
    assert ev.latents.shape == (40, 16 * 8)  # fewer test images than t-SNE points: all of them
    assert ev.latent_labels.shape == (40,)
    assert sorted(ev.latent_labels.tolist()) == sorted(data.test_y.tolist())


def test_evaluate_on_a_hundred_classes_colours_by_superclass():
    config = TrialConfig(model="vqvae", dataset="cifar100", num_codes=16, code_dim=4)
    data = tiny_dataset(channels=3, n_train=100, n_test=30, num_classes=100, coarse=True)
    torch.manual_seed(0)
    model = build_model(config, 3, 100)
    ev = evaluate(model, data, config, QUICK)
    assert {"probe/latent/mlp_top5", "probe/pixels/knn_top5", "probe/codes/linear_top5"} <= set(ev.metrics)
    assert ev.originals.shape == (GRID_IMAGES, 3, 32, 32)
    # each t-SNE point carries the superclass of its own test image
    latents = represent_split(model, data.test_x, data.test_y, config, decode=False)["latent"]
    for row, label in zip(ev.latents, ev.latent_labels):
        index = (latents == row).all(1).nonzero()[:, 0]
        assert len(index) >= 1
        assert all(data.test_coarse[i] == label for i in index)


@pytest.mark.parametrize("model_name", ["vae", "vqvae"])
def test_representations_do_not_depend_on_the_batch_size(model_name):
    config = TrialConfig(model=model_name, num_codes=32, code_dim=8)
    data = tiny_dataset(n_test=23)
    torch.manual_seed(0)
    model = build_model(config, 1, 10)
    whole = represent_split(model, data.test_x, data.test_y, config, decode=True)
    pieces = represent_split(model, data.test_x, data.test_y, config, decode=True, batch=5)
    assert set(whole) == set(pieces)
    for key in whole:
        assert whole[key].shape[0] == 23
        torch.testing.assert_close(whole[key], pieces[key], rtol=1e-5, atol=1e-5)
    assert not model.training  # evaluation switches to eval mode


def test_represent_split_without_decoding_has_no_reconstructions():
    config = TrialConfig(model="vqvae", num_codes=32, code_dim=8)
    data = tiny_dataset(n_test=10)
    torch.manual_seed(0)
    model = build_model(config, 1, 10)
    encoded = represent_split(model, data.test_x, data.test_y, config, decode=False)
    decoded = represent_split(model, data.test_x, data.test_y, config, decode=True)
    assert set(encoded) == {"latent", "codes"} and set(decoded) == {"latent", "codes", "recon"}
    assert torch.equal(encoded["codes"], decoded["codes"])


def test_pixel_probes_are_those_of_the_raw_pixels():
    config = TrialConfig(model="vae", code_dim=4)
    data = tiny_dataset(n_train=60, n_test=30, seed=7)
    data = Dataset("pixels-check", data.train_x, data.train_y, data.test_x, data.test_y, 10)
    torch.manual_seed(0)
    ev = evaluate(build_model(config, 1, 10), data, config, QUICK)
    direct = probe_all(data.train_x.flatten(1).float(), data.train_y, data.test_x.flatten(1).float(), data.test_y, 10, config.seed, QUICK)
    assert {key: ev.metrics[f"probe/pixels/{key}"] for key in direct.metrics} == direct.metrics
    assert all(np.array_equal(ev.predictions[f"pixels/{key}"], values.numpy()) for key, values in direct.predictions.items())


def test_pixel_probes_follow_the_data_not_its_name():
    config = TrialConfig(model="vae", code_dim=4)
    first = tiny_dataset(n_train=60, n_test=30, seed=8)
    first = Dataset("same-name", first.train_x, first.train_y, first.test_x, first.test_y, 10)
    # same name and shape; labels that the pixels predict perfectly (the image itself encodes them)
    train_x, test_x = first.train_x.clone(), first.test_x.clone()
    train_x[:, :, :, :] = (first.train_y * 25).view(-1, 1, 1, 1).to(torch.uint8)
    test_x[:, :, :, :] = (first.test_y * 25).view(-1, 1, 1, 1).to(torch.uint8)
    second = Dataset("same-name", train_x, first.train_y, test_x, first.test_y, 10)
    torch.manual_seed(0)
    model = build_model(config, 1, 10)
    evaluate(model, first, config, QUICK)
    ev = evaluate(model, second, config, QUICK)
    direct = probe_all(train_x.flatten(1).float(), first.train_y, test_x.flatten(1).float(), first.test_y, 10, config.seed, QUICK)
    assert direct.metrics["knn_acc"] == 1.0
    assert ev.metrics["probe/pixels/knn_acc"] == direct.metrics["knn_acc"]


def test_the_reconstruction_grid_shows_one_image_per_class_in_turn_even_on_a_class_sorted_test_set():
    from benchmark.evaluation.evaluate import grid_indices

    sorted_labels = torch.tensor([0] * 5 + [1] * 5 + [2] * 5)  # an image folder's test split, class by class
    picks = grid_indices(sorted_labels, 8)
    assert picks.tolist() == [0, 5, 10, 1, 6, 11, 2, 7] and sorted_labels[picks].tolist() == [0, 1, 2, 0, 1, 2, 0, 1]
    assert grid_indices(torch.tensor([3, 1, 3]), 8).tolist() == [1, 0, 2]  # fewer images than the grid: all of them
