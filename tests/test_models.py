"""TrialConfig validation and round trips, the vector quantizer, and the two models."""

from __future__ import annotations

import dataclasses
import math

import pytest
import torch
from torch import nn

from benchmark.config import ConfigError, TrialConfig
from benchmark.models import VAE, VQVAE, build_model
from benchmark.quantizer import VectorQuantizer, code_perplexity
from benchmark.rate import gaussian_kl_nats

pytestmark = pytest.mark.usefixtures("one_torch_thread")


# ---------------------------------------------------------------- config


def test_defaults_are_the_papers_settings():
    c = TrialConfig()
    assert (c.num_codes, c.code_dim, c.beta, c.lr, c.batch_size) == (512, 64, 0.25, 1e-3, 64)
    assert c.label_embedding == "none" and not c.leaks_label
    assert TrialConfig(label_embedding="add").leaks_label


def test_unknown_key_is_named():
    with pytest.raises(ConfigError, match="num_code_s"):
        TrialConfig.from_dict({"model": "vae", "num_code_s": 3})


@pytest.mark.parametrize(
    "key, value, allowed",
    [("model", "gan", "vqvae"), ("dataset", "image net", "cifar100"), ("label_embedding", "concat", "add"), ("precision", "fp16", "bf16")],
)
def test_bad_choice_names_key_value_and_choices(key, value, allowed):
    for build in (lambda: TrialConfig(**{key: value}), lambda: TrialConfig.from_dict({key: value})):
        with pytest.raises(ConfigError) as err:
            build()
        assert key in str(err.value) and value in str(err.value) and allowed in str(err.value)


@pytest.mark.parametrize(
    "key, value",
    [
        ("num_codes", 0),
        ("code_dim", 0),
        ("epochs", 0),
        ("batch_size", 0),
        ("epochs", -3),
        ("beta", -0.1),
        ("kl_weight", -1.0),
        ("lr", 0.0),
        ("lr", -1e-3),
        ("ema_decay", 0.0),
        ("ema_decay", 1.0),
        ("seed", -1),
        ("fail_at_epoch", -1),
        ("target_rate", -1.0),
        ("capacity_weight", 0.0),
        ("capacity_weight", -2.0),
    ],
)
def test_out_of_range_values_name_the_key(key, value):
    with pytest.raises(ConfigError, match=key):
        TrialConfig(**{key: value})
    with pytest.raises(ConfigError, match=key):  # and as MLflow strings
        TrialConfig.from_dict({key: str(value)})


def test_zero_beta_and_kl_weight_are_allowed():
    c = TrialConfig(beta=0.0, kl_weight=0.0)
    assert c.beta == 0.0 and c.kl_weight == 0.0


@pytest.mark.parametrize("key, value", [("beta", "nan"), ("kl_weight", "nan"), ("lr", "inf")])
def test_non_finite_values_are_rejected(key, value):
    with pytest.raises(ConfigError, match=key):
        TrialConfig.from_dict({key: value})


@pytest.mark.parametrize(
    "key, value", [("epochs", "ten"), ("epochs", "2.5"), ("epochs", 2.5), ("lr", "fast"), ("ema", "yes"), ("batch_norm", "maybe")]
)
def test_values_of_the_wrong_type_name_the_key(key, value):
    with pytest.raises(ConfigError, match=key):
        TrialConfig.from_dict({key: value})


NON_DEFAULT = TrialConfig(
    model="vae",
    dataset="fashion_mnist",
    seed=7,
    epochs=3,
    batch_size=32,
    lr=3e-4,
    num_codes=128,
    code_dim=16,
    beta=0.5,
    kl_weight=0.1,
    capacity_weight=5.0,
    batch_norm=True,
    label_embedding="add",
    ema=True,
    ema_decay=0.9,
    restart_dead_codes=True,
    precision="bf16",
    train_probe_every=3,
    fail_at_epoch=2,
)


RATE_MATCHED = TrialConfig(model="vae", dataset="mnist", target_rate=48.5, capacity_weight=30.0)


def test_a_rate_matched_vae_is_named_by_its_rate_and_refuses_what_contradicts_it():
    assert RATE_MATCHED.name == "vae-mnist-D64-rate48.5-s0" and TrialConfig(model="vae").name == "vae-digits-D64-kl0.01-s0"
    with pytest.raises(ConfigError, match="target_rate=20.0 is not allowed for model=vqvae: a VQ-VAE's rate is set by"):
        TrialConfig(model="vqvae", target_rate=20.0)
    with pytest.raises(ConfigError, match="kl_weight=0.1 and target_rate=20.0 both set the VAE's KL term"):
        TrialConfig.from_dict({"model": "vae", "kl_weight": "0.1", "target_rate": "20"})


