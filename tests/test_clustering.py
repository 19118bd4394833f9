"""Claim 4's measure: chance-corrected agreement of k-means clusters with the labels, on constructed cases."""

from __future__ import annotations

import pytest
import torch

from benchmark.evaluation.clustering import cluster_agreement


def blobs(classes: int, per_class: int, spread: float, features: int = 64, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    generator = torch.Generator().manual_seed(seed)
    centres = torch.randn(classes, features, generator=generator) * 10
    labels = torch.arange(classes).repeat_interleave(per_class)
    return centres[labels] + spread * torch.randn(len(labels), features, generator=generator), labels


@pytest.mark.parametrize("classes", [10, 100])
def test_well_separated_classes_score_near_one_and_unrelated_labels_near_zero_whatever_the_class_count(classes):
    x, y = blobs(classes, 2000 // classes, spread=0.5)
    assert cluster_agreement(x, y, classes, seed=0)["ari"] > 0.9
    shuffled = y[torch.randperm(len(y), generator=torch.Generator().manual_seed(1))]
    assert abs(cluster_agreement(x, shuffled, classes, seed=0)["ari"]) < 0.02  # chance-corrected: 0 at 10 and at 100 classes


def test_mixed_clusters_score_between_separated_and_unrelated():
    separated, y = blobs(10, 200, spread=0.5)
    mixed, _ = blobs(10, 200, spread=12.0)
    unrelated = torch.randn_like(separated)
    scores = [cluster_agreement(x, y, 10, seed=0)["ari"] for x in (separated, mixed, unrelated)]
    assert scores[0] > scores[1] > scores[2] and scores[1] > 0.05, scores


def test_the_kmeans_is_seeded_and_scores_lie_in_their_ranges():
    x, y = blobs(5, 40, spread=6.0, features=300)  # more features than components: reduced by PCA first
    first, again = cluster_agreement(x, y, 5, seed=3), cluster_agreement(x, y, 5, seed=3)
    assert first == again and -1 <= first["ari"] <= 1 and 0 <= first["nmi"] <= 1
