"""The results of one evaluation: a JSON record (one per file) and timm's results-table CSV row (appended)."""
import csv
import json
import platform
from pathlib import Path
from typing import Any, Dict, List, Optional

import timm
import torch
import torchvision

from ..errors import UserError
from ..paths import check_writable_file, file_format

__all__ = ['CSV_COLUMNS', 'EVAL_SETTING_KEYS', 'eval_settings', 'software_versions', 'check_results_file',
           'write_results']

CSV_COLUMNS = ('model', 'img_size', 'top1', 'top1_err', 'top5', 'top5_err', 'param_count', 'crop_pct',
               'interpolation')
"""The columns of timm's ``results/results-imagenet*.csv`` tables."""
EVAL_SETTING_KEYS = ('img_size', 'crop_pct', 'interpolation')
"""The preprocessing a result was measured with, as results record it."""


def eval_settings(data_config: Dict[str, Any]) -> Dict[str, Any]:
    """The :data:`EVAL_SETTING_KEYS` of a resolved timm data config."""
    return dict(img_size=data_config['input_size'][-1], crop_pct=data_config['crop_pct'],
                interpolation=data_config['interpolation'])


def software_versions() -> Dict[str, Optional[str]]:
    """The versions of the software that measures or trains, as plain strings (a checkpoint holding torch's
    own version class would not load with ``weights_only=True``)."""
    from .. import __version__
    return {
        'srm_zoo': __version__, 'timm': timm.__version__, 'torch': str(torch.__version__),
        'torchvision': torchvision.__version__, 'python': platform.python_version(),
        'cuda': torch.version.cuda if torch.cuda.is_available() else None,
    }


def _csv_header(path: Path) -> Optional[List[str]]:
    """The first row of the CSV file ``path``; None when it is empty."""
    with path.open(newline='') as handle:
        return next(csv.reader(handle), None)


def check_results_file(path: str, fmt: Optional[str] = None) -> str:
    """Refuse a results file that cannot be written, before anything is evaluated: its folder is missing,
    it is a folder, it may not be written, or it is a CSV with other columns than timm's results table.
    Returns the format."""
    fmt = file_format(path, fmt, 'json')
    target = check_writable_file(path, f'results.{fmt}', 'results to ', text=True)
    if fmt == 'csv' and target.exists():
        header = _csv_header(target)
        if header is not None and header != list(CSV_COLUMNS):
            raise UserError(f'{path} has other columns than the results table ({",".join(CSV_COLUMNS)}), so a row '
                            f'cannot be appended to it; choose another file.')
    return fmt


def write_results(result: Dict[str, Any], path: str, fmt: Optional[str] = None) -> str:
    """Write ``result`` as JSON (every key; the file holds this one record) or as a CSV row (timm's table
    columns, the record's values; appended to an existing results table, the header written once); the format
    follows the file's extension unless ``fmt`` is given. Returns the format written."""
    fmt, target = check_results_file(path, fmt), Path(path)
    try:
        if fmt == 'csv':
            _append_csv_row(result, target)
        else:
            target.write_text(json.dumps(result, indent=2) + '\n')
    except OSError as error:
        raise UserError(f'Cannot write results to {path}: {error.strerror or error}.') from None
    return fmt


def _append_csv_row(result: Dict[str, Any], target: Path) -> None:
    row = {c: result.get(c) for c in CSV_COLUMNS}  # the JSON record's values, as timm's validate.py writes them
    new = not target.exists() or _csv_header(target) is None
    if not new and not target.read_bytes().endswith(b'\n'):
        with target.open('a') as handle:  # a last row without its line end
            handle.write('\r\n')
    with target.open('w' if new else 'a', newline='') as handle:
        writer = csv.DictWriter(handle, fieldnames=CSV_COLUMNS)
        if new:
            writer.writeheader()
        writer.writerow(row)
