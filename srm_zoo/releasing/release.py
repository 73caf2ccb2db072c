"""Releasing trained weights: measured accuracy, weight files, and a manifest entry or a Hub repository folder.

Embedded releases put ``model.safetensors`` and timm's ``config.json`` (``save_for_hf``) under
``srm_zoo/weights/<model>.<tag>/``, the same files as a Hub repository, so one loader reads both.
Either way the release records the sha256 of ``model.safetensors``, the accuracy measured on the
given data with timm's preprocessing, and the provenance (checkpoint, recipe, command, seed,
counterpart comparison). Every checkpoint is checked against the network it is released or compared
as before anything is measured.
"""
import sys
import tempfile
from pathlib import Path
from typing import Any, Dict, Optional, Tuple

import timm
import torch

from ..catalogue import attention_kwargs, get_entry_and_tag
from ..checkpoint import CheckpointWeights, file_sha256, load_state_dict_for, read_checkpoint
from ..conversion.state import save_hf_folder
from ..errors import UserError
from ..evaluation.results import EVAL_SETTING_KEYS
from ..hub.export import ExportedRelease, weights_provenance, write_hub_folder
from ..manifest import WEIGHTS_DIR, Metric, Release, hub_repo_id
from .measure import measure_accuracy

__all__ = ['load_trained', 'embed_release', 'export_measured']

NETWORKS = {'srm': 'the SRM network released', 'se': 'an SE counterpart (--compare se=)',
            'none': 'a plain counterpart without attention (--compare none=)'}
"""What a checkpoint is taken as, by the attention it is loaded with, for messages."""


def _check_attention(read: CheckpointWeights, attention: str) -> None:
    """Refuse an ``srm-zoo train`` checkpoint whose recorded ``--attention`` is not ``attention``."""
    recorded = read.recorded_attention
    if recorded is not None and recorded != attention:
        raise UserError(f'Checkpoint {str(read.path)!r} was trained with --attention {recorded} (its recorded '
                        f'settings), but it is given as {NETWORKS[attention]}. Release SRM weights as the model and '
                        'pass their counterparts as --compare none=FILE and --compare se=FILE.')


def load_trained(name: str, checkpoint: str, attention: str = 'srm') -> Tuple[torch.nn.Module, CheckpointWeights]:
    """``name`` (``model.tag``) built with ``attention`` (``srm``: the released network; ``se``, ``none``: its
    counterparts) and holding the weights of ``checkpoint`` (its EMA weights when it holds some), with what the
    checkpoint holds (for the provenance).

    ``checkpoint`` is an ``srm-zoo train`` checkpoint or any weights file; one trained with another attention,
    or whose keys or shapes do not fit, is refused, naming the file and the first mismatching keys.
    """
    get_entry_and_tag(name)  # an unknown model or tag fails before any file is read
    read = read_checkpoint(checkpoint)
    _check_attention(read, attention)
    model = timm.create_model(name, **attention_kwargs(name, attention))
    load_state_dict_for(model, read.weights(read.ema is not None), f'Checkpoint {str(checkpoint)!r}',
                        f'{name} as {NETWORKS[attention]}')
    return model.eval(), read


def _measured(name: str, checkpoint: str, data: str, split: str,
              compare: Optional[Dict[str, str]]) -> Tuple[torch.nn.Module, Metric, Dict[str, Any]]:
    """The released model, its metric on ``data``/``split`` and its provenance, with the accuracies of the
    ``compare`` counterparts (attention -> checkpoint) on the same images; every checkpoint is loaded, and so
    checked, before the first is measured."""
    _, tag = get_entry_and_tag(name)
    model, read = load_trained(name, checkpoint)
    loaded = {attention: load_trained(name, path, attention) for attention, path in (compare or {}).items()}
    for attention, (_, counterpart_read) in loaded.items():
        _check_same_training(read, counterpart_read, attention)
    counterparts = {attention: counterpart for attention, (counterpart, _) in loaded.items()}
    result = measure_accuracy(model, data, split)
    provenance = weights_provenance(read, read.ema is not None, tag.recipe)
    if counterparts:
        provenance['comparison'] = {'srm': _summary(result), **{
            attention: _summary(measure_accuracy(counterpart, data, split))
            for attention, counterpart in counterparts.items()}}
    metric = Metric(dataset=tag.dataset, split=split, top1=result['top1'], top5=result['top5'],
                    num_images=result['num_images'], eval_settings={k: result[k] for k in EVAL_SETTING_KEYS})
    return model, metric, provenance


