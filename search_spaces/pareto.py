"""pareto: the paper's trade-off as a multi-objective Optuna study per dataset and model family.

Label information up and reconstruction up at once: the per-epoch linear probe and SSIM on
held-out train images (`train_probe/linear_acc`, `train_probe/ssim`; the test split never
chooses), through Ray Tune's OptunaSearch with lists of metrics and modes. No ASHA: it ranks
trials on one number. The knobs searched are the `optuna` space's. The report draws each
family's Pareto front from the finished trials' test-split evaluation.
"""

from benchmark.evaluation.train_probe import LINEAR_ACC, SSIM
from benchmark.space import SpaceOptions, Study
from search_spaces.optuna import family_studies

DESCRIPTION = "multi-objective Optuna (train-split probe accuracy up, SSIM up), no ASHA, one study per dataset and model family"


def studies(options: SpaceOptions) -> list[Study]:
    return family_studies(options, "pareto", (LINEAR_ACC, SSIM), ("max", "max"))
