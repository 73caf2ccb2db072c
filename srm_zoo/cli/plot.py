"""``srm-zoo plot``: a picture of training runs (their per-epoch curves, several runs in one figure) or of a
benchmark (every model's images/s round by round, and the spread of its round ratios to the first model)."""
import argparse
from pathlib import Path
from typing import List, Optional

from ..errors import UserError
from ..paths import check_writable_file
from ..plotting import BenchResults, TrainingLog, bench_figure, image_formats, read_source, save_figure, \
    training_figure
from ._help import DefaultsHelpFormatter
from ._types import ratio_target


def _default_output(inputs: List[str]) -> Path:
    """Beside the one input: ``RUN/log.png`` for a run folder, ``NAME.png`` for a file ``NAME.csv``."""
    if len(inputs) > 1:
        raise UserError('Several inputs make one figure: name it with --output, e.g. --output runs.png.')
    source = Path(inputs[0])
    return source / 'log.png' if source.is_dir() else source.with_suffix('.png')


def _check_format(output: Path) -> None:
    formats = image_formats()
    if output.suffix.lower().lstrip('.') not in formats:
        raise UserError(f'Cannot tell the image format of {output}: end its name in one of '
                        f'{", ".join("." + f for f in sorted(formats))}.')


def _figure(inputs: List[str], target: Optional[float]):
    repeated = next((path for idx, path in enumerate(inputs)
                     if any(Path(path).resolve() == Path(other).resolve() for other in inputs[:idx])), None)
    if repeated is not None:
        raise UserError(f'{repeated} is given twice: name each run once.')
    sources = [read_source(path) for path in inputs]
    logs = [s for s in sources if isinstance(s, TrainingLog)]
    benches = [s for s in sources if isinstance(s, BenchResults)]
    if logs and benches:
        raise UserError('Plot training runs or bench results, not both in one figure.')
    if len(benches) > 1:
        raise UserError('Plot one bench results file at a time: its rounds are paired with its first model\'s.')
    if logs:
        if target is not None:
            raise UserError('--target marks a ratio on a benchmark\'s plot: training curves have none.')
        return training_figure(logs), f'{len(logs)} training run(s)'
    if target is not None and len(benches[0].runs) == 1:
        raise UserError('--target marks a ratio to the first model: these bench results hold only one model.')
    return bench_figure(benches[0], target), f'{len(benches[0].runs)} benchmarked model(s)'


def run(args: argparse.Namespace) -> int:
    output = args.output if args.output is not None else str(_default_output(args.inputs))
    output = check_writable_file(output, 'plot.png', 'the plot to ', inputs=args.inputs)
    _check_format(output)
    figure, what = _figure(args.inputs, args.target)
    save_figure(figure, output)
    print(f'{output}: {what}')
    return 0


def add_parser(subparsers) -> None:
    parser = subparsers.add_parser(
        'plot', help='plot training runs (loss, top-1, lr by epoch) or a benchmark (images/s by round, ratios)',
        description=__doc__.split(':', 1)[1].strip() + ' Needs matplotlib (pip install \'srm-zoo[plot]\').',
        formatter_class=DefaultsHelpFormatter)
    parser.add_argument('inputs', nargs='+', metavar='INPUT',
                        help='a `srm-zoo train` run folder (or its log.csv / log.jsonl), several to compare them; '
                             'or one `srm-zoo bench --results-file` CSV or JSON')
    parser.add_argument('--output', '-o', default=None,
                        help='image file; its suffix gives the format (.png, .svg, .pdf, ...). Default, for one '
                             'input: RUN/log.png for a run folder, else the input with the suffix .png')
    parser.add_argument('--target', type=ratio_target, default=None,
                        help='benchmarks: mark this ratio to the first model (e.g. 0.95; above 0, at most 10)')
    parser.set_defaults(run=run)
