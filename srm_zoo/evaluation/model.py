"""Building the model to evaluate: ``NAME[.TAG]`` with its published weights or a user checkpoint."""
from dataclasses import dataclass
from pathlib import Path
from typing import Optional

import timm
import torch
from timm.models import get_pretrained_cfg

from ..catalogue import CATALOGUE, resolve_name
from ..errors import UserError
from .checkpoint import checkpoint_model, file_sha256

__all__ = ['LoadedModel', 'resolve_name', 'build_model']


@dataclass
class LoadedModel:
    """A model ready to evaluate, where its weights came from, and its block attention (``srm``; a training
    checkpoint's ``se`` or ``none`` counterpart)."""
    model: torch.nn.Module
    name: str
    weights: str
    sha256: Optional[str]
    trained_on: Optional[str]
    attention: str = 'srm'


def _published_weights(name: str):
    """(description, local file or None) of the weights timm loads for ``name``; None when there are none."""
    cfg = get_pretrained_cfg(name, allow_unregistered=False)
    if cfg is None:
        return None
    if cfg.file:
        return f'file {cfg.file}', Path(cfg.file)
    if cfg.hf_hub_id:
        return f'hf-hub:{cfg.hf_hub_id}', None
    if cfg.url:
        return cfg.url, None
    return None


def _hub_sha256(model: torch.nn.Module) -> Optional[str]:
    cfg = getattr(model, 'pretrained_cfg', {})
    hub_id = cfg.get('hf_hub_id')
    if not hub_id:
        return None
    from huggingface_hub import try_to_load_from_cache
    repo, _, revision = hub_id.partition('@')
    cached = try_to_load_from_cache(repo, cfg.get('hf_hub_filename') or 'model.safetensors', revision=revision or None)
    return file_sha256(Path(cached)) if isinstance(cached, str) else None


def _check_published_head(name: str, num_classes: Optional[int]) -> None:
    """Refuse a ``--num-classes`` that differs from the published weights' head: timm would drop the
    trained classifier and evaluate a random one."""
    published = get_pretrained_cfg(name, allow_unregistered=False).num_classes
    if num_classes and published and num_classes != published:
        raise UserError(f'--num-classes {num_classes} differs from the {published} classes of the published weights '
                        f'of {name}; a different head needs --checkpoint FILE with weights for it.')


def build_model(name: str, checkpoint: Optional[str] = None, num_classes: Optional[int] = None,
                use_ema: bool = False) -> LoadedModel:
    """The model ``name`` in eval mode, with the weights of ``checkpoint`` or its published weights."""
    full_name = resolve_name(name)
    arch, _, tag = full_name.partition('.')
    entry = CATALOGUE.get(arch)
    weight_tag = entry.get_tag(tag) if entry else None
    trained_on = weight_tag.dataset if weight_tag else None
    attention = 'srm'
    if checkpoint:
        model, read = checkpoint_model(full_name, Path(checkpoint), num_classes, use_ema)
        sha256 = file_sha256(read.path)
        attention = read.recorded_attention or 'srm'
        weights = f'checkpoint {checkpoint}' + ('' if attention == 'srm' else f', trained with --attention {attention}')
        tag_names = weight_tag.cfg.get('label_names') if weight_tag else None
        if read.class_names and tag_names and tuple(read.class_names) != tuple(tag_names):
            trained_on = None  # the run's own classes, not the tag's dataset
    else:
        published = _published_weights(full_name)
        if published is None:
            raise UserError(f'{full_name} has no published weights (the release manifest lists none); evaluate '
                            f'your own with --checkpoint FILE.')
        _check_published_head(full_name, num_classes)
        weights, local_file = published
        try:
            model = timm.create_model(full_name, pretrained=True, **({'num_classes': num_classes} if num_classes
                                                                     else {}))
        except Exception as error:  # noqa: BLE001 - download/read failures are reported to the user
            raise UserError(f'Cannot load the published weights of {full_name} ({weights}): {error}') from None
        sha256 = file_sha256(local_file) if local_file else _hub_sha256(model)
    if getattr(model, 'num_classes', None) != model.pretrained_cfg.get('num_classes'):
        trained_on = None  # another head than the tag's
    return LoadedModel(model.eval(), full_name, weights, sha256, trained_on, attention)
