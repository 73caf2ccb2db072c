"""Releases embedded in the package: weights under ``srm_zoo/weights/<model>.<tag>/`` and a manifest entry.

The weight folder holds ``model.safetensors`` and timm's ``config.json`` (``save_for_hf``), the
same files as a Hub repository, so one loader reads both. The manifest entry records the
sha256 of ``model.safetensors``, the accuracy measured on the given data with timm's
preprocessing, and the provenance (recipe, command, seed, counterpart comparison).
"""
import json
import shutil
import tempfile
from pathlib import Path
from typing import Any, Dict, Optional, Tuple

import timm
import torch

from ..catalogue import get_entry_and_tag
from ..checkpoint import file_sha256, load_state_dict_for, read_checkpoint
from ..conversion.state import save_hf_folder, write_safetensors
from ..hub.export import EVAL_SETTING_KEYS, ExportedRelease, export_release
from ..manifest import WEIGHTS_DIR, Metric, Release
from ..training import TrainConfig, attention_kwargs, get_recipe
from .measure import measure_accuracy

__all__ = ['load_trained', 'embed_release', 'export_measured']


def _read_weights(checkpoint: str) -> Tuple[Dict[str, torch.Tensor], Optional[TrainConfig]]:
    """The weights of ``checkpoint`` (its EMA weights when it holds them) and the training settings of an
    ``srm-zoo train`` checkpoint."""
    read = read_checkpoint(checkpoint)
    return read.weights(read.ema is not None), TrainConfig(**read.train_config) if read.train_config else None


def _source(config: Optional[TrainConfig], checkpoint: str) -> str:
    """Where released weights come from, for the provenance record."""
    return 'trained from scratch by srm-zoo train' if config else f'weights file {Path(checkpoint).name}'


def load_trained(name: str, checkpoint: str, attention: str = 'srm') -> Tuple[torch.nn.Module, Optional[TrainConfig]]:
    """``name`` (``model.tag``) with the weights of ``checkpoint``, and the training settings when known.

    ``checkpoint`` is an ``srm-zoo train`` checkpoint (its EMA weights when it kept one; its settings
    give the provenance), or any weights file (``.safetensors`` or torch state dict, EMA weights when
    it holds some).
    """
    get_entry_and_tag(name)  # an unknown model or tag fails before any file is read
    state, config = _read_weights(checkpoint)
    if config:
        attention = config.attention
    model = timm.create_model(name, **attention_kwargs(name, attention))
    return load_state_dict_for(model, state, str(checkpoint), name).eval(), config


def embed_release(name: str, checkpoint: str, data: str, split: str,
                  compare: Optional[Dict[str, str]] = None, weights_dir: Path = WEIGHTS_DIR) -> Release:
    """Measure ``checkpoint`` as ``name`` on ``data``/``split`` and write it under ``weights_dir/name``.

    ``compare`` maps counterpart attentions (``none``, ``se``) to their checkpoints, trained the same
    way; their accuracies on the same data go into the provenance.
    """
    entry, tag = get_entry_and_tag(name)
    model, config = load_trained(name, checkpoint)
    result = measure_accuracy(model, data, split)
    comparison = {'srm': _summary(result)}
    for attention, other in (compare or {}).items():
        counterpart, _ = load_trained(name, other, attention)
        comparison[attention] = _summary(measure_accuracy(counterpart, data, split))
    folder = weights_dir / f'{entry.name}.{tag.tag}'
    if folder.exists():
        shutil.rmtree(folder)
    label_names = model.pretrained_cfg.get('label_names')
    save_hf_folder(model, str(folder), model_config=dict(label_names=list(label_names)) if label_names else None)
    provenance: Dict[str, Any] = dict(
        recipe=config.recipe if config else tag.recipe,
        source=_source(config, checkpoint),
        comparison=comparison,
    )
    if config:
        provenance.update(command=config.command(data='DATA'), seed=config.seed,
                          epochs=config.epochs if config.epochs is not None else get_recipe(config.recipe).epochs,
                          weights='EMA' if get_recipe(config.recipe).ema_decay else 'last epoch')
    metric = Metric(dataset=tag.dataset, split=split, top1=result['top1'], top5=result['top5'],
                    num_images=result['num_images'],
                    eval_settings={k: result[k] for k in EVAL_SETTING_KEYS})
    return Release(model=entry.name, tag=tag.tag, sha256=file_sha256(folder / 'model.safetensors'), metrics=(metric,),
                   provenance=provenance, embedded=folder.name)


def _summary(result: Dict[str, Any]) -> Dict[str, Any]:
    return {k: result[k] for k in ('top1', 'top5', 'num_images')}


def export_measured(name: str, checkpoint: str, data: str, split: str, out: Path,
                    repo_id: Optional[str] = None) -> ExportedRelease:
    """Measure ``checkpoint`` as ``name`` on ``data``/``split`` and write its Hub repository folder to ``out``
    (weights, config, model card with the measured results, release record for ``srm-zoo publish``) for the
    Hub repository ``repo_id`` (default: the zoo's)."""
    entry, tag = get_entry_and_tag(name)
    model, config = load_trained(name, checkpoint)
    with tempfile.TemporaryDirectory() as tmp:
        weights = Path(tmp) / 'model.safetensors'
        write_safetensors(model.state_dict(), str(weights))
        result = measure_accuracy(model, data, split)
        result.update(model=f'{entry.name}.{tag.tag}', dataset=tag.dataset, split=split,
                      checkpoint_sha256=file_sha256(weights))
        results = Path(tmp) / 'results.json'
        results.write_text(json.dumps(result))
        return export_release(f'{entry.name}.{tag.tag}', weights, out, results=results, repo_id=repo_id,
                              source=_source(config, checkpoint))
