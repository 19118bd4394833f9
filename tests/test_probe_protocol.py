"""Protocol 3's probes: the convex linear probe against scikit-learn, its stopping rule and L2 path, the
label-efficiency subsets, the MLP probe's grid, and the per-image predictions file."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
import torch
from sklearn.linear_model import LogisticRegression

from benchmark.evaluation import linear_probe as linear
from benchmark.evaluation import mlp_probe as mlp
from benchmark.evaluation import probe
from benchmark.evaluation.linear_probe import balanced_subsets, choose_l2, fit_logistic, linear_probe, linear_scores
from benchmark.evaluation.mlp_probe import FittedProbe
from benchmark.evaluation.probe import probe_all
from benchmark.evaluation.probe_inputs import predict_scores, standardise
from benchmark.evaluation.probe_predictions import compact, read_predictions, save_predictions
from benchmark.evaluation.probe_settings import PROTOCOL, ProbeSettings

pytestmark = pytest.mark.usefixtures("one_torch_thread")
TIGHT = ProbeSettings(lbfgs_tol=1e-5, lbfgs_max_iter=500)  # 1e-6 is at float32's floor here


def overlapping(n: int = 600, dim: int = 12, classes: int = 4, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """Classes that overlap (so the optimum is finite and the L2 strength matters), standardised."""
    g = torch.Generator().manual_seed(seed)
    centres = torch.randn(classes, dim, generator=g)
    y = torch.arange(n) % classes
    x = centres[y] + 1.5 * torch.randn(n, dim, generator=g)
    return standardise(x, x)[0], y


@pytest.mark.parametrize("l2", [1e-1, 1e-3])
def test_linear_probe_agrees_with_scikit_learn(l2):
    x, y = overlapping()
    ours = fit_logistic(x, y, 4, l2, TIGHT)
    assert not ours.capped and ours.grad_norm <= TIGHT.lbfgs_tol
    # the same objective: scikit-learn minimises |W|^2 / 2 + C * sum of losses, so C = 1 / (l2 * n); float64, tight
    theirs = LogisticRegression(C=1 / (l2 * len(y)), tol=1e-10, max_iter=10_000).fit(x.double().numpy(), y.numpy())
    np.testing.assert_allclose(ours.weight.T.numpy(), theirs.coef_, atol=2e-4 * max(1.0, np.abs(theirs.coef_).max()))
    np.testing.assert_allclose(ours.bias.numpy(), theirs.intercept_, atol=2e-4 * max(1.0, np.abs(theirs.intercept_).max()))
    g = torch.Generator().manual_seed(1)
    test_x = torch.randn(400, x.shape[1], generator=g)
    assert np.array_equal(linear_scores(ours, test_x).argmax(1).numpy(), theirs.predict(test_x.double().numpy()))


def test_fewer_rows_than_features_fit_in_their_span():
    """Below d rows the basis is the rows' span (thin SVD): the same optimum as scikit-learn's in all d features."""
    g = torch.Generator().manual_seed(3)
    x = torch.randn(40, 100, generator=g)
    y = torch.arange(40) % 3
    ours = fit_logistic(x, y, 3, 1e-1, TIGHT)
    assert not ours.capped and ours.weight.shape == (100, 3)
    theirs = LogisticRegression(C=1 / (1e-1 * 40), tol=1e-10, max_iter=10_000).fit(x.double().numpy(), y.numpy())
    np.testing.assert_allclose(ours.weight.T.numpy(), theirs.coef_, atol=2e-4)


def test_code_indices_probe_is_the_linear_probe_on_their_one_hot():
    g = torch.Generator().manual_seed(0)
    num_codes, positions = 6, 5
    codes = torch.randint(0, num_codes, (500, positions), generator=g)
    y = (codes[:, 0] + (codes[:, 3] > 2).long() + torch.randint(0, 2, (500,), generator=g)) % 3  # learnable, not separable
    sparse = fit_logistic(codes, y, 3, 1e-2, TIGHT, num_codes=num_codes)
    one_hot = torch.nn.functional.one_hot(codes, num_codes).float().reshape(500, positions * num_codes)
    dense = fit_logistic(one_hot, y, 3, 1e-2, TIGHT)
    torch.testing.assert_close(sparse.weight, dense.weight, atol=1e-4, rtol=0)
    theirs = LogisticRegression(C=1 / (1e-2 * 500), tol=1e-10, max_iter=10_000).fit(one_hot.double().numpy(), y.numpy())
    np.testing.assert_allclose(sparse.weight.T.numpy(), theirs.coef_, atol=2e-4)
    assert torch.equal(linear_scores(sparse, codes, num_codes).argmax(1), linear_scores(dense, one_hot).argmax(1))


def test_tolerance_stop_and_the_cap_flag():
    x, y = overlapping()
    converged = fit_logistic(x, y, 4, 1e-4, ProbeSettings(lbfgs_tol=1e-4, lbfgs_max_iter=500))
    assert not converged.capped and converged.grad_norm <= 1e-4 and 0 < converged.iterations < 500
    capped = fit_logistic(x, y, 4, 1e-4, ProbeSettings(lbfgs_tol=1e-4, lbfgs_max_iter=3))
    assert capped.capped and capped.iterations == 3 and capped.grad_norm > 1e-4
    # a warm start at the optimum has nothing left to do
    again = fit_logistic(x, y, 4, 1e-4, ProbeSettings(lbfgs_tol=1e-4, lbfgs_max_iter=500), init=converged)
    assert not again.capped and again.iterations <= 1
    # the flag reaches the run's metrics
    train_x, test_x = x[:500], x[500:]
    settings = ProbeSettings(lbfgs_max_iter=2, l2_grid=(1e-4,), mlp_lrs=(), label_budgets=())
    metrics = probe_all(train_x, y[:500], test_x, y[500:], 4, seed=0, settings=settings).metrics
    assert metrics["linear_capped"] == 1.0 and metrics["linear_iters"] == 2 and metrics["linear_path_capped"] == 3
    assert "mlp_acc" not in metrics  # an empty grid: no MLP probe


def test_l2_path_is_chosen_on_held_out_train_rows_and_refit_on_all(monkeypatch):
    x, y = overlapping(n=800)
    calls = []
    fit = linear.fit_logistic

    def spy(fx, fy, classes, l2, settings, num_codes=None, init=None, basis=None):
        calls.append((fx.shape[0], l2, init is not None))
        assert basis is not None and basis.z.shape == fx.shape  # the eigenbasis, computed once, of these rows
        return fit(fx, fy, classes, l2, settings, num_codes, init, basis)

    monkeypatch.setattr(linear, "fit_logistic", spy)
    settings = ProbeSettings()
    result = linear_probe(x, y, 4, seed=0, settings=settings)
    path, refit = calls[:-1], calls[-1]
    assert all(rows == 720 for rows, _, _ in path) and refit[0] == 800  # 10% held out, then all rows
    tried = [l2 for _, l2, _ in path]
    coarse = [l2 for l2 in tried if l2 in settings.l2_grid]
    assert coarse == sorted(coarse, reverse=True) == list(settings.l2_grid[: len(coarse)])  # strongest first
    assert [warm for _, _, warm in path] == [False] + [True] * (len(path) - 1)  # each from the previous solution
    best_coarse = choose_l2({l2: result.held_acc[l2] for l2 in coarse})
    assert tried[len(coarse) :] == pytest.approx([best_coarse * 10**0.5, best_coarse * 10**-0.5])  # refined half a decade
    assert result.fit.l2 == choose_l2(result.held_acc) == refit[1] and refit[2]


def test_l2_ties_go_to_the_stronger_regularisation():
    assert choose_l2({1.0: 0.9, 0.1: 0.95, 0.01: 0.95, 0.001: 0.94}) == 0.1


def test_label_subsets_are_balanced_nested_seeded_and_need_only_the_labels():
    labels = torch.arange(3000) % 10
    labels = labels[torch.randperm(3000, generator=torch.Generator().manual_seed(9))]
    subsets = balanced_subsets(labels, 10, (100, 1000, 10_000, 105), seed=4)
    assert set(subsets) == {100, 105, 1000}  # 10,000 > the split: left out
    for n, rows in subsets.items():
        assert rows.numel() == n == rows.unique().numel()
        counts = torch.bincount(labels[rows], minlength=10)
        assert counts.max() - counts.min() <= 1
    assert set(subsets[100].tolist()) <= set(subsets[105].tolist()) <= set(subsets[1000].tolist())
    assert all(torch.equal(a, b) for a, b in zip(subsets.values(), balanced_subsets(labels, 10, (100, 1000, 10_000, 105), 4).values()))
    assert not torch.equal(subsets[100], balanced_subsets(labels, 10, (100,), seed=5)[100])
    short = torch.arange(95) % 10  # classes 5-9 have 9 images
    assert balanced_subsets(short, 10, (90, 94, 100), seed=0).keys() == {90}  # 94 needs a tenth image of every class


def test_label_subsets_are_shared_by_every_model_of_a_seed(monkeypatch):
    """probe_all draws them from the labels and the seed alone: two models' features, the same images."""
    seen = []
    draw = probe.balanced_subsets
    monkeypatch.setattr(probe, "balanced_subsets", lambda *a, **k: seen.append(draw(*a, **k)) or seen[-1])
    g = torch.Generator().manual_seed(0)
    y = torch.arange(400) % 4
    settings = ProbeSettings(mlp_lrs=(), label_budgets=(40, 200), l2_grid=(1.0, 1e-2))
    for features in (8, 30):  # two "models": different representations of the same train split
        probe_all(torch.randn(400, features, generator=g), y, torch.randn(50, features, generator=g), y[:50], 4, seed=3, settings=settings)
    assert len(seen) == 2 and seen[0].keys() == {40, 200}
    assert all(torch.equal(seen[0][n], seen[1][n]) for n in seen[0])


