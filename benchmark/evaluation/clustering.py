"""How well a representation clusters by class, with no classifier: the paper's claim 4, measured.

The paper judged t-SNE plots by eye ("cluster well" on MNIST, "moderately" on CIFAR-100). Here
k-means with k = the number of classes runs on the standardised test features, reduced to their
first 50 principal components (as t-SNE's own PCA step does; it keeps k-means on 3,072 pixels
from costing a minute), and its clusters are scored against the labels. The adjusted Rand index is corrected for chance (0 for clusters
unrelated to the labels, 1 for the labels exactly, whatever the number of classes), so MNIST's 10
classes and CIFAR-100's 100 are on one scale, where kNN accuracy is bound by each one's chance
level. Normalised mutual information is logged beside it, as clustering papers report it.
"""

from __future__ import annotations

import numpy as np
import torch
from sklearn.cluster import KMeans
from sklearn.decomposition import PCA
from sklearn.metrics import adjusted_rand_score, normalized_mutual_info_score

RESTARTS = 3  # k-means++ starts; the best inertia wins
COMPONENTS = 50


def cluster_agreement(features: torch.Tensor, labels: torch.Tensor, num_classes: int, seed: int) -> dict[str, float]:
    """`ari` and `nmi` of k-means (k = num_classes, seeded) on standardised features, against the labels."""
    x = features.detach().float().flatten(1).cpu().numpy()
    x = (x - x.mean(0)) / np.maximum(x.std(0), 1e-6)
    components = min(COMPONENTS, *x.shape)
    if x.shape[1] > components:
        x = PCA(components, svd_solver="randomized", random_state=seed).fit_transform(x)
    clusters = min(num_classes, x.shape[0])  # only a test set smaller than its class count (a test's) has fewer
    found = KMeans(n_clusters=clusters, n_init=RESTARTS, random_state=seed).fit_predict(x)
    truth = labels.detach().cpu().numpy()
    return {"ari": float(adjusted_rand_score(truth, found)), "nmi": float(normalized_mutual_info_score(truth, found))}
