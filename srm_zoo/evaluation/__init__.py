"""Accuracy evaluation of SRM models (``srm-zoo eval``): data layouts, label mapping, exact counting
over one or many processes, results files and verification against the zoo's stated accuracy."""
from .checkpoint import checkpoint_model, read_state_dict
from .labels import DATASETS, label_space
from .results import CSV_COLUMNS, write_results
from .runner import EvalOptions, EvalRun, evaluate, summary_line
from .verify import compare_with_reference, find_reference

__all__ = ['DATASETS', 'CSV_COLUMNS', 'EvalOptions', 'EvalRun', 'evaluate', 'summary_line', 'write_results',
           'label_space', 'checkpoint_model', 'read_state_dict', 'find_reference', 'compare_with_reference']
