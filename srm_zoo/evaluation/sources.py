"""Models timm builds from a Hub repository or a local folder in timm's format (``hf-hub:REPO[@REVISION]``,
``local-dir:FOLDER``: ``config.json`` and a weights file), for evaluation: the architecture the config builds, and
one weights file loaded strictly, so that the results name what was evaluated."""
from dataclasses import dataclass
from pathlib import Path
from typing import List, Optional

import timm
import torch
from huggingface_hub import _CACHED_NO_EXIST, hf_hub_download, try_to_load_from_cache
from huggingface_hub.errors import EntryNotFoundError, LocalEntryNotFoundError
from timm.models._hub import HF_SAFE_WEIGHTS_NAME, HF_WEIGHTS_NAME, load_model_config_from_hf, \
    load_model_config_from_path
from timm.layers import SEModule
from timm.models.resnet import BasicBlock, Bottleneck

from ..catalogue import CATALOGUE
from ..checkpoint import load_state_dict_for, read_state_dict
from ..errors import UserError, error_reason
from ..hub.weights import hub_release_at, verify_release_file
from ..layers import SRM

__all__ = ['MODEL_SOURCES', 'SourceModel', 'load_source_model', 'block_attention']

MODEL_SOURCES = ('hf-hub:', 'local-dir:')
"""Prefixes of the model names timm builds from a Hub repository or a local folder."""

WEIGHTS_FILES = (HF_SAFE_WEIGHTS_NAME, HF_WEIGHTS_NAME)
"""The weights files of a repository or folder in timm's format, in the order timm prefers them."""

WEIGHTS_SUFFIXES = ('.safetensors', '.pth', '.bin')


@dataclass
class SourceModel:
    """A model built from a ``hf-hub:`` or ``local-dir:`` name, the architecture its config built, and the one file
    its weights came from."""
    model: torch.nn.Module
    architecture: str
    weights_file: Path


def load_source_model(name: str) -> SourceModel:
    """The model of ``name`` (``hf-hub:REPO[@REVISION]`` or ``local-dir:FOLDER``) holding exactly the weights of its
    weights file; a UserError naming what is missing or does not fit."""
    source, _, location = name.partition(':')
    try:
        read_config = load_model_config_from_hf if source == 'hf-hub' else load_model_config_from_path
        architecture = read_config(location)[1]  # the one timm builds (the config's pretrained_cfg may say another)
        model = timm.create_model(name, pretrained=False)
    except UserError:
        raise
    except KeyError as error:
        raise UserError(f'Cannot load {name}: its config.json has no {error} entry, as timm\'s format has '
                        '(timm.models.save_for_hf writes it).') from None
    except Exception as error:  # noqa: BLE001 - download/read failures are reported to the user
        raise UserError(f'Cannot load {name}: {error_reason(error)}') from None
    weights = _hub_weights(name, location) if source == 'hf-hub' else _folder_weights(name, Path(location))
    load_state_dict_for(model, read_state_dict(weights), f'The weights of {name} ({weights.name})', architecture)
    names = model.pretrained_cfg.get('label_names')
    if isinstance(names, dict):
        model.pretrained_cfg = {**model.pretrained_cfg, 'label_names': _names_by_index(names, model.num_classes)}
    return SourceModel(model, architecture, weights)


def _names_by_index(names: dict, num_classes: int) -> Optional[List[str]]:
    """timm's ``{index: name}`` form of ``label_names`` (JSON makes the indices strings) as the list of the outputs'
    names; None where it does not name every output once."""
    by_index = {str(index): name for index, name in names.items()}
    ordered = [by_index.get(str(index)) for index in range(num_classes)]
    return ordered if len(by_index) == num_classes and None not in ordered else None


def _folder_weights(name: str, folder: Path) -> Path:
    """The weights file of a ``local-dir:`` folder: ``model.safetensors``, else ``pytorch_model.bin``, else its
    only ``.safetensors``, ``.pth`` or ``.bin`` file."""
    preferred = [folder / n for n in WEIGHTS_FILES if (folder / n).is_file()]
    if preferred:
        return preferred[0]
    found = sorted(p for p in folder.iterdir() if p.is_file() and p.name.endswith(WEIGHTS_SUFFIXES))
    if len(found) != 1:
        what = f'{len(found)} weights files ({", ".join(p.name for p in found)})' if found else 'no weights file'
        raise UserError(f'Cannot load {name}: the folder holds {what}; name it {HF_SAFE_WEIGHTS_NAME} (or keep one '
                        f'{"/".join(WEIGHTS_SUFFIXES)} file).')
    return found[0]


def _hub_weights(name: str, hub_id: str) -> Path:
    """The weights file of a ``hf-hub:`` repository (downloaded, or from the cache): ``model.safetensors``, else
    ``pytorch_model.bin``; checked against the release manifest where it records this ``REPO@REVISION``."""
    repo, _, revision = hub_id.partition('@')
    for filename in WEIGHTS_FILES:
        if try_to_load_from_cache(repo, filename, revision=revision or None) is _CACHED_NO_EXIST:
            continue  # known to be absent (so offline too)
        try:
            path = Path(hf_hub_download(repo, filename, revision=revision or None))
        except LocalEntryNotFoundError as error:  # offline, or the Hub unreachable, and not in the cache
            raise UserError(f'Cannot load {name}: {error_reason(error)}') from None
        except EntryNotFoundError:
            continue
        except Exception as error:  # noqa: BLE001 - download failures are reported to the user
            raise UserError(f'Cannot load {name}: {error_reason(error)}') from None
        release = hub_release_at(hub_id)
        return verify_release_file(path, release) if release else path
    raise UserError(f'Cannot load {name}: the repository holds neither {" nor ".join(WEIGHTS_FILES)}.')


def block_attention(model: torch.nn.Module, architecture: str) -> Optional[str]:
    """The block attention of a zoo architecture as built: ``srm``, ``se`` (timm's SE, the counterpart of
    ``--attention se``), ``none``, or another attention layer's class name (several joined by commas); None for
    other timm models, which the zoo does not build with SRM."""
    if architecture not in CATALOGUE:
        return None
    kinds = {_attention_name(block.se) for block in model.modules() if isinstance(block, (BasicBlock, Bottleneck))}
    return ', '.join(sorted(kinds))


def _attention_name(layer: Optional[torch.nn.Module]) -> str:
    if layer is None:
        return 'none'
    if isinstance(layer, SRM):
        return 'srm'
    return 'se' if type(layer) is SEModule else type(layer).__name__
