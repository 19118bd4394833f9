"""The metrics the tables show: MLflow name, column stem, title, whether a percentage, and digits; one home for each."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Measure:
    """A metric as the tables show it."""

    column: str  # MLflow metric name
    short: str  # column stem in the DataFrames
    title: str
    percent: bool
    digits: int


MLP = Measure("probe/latent/mlp_acc", "mlp_acc", "probe MLP (%)", True, 2)
LINEAR = Measure("probe/latent/linear_acc", "linear_acc", "probe linear (%)", True, 2)
KNN = Measure("probe/latent/knn_acc", "knn_acc", "probe kNN (%)", True, 2)
MSE = Measure("recon/mse", "mse", "MSE", False, 4)
SSIM = Measure("recon/ssim", "ssim", "SSIM", False, 3)
PSNR = Measure("recon/psnr", "psnr", "PSNR (dB)", False, 2)
USAGE = Measure("codebook/usage", "usage", "codebook usage (%)", True, 1)
PERPLEXITY = Measure("codebook/perplexity", "perplexity", "codebook perplexity", False, 1)
TABLE1_MEASURES = (MLP, LINEAR, KNN, MSE, SSIM, PSNR)
PROBES = (MLP, LINEAR, KNN)
DIFFERENCE_MEASURES = (MLP, LINEAR, KNN, SSIM)
PIXEL_COLUMNS = {MLP.short: "probe/pixels/mlp_acc", LINEAR.short: "probe/pixels/linear_acc", KNN.short: "probe/pixels/knn_acc"}
MEASURES = {m.column: m for m in (*TABLE1_MEASURES, USAGE, PERPLEXITY)}
