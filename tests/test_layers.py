"""The layers stay apart: data flows config -> data -> model -> train -> evaluate -> tracking -> analysis.

Each layer's modules are imported, one after another, in a fresh interpreter, so what they pull in transitively
counts too, and the first module that brings in a forbidden package is named:
- the ML core and evaluation import neither Ray nor MLflow (a trial runs, and is tested, without either);
- tracking and analysis import no torch (a report from a CSV must not need it);
- the preflight checks do not import Ray Tune (bad input is refused before Tune's seconds of imports);
- the sweep never imports the analysis, and reprobe (saved models probed again) needs no Ray.
A package's modules are listed from its folder, not from what its `__init__` imports, so a rule covers every one.
"""

from __future__ import annotations

import json
import pkgutil
import subprocess
import sys

import pytest

from tests.conftest import REPO


def modules_of(package: str) -> tuple[str, ...]:
    """Every module of a package (its sub-packages' too), from the files on disk; not `__main__`, which runs a CLI."""
    folder = REPO.joinpath(*package.split("."))
    found = pkgutil.walk_packages([str(folder)], prefix=f"{package}.")
    return tuple(m.name for m in found if not m.ispkg and not m.name.endswith(".__main__"))


# The ML core: what one trial needs, from its config to its trained model.
ML_CORE = tuple(
    f"benchmark.{name}"
    for name in (
        "config",
        "space",
        "data",
        "data_files",
        "image_folder",
        "models",
        "quantizer",
        "quantizer_arms",
        "rate",
        "train",
        "trial",
        "saved_model",
        "outputs",
        "error_text",
        "result_keys",
        "fault_injection",
        "machine",
    )
)

# The one top-level module outside it: it reloads models from MLflow and probes them again, without Ray.
REPROBE = "benchmark.reprobe"

RULES = [
    ("the ML core", ML_CORE, ("ray", "mlflow")),
    ("benchmark.evaluation", modules_of("benchmark.evaluation"), ("ray", "mlflow")),
    ("benchmark.image_folder", ("benchmark.image_folder",), ("ray", "mlflow", "torch")),
    ("benchmark.data_files", ("benchmark.data_files",), ("ray", "mlflow", "torch")),  # what preflight checks, before torch
    ("benchmark.tracking", modules_of("benchmark.tracking"), ("torch",)),
    ("analysis", modules_of("analysis"), ("torch",)),
    ("benchmark.sweep.preflight", ("benchmark.sweep.preflight",), ("ray.tune", "torch")),  # bad input refused in a second
    ("benchmark.sweep", modules_of("benchmark.sweep"), ("analysis",)),  # the library never imports the analysis
    (REPROBE, (REPROBE,), ("ray",)),
]


def leaks(modules: tuple[str, ...], forbidden: tuple[str, ...], path: str = str(REPO)) -> dict[str, list[str]]:
    """The first of `modules` whose import brings in any of `forbidden`, with what it brought ({} if none does)."""
    code = (
        f"import importlib, json, sys; sys.path.insert(0, {path!r})\n"
        f"for name in {list(modules)!r}:\n"
        "    importlib.import_module(name)\n"
        f"    found = [m for m in {list(forbidden)!r} if m in sys.modules]\n"
        "    if found:\n"
        "        print(json.dumps({name: found})); break\n"
        "else:\n"
        "    print('{}')\n"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=REPO, timeout=300)
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout.strip().splitlines()[-1])


@pytest.mark.parametrize("layer, modules, forbidden", RULES, ids=[f"{name} without {'+'.join(f)}" for name, _, f in RULES])
def test_a_layer_imports_nothing_from_the_layers_it_must_not_know(layer, modules, forbidden):
    assert modules, f"{layer} lists no modules: the rule would check nothing"
    assert leaks(modules, forbidden) == {}, f"{layer} pulls in {forbidden}: move what it needs into its own layer"


def test_every_module_of_benchmark_falls_under_a_rule():
    """A new module is put in a layer: the top level is the ML core (and reprobe), each sub-package has its rule,
    and a package's rule lists its modules from its folder."""
    top = {m.name for m in pkgutil.iter_modules([str(REPO / "benchmark")])}
    packages = {m.name for m in pkgutil.iter_modules([str(REPO / "benchmark")]) if m.ispkg}
    assert {f"benchmark.{name}" for name in top - packages} == {*ML_CORE, REPROBE}
    assert {f"benchmark.{name}" for name in packages} <= {layer for layer, _, _ in RULES}
    assert {"benchmark.evaluation.probe", "benchmark.evaluation.evaluate"} <= set(modules_of("benchmark.evaluation"))
    assert {"benchmark.tracking.store", "benchmark.tracking.logged_model"} <= set(modules_of("benchmark.tracking"))
    assert {"benchmark.sweep.cli", "benchmark.sweep.trainable"} <= set(modules_of("benchmark.sweep"))
    assert "benchmark.sweep.__main__" not in modules_of("benchmark.sweep")
    assert {"analysis.runs", "analysis.report"} <= set(modules_of("analysis"))


def test_the_check_notices_a_forbidden_import(tmp_path):
    """The guard itself: a module of the ML core that imports mlflow is caught, and named."""
    (tmp_path / "leaky_layer.py").write_text("import benchmark.config\nimport mlflow\n")
    assert leaks(("benchmark.config", "leaky_layer"), ("ray", "mlflow"), str(tmp_path)) == {"leaky_layer": ["mlflow"]}