def test_label_efficiency_metrics_and_predictions():
    x, y = overlapping(n=1000, classes=5)
    settings = ProbeSettings(mlp_lrs=(), label_budgets=(50, 500))
    probed = probe_all(x[:800], y[:800], x[800:], y[800:], 5, seed=0, settings=settings)
    for n in (50, 500):
        assert {f"linear_n{n}_acc", f"linear_n{n}_l2", f"linear_n{n}_capped"} <= set(probed.metrics)
        assert probed.metrics[f"linear_n{n}_acc"] == pytest.approx(float((probed.predictions[f"linear_n{n}"] == y[800:]).float().mean()))
    assert probed.metrics["linear_n50_acc"] < probed.metrics["linear_acc"] + 0.02  # fewer labels do not help


def test_mlp_grid_keeps_the_best_held_out_member_and_the_first_of_a_tie(monkeypatch):
    held = {(1e-3, 0.0): 0.80, (1e-3, 1e-4): 0.91, (3e-3, 0.0): 0.91, (3e-3, 1e-4): 0.85}
    members = []

    def fake(train_x, train_y, classes, hidden, seed, settings, num_codes=None):
        members.append((settings.lr, settings.weight_decay, hidden, settings.max_epochs, settings.patience))
        return FittedProbe(
            torch.nn.Linear(train_x.shape[1], classes),
            best_epoch=len(members),
            epochs_run=9,
            held_acc=held[settings.lr, settings.weight_decay],
        )

    monkeypatch.setattr(mlp, "train_classifier", fake)
    settings = ProbeSettings(mlp_lrs=(1e-3, 3e-3), mlp_weight_decays=(0.0, 1e-4), mlp_epochs=17)
    fitted, lr, weight_decay = mlp.mlp_probe(torch.randn(50, 3), torch.arange(50) % 2, 2, 0, settings)
    assert sorted(members) == sorted((lr_, wd, mlp.MLP_HIDDEN, 17, 0) for lr_, wd in held)  # each on the fixed budget
    assert (lr, weight_decay) == (1e-3, 1e-4) and fitted.best_epoch == 2


