"""``srm-zoo list [PATTERN]``: the zoo's models with size, cost, tags and reported accuracy."""
import argparse
import fnmatch
from typing import Any, Dict, List

from ..catalogue import CATALOGUE, ModelEntry
from ..errors import UserError
from ..stats import model_stats
from ._help import DefaultsHelpFormatter
from ..paths import check_writable_file, file_format
from ._output import write_rows


def matching_entries(pattern: str = '*') -> List[ModelEntry]:
    """The catalogue models whose name matches ``pattern`` (fnmatch; a plain word matches as a substring)."""
    pattern = pattern if any(ch in pattern for ch in '*?[') else f'*{pattern}*'
    return [entry for name, entry in CATALOGUE.items() if fnmatch.fnmatch(name, pattern)]


def _row(entry: ModelEntry) -> Dict[str, Any]:
    stats = model_stats(entry.name)
    reported = entry.paper[0] if entry.paper else None
    return {
        'model': entry.name,
        'param_count': round(stats.params_m, 3),
        'gmacs': round(stats.gmacs, 3),
        'img_size': stats.input_size[-1],
        'tags': ','.join(t.tag for t in entry.tags),
        'default_tag': entry.default_tag,
        'tags_with_weights': ','.join(entry.tags_with_weights),
        'reported_top1': reported.top1 if reported else None,
        'reported_dataset': reported.dataset if reported else None,
        'reported_source': reported.source if reported else None,
    }


def run(args: argparse.Namespace) -> int:
    entries = matching_entries(args.pattern)
    if not entries:
        raise UserError(f'No SRM model matches {args.pattern!r}. `srm-zoo list` shows them all.')
    fmt = file_format(args.results_file, args.format, 'table')
    if args.results_file is not None:
        # before the models' statistics are computed
        check_writable_file(args.results_file, 'models.csv', text=True)
    write_rows([_row(entry) for entry in entries], fmt, args.results_file)
    return 0


def add_parser(subparsers) -> None:
    parser = subparsers.add_parser(
        'list', help='list the SRM models', description=__doc__.split(':', 1)[1].strip(),
        formatter_class=DefaultsHelpFormatter)
    parser.add_argument('pattern', nargs='?', default='*', help='model name pattern (fnmatch), e.g. "srm_resnet*"')
    parser.add_argument('--format', choices=('table', 'csv', 'json'), default=None,
                        help='output format (default: from --results-file\'s suffix, .csv or .json, else table)')
    parser.add_argument('--results-file', default=None, help='write to this file instead of stdout')
    parser.set_defaults(run=run)
