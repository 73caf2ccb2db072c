"""Exact accuracy counting: integer counts that add up across batches and processes."""
from dataclasses import dataclass, fields
from typing import Optional, Sequence, Tuple

import torch
import torch.nn.functional as F

__all__ = ['PERCENT_DECIMALS', 'recorded_percent', 'Counts', 'score_batch']

PERCENT_DECIMALS = 4
"""Decimals of the percentages the zoo records (results, release manifests) and verifies, as timm's validate.py."""


def recorded_percent(percent: float) -> float:
    """``percent`` as the zoo records it: rounded to ``PERCENT_DECIMALS``."""
    return round(percent, PERCENT_DECIMALS)


@dataclass
class Counts:
    """Running totals of one evaluation (or one shard of it).

    ``scored`` counts images with a label (ReaL: a non-empty label set); ``loss_sum`` sums the
    cross-entropy of images with a single label.
    """
    images: int = 0
    scored: int = 0
    correct1: int = 0
    correct5: int = 0
    loss_images: int = 0
    loss_sum: float = 0.0
    bad_images: int = 0

    def __iadd__(self, other: 'Counts') -> 'Counts':
        for f in fields(self):
            setattr(self, f.name, getattr(self, f.name) + getattr(other, f.name))
        return self

    def to_tensor(self) -> torch.Tensor:
        return torch.tensor([float(getattr(self, f.name)) for f in fields(self)], dtype=torch.float64)

    @classmethod
    def from_tensor(cls, tensor: torch.Tensor) -> 'Counts':
        values = tensor.tolist()
        return cls(**{f.name: v if f.name == 'loss_sum' else int(round(v)) for f, v in zip(fields(cls), values)})

    @property
    def top1(self) -> float:
        return 100.0 * self.correct1 / self.scored if self.scored else float('nan')

    @property
    def top5(self) -> float:
        return 100.0 * self.correct5 / self.scored if self.scored else float('nan')

    @property
    def loss(self) -> Optional[float]:
        return self.loss_sum / self.loss_images if self.loss_images else None


def score_batch(logits: torch.Tensor, targets: torch.Tensor,
                label_sets: Optional[Sequence[Tuple[int, ...]]] = None) -> Counts:
    """Counts of one batch: top-1/top-5 against ``targets`` (-1: unlabelled), or against ``label_sets``
    (ReaL: an image is right when a prediction is any of its labels; empty sets are not scored)."""
    logits = logits.float()
    k = min(5, logits.shape[1])
    predictions = logits.topk(k, dim=1).indices.cpu()
    targets = targets.cpu()
    labelled = targets >= 0
    counts = Counts(images=len(targets))
    if labelled.any():
        counts.loss_images = int(labelled.sum())
        counts.loss_sum = float(F.cross_entropy(logits[labelled.to(logits.device)],
                                                targets[labelled].to(logits.device), reduction='sum'))
    if label_sets is None:
        hits = predictions[labelled] == targets[labelled, None]
        counts.scored = int(labelled.sum())
        counts.correct1 = int(hits[:, :1].any(dim=1).sum())
        counts.correct5 = int(hits.any(dim=1).sum())
    else:
        for prediction, labels in zip(predictions.tolist(), label_sets):
            if labels:
                counts.scored += 1
                counts.correct1 += prediction[0] in labels
                counts.correct5 += any(p in labels for p in prediction)
    return counts
