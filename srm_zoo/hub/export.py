"""Turning a trained checkpoint into a complete Hugging Face Hub repository folder.

The folder holds ``model.safetensors`` and ``config.json`` in timm's format (``save_for_hf``),
``README.md`` (the model card, with the measured results when given) and
``srm_zoo_release.json`` (model, tag, sha256, metrics and provenance: what ``srm-zoo publish``
turns into a manifest entry).
"""
import json
import math
import re
import sys
import tempfile
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Callable, Dict, Iterator, List, Optional, Sequence, Tuple, Union

import timm
import torch
from timm.data import ImageNetInfo, resolve_data_config
from timm.models import split_model_name_tag

from .. import __version__
from ..catalogue import DATASET_LABEL_NAMES, ModelEntry, get_entry, get_entry_and_tag
from ..checkpoint import CheckpointWeights, file_sha256, load_state_dict_for, read_checkpoint
from ..conversion.state import save_hf_folder
from ..errors import UserError, error_reason
from ..evaluation.results import EVAL_SETTING_KEYS, eval_settings
from ..manifest import Metric, hub_repo_id
from ..paths import check_output_dir
from ..training import TrainConfig
from .cards import CardWeights, render_card

__all__ = ['RELEASE_FILE', 'HUB_FILES', 'ExportedRelease', 'check_export_dir', 'check_repo_id', 'read_results',
           'metrics_from_results', 'weights_provenance', 'write_hub_folder', 'export_release', 'read_exported_release']

WEIGHTS_FILE = 'model.safetensors'
RELEASE_FILE = 'srm_zoo_release.json'
HUB_FILES = (WEIGHTS_FILE, 'config.json', 'README.md', RELEASE_FILE)
"""Everything an export writes, and everything ``srm-zoo publish`` uploads."""

RESULT_KEYS = ('model', 'top1', 'top5', 'num_images', 'dataset', 'split', 'checkpoint_sha256')
REPO_ID = re.compile(r'^[A-Za-z0-9][\w.-]*/[\w.-]+$')


@dataclass(frozen=True)
class ExportedRelease:
    """What an export folder holds, as recorded in its ``srm_zoo_release.json``."""
    model: str
    tag: str
    repo_id: str
    sha256: str
    metrics: Tuple[Metric, ...] = ()
    provenance: Dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> Dict[str, Any]:
        return asdict(self)


def check_repo_id(repo_id: str) -> str:
    """Refuse a Hub repository id that is not of the form ORG/NAME."""
    if not REPO_ID.match(repo_id):
        raise UserError(f'--repo-id {repo_id!r} is not a Hub repository id of the form ORG/NAME.')
    return repo_id


def read_results(path: Union[str, Path]) -> List[Dict[str, Any]]:
    """The result objects of an ``srm-zoo eval`` results file (one object or a list of them)."""
    path = Path(path)
    try:
        data = json.loads(path.read_text())
    except FileNotFoundError:
        raise UserError(f'Results file {str(path)!r} does not exist.') from None
    except IsADirectoryError:
        raise UserError(f'Results file {str(path)!r} is a folder; pass the JSON file `srm-zoo eval --results-file` '
                        'wrote.') from None
    except (json.JSONDecodeError, UnicodeDecodeError) as error:
        raise UserError(f'Results file {str(path)!r} is not JSON ({error}); pass the file `srm-zoo eval` '
                        'writes with --results-format json.') from None
    results = data if isinstance(data, list) else [data]
    for index, result in enumerate(results):
        missing = [k for k in RESULT_KEYS if not isinstance(result, dict) or k not in result]
        if missing:
            raise UserError(f'Results file {str(path)!r}: entry {index} lacks {", ".join(missing)}; expected the '
                            f'JSON `srm-zoo eval` writes (keys {", ".join(RESULT_KEYS)}).')
    return results


