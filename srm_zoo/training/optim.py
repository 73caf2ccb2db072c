"""The optimiser and schedule of a recipe, from timm's factories."""
from typing import Any, Dict, List, Union

import torch
import torch.nn as nn
from timm.optim import create_optimizer_v2
from timm.scheduler import create_scheduler_v2

from ..layers import SRM
from .recipes import Recipe

__all__ = ['srm_parameter_names', 'create_optimizer', 'create_scheduler']


def srm_parameter_names(model: nn.Module) -> set:
    """Full names of every SRM parameter (channel-wise weights and SRM BatchNorm affine)."""
    return {f'{module_name}.{name}' if module_name else name
            for module_name, module in model.named_modules() if isinstance(module, SRM)
            for name, _ in module.named_parameters()}


def _optimizer_params(model: nn.Module, recipe: Recipe) -> Union[nn.Module, List[Dict[str, Any]]]:
    if recipe.no_weight_decay == 'timm':
        # timm exempts 1-D parameters and model.no_weight_decay() (the SRM channel-wise weights).
        return model
    exempt = srm_parameter_names(model)
    named = [(n, p) for n, p in model.named_parameters() if p.requires_grad]
    return [dict(params=[p for n, p in named if n in exempt], weight_decay=0.0),
            dict(params=[p for n, p in named if n not in exempt], weight_decay=recipe.weight_decay)]


def create_optimizer(model: nn.Module, recipe: Recipe, lr: float) -> torch.optim.Optimizer:
    """timm's optimiser for the recipe; SRM parameters never decay.

    Rule ``'srm'`` (the authors'): decay on every parameter except SRM's. Rule ``'timm'``: no decay
    on biases, normalisation layers and ``model.no_weight_decay()``.
    """
    return create_optimizer_v2(_optimizer_params(model, recipe), opt=recipe.opt, lr=lr,
                               weight_decay=recipe.weight_decay, momentum=recipe.momentum)


def create_scheduler(optimizer: torch.optim.Optimizer, recipe: Recipe, epochs: int):
    """timm's per-epoch learning-rate scheduler for a run of ``epochs``.

    timm's multistep schedule lowers the rate at 0-based epoch ``t`` once for every milestone up to
    ``t + 1`` (``bisect_right(decay_t, t + 1)``), one epoch before the milestone; it is therefore given
    the recipe's milestones plus one, so that the rate drops exactly at them (epochs 31 and 61 of
    the official recipe, counting from 1).
    """
    milestones = [m + 1 for m in recipe.milestones_for(epochs)]
    scheduler, _ = create_scheduler_v2(
        optimizer, sched=recipe.sched, num_epochs=epochs, decay_milestones=milestones,
        decay_rate=recipe.decay_rate, warmup_epochs=recipe.warmup_epochs, warmup_lr=recipe.warmup_lr,
        min_lr=recipe.min_lr)
    return scheduler
