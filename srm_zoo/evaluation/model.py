"""Building the model to evaluate: ``NAME[.TAG]`` with its published weights or a user checkpoint, or a model timm
builds from a Hub repository or a local folder."""
from dataclasses import dataclass
from pathlib import Path
from typing import Optional, Tuple

import timm
import torch
from timm.models import get_pretrained_cfg

from ..catalogue import CATALOGUE, DATASET_LABEL_NAMES, resolve_name
from ..errors import UserError
from .checkpoint import checkpoint_model, file_sha256
from .sources import MODEL_SOURCES, block_attention, load_source_model

__all__ = ['LoadedModel', 'resolve_name', 'build_model']


@dataclass
class LoadedModel:
    """A model ready to evaluate, where its weights came from, and its block attention (``srm``; a counterpart's
    ``se``, ``none`` or other layer; None for timm models outside the zoo)."""
    model: torch.nn.Module
    name: str
    weights: str
    sha256: Optional[str]
    trained_on: Optional[str]
    attention: Optional[str] = 'srm'


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
    """The model ``name`` in eval mode, with the weights of ``checkpoint`` or its published weights; a
    ``hf-hub:REPO[@REVISION]`` or ``local-dir:FOLDER`` name, with the weights and config found there."""
    if name.startswith(MODEL_SOURCES):
        if checkpoint:
            raise UserError(f'--checkpoint gives the weights of a zoo model name, but {name} brings its own: leave '
                            f'--checkpoint out, or name the architecture (e.g. --model srm_resnet50).')
        return _source_model(name, num_classes)
    full_name = resolve_name(name)
    if checkpoint:
        model, read = checkpoint_model(full_name, Path(checkpoint), num_classes, use_ema)
        sha256 = file_sha256(read.path)
        attention = read.recorded_attention or 'srm'
        weights = f'checkpoint {checkpoint}' + ('' if attention == 'srm' else f', trained with --attention {attention}')
    else:
        model, weights, sha256 = _published_model(full_name, num_classes)
        attention = 'srm'
    if full_name.partition('.')[0] not in CATALOGUE:
        attention = None  # timm's own models
    return LoadedModel(model.eval(), full_name, weights, sha256, _trained_on(full_name, model), attention)


def _published_model(full_name: str, num_classes: Optional[int]) -> Tuple[torch.nn.Module, str, Optional[str]]:
    """``full_name`` with its published weights, where they come from, and their sha256 where known."""
    published = _published_weights(full_name)
    if published is None:
        raise UserError(f'{full_name} has no published weights (the release manifest lists none); evaluate '
                        f'your own with --checkpoint FILE.')
    _check_published_head(full_name, num_classes)
    weights, local_file = published
    try:
        model = timm.create_model(full_name, pretrained=True, **({'num_classes': num_classes} if num_classes else {}))
    except Exception as error:  # noqa: BLE001 - download/read failures are reported to the user
        raise UserError(f'Cannot load the published weights of {full_name} ({weights}): {error}') from None
    return model, weights, file_sha256(local_file) if local_file else _hub_sha256(model)


def _source_model(name: str, num_classes: Optional[int]) -> LoadedModel:
    """The model of a ``hf-hub:`` or ``local-dir:`` name, called ``architecture.tag`` as its config records (a zoo
    architecture without a tag, as its other weights are: with the default tag), with the block attention it was
    built with (the SE and plain counterparts of ``srm-zoo train`` runs included)."""
    source = load_source_model(name)
    model = source.model
    if num_classes and num_classes != model.num_classes:
        raise UserError(f'--num-classes {num_classes} differs from the {model.num_classes} classes of {name}; '
                        f'leave --num-classes out.')
    tag = model.pretrained_cfg.get('tag')
    full_name = f'{source.architecture}.{tag}' if tag else resolve_name(source.architecture)
    return LoadedModel(model.eval(), full_name, name, file_sha256(source.weights_file), _trained_on(full_name, model),
                       block_attention(model, source.architecture))


def _trained_on(full_name: str, model: torch.nn.Module) -> Optional[str]:
    """The dataset of ``full_name``'s weight tag when the model's outputs are that tag's classes; None for
    other heads, another run's classes, unknown tags and other timm models."""
    arch, _, tag = full_name.partition('.')
    entry = CATALOGUE.get(arch)
    if entry is None or tag not in {t.tag for t in entry.tags}:
        return None
    registered, dataset = get_pretrained_cfg(f'{arch}.{tag}'), entry.get_tag(tag).dataset
    names, model_names = registered.label_names, model.pretrained_cfg.get('label_names')
    dataset_names = DATASET_LABEL_NAMES.get(dataset)
    if model.num_classes != registered.num_classes or (names and tuple(model_names or ()) != tuple(names)):
        return None
    if dataset_names and model_names and tuple(model_names) != dataset_names:
        return None  # another run's classes under this tag
    return dataset