@pytest.mark.parametrize("config", [TrialConfig(), NON_DEFAULT, RATE_MATCHED, TrialConfig(dataset="cifar100", batch_norm=False)])
def test_from_dict_round_trips_to_dict_and_mlflow_strings(config):
    assert TrialConfig.from_dict(config.to_dict()) == config
    as_params = {key: str(value) for key, value in config.to_dict().items()}  # what MLflow gives back
    rebuilt = TrialConfig.from_dict(as_params)
    assert rebuilt == config
    for f in dataclasses.fields(TrialConfig):
        assert type(getattr(rebuilt, f.name)) is type(getattr(config, f.name)), f.name
    assert rebuilt.config_id == config.config_id


def test_from_params_ignores_the_settings_logged_beside_the_config():
    from benchmark.evaluation.probe_settings import ProbeSettings

    params = {**{key: str(value) for key, value in NON_DEFAULT.to_dict().items()}, **ProbeSettings().to_params()}
    assert TrialConfig.from_params(params) == NON_DEFAULT
    with pytest.raises(ConfigError, match="unknown config key"):
        TrialConfig.from_params({**params, "bogus": "1"})  # an unprefixed unknown key is still an error


def test_to_dict_covers_every_field():
    assert set(NON_DEFAULT.to_dict()) == {f.name for f in dataclasses.fields(TrialConfig)}


def test_bool_strings():
    for text, value in (("True", True), ("false", False), ("1", True), ("0", False)):
        assert TrialConfig.from_dict({"ema": text}).ema is value


def test_batch_norm_defaults_on_for_cifar_only():
    assert TrialConfig.from_dict({"dataset": "cifar10"}).batch_norm is True
    assert TrialConfig.from_dict({"dataset": "cifar100"}).batch_norm is True
    assert TrialConfig.from_dict({"dataset": "mnist"}).batch_norm is False
    assert TrialConfig.from_dict({"dataset": "digits"}).batch_norm is False
    assert TrialConfig.from_dict({"dataset": "cifar10", "batch_norm": "False"}).batch_norm is False
    assert TrialConfig.from_dict({"dataset": "mnist", "batch_norm": "true"}).batch_norm is True


def test_config_id_is_stable_and_distinguishes_configs():
    a, b = TrialConfig(seed=1), TrialConfig(seed=1)
    assert a.config_id == b.config_id and len(a.config_id) == 12
    assert TrialConfig(seed=2).config_id != a.config_id
    assert TrialConfig(seed=1, beta=0.3).config_id != a.config_id


def test_config_is_frozen():
    with pytest.raises(dataclasses.FrozenInstanceError):
        TrialConfig().epochs = 5  # type: ignore[misc]


# ---------------------------------------------------------------- quantizer


def make_quantizer(num_codes=16, code_dim=4, seed=0, **kwargs) -> VectorQuantizer:
    torch.manual_seed(seed)
    vq = VectorQuantizer(num_codes, code_dim, **kwargs)
    with torch.no_grad():
        vq.codebook.data.normal_()  # spread codes out so that the nearest one is a real choice
        vq.ema_sum.copy_(vq.codebook.data)
    return vq


def test_nearest_code_matches_brute_force():
    vq = make_quantizer(num_codes=16, code_dim=4)
    z = torch.randn(3, 4, 5, 6)
    q = vq(z)
    assert q.indices.shape == (3, 5, 6) and q.indices.dtype == torch.int64
    assert q.z_q.shape == z.shape
    for b in range(3):
        vectors = z[b].permute(1, 2, 0).reshape(-1, 4)  # (H*W, D), row-major over (h, w)
        expected = torch.cdist(vectors, vq.codebook.detach()).argmin(1).reshape(5, 6)
        assert torch.equal(q.indices[b], expected)
    # the forward value is the chosen code at each position
    chosen = vq.codebook.detach()[q.indices].permute(0, 3, 1, 2)
    torch.testing.assert_close(q.z_q, chosen)


def test_loss_is_codebook_plus_beta_commitment():
    vq = make_quantizer(beta=0.3)
    z = torch.randn(2, 4, 3, 3)
    q = vq(z)
    chosen = vq.codebook.detach()[q.indices].permute(0, 3, 1, 2)
    mse = (z - chosen).pow(2).mean()
    torch.testing.assert_close(q.loss, (1 + 0.3) * mse)


