"""One trial, completely described by a frozen dataclass.

Its dict form is what MLflow stores as params, so a run can be rebuilt from its params
with `TrialConfig.from_params(run.data.params)`.
"""

from __future__ import annotations

import dataclasses
import hashlib
import importlib.util
import json
import math
import os
import re
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any

MODELS = ("vae", "vqvae")
DATASETS = ("digits", "mnist", "fashion_mnist", "cifar10", "cifar100")  # built in; any other name is an image folder
GREY_DATASETS = ("digits", "mnist", "fashion_mnist")  # the rest are complex images: the paper's CIFAR setting, BatchNorm on
FOLDER_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._+-]*")
LABEL_EMBEDDINGS = ("none", "add")
PRECISIONS = ("fp32", "bf16")
# The VQ-VAE's quantizer (issue 30). `plain` is the paper's, hand-written (benchmark/quantizer.py); the others come from
# vector-quantize-pytorch (benchmark/quantizer_arms.py, the `quantizers` extra): an EMA codebook with dead-code expiry,
# cosine-similarity codes looked up in 8 dimensions, the rotation trick, finite scalar quantization, residual VQ.
QUANTIZERS = ("plain", "ema", "cosine", "rotation", "fsq", "residual")
QUANTIZER_LIBRARY = "vector_quantize_pytorch"
# FSQ's level sets for codebooks of about 2^8, 2^10, 2^12, 2^14 and 2^16 codes (Mentzer et al. 2023, Table 1):
# `quantizer=fsq` takes the one whose size is nearest K in log2, e.g. K = 512 -> (8, 5, 5, 5), 1,000 codes.
FSQ_LEVELS = ((8, 6, 5), (8, 5, 5, 5), (7, 5, 5, 5, 5), (8, 8, 8, 6, 5), (8, 8, 8, 5, 5, 5))
RESIDUAL_DEPTH = 4  # residual VQ's quantizers, each of K codes: every position holds this many codes
TEST_HOOKS = ("fail_at_epoch",)  # config keys the tests set to inject faults: never a command-line option or a setting

# The paper's setting (Radman, Table 1), written once: the config's defaults, the `paper` space, the sensitivity
# study's centre, the perf workloads and the report's prose all read it from here.
PAPER_VQ = {"num_codes": 512, "code_dim": 64, "beta": 0.25}
PAPER_TRAINING = {"epochs": 10, "lr": 1e-3, "batch_size": 64}
# The VAE's counterpart of beta, which the paper does not state. The loss is per-pixel mean MSE + kl_weight * KL /
# pixel count; 1.0 is the textbook Gaussian decoder and gives blurry near-prior latents on MNIST (MSE ~0.1), 0.01
# reconstructs.
DEFAULT_KL_WEIGHT = 0.01
# A rate-matched VAE's gamma in recon + gamma * |KL - C| (both per pixel, as the loss above): large enough that the
# KL sits at C rather than trading against the reconstruction (Burgess et al. 2018 use 1000 on summed losses, the same
# scale as per-pixel means); measured on digits and MNIST in docs/trial.md.
DEFAULT_CAPACITY_WEIGHT = 100.0


def paper_vq_text() -> str:
    """The paper's VQ-VAE as prose says it: K=512, D=64, beta=0.25."""
    return f"K={PAPER_VQ['num_codes']}, D={PAPER_VQ['code_dim']}, beta={PAPER_VQ['beta']:g}"


class ConfigError(ValueError):
    """Bad user input: the message names the key, the value and what is allowed."""


