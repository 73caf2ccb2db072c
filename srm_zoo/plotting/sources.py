"""What ``srm-zoo plot`` draws, read back from the files other commands write: a training run's per-epoch log
(``srm-zoo train``) and the per-round throughput of a benchmark (``srm-zoo bench --results-file``)."""
import csv
import json
import math
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence, Union

from ..errors import UserError
from ..training.log import LOG_FILES

__all__ = ['TRAINING_SERIES', 'TrainingLog', 'BenchRun', 'BenchResults', 'read_source']

TRAINING_SERIES = ('train_loss', 'eval_loss', 'eval_top1', 'ema_eval_top1', 'lr')
"""The logged columns that a training plot draws (each where the log has it)."""
WHAT_TO_NAME = ('a `srm-zoo train` run folder, its log.csv or log.jsonl, or a `srm-zoo bench --results-file` '
                'CSV or JSON file')


@dataclass(frozen=True)
class TrainingLog:
    """One training run: its finished epochs and, for each of :data:`TRAINING_SERIES` it logged, one value
    per epoch (None where an epoch has none)."""
    label: str
    epochs: List[int]
    series: Dict[str, List[Optional[float]]]


@dataclass(frozen=True)
class BenchRun:
    """One benchmarked model (or an SRM model on its reference path): images/s in each round."""
    label: str
    round_rates: List[float]


@dataclass(frozen=True)
class BenchResults:
    """One ``srm-zoo bench`` run: its mode (``infer``, ``train``), the settings shared by every row, and each
    model's rounds in the order of the rows (the first is the one the ratios divide by)."""
    source: str
    mode: str
    settings: str
    runs: List[BenchRun]


Source = Union[TrainingLog, BenchResults]


def read_source(path: Union[str, Path]) -> Source:
    """The training log or the bench results that ``path`` names (see :data:`WHAT_TO_NAME`)."""
    path = Path(path)
    if not path.exists():
        raise UserError(f'{path} does not exist: name {WHAT_TO_NAME}.')
    if path.is_dir():
        log = next((path / name for name in LOG_FILES if (path / name).is_file()), None)
        if log is None:
            raise UserError(f'{path} holds no {" or ".join(LOG_FILES)}: name {WHAT_TO_NAME}.')
        return _training_log(_read_rows(log), log, label=str(path))
    rows = _read_rows(path)
    if rows and 'epoch' in rows[0]:
        return _training_log(rows, path, label=str(path))
    if rows and 'model' in rows[0]:
        return _bench_results(rows, path)
    if not rows:
        raise UserError(f'{path} holds no rows: name {WHAT_TO_NAME}.')
    raise UserError(f'{path} is neither a training log (no "epoch" column) nor bench results (no "model" column): '
                    f'name {WHAT_TO_NAME}.')


def _read_rows(path: Path) -> List[Dict[str, Any]]:
    """The rows of a JSON (a list of objects), JSON-lines or CSV file, told apart by their text (``srm-zoo bench``
    writes either format under any name) and a ``.json`` suffix; a UTF-8 byte-order mark is skipped."""
    try:
        text = path.read_text(encoding='utf-8-sig')
    except UnicodeDecodeError:
        raise UserError(f'{path} is not a text file: name {WHAT_TO_NAME}.') from None
    start = text.lstrip()[:1]
    if start not in ('[', '{'):
        return list(csv.DictReader(text.splitlines()))
    try:
        if start == '[' or path.suffix.lower() == '.json':  # a .json file holding one object is no list of records
            rows = json.loads(text)
        else:  # JSON lines
            rows = [json.loads(line) for line in text.splitlines() if line.strip()]
    except json.JSONDecodeError as error:
        raise UserError(f'{path} is not valid JSON ({error}).') from None
    if not isinstance(rows, list) or not all(isinstance(row, dict) for row in rows):
        raise UserError(f'{path} does not hold a list of records: name {WHAT_TO_NAME}.')
    return rows


def _number(value: Any, column: str, row_idx: int, path: Path) -> Optional[float]:
    """A logged value as a finite float (None where the row leaves it empty)."""
    if value is None or value == '':
        return None
    try:
        number = float(value)
    except (TypeError, ValueError):
        raise UserError(f'{path}, row {row_idx + 1}: {column} is {value!r}, not a number.') from None
    if not math.isfinite(number):
        raise UserError(f'{path}, row {row_idx + 1}: {column} is {value!r}, not a finite number.')
    return number