def test_straight_through_gradient_reaches_the_encoder_output():
    vq = make_quantizer()
    z = torch.randn(2, 4, 3, 3, requires_grad=True)
    q = vq(z)
    upstream = torch.randn_like(z)
    (q.z_q * upstream).sum().backward()
    torch.testing.assert_close(z.grad, upstream)  # d z_q / d z is the identity
    # the decoder path gives the codebook nothing: only the codebook loss moves it
    assert vq.codebook.grad is None or torch.count_nonzero(vq.codebook.grad) == 0


def test_codebook_gradient_comes_from_the_codebook_loss():
    vq = make_quantizer(num_codes=16, code_dim=4, beta=0.25)
    z = torch.randn(2, 4, 3, 3)  # no gradient to the input: only the codebook can receive one
    q = vq(z)
    q.loss.backward()
    flat = z.permute(0, 2, 3, 1).reshape(-1, 4)
    idx = q.indices.reshape(-1)
    # d/dc_k mean((c_idx - z)^2) = 2 / (N * D) * sum over the vectors assigned to k of (c_k - z)
    expected = torch.zeros_like(vq.codebook)
    expected.index_add_(0, idx, 2 * (vq.codebook.detach()[idx] - flat) / flat.numel())
    torch.testing.assert_close(vq.codebook.grad, expected)
    unused = torch.ones(16, dtype=torch.bool)
    unused[idx] = False
    assert torch.count_nonzero(vq.codebook.grad[unused]) == 0
    assert torch.count_nonzero(vq.codebook.grad[~unused].abs().sum(1)) == (~unused).sum()


def test_commitment_gradient_pulls_the_encoder_output_towards_its_code():
    vq = make_quantizer(beta=0.25)
    z = torch.randn(2, 4, 3, 3, requires_grad=True)
    q = vq(z)
    q.loss.backward()
    chosen = vq.codebook.detach()[q.indices].permute(0, 3, 1, 2)
    torch.testing.assert_close(z.grad, 0.25 * 2 * (z.detach() - chosen) / z.numel())


def test_ema_mode_moves_codes_to_the_mean_of_their_vectors_without_gradient():
    vq = make_quantizer(num_codes=8, code_dim=3, ema=True, ema_decay=1e-6, beta=0.25)
    assert not vq.codebook.requires_grad
    z = torch.randn(4, 3, 4, 4)
    before = vq.codebook.detach().clone()

    vq.eval()
    vq(z)
    assert torch.equal(vq.codebook.detach(), before)  # no update outside training

    vq.train()
    q = vq(z)
    flat = z.permute(0, 2, 3, 1).reshape(-1, 3)
    idx = q.indices.reshape(-1)
    used = idx.unique()
    assert len(used) > 1
    # the assignment was made with the old codebook; with a tiny decay each used code is now its cluster mean
    assert torch.equal(idx, torch.cdist(flat, before).argmin(1))
    for k in used:
        torch.testing.assert_close(vq.codebook.detach()[k], flat[idx == k].mean(0), rtol=1e-3, atol=1e-3)
    # loss has no codebook term, and backward leaves the codebook alone
    torch.testing.assert_close(q.loss, 0.25 * (flat - before[idx]).pow(2).mean())
    z2 = torch.randn(2, 3, 4, 4, requires_grad=True)
    vq(z2).loss.backward()
    assert vq.codebook.grad is None
    assert z2.grad is not None and torch.count_nonzero(z2.grad) > 0


def test_ema_with_a_usual_decay_moves_codes_part_way():
    vq = make_quantizer(num_codes=8, code_dim=3, ema=True, ema_decay=0.9)
    z = torch.randn(4, 3, 4, 4) + 3.0
    before = vq.codebook.detach().clone()
    q = vq.train()(z)
    flat = z.permute(0, 2, 3, 1).reshape(-1, 3)
    idx = q.indices.reshape(-1)
    for k in idx.unique():
        target = flat[idx == k].mean(0)
        assert (vq.codebook.detach()[k] - target).norm() < (before[k] - target).norm()


def test_dead_codes_are_restarted_from_encoder_outputs():
    torch.manual_seed(0)
    vq = VectorQuantizer(8, 2, restart_dead_codes=True)  # codes start near 0
    z = torch.randn(2, 2, 4, 4) * 0.1 + 5.0  # every vector far from all codes: one code wins them all
    flat = z.permute(0, 2, 3, 1).reshape(-1, 2)
    initial = vq.codebook.detach().clone()
    first = vq.train()(z).indices.unique()
    assert len(first) == 1
    winner = first.item()
    changed_at = None
    for step in range(2000):
        vq(z)
        if not torch.equal(vq.codebook.detach(), initial):
            changed_at = step
            break
    assert changed_at is not None, "no dead code was ever restarted"
    changed = (vq.codebook.detach() != initial).any(1)
    assert not changed[winner]  # the used code is never re-seeded
    assert changed.sum() == 7  # every unused code is
    for row in vq.codebook.detach()[changed]:
        assert (flat == row).all(1).any(), "a restarted code is not one of the encoder outputs"
    # the batch now spreads over several codes
    assert vq(z).perplexity > 1.5


