"""The results of one evaluation: a JSON record and timm's results-table CSV row."""
import csv
import json
import platform
from pathlib import Path
from typing import Any, Dict, Optional

import timm
import torch
import torchvision

from ..errors import UserError

__all__ = ['CSV_COLUMNS', 'software_versions', 'write_results']

CSV_COLUMNS = ('model', 'img_size', 'top1', 'top1_err', 'top5', 'top5_err', 'param_count', 'crop_pct',
               'interpolation')
"""The columns of timm's ``results/results-imagenet*.csv`` tables."""


def software_versions() -> Dict[str, Optional[str]]:
    from .. import __version__
    return {
        'srm_zoo': __version__, 'timm': timm.__version__, 'torch': torch.__version__,
        'torchvision': torchvision.__version__, 'python': platform.python_version(),
        'cuda': torch.version.cuda if torch.cuda.is_available() else None,
    }


def write_results(result: Dict[str, Any], path: str, fmt: Optional[str] = None) -> str:
    """Write ``result`` as JSON (every key) or CSV (timm's table columns); the format follows the file's
    extension unless ``fmt`` is given. Returns the format written."""
    fmt = fmt or ('csv' if str(path).lower().endswith('.csv') else 'json')
    target = Path(path)
    if target.parent and not target.parent.exists():
        raise UserError(f'Cannot write results to {path}: folder {target.parent} does not exist.')
    if fmt == 'csv':
        row = {c: f'{result[c]:.3f}' if isinstance(result.get(c), float) else result.get(c) for c in CSV_COLUMNS}
        with target.open('w', newline='') as handle:
            writer = csv.DictWriter(handle, fieldnames=CSV_COLUMNS)
            writer.writeheader()
            writer.writerow(row)
    else:
        target.write_text(json.dumps(result, indent=2) + '\n')
    return fmt
