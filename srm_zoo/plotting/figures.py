"""Figures of training runs and benchmarks, drawn with matplotlib's object API (no pyplot state, no display)."""
from pathlib import Path
from typing import Dict, List, Optional, Sequence

from ..benchmark import round_ratios as paired_round_ratios
from ..errors import UserError
from .sources import BenchResults, TrainingLog

__all__ = ['image_formats', 'training_figure', 'bench_figure', 'round_ratios', 'save_figure']

PANEL_SIZE = (4.8, 3.6)  # inches per panel
# the training plot's panels: (title, y label, [(column, line style, marker, legend suffix), ...]); the markers
# tell the lines of a single epoch apart
TRAINING_PANELS = (
    ('loss', 'loss', [('train_loss', '-', 'o', 'train'), ('eval_loss', '--', 's', 'eval')]),
    ('top-1', 'top-1 (%)', [('eval_top1', '-', 'o', ''), ('ema_eval_top1', '--', 's', 'EMA')]),
    ('learning rate', 'learning rate', [('lr', '-', 'o', '')]),
)
MAX_LISTED_STEPS = 12  # up to this many epochs or rounds, each gets its tick


def _figure_class():
    try:
        from matplotlib.figure import Figure
    except ImportError:
        raise UserError("Plots need matplotlib: pip install 'srm-zoo[plot]' (or matplotlib).") from None
    return Figure


def image_formats() -> Dict[str, str]:
    """The file formats (suffix without its dot: description) that figures can be saved as."""
    return _figure_class()().canvas.get_supported_filetypes()


def _panels(count: int):
    figure = _figure_class()(figsize=(PANEL_SIZE[0] * count, PANEL_SIZE[1] + 0.6), layout='constrained')
    return figure, figure.subplots(1, count, squeeze=False)[0]


def _integer_steps(ax, steps: Sequence[int]) -> None:
    """Ticks on whole epochs or rounds only: each of ``steps`` where they are few, else whole numbers."""
    from matplotlib.ticker import MaxNLocator
    steps = sorted(set(steps))
    if len(steps) <= MAX_LISTED_STEPS:
        ax.set_xticks(steps)
    else:
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))


def training_figure(logs: Sequence[TrainingLog]):
    """Per-epoch curves of one or more runs, one colour per run: training and evaluation loss, top-1 (and the
    EMA's, dashed) and the learning rate; a panel only where some run logged its values."""
    panels = [panel for panel in TRAINING_PANELS if any(column in log.series for log in logs
                                                        for column, *_ in panel[2])]
    figure, axes = _panels(len(panels))
    for ax, (title, ylabel, lines) in zip(axes, panels):
        for idx, log in enumerate(logs):
            for column, style, marker, suffix in lines:
                if column in log.series:
                    label = f'{log.label} {suffix}'.strip() if len(logs) > 1 or suffix else log.label
                    ax.plot(log.epochs, log.series[column], style, color=f'C{idx % 10}', marker=marker, markersize=3,
                            label=label)
        ax.set(title=title, xlabel='epoch', ylabel=ylabel)
        _integer_steps(ax, [epoch for log in logs for epoch in log.epochs])
        if title == 'learning rate' and all(v is None or v > 0 for log in logs for v in log.series.get('lr', [])):
            ax.set_yscale('log')
        ax.grid(alpha=0.3)
        ax.legend(fontsize='small')
    return figure


def round_ratios(results: BenchResults) -> List[List[float]]:
    """For each run after the first, its round-by-round ratios to the first run, paired as ``srm-zoo bench``
    pairs them for ``_round_ratio``."""
    first = results.runs[0].round_rates
    return [paired_round_ratios(run.round_rates, first) for run in results.runs[1:]]


def bench_figure(results: BenchResults, target: Optional[float] = None):
    """Images/s of every run round by round (a drift or a disturbed round shows), and the spread of each
    run's round ratios to the first run as a box (median and quartiles, as the ``_round_ratio`` columns),
    with 1.0 and ``target`` marked."""
    runs = results.runs
    figure, axes = _panels(2 if len(runs) > 1 else 1)
    rounds = range(1, len(runs[0].round_rates) + 1)
    for idx, run in enumerate(runs):
        axes[0].plot(rounds, run.round_rates, '-', color=f'C{idx % 10}', marker='o', markersize=3, label=run.label)
    axes[0].set(title='images/s by round', xlabel='round', ylabel='images/s')
    _integer_steps(axes[0], rounds)
    axes[0].grid(alpha=0.3)
    axes[0].legend(fontsize='small')
    if len(runs) > 1:
        ax = axes[1]
        ratios = round_ratios(results)
        boxes = ax.boxplot(ratios, whis=(0, 100), widths=0.5)
        ax.set_xticks(range(1, len(ratios) + 1), [run.label for run in runs[1:]], rotation=20, ha='right')
        ax.set_xlim(0.5, len(ratios) + 0.9)  # room for the last box's median label
        for position, line in enumerate(boxes['medians'], start=1):
            ax.annotate(f'{line.get_ydata()[0]:.3f}', (position + 0.27, line.get_ydata()[0]), va='center',
                        fontsize='small')
        ax.axhline(1.0, color='grey', linewidth=0.8)
        if target is not None:
            ax.axhline(target, color='C3', linestyle='--', linewidth=1, label=f'target {target:g}')
            ax.legend(fontsize='small')
        ax.set(title=f'round ratio to {runs[0].label}', ylabel='ratio (box: quartiles, whiskers: range)')
        ax.grid(alpha=0.3, axis='y')
    figure.suptitle(f'{results.source}: {results.settings}', fontsize='medium')
    return figure


def save_figure(figure, path: Path) -> None:
    """Write ``figure`` in the format of ``path``'s suffix."""
    figure.savefig(path, dpi=120)