@dataclass(frozen=True)
class TrialConfig:
    model: str = "vqvae"
    dataset: str = "digits"
    seed: int = 0
    epochs: int = PAPER_TRAINING["epochs"]
    batch_size: int = PAPER_TRAINING["batch_size"]
    lr: float = PAPER_TRAINING["lr"]
    num_codes: int = PAPER_VQ["num_codes"]
    code_dim: int = PAPER_VQ["code_dim"]
    beta: float = PAPER_VQ["beta"]
    quantizer: str = "plain"
    kl_weight: float = DEFAULT_KL_WEIGHT
    # A rate-matched VAE: the bits per image its KL is held at, in place of the KL weight (0 = off, the KL weight rules).
    target_rate: float = 0.0
    capacity_weight: float = DEFAULT_CAPACITY_WEIGHT
    batch_norm: bool = False
    label_embedding: str = "none"
    ema: bool = False
    ema_decay: float = 0.99
    restart_dead_codes: bool = False
    precision: str = "fp32"
    # The per-epoch probe on held-out train images (benchmark/evaluation/train_probe.py): every N epochs
    # and after the last; 0 = never. Searches rank trials on it, so they need it every epoch.
    train_probe_every: int = 1
    # A test hook, not a setting (benchmark/fault_injection.py): crash once after this epoch (0 = never).
    fail_at_epoch: int = 0

    def __post_init__(self) -> None:
        _check_choice("model", self.model, MODELS)
        check_dataset(self.dataset)
        _check_choice("label_embedding", self.label_embedding, LABEL_EMBEDDINGS)
        _check_choice("precision", self.precision, PRECISIONS)
        _check_choice("quantizer", self.quantizer, QUANTIZERS)
        for key in ("epochs", "batch_size", "num_codes", "code_dim"):
            if getattr(self, key) < 1:
                raise ConfigError(f"{key}={getattr(self, key)!r} is not allowed: it must be an integer >= 1")
        for key in ("beta", "kl_weight", "target_rate", "capacity_weight"):
            if not (math.isfinite(getattr(self, key)) and getattr(self, key) >= 0):
                raise ConfigError(f"{key}={getattr(self, key)!r} is not allowed: it must be a finite number >= 0")
        if not (math.isfinite(self.lr) and self.lr > 0):
            raise ConfigError(f"lr={self.lr!r} is not allowed: the learning rate must be a finite number > 0")
        if self.target_rate > 0 and self.model != "vae":
            raise ConfigError(
                f"target_rate={self.target_rate!r} is not allowed for model={self.model}: a VQ-VAE's rate is set by its "
                "positions and K (rate/nominal_bits); target_rate holds a VAE's KL at a rate: pass --model vae"
            )
        if self.target_rate > 0 and self.kl_weight != DEFAULT_KL_WEIGHT:
            raise ConfigError(
                f"kl_weight={self.kl_weight!r} and target_rate={self.target_rate!r} both set the VAE's KL term: "
                "pass one of them (target_rate replaces the KL weight)"
            )
        if self.quantizer != "plain":
            self._check_library_arm()
        if self.capacity_weight <= 0:
            raise ConfigError(f"capacity_weight={self.capacity_weight!r} is not allowed: it must be a finite number > 0")
        if not 0 < self.ema_decay < 1:
            raise ConfigError(f"ema_decay={self.ema_decay!r} is not allowed: it must lie in (0, 1)")
        for key in ("seed", "fail_at_epoch", "train_probe_every"):
            if getattr(self, key) < 0:
                raise ConfigError(f"{key}={getattr(self, key)!r} is not allowed: it must be >= 0")

    def _check_library_arm(self) -> None:
        if self.model != "vqvae":
            raise ConfigError(
                f"quantizer={self.quantizer!r} is not allowed for model={self.model}: only a VQ-VAE quantizes; pass --model vqvae"
            )
        if self.ema or self.restart_dead_codes:
            raise ConfigError(
                f"ema / restart_dead_codes are options of quantizer=plain, not of quantizer={self.quantizer!r}: the library's arms "
                "bring their own codebook updates; drop them or use quantizer=plain"
            )
        if importlib.util.find_spec(QUANTIZER_LIBRARY) is None:
            raise ConfigError(
                f"quantizer={self.quantizer!r} needs vector-quantize-pytorch, which is not installed: "
                "pip install 'vqbench[quantizers]' (or use quantizer=plain, the paper's)"
            )

    @classmethod
    def from_params(cls, params: dict[str, str]) -> "TrialConfig":
        """Rebuild from a run's MLflow params: the config's keys, beside settings logged under a prefix (`probe.*`), which are not."""
        return cls.from_dict({key: value for key, value in params.items() if "." not in key})

    @classmethod
    def from_dict(cls, raw: dict[str, Any]) -> "TrialConfig":
        """Build and validate; accepts the strings MLflow gives back as params."""
        known = {f.name: f for f in fields(cls)}
        unknown = sorted(set(raw) - set(known))
        if unknown:
            raise ConfigError(f"unknown config key(s) {unknown}: allowed keys are {sorted(known)}")
        values = {key: _coerce(key, value, known[key].type) for key, value in raw.items()}
        if "batch_norm" not in values and "dataset" in values:
            values["batch_norm"] = values["dataset"] not in GREY_DATASETS
        return cls(**values)

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @property
    def config_id(self) -> str:
        """Stable short hash: one trial config, one id, across retries and resumes."""
        raw = self.to_dict()
        if raw["quantizer"] == "plain":  # added later: every config from before it keeps its id (resumes, stored runs)
            del raw["quantizer"]
        return hashlib.sha1(json.dumps(raw, sort_keys=True).encode()).hexdigest()[:12]

    @property
    def fsq_levels(self) -> tuple[int, ...]:
        return fsq_levels(self.num_codes)

    @property
    def codebook_size(self) -> int:
        return codebook_size(self.num_codes, self.quantizer)

    @property
    def leaks_label(self) -> bool:
        return self.label_embedding != "none"

    @property
    def name(self) -> str:
        """What the trial is, in one token: its Ray Tune trial name and its MLflow run name."""
        parts = [self.model, dataset_label(self.dataset)]
        if self.model == "vqvae":
            arm = [] if self.quantizer == "plain" else [self.quantizer]
            parts += [*arm, f"K{self.codebook_size}", f"D{self.code_dim}"] + ([] if self.quantizer == "fsq" else [f"b{self.beta:g}"])
        else:
            parts += [f"D{self.code_dim}", f"rate{self.target_rate:g}" if self.target_rate > 0 else f"kl{self.kl_weight:g}"]
        if self.leaks_label:
            parts.append("labelemb")
        return "-".join(parts + [f"s{self.seed}"])