def _epoch(row: Dict[str, Any], row_idx: int, path: Path) -> int:
    epoch = _number(row.get('epoch'), 'epoch', row_idx, path)
    if epoch is None or epoch != int(epoch) or epoch < 0:
        raise UserError(f'{path}, row {row_idx + 1}: the epoch is {row.get("epoch")!r}, not a whole number.')
    return int(epoch)


def _training_log(rows: List[Dict[str, Any]], path: Path, label: str) -> TrainingLog:
    if not rows:
        raise UserError(f'{path} logs no finished epoch yet.')
    epochs = [_epoch(row, idx, path) for idx, row in enumerate(rows)]
    series = {column: [_number(row.get(column), column, idx, path) for idx, row in enumerate(rows)]
              for column in TRAINING_SERIES if any(column in row for row in rows)}
    return TrainingLog(label, epochs, series)


def _bench_mode(row: Dict[str, Any], path: Path) -> str:
    modes = [mode for mode in ('infer', 'train') if f'{mode}_round_samples_per_sec' in row]
    if not modes:
        raise UserError(f'{path} has no per-round column (infer_round_samples_per_sec or '
                        f'train_round_samples_per_sec): write it with `srm-zoo bench --results-file`.')
    return modes[0]


def _round_rates(value: Any, column: str, row_idx: int, path: Path) -> List[float]:
    """A row's images/s per round: a JSON list, or the comma-joined CSV cell."""
    values = value.split(',') if isinstance(value, str) else value
    if not isinstance(values, list) or not values:
        raise UserError(f'{path}, row {row_idx + 1}: {column} holds no rounds.')
    rates = [_number(v, column, row_idx, path) for v in values]
    if any(rate is None or rate <= 0 for rate in rates):
        raise UserError(f'{path}, row {row_idx + 1}: {column} holds a round without a positive rate.')
    return rates


def _labels(rows: Sequence[Dict[str, Any]]) -> List[str]:
    """Each row's model, ``(reference)`` for an SRM model's reference path, numbered where a model repeats (a
    control copy of the first, as in ``--models resnet50,srm_resnet50,resnet50``)."""
    names = [row['model'] + (' (reference)' if row.get('srm_path') == 'reference' else '') for row in rows]
    totals, seen = Counter(names), Counter()
    labels = []
    for name in names:
        seen[name] += 1
        labels.append(f'{name} #{seen[name]}' if totals[name] > 1 else name)
    return labels


def _settings(row: Dict[str, Any], mode: str) -> str:
    """The settings every row shares, as one line: mode, device, dtype, layout, compile, batch, size, rounds."""
    flags = [mode, str(row.get('device', '')), str(row.get('amp', ''))]
    if str(row.get('channels_last')) in ('True', 'true'):
        flags.append('channels_last')
    if str(row.get('compile')) in ('True', 'true'):
        flags.append(f'compile ({row.get("compile_mode") or "default"})')
    flags += [f'batch {row.get(f"{mode}_batch_size")}', f'{row.get(f"{mode}_img_size")} px',
              f'{row.get("rounds")} rounds']
    return ', '.join(flag for flag in flags if flag)


def _bench_results(rows: List[Dict[str, Any]], path: Path) -> BenchResults:
    mode = _bench_mode(rows[0], path)
    column = f'{mode}_round_samples_per_sec'
    for idx, row in enumerate(rows):
        if not isinstance(row.get('model'), str) or not row['model']:
            raise UserError(f'{path}, row {idx + 1}: the model is {row.get("model")!r}, not a model name.')
    rates = [_round_rates(row.get(column), column, idx, path) for idx, row in enumerate(rows)]
    if len({len(r) for r in rates}) > 1:
        raise UserError(f'{path}: its rows have different numbers of rounds, so rounds cannot be paired.')
    runs = [BenchRun(label, r) for label, r in zip(_labels(rows), rates)]
    return BenchResults(str(path), mode, _settings(rows[0], mode), runs)
