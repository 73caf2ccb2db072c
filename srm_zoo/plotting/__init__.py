"""Plots of training runs and benchmarks (``srm-zoo plot``); drawing needs matplotlib (``srm-zoo[plot]``)."""
from .figures import bench_figure, image_formats, round_ratios, save_figure, training_figure
from .sources import BenchResults, BenchRun, TrainingLog, read_source

__all__ = ['BenchResults', 'BenchRun', 'TrainingLog', 'read_source', 'bench_figure', 'image_formats',
           'round_ratios', 'save_figure', 'training_figure']