COMPARED_SETTINGS = ('model', 'recipe', 'epochs', 'batch_size', 'lr', 'grad_accum', 'seed', 'img_size', 'amp')
"""The training settings a counterpart must share with the SRM run for the card's "same recipe and seed"."""


def _check_same_training(srm: CheckpointWeights, counterpart: CheckpointWeights, attention: str) -> None:
    """Refuse a ``--compare`` training checkpoint whose recorded settings (:data:`COMPARED_SETTINGS`, and the epochs
    trained) differ from the SRM run's: the card compares networks trained alike. Weights files without recorded
    settings are taken as given, with a note."""
    if srm.train_config is None or counterpart.train_config is None:
        unknown = srm.path if srm.train_config is None else counterpart.path
        print(f'note: {unknown} records no training settings: the comparison takes the runs as trained with the '
              'same recipe and seed.', file=sys.stderr)
        return
    ours, theirs = ({**read.train_config, 'epochs trained': read.epochs_trained} for read in (srm, counterpart))
    differ = [f'{key} {ours.get(key)!r} against {theirs.get(key)!r}' for key in (*COMPARED_SETTINGS, 'epochs trained')
              if ours.get(key) != theirs.get(key)]
    if differ:
        raise UserError(f'Checkpoint {str(counterpart.path)!r} (--compare {attention}=) was trained otherwise than '
                        f'{str(srm.path)!r}: {"; ".join(differ)}. The card compares networks trained with the same '
                        'recipe and seed: pass a counterpart trained as the SRM run was.')


def _summary(result: Dict[str, Any]) -> Dict[str, Any]:
    return {k: result[k] for k in ('top1', 'top5', 'num_images')}


def embed_release(name: str, checkpoint: str, data: str, split: str,
                  compare: Optional[Dict[str, str]] = None, weights_dir: Path = WEIGHTS_DIR) -> Release:
    """Measure ``checkpoint`` as ``name`` on ``data``/``split`` and write it under ``weights_dir/name``.

    ``compare`` maps counterpart attentions (``none``, ``se``) to their checkpoints, trained the same
    way; their accuracies on the same data go into the provenance.
    """
    entry, tag = get_entry_and_tag(name)
    model, metric, provenance = _measured(name, checkpoint, data, split, compare)
    folder = weights_dir / f'{entry.name}.{tag.tag}'
    label_names = model.pretrained_cfg.get('label_names')
    weights_dir.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=weights_dir, prefix='.embed-') as staging:
        staged = Path(staging) / folder.name
        save_hf_folder(model, str(staged), model_config=dict(label_names=list(label_names)) if label_names else None)
        sha256 = file_sha256(staged / 'model.safetensors')
        _replace_folder(folder, staged)
    return Release(model=entry.name, tag=tag.tag, sha256=sha256, metrics=(metric,), provenance=provenance,
                   embedded=folder.name)


def _replace_folder(folder: Path, staged: Path) -> None:
    """Put the complete folder ``staged`` in the place of ``folder`` by renames: the old folder stays whole until
    then (it is moved next to ``staged``, whose temporary parent removes it), and comes back when the swap fails."""
    if not folder.exists():
        staged.rename(folder)
        return
    old = staged.with_name(staged.name + '.old')
    folder.rename(old)
    try:
        staged.rename(folder)
    except BaseException:
        old.rename(folder)
        raise


def export_measured(name: str, checkpoint: str, data: str, split: str, out: Path, repo_id: Optional[str] = None,
                    compare: Optional[Dict[str, str]] = None) -> ExportedRelease:
    """Measure ``checkpoint`` as ``name`` on ``data``/``split`` (and the ``compare`` counterparts, as
    :func:`embed_release` does) and write its Hub repository folder to ``out`` (weights, config, model card
    with the measured results, release record for ``srm-zoo publish``) for the Hub repository ``repo_id``
    (default: the zoo's)."""
    entry, tag = get_entry_and_tag(name)
    model, metric, provenance = _measured(name, checkpoint, data, split, compare)
    return write_hub_folder(entry, tag.tag, model, out, repo_id or hub_repo_id(entry.name, tag.tag), provenance,
                            lambda sha256: (metric,))