def test_restart_is_off_by_default():
    torch.manual_seed(0)
    vq = VectorQuantizer(8, 2)
    z = torch.randn(2, 2, 4, 4) * 0.1 + 5.0
    initial = vq.codebook.detach().clone()
    vq.train()
    for _ in range(1000):
        vq(z)
    assert torch.equal(vq.codebook.detach(), initial)


def test_ema_with_restart_spreads_usage():
    torch.manual_seed(0)
    vq = VectorQuantizer(8, 2, ema=True, ema_decay=0.9, restart_dead_codes=True)
    z = torch.randn(2, 2, 4, 4) * 0.5 + 5.0
    vq.train()
    assert vq(z).indices.unique().numel() == 1
    for _ in range(200):
        vq(z)
    assert vq(z).indices.unique().numel() > 1


@pytest.mark.parametrize("k", [1, 7, 512])
def test_perplexity_is_k_for_uniform_usage_and_1_for_one_code(k):
    uniform = torch.arange(k).repeat(3)[torch.randperm(3 * k)]
    assert code_perplexity(uniform, k).item() == pytest.approx(k, rel=1e-4)
    single = torch.full((5, 4, 4), k - 1)
    assert code_perplexity(single, k).item() == pytest.approx(1.0, rel=1e-5)


def test_perplexity_of_two_codes_used_evenly_is_two():
    assert code_perplexity(torch.tensor([[3, 9], [9, 3]]), 16).item() == pytest.approx(2.0, rel=1e-5)


def test_quantizer_output_perplexity_matches_its_indices():
    vq = make_quantizer(num_codes=16)
    q = vq(torch.randn(3, 4, 4, 4))
    torch.testing.assert_close(q.perplexity, code_perplexity(q.indices, 16))


# ---------------------------------------------------------------- models

SMALL = dict(num_codes=32, code_dim=8)


@pytest.mark.parametrize("channels", [1, 3])
@pytest.mark.parametrize("model_name", ["vae", "vqvae"])
def test_forward_and_represent_shapes(model_name, channels):
    torch.manual_seed(0)
    config = TrialConfig(model=model_name, **SMALL)
    model = build_model(config, channels, 10)
    assert isinstance(model, VAE if model_name == "vae" else VQVAE)
    x, y = torch.rand(5, channels, 32, 32), torch.randint(0, 10, (5,))
    model.train()
    out = model(x, y)
    assert out.recon.shape == x.shape
    assert out.loss.ndim == 0 and torch.isfinite(out.loss)
    expected_terms = {"recon_loss", "kl"} if model_name == "vae" else {"recon_loss", "vq_loss", "perplexity"}
    assert set(out.terms) == expected_terms
    out.loss.backward()
    first_conv = model.encoder[0]
    assert first_conv.weight.grad is not None and torch.count_nonzero(first_conv.weight.grad) > 0

    model.eval()
    rep = model.represent(x, y)
    assert rep["latent"].shape == (5, 16 * config.code_dim)  # 4x4 positions of D channels
    assert rep["recon"].shape == x.shape
    if model_name == "vae":
        assert set(rep) == {"latent", "kl_nats", "recon"} and rep["kl_nats"].shape == (5,) and bool((rep["kl_nats"] >= 0).all())
    else:
        assert set(rep) == {"latent", "codes", "recon"}
        assert rep["codes"].shape == (5, 16) and rep["codes"].dtype == torch.int64
        assert rep["codes"].min() >= 0 and rep["codes"].max() < config.num_codes
        # the latent is exactly the codes' vectors, position by position
        vectors = rep["latent"].view(5, config.code_dim, 16).transpose(1, 2)
        torch.testing.assert_close(vectors, model.quantizer.codebook.detach()[rep["codes"]])


def test_losses_combine_their_terms():
    torch.manual_seed(0)
    x, y = torch.rand(4, 1, 32, 32), torch.randint(0, 10, (4,))
    vae = build_model(TrialConfig(model="vae", kl_weight=0.3, **SMALL), 1, 10)
    out = vae(x, y)
    torch.testing.assert_close(out.loss, out.terms["recon_loss"] + 0.3 * out.terms["kl"])
    assert out.terms["kl"] >= 0
    vq = build_model(TrialConfig(model="vqvae", **SMALL), 1, 10)
    out = vq(x, y)
    torch.testing.assert_close(out.loss, out.terms["recon_loss"] + out.terms["vq_loss"])
    torch.testing.assert_close(out.terms["recon_loss"], (out.recon - x).pow(2).mean())