def fsq_levels(num_codes: int) -> tuple[int, ...]:
    """FSQ's levels for a K: the recommended set nearest it in log2 (a tie: the smaller)."""
    return min(FSQ_LEVELS, key=lambda levels: abs(math.log2(math.prod(levels)) - math.log2(num_codes)))


def codebook_size(num_codes: int, quantizer: str) -> int:
    """Codes each position chooses from: K, except under FSQ, whose levels fix it (`fsq_levels`)."""
    return math.prod(fsq_levels(num_codes)) if quantizer == "fsq" else num_codes


def check_dataset(name: Any) -> None:
    """A built-in dataset, or an image folder: a folder's name inside the data root, or an absolute path."""
    if name in DATASETS:
        return
    if isinstance(name, str) and (FOLDER_NAME.fullmatch(name) or (os.path.isabs(name) and FOLDER_NAME.fullmatch(Path(name).name))):
        return
    raise ConfigError(
        f"dataset={name!r} is not allowed: choose one of {', '.join(DATASETS)}, or name an image folder: a folder inside the data "
        "root (letters, digits, . _ + -, e.g. CIFAR-10-images) or an absolute path to one"
    )


def normalise_dataset(name: str) -> str:
    """What a command line says, as a config holds it: a path to an image folder (anything with a `/`, or `~`)
    made absolute, so that every Ray worker finds it whatever its working folder; a built-in or a bare folder
    name (looked up inside the data root) unchanged."""
    if "/" in name or os.sep in name or name.startswith("~"):
        return str(Path(name).expanduser().resolve())
    return name


def dataset_label(name: str) -> str:
    """How a dataset is named in runs, tables and figures: an image folder by its folder's name."""
    return Path(name).name if os.path.isabs(name) else name


def _check_choice(key: str, value: Any, allowed: tuple[str, ...]) -> None:
    if value not in allowed:
        raise ConfigError(f"{key}={value!r} is not allowed: choose one of {', '.join(allowed)}")


def _coerce(key: str, value: Any, kind: str) -> Any:
    if kind == "bool":
        if not isinstance(value, str):
            return bool(value)
        if value.lower() not in ("true", "false", "1", "0"):
            raise ConfigError(f"{key}={value!r} is not allowed: write true or false (or 1 or 0)")
        return value.lower() in ("true", "1")
    try:
        if kind == "int":
            if isinstance(value, float) and not value.is_integer():
                raise ValueError
            return int(value)
        if kind == "float":
            return float(value)
        return str(value)
    except (TypeError, ValueError):
        raise ConfigError(f"{key}={value!r} is not allowed: it must be a {kind}") from None
