"""The layers stay apart: data flows config -> data -> model -> train -> evaluate -> tracking -> analysis.

Each module is imported alone in a fresh interpreter, so what it pulls in transitively counts too:
- the ML core and evaluation import neither Ray nor MLflow (a trial runs, and is tested, without either);
- tracking and analysis import no torch (a report from a CSV must not need it);
- the preflight checks do not import Ray Tune (bad input is refused before Tune's seconds of imports).
"""

from __future__ import annotations

import subprocess
import sys

import pytest

from tests.conftest import REPO

# Each entry imports the rest of its layer (benchmark.trial: config, data, models, train, evaluation;
# analysis.report: every analysis module), so a leak anywhere below it is caught here too.
RULES = [
    ("benchmark.trial", ("ray", "mlflow")),
    ("benchmark.image_folder", ("ray", "mlflow", "torch")),
    ("benchmark.tracking", ("torch",)),
    ("analysis.report", ("torch",)),
    ("analysis.export", ("torch",)),
    ("benchmark.preflight", ("ray.tune",)),
]


def imported(module: str, forbidden: tuple[str, ...], path: str = str(REPO)) -> list[str]:
    code = f"import sys; sys.path.insert(0, {path!r}); import {module}; print(' '.join(m for m in {forbidden!r} if m in sys.modules))"
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=REPO, timeout=120)
    assert done.returncode == 0, done.stderr
    return done.stdout.split()


@pytest.mark.parametrize("module, forbidden", RULES, ids=[f"{m} without {'+'.join(f)}" for m, f in RULES])
def test_a_layer_imports_nothing_from_the_layers_it_must_not_know(module, forbidden):
    assert imported(module, forbidden) == [], f"{module} pulls in {forbidden}: move what it needs into its own layer"


def test_the_check_notices_a_forbidden_import(tmp_path):
    """The guard itself: a module of the ML core that imports mlflow is caught."""
    (tmp_path / "leaky_layer.py").write_text("import benchmark.config\nimport mlflow\n")
    assert imported("leaky_layer", ("ray", "mlflow"), str(tmp_path)) == ["mlflow"]
