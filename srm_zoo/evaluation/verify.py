"""``--verify``: compare measured accuracy with the zoo's claims for the same model, dataset and split.

The reference is the release manifest's measured metric when the weights are published, the
catalogue's reported figure (the paper's, or a named reimplementation's) otherwise.
"""
from dataclasses import dataclass, field
from typing import Any, Dict, List, Mapping, Optional, Tuple

from ..catalogue import CATALOGUE
from ..manifest import find_release
from .data import canonical_split
from .metrics import recorded_percent

__all__ = ['DEFAULT_TOLERANCE', 'Reference', 'Verdict', 'find_reference', 'compare_with_reference', 'format_verdict']

DEFAULT_TOLERANCE = 0.3
"""How many percentage points ``--verify`` lets a figure fall short of the reference, unless told otherwise."""


@dataclass(frozen=True)
class Reference:
    """An accuracy the zoo states for one model.tag on one dataset split."""
    source: str
    dataset: str
    split: str
    top1: float
    top5: Optional[float] = None
    num_images: Optional[int] = None
    settings: Mapping[str, Any] = field(default_factory=dict)
    """The preprocessing the figure was measured with (``img_size``, ``crop_pct``, ``interpolation``), where known."""


@dataclass(frozen=True)
class Verdict:
    """Measured against reference, metric by metric, on ``num_images`` images.

    A run on fewer images than the reference was measured on is ``INCOMPLETE``, whatever its figures:
    a subset cannot verify a model.
    """
    reference: Reference
    tolerance: float
    rows: Tuple[Tuple[str, float, float, float, bool], ...]
    num_images: Optional[int] = None
    other_settings: Tuple[str, ...] = ()
    """The run's preprocessing where it differs from the reference's (``'img_size 24 (reference 32)'``)."""

    @property
    def complete(self) -> bool:
        expected = self.reference.num_images
        return expected is None or self.num_images is None or self.num_images >= expected

    @property
    def passed(self) -> bool:
        return self.complete and all(ok for *_, ok in self.rows)

    @property
    def verdict(self) -> str:
        """``PASS``, ``FAIL`` or ``INCOMPLETE``."""
        if not self.complete:
            return 'INCOMPLETE'
        return 'PASS' if self.passed else 'FAIL'

    def to_dict(self) -> dict:
        return {
            'verdict': self.verdict, 'passed': self.passed, 'tolerance': self.tolerance,
            'source': self.reference.source, 'dataset': self.reference.dataset, 'split': self.reference.split,
            **{f'reference_{name}': ref for name, _, ref, _, _ in self.rows},
            'num_images': self.num_images, 'reference_num_images': self.reference.num_images,
            'other_settings': list(self.other_settings),
        }


def _pick(candidates: List[Reference], split: str, split_given: bool) -> Optional[Reference]:
    """The candidate for ``split``; without an explicit split, the only candidate of the dataset."""
    same_split = [c for c in candidates if canonical_split(c.split) == split]
    if same_split:
        return same_split[0]
    return candidates[0] if len(candidates) == 1 and not split_given else None


def find_reference(model: str, dataset: str, split: str, split_given: bool = True) -> Tuple[Optional[Reference], str]:
    """The zoo's stated accuracy of ``model`` (``arch.tag``) on ``dataset``/``split``, or None and why not."""
    arch, _, tag = model.partition('.')
    entry = CATALOGUE.get(arch)
    if entry is None:
        return None, f'{arch} is not a model of the zoo, so the zoo states no accuracy for it'
    tag = tag or entry.default_tag
    release = find_release(arch, tag)
    if release is not None:
        candidates = [Reference(f'release manifest (measured, {release.name})', m.dataset, m.split, m.top1, m.top5,
                                m.num_images, m.eval_settings) for m in release.metrics if m.dataset == dataset]
        found = _pick(candidates, split, split_given)
        if found:
            return found, ''
    candidates = [Reference(f'reported ({p.source})', p.dataset, p.split, p.top1, p.top5, p.num_images)
                  for p in entry.paper if p.dataset == dataset]
    found = _pick(candidates, split, split_given)
    if found:
        return found, ''
    what = f'the release of {arch}.{tag} has no metric there' if release else f'{arch}.{tag} has no published weights'
    return None, f'no reference accuracy for {arch}.{tag} on {dataset}/{split}: {what} and the paper reports none'


def compare_with_reference(top1: float, top5: float, reference: Reference, tolerance: float,
                           num_images: Optional[int] = None, settings: Optional[Dict[str, Any]] = None) -> Verdict:
    """PASS when no metric falls short of the reference by more than ``tolerance`` points (and the run
    covers as many images as the reference). The measured figures are taken as the zoo records them
    (:func:`~.metrics.recorded_percent`); the run's preprocessing ``settings`` that differ from the reference's
    are named in the verdict."""
    rows = [('top1', recorded_percent(top1), reference.top1)]
    if reference.top5 is not None:
        rows.append(('top5', recorded_percent(top5), reference.top5))
    other_settings = tuple(f'{key} {value} (reference {reference.settings[key]})'
                           for key, value in (settings or {}).items()
                           if key in reference.settings and value != reference.settings[key])
    return Verdict(reference, tolerance, tuple(
        (name, measured, ref, measured - ref, measured >= ref - tolerance) for name, measured, ref in rows),
        num_images, other_settings)


def _signed(value: float) -> str:
    """``value`` to 3 decimals with its sign, never ``-0.000``."""
    return f'{round(value, 3) + 0.0:+.3f}'


def format_verdict(verdict: Verdict) -> str:
    """The measured and stated figures side by side, and the verdict."""
    ref = verdict.reference
    lines = [f'reference: {ref.source}, {ref.dataset}/{ref.split}',
             f'{"metric":<8}{"measured":>10}{"reference":>11}{"diff":>9}  result']
    for name, measured, reference, diff, ok in verdict.rows:
        lines.append(f'{name:<8}{measured:>10.3f}{reference:>11.3f}{_signed(diff):>9}  {"ok" if ok else "SHORT"}')
    if not verdict.complete:
        lines.append(f'the reference was measured on {ref.num_images} images, this run on {verdict.num_images}: '
                     f'a subset cannot verify the model')
    elif ref.num_images is not None and ref.num_images != verdict.num_images:
        lines.append(f'note: the reference was measured on {ref.num_images} images, this run on {verdict.num_images}')
    if verdict.other_settings:
        lines.append(f'note: this run preprocessed the images otherwise than the reference: '
                     f'{", ".join(verdict.other_settings)}; a difference may come from that, not from the weights')
    lines.append(f'{verdict.verdict} (tolerance {verdict.tolerance:g} points)')
    return '\n'.join(lines)