def test_the_mlp_trains_its_fixed_budget_whatever_the_held_out_split_says():
    x, y = overlapping(n=400)
    settings = ProbeSettings(mlp_epochs=5, max_epochs=60, patience=1, batch_size=64, mlp_lrs=(1e-2,), l2_grid=(1.0,), label_budgets=())
    probed = probe_all(x[:300], y[:300], x[300:], y[300:], 4, seed=0, settings=settings)
    assert probed.metrics["mlp_epochs"] == 5  # not the early-stopping schedule's epochs: the probe's own budget, the last epoch kept
    # exactly that member trained on a fixed cosine schedule of 5 epochs
    member = mlp.mlp_member(settings, 1e-2, settings.mlp_weight_decays[0])
    assert (member.max_epochs, member.patience, member.lr) == (5, 0, 1e-2)
    train_x, test_x = standardise(x[:300].float(), x[300:].float())
    direct = mlp.train_classifier(train_x, y[:300], 4, mlp.MLP_HIDDEN, 0, member)
    assert direct.epochs_run == direct.best_epoch == 5
    assert torch.equal(predict_scores(direct.net, test_x).argmax(1), probed.predictions["mlp"])


def test_scrambled_test_labels_change_no_choice_of_any_probe():
    x, y = overlapping(n=700)
    settings = ProbeSettings(
        max_epochs=4, mlp_epochs=4, batch_size=64, mlp_lrs=(1e-3, 3e-3), mlp_weight_decays=(1e-4,), label_budgets=(100,)
    )
    base = probe_all(x[:500], y[:500], x[500:], y[500:], 4, seed=2, settings=settings)
    shuffled = y[500:][torch.randperm(200, generator=torch.Generator().manual_seed(0))]
    scrambled = probe_all(x[:500], y[:500], x[500:], shuffled, 4, seed=2, settings=settings)
    chosen = lambda m: {k: v for k, v in m.items() if not k.endswith(("_acc", "_top5"))}  # noqa: E731
    assert chosen(base.metrics) == chosen(scrambled.metrics) and base.predictions.keys() == scrambled.predictions.keys()
    assert all(torch.equal(base.predictions[k], scrambled.predictions[k]) for k in base.predictions)


