"""Training recipes, declared once: the data, optimiser, schedule and regularisation of a run.

A recipe fixes everything about a run except the model, the data location and the hardware.
``lr`` is the learning rate for the recipe's global ``batch_size``; a run with another global
batch scales it linearly (Goyal et al. 2017) unless ``--lr`` is given. The recipe a run used is
recorded in every checkpoint it writes.
"""
from dataclasses import asdict, dataclass
from typing import Any, Dict, Optional, Tuple

from ..errors import UserError

__all__ = ['Recipe', 'RECIPES', 'get_recipe']


@dataclass(frozen=True)
class Recipe:
    """One training recipe (field names follow timm's ``train.py`` arguments)."""
    name: str
    description: str
    epochs: int
    batch_size: int
    opt: str
    lr: float
    weight_decay: float
    no_weight_decay: str
    """``'srm'``: every parameter decays except SRM's (the authors' rule); ``'timm'``: timm's rule,
    no decay on biases, normalisation layers and ``model.no_weight_decay()`` (the SRM weights)."""
    sched: str
    momentum: float = 0.9
    decay_milestones: Tuple[int, ...] = ()
    """0-based epochs from which the step schedule lowers the rate: (30, 60) lowers it at epochs 31 and 61."""
    decay_rate: float = 0.1
    warmup_epochs: int = 0
    warmup_lr: float = 1e-6
    min_lr: float = 0.0
    label_smoothing: float = 0.0
    mixup: float = 0.0
    cutmix: float = 0.0
    scale: Tuple[float, float] = (0.08, 1.0)
    ratio: Tuple[float, float] = (3 / 4, 4 / 3)
    hflip: float = 0.5
    color_jitter: Optional[float] = None
    auto_augment: Optional[str] = None
    train_interpolation: str = 'bilinear'
    ema_decay: float = 0.0
    """0 trains without an EMA; otherwise ModelEmaV3 with this decay, and the EMA is the exported model."""
    zero_init_last: bool = True
    """Initialise the last BatchNorm of every block to zero (timm's default). Short runs of the CIFAR
    ResNets learn far faster without it: with zero residual branches their features are the pooled stem."""

    def milestones_for(self, epochs: int) -> Tuple[int, ...]:
        """Step-schedule milestones for a run of ``epochs``: the 0-based epochs from which the rate is lowered
        (once more at each), scaled from the recipe's; never 0, so the first epoch runs at the base rate."""
        return tuple(max(1, round(m * epochs / self.epochs)) for m in self.decay_milestones)

    def to_dict(self) -> Dict[str, Any]:
        return asdict(self)


RECIPES: Dict[str, Recipe] = {r.name: r for r in (
    Recipe(
        name='official',
        description="The SRM authors' ImageNet recipe: 90 epochs, batch 256, SGD momentum 0.9, lr 0.1 "
                    'divided by 10 at epochs 31 and 61, weight decay 1e-4 on every parameter except '
                    "SRM's, RandomResizedCrop + horizontal flip; every BatchNorm starts at weight 1 (no zero-init "
                    'of the last BatchNorms, as in their code).',
        epochs=90, batch_size=256, opt='momentum', lr=0.1, weight_decay=1e-4, no_weight_decay='srm',
        sched='multistep', decay_milestones=(30, 60), decay_rate=0.1, zero_init_last=False,
    ),
    Recipe(
        name='modern',
        description="A modern ImageNet recipe after timm's ResNet strikes back (A3): 100 epochs, LAMB, "
                    'cosine schedule with 5 warmup epochs, label smoothing 0.1, mixup 0.1 / cutmix 1.0, '
                    'RandAugment, EMA of the weights.',
        epochs=100, batch_size=2048, opt='lamb', lr=8e-3, weight_decay=0.02, no_weight_decay='timm',
        sched='cosine', warmup_epochs=5, min_lr=1e-6, label_smoothing=0.1, mixup=0.1, cutmix=1.0,
        auto_augment='rand-m6-mstd0.5-inc1', train_interpolation='random', ema_decay=0.9998,
    ),
    Recipe(
        name='graft_finetune',
        description='Fine-tuning an SRM network grafted from a pretrained ResNet (`srm-zoo graft`): '
                    '15 epochs, SGD momentum lr 0.01 (batch 256) with a cosine schedule and 1 warmup '
                    "epoch, weight decay 1e-4 except SRM's, label smoothing 0.1, the official augmentation.",
        epochs=15, batch_size=256, opt='momentum', lr=0.01, weight_decay=1e-4, no_weight_decay='srm',
        sched='cosine', warmup_epochs=1, label_smoothing=0.1,
    ),
    Recipe(
        name='digits',
        description='Small 32x32 grey-level digits (the embedded sklearn-digits model): 20 epochs, batch 64, '
                    'SGD momentum lr 0.05, cosine with 2 warmup epochs, weight decay 5e-4 (timm rule), '
                    'label smoothing 0.1, mild random resized crops, no flips, no zero-init of the last BNs.',
        epochs=20, batch_size=64, opt='momentum', lr=0.05, weight_decay=5e-4, no_weight_decay='timm',
        sched='cosine', warmup_epochs=2, warmup_lr=1e-3, label_smoothing=0.1, scale=(0.7, 1.0),
        ratio=(0.85, 1.18), hflip=0.0, zero_init_last=False,
    ),
)}


def get_recipe(name: str) -> Recipe:
    """The recipe called ``name``; a :class:`UserError` listing the recipes otherwise."""
    try:
        return RECIPES[name]
    except KeyError:
        raise UserError(f'Unknown recipe {name!r}. Recipes: {", ".join(RECIPES)} '
                        '(`srm-zoo train --list-recipes` describes them).') from None