def metrics_from_results(results: Sequence[Dict[str, Any]], model: str, weight_sha256s: Sequence[str],
                         source: str = 'results', tag: Optional[str] = None,
                         settings: Optional[Dict[str, Any]] = None) -> Tuple[Metric, ...]:
    """Metrics of ``model.tag`` (``tag`` None: the default tag) from eval results, refusing results of another
    model or tag (another preprocessing and label set), of other weights, or measured with other preprocessing
    than ``settings`` (:data:`EVAL_SETTING_KEYS`: those of the exported config, which users of the weights get)."""
    metrics, seen = [], set()
    default_tag = get_entry(model).default_tag
    tag = tag or default_tag
    for result in results:
        arch, result_tag = split_model_name_tag(str(result['model']).split(':')[-1].split('/')[-1])
        if arch != model:
            raise UserError(f'{source}: the results are of {result["model"]!r}, not of {model}.')
        if (result_tag or default_tag) != tag:
            raise UserError(f'{source}: the results are of {result["model"]!r} (with that tag\'s preprocessing and '
                            f'data), not of {model}.{tag}. Evaluate the checkpoint as {model}.{tag} with '
                            '`srm-zoo eval` and pass that results file.')
        if result['checkpoint_sha256'] not in weight_sha256s:
            raise UserError(
                f'{source}: the {result["dataset"]} results were measured on weights with sha256 '
                f'{result["checkpoint_sha256"]}, not on this checkpoint ({weight_sha256s[0]}). Evaluate this '
                'checkpoint with `srm-zoo eval` and pass that results file.')
        _check_settings(result, settings or {}, source)
        top1, top5 = float(result['top1']), float(result['top5'])
        if not (0 <= top1 <= 100 and 0 <= top5 <= 100 and top1 <= top5 and not math.isnan(top1)):
            raise UserError(f'{source}: top1 {top1} / top5 {top5} are not accuracies in percent.')
        key = (result['dataset'], result['split'])
        if key in seen:
            raise UserError(f'{source}: two results for {key[0]} {key[1]}; keep one per dataset and split.')
        seen.add(key)
        metrics.append(Metric(
            dataset=str(result['dataset']), split=str(result['split']), top1=top1, top5=top5,
            num_images=int(result['num_images']),
            eval_settings={k: result[k] for k in EVAL_SETTING_KEYS if result.get(k) is not None}))
    return tuple(metrics)


def _check_settings(result: Dict[str, Any], settings: Dict[str, Any], source: str) -> None:
    """Refuse a result measured with other preprocessing than ``settings``: its figures would not be what the
    exported weights give as their config says to run them."""
    differ = [f'{key} {result[key]} (the config: {settings[key]})' for key in EVAL_SETTING_KEYS
              if result.get(key) is not None and key in settings and result[key] != settings[key]]
    if differ:
        options = ' '.join(f'--{key.replace("_", "-")} {settings[key]}' for key in EVAL_SETTING_KEYS if key in settings)
        raise UserError(f'{source}: the {result["dataset"]} results were measured with {", ".join(differ)}: the '
                        f'exported config runs the weights otherwise. Evaluate with `srm-zoo eval ... {options}` '
                        'and pass that results file.')


def _label_config(dataset: str, num_classes: int) -> Dict[str, Any]:
    if num_classes == 1000 and dataset.startswith('imagenet'):
        info = ImageNetInfo()
        return dict(label_names=info.label_names(), label_descriptions=info.label_descriptions(as_dict=True))
    labels = DATASET_LABEL_NAMES.get(dataset)
    return dict(label_names=list(labels)) if labels and len(labels) == num_classes else {}


def weights_provenance(read: CheckpointWeights, use_ema: bool, recipe: Optional[str],
                       source: Optional[str] = None) -> Dict[str, Any]:
    """Where released weights come from: the checkpoint file (name, sha256), which of its weights (EMA, or the
    plain ones) and, for an ``srm-zoo train`` checkpoint, its recipe, command, seed, the epochs it completed
    (fewer than planned where the run was stopped) and the software that trained it; ``recipe`` (the tag's) and
    ``source`` (default: said from the checkpoint) fill in what it does not record."""
    config = TrainConfig(**read.train_config) if read.train_config else None
    provenance: Dict[str, Any] = {
        'recipe': config.recipe if config else recipe,
        'source': source or _source(config, read.path),
        'checkpoint_sha256': file_sha256(read.path),
        'weights': 'EMA' if use_ema else 'last epoch' if config else 'model',
        'exported_with': f'srm-zoo {__version__}',
    }
    if provenance['recipe'] is None:
        del provenance['recipe']  # a tag without one, and weights that do not say
    if config:
        provenance.update(command=config.command(data='DATA'), seed=config.seed, epochs=read.epochs_trained)
    if read.versions:
        provenance['trained_with'] = ', '.join(f'{name} {version}' for name, version in read.versions.items()
                                               if version)
    return provenance


def _source(config: Optional[TrainConfig], checkpoint: Path) -> str:
    """Where the weights of ``checkpoint`` come from, as far as it says (its ``srm-zoo train`` settings)."""
    if config is None:
        return f'weights file {checkpoint.name}'
    if config.initial_checkpoint:
        return f'fine-tuned by srm-zoo train from {Path(config.initial_checkpoint).name}'
    return 'trained from scratch by srm-zoo train'


@contextmanager
def _staging_dir(out: Path) -> Iterator[Path]:
    """A temporary folder inside ``out`` (created when missing) to write an export into; when the export fails,
    the folders created for ``out`` are removed again, so that a refused export leaves nothing behind."""
    created = [folder for folder in (out, *out.parents) if not folder.exists()]
    out.mkdir(parents=True, exist_ok=True)
    try:
        with tempfile.TemporaryDirectory(dir=out, prefix='.export-') as staging:
            yield Path(staging)
    except BaseException:
        for folder in created:  # the deepest first
            if not any(folder.iterdir()):
                folder.rmdir()
        raise