def test_predictions_file_round_trip(tmp_path):
    labels = torch.tensor([3, 1, 4, 1, 5])
    predictions = {
        "labels": compact(labels, 10),
        "latent/linear": compact(torch.tensor([3, 1, 4, 0, 5]), 10),
        "codes/mlp": compact(np.array([0, 1, 2, 3, 4]), 10),
    }
    paths = save_predictions(predictions, tmp_path)
    assert [p.name for p in paths] == ["predictions.npz", f"predictions_v{PROTOCOL}.npz"]
    for path in paths:
        back = read_predictions(path)
        assert back.keys() == predictions.keys()
        for key, values in back.items():
            assert values.dtype == np.uint8 and np.array_equal(values, predictions[key])
    assert compact(torch.tensor([99]), 100).dtype == np.uint8 and compact(torch.tensor([300]), 1000).dtype == np.uint16


def test_protocol_is_logged_with_the_settings():
    params = ProbeSettings().to_params()
    assert params["probe.protocol"] == PROTOCOL == "6"
    assert dataclasses.replace(ProbeSettings(), l2_grid=(1.0,)).to_params()["probe.l2_grid"] == "(1.0,)"


def test_mlp_restarts_are_averaged_and_each_kept():
    x, y = overlapping(n=400)
    settings = ProbeSettings(mlp_epochs=3, batch_size=64, mlp_restarts=3, l2_grid=(1.0,), label_budgets=())
    probed = probe_all(x[:300], y[:300], x[300:], y[300:], 4, seed=0, settings=settings)
    rows = probed.predictions["mlp"]
    assert rows.shape == (3, 100) and probed.predictions["linear"].shape == (100,)
    accs = [float((row == y[300:]).float().mean()) for row in rows]
    assert probed.metrics["mlp_acc"] == pytest.approx(sum(accs) / 3)
    assert probed.metrics["mlp_restart_spread"] == pytest.approx(max(accs) - min(accs))
    # restart 0 is the single probe; the others are seeded restarts, not copies of it
    single = probe_all(x[:300], y[:300], x[300:], y[300:], 4, seed=0, settings=dataclasses.replace(settings, mlp_restarts=1))
    assert torch.equal(rows[0], single.predictions["mlp"]) and "mlp_restart_spread" not in single.metrics
    again = mlp.train_classifier(
        standardise(x[:300].float(), x[300:].float())[0],
        y[:300],
        4,
        mlp.MLP_HIDDEN,
        mlp.restart_seed(0, 2),
        mlp.mlp_member(settings, settings.mlp_lrs[0], settings.mlp_weight_decays[0]),
    )
    test_x = standardise(x[:300].float(), x[300:].float())[1]
    assert torch.equal(predict_scores(again.net, test_x).argmax(1), rows[2])
    # the report reads a restarted probe per image as the fraction of its restarts that is right
    from analysis.predictions import Predictions

    found = Predictions({"run": {"labels": y[300:].numpy(), "latent/mlp": rows.numpy()}})
    assert np.allclose(found.correct("run", "latent/mlp"), (rows == y[300:]).float().mean(0).numpy())