def test_vae_representation_is_the_deterministic_posterior_mean():
    torch.manual_seed(0)
    model = build_model(TrialConfig(model="vae", **SMALL), 1, 10).eval()
    x, y = torch.rand(3, 1, 32, 32), torch.randint(0, 10, (3,))
    a, b = model.represent(x, y), model.represent(x, y)
    assert torch.equal(a["latent"], b["latent"])
    mean, _ = model.posterior(x, y)
    assert torch.equal(a["latent"], mean.flatten(1))
    torch.testing.assert_close(a["recon"], model.decoder(mean))


@pytest.mark.parametrize("model_name", ["vae", "vqvae"])
def test_label_embedding_leaks_the_label_only_when_on(model_name):
    x = torch.rand(6, 1, 32, 32)
    y1, y2 = torch.zeros(6, dtype=torch.long), torch.arange(6)
    torch.manual_seed(0)
    off = build_model(TrialConfig(model=model_name, label_embedding="none", **SMALL), 1, 10).eval()
    assert off.label_embedding is None
    assert not any("label" in name for name, _ in off.named_parameters())
    assert torch.equal(off.represent(x, y1)["latent"], off.represent(x, y2)["latent"])

    torch.manual_seed(0)
    on = build_model(TrialConfig(model=model_name, label_embedding="add", **SMALL), 1, 10).eval()
    assert isinstance(on.label_embedding, nn.Embedding)
    assert on.label_embedding.weight.shape == (10, SMALL["code_dim"])
    a, b = on.represent(x, y1)["latent"], on.represent(x, y2)["latent"]
    assert torch.equal(a[0], b[0])  # same image, same label
    assert not torch.equal(a[1:], b[1:])  # same images, other labels
    # the embedding is trained: the loss reaches it
    on.train()
    on(x, y2).loss.backward()
    assert on.label_embedding.weight.grad is not None and torch.count_nonzero(on.label_embedding.weight.grad) > 0


@pytest.mark.parametrize("model_name", ["vae", "vqvae"])
def test_batch_norm_switch(model_name):
    with_bn = build_model(TrialConfig(model=model_name, batch_norm=True, **SMALL), 3, 100)
    without = build_model(TrialConfig(model=model_name, batch_norm=False, **SMALL), 3, 100)
    assert sum(isinstance(m, nn.BatchNorm2d) for m in with_bn.modules()) == 4  # 2 in the encoder, 2 in the decoder
    assert not any(isinstance(m, nn.BatchNorm2d) for m in without.modules())


def test_vqvae_quantizer_follows_the_config():
    model = build_model(
        TrialConfig(model="vqvae", num_codes=24, code_dim=6, beta=0.7, ema=True, ema_decay=0.8, restart_dead_codes=True), 1, 10
    )
    q = model.quantizer
    assert q.codebook.shape == (24, 6)
    assert (q.beta, q.ema, q.ema_decay, q.restart_dead_codes) == (0.7, True, 0.8, True)
    assert not q.codebook.requires_grad


def test_a_rate_matched_vae_penalises_its_kl_distance_from_the_target():
    x, y = torch.rand(4, 1, 32, 32), torch.arange(4)  # images are padded to 32 x 32
    plain = build_model(TrialConfig(model="vae", dataset="mnist"), 1, 10)
    matched = build_model(TrialConfig(model="vae", dataset="mnist", target_rate=30.0, capacity_weight=7.0), 1, 10)
    matched.load_state_dict(plain.state_dict())  # the same weights: the same posterior, reconstruction and KL
    torch.manual_seed(0)
    a = plain(x, y)
    torch.manual_seed(0)
    b = matched(x, y)
    assert torch.equal(a.terms["kl"], b.terms["kl"]) and torch.equal(a.terms["recon_loss"], b.terms["recon_loss"])
    assert torch.allclose(a.loss, a.terms["recon_loss"] + 0.01 * a.terms["kl"])
    target_per_pixel = 30.0 * math.log(2) / 1024  # the loss's KL is per pixel; the target is bits per image
    assert torch.allclose(b.loss, b.terms["recon_loss"] + 7.0 * (b.terms["kl"] - target_per_pixel).abs())
    # and the KL per pixel is each image's KL (in nats) over its pixels, averaged
    mean, logvar = plain.posterior(x, y)
    assert torch.allclose(a.terms["kl"], gaussian_kl_nats(mean, logvar).mean() / 1024)