def check_export_dir(out: Union[str, Path], flag: str = '--out') -> Path:
    """Refuse an export folder that cannot be written (:func:`~srm_zoo.paths.check_output_dir`) or that holds files
    an export would replace (a ``README.md``, a ``config.json``, ...) without being a complete earlier export:
    they are someone else's. Returns it as a Path."""
    out = check_output_dir(out, flag)
    present = [name for name in HUB_FILES if (out / name).exists()]
    if present:
        try:
            read_exported_release(out)
        except UserError:
            raise UserError(f'{flag} {str(out)!r} holds {", ".join(present)}, which an export would replace, but '
                            'it is not an earlier `srm-zoo export` folder: choose a new or empty folder.') from None
    return out


def write_hub_folder(entry: ModelEntry, tag: str, model: torch.nn.Module, out: Path, repo_id: str,
                     provenance: Dict[str, Any], metrics_of: Callable[[str], Tuple[Metric, ...]]) -> ExportedRelease:
    """Write the Hub repository folder of ``model`` (``entry.tag``'s weights) into ``out``.

    ``metrics_of`` gives the measured metrics for the sha256 of the written ``model.safetensors`` (and may
    refuse them); every file is written aside first and moved into ``out`` only when all are complete.
    """
    with _staging_dir(out) as staging:
        save_hf_folder(model.eval(), str(staging),
                       model_config=_label_config(entry.get_tag(tag).dataset, model.num_classes))
        sha256 = file_sha256(staging / WEIGHTS_FILE)
        release = ExportedRelease(model=entry.name, tag=tag, repo_id=repo_id, sha256=sha256,
                                  metrics=metrics_of(sha256), provenance=provenance)
        card = render_card(entry, tag, CardWeights(status='hub', repo_id=repo_id, sha256=sha256,
                                                   metrics=release.metrics, provenance=provenance))
        (staging / 'README.md').write_text(card)
        (staging / RELEASE_FILE).write_text(json.dumps(release.to_dict(), indent=2) + '\n')
        for name in HUB_FILES:
            (staging / name).replace(out / name)
    return release


def export_release(
        model_name: str,
        checkpoint: Union[str, Path],
        out: Union[str, Path],
        results: Optional[Union[str, Path]] = None,
        repo_id: Optional[str] = None,
        source: Optional[str] = None,
        use_ema: bool = False,
) -> ExportedRelease:
    """Write the Hub repository folder of ``model_name`` (``arch`` or ``arch.tag``) from ``checkpoint``."""
    entry, weight_tag = get_entry_and_tag(model_name)
    tag = weight_tag.tag
    checkpoint, out = Path(checkpoint), check_export_dir(out)
    repo_id = check_repo_id(repo_id) if repo_id is not None else hub_repo_id(entry.name, tag)
    result_rows = read_results(results) if results else []
    model = timm.create_model(f'{entry.name}.{tag}')
    read = read_checkpoint(checkpoint)
    load_state_dict_for(model, read.weights(use_ema), f'Checkpoint {str(checkpoint)!r}', entry.name)
    if read.ema is not None and not use_ema:
        print(f'note: {checkpoint} also holds EMA weights; exporting its plain weights (--use-ema exports the EMA, '
              'the weights to publish for recipes that keep one).', file=sys.stderr)
    provenance = weights_provenance(read, use_ema, weight_tag.recipe, source)
    settings = eval_settings(resolve_data_config(model=model, use_test_size=True))  # as `srm-zoo eval` runs it

    def metrics_of(weights_sha256: str) -> Tuple[Metric, ...]:
        return metrics_from_results(result_rows, entry.name, (provenance['checkpoint_sha256'], weights_sha256),
                                    source=f'Results file {str(results)!r}', tag=tag, settings=settings)

    return write_hub_folder(entry, tag, model, out, repo_id, provenance, metrics_of)


def read_exported_release(folder: Union[str, Path]) -> ExportedRelease:
    """The release an export folder describes (refusing folders that are not complete exports)."""
    folder = Path(folder)
    missing = [name for name in HUB_FILES if not (folder / name).is_file()]
    if missing:
        raise UserError(f'{str(folder)!r} is not a complete `srm-zoo export` folder: {", ".join(missing)} missing. '
                        'Create it with `srm-zoo export MODEL --checkpoint FILE --out DIR`.')
    try:
        data = json.loads((folder / RELEASE_FILE).read_text())
        data['metrics'] = tuple(Metric(**m) for m in data.get('metrics', ()))
        return ExportedRelease(**data)
    except (ValueError, TypeError, AttributeError) as error:  # not JSON, not an object, missing or unknown keys
        raise UserError(f'{str(folder / RELEASE_FILE)!r} is not a release record of `srm-zoo export` '
                        f'({type(error).__name__}: {error_reason(error)}); export the folder again.') from None
