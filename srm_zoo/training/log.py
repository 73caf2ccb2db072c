"""Per-epoch training log as CSV and JSON lines, and progress display."""
import csv
import json
import sys
from pathlib import Path
from typing import Any, Dict, Iterable, List

from tqdm import tqdm

__all__ = ['LOG_FILES', 'write_log', 'progress']

LOG_FILES = ('log.jsonl', 'log.csv')
"""The run folder's logs (:func:`write_log`): both hold the same rows."""


def write_log(rows: List[Dict[str, Any]], output: Path) -> None:
    """Rewrite the logs (:data:`LOG_FILES`) in ``output`` with one row per finished epoch."""
    if not rows:
        return
    jsonl, csv_log = LOG_FILES
    with (output / jsonl).open('w') as handle:
        handle.writelines(json.dumps(row) + '\n' for row in rows)
    columns = list(dict.fromkeys(key for row in rows for key in row))
    with (output / csv_log).open('w', newline='') as handle:
        writer = csv.DictWriter(handle, fieldnames=columns)
        writer.writeheader()
        writer.writerows(rows)


def progress(iterable: Iterable, total: int, desc: str, enabled: bool) -> Iterable:
    """A tqdm bar on a terminal; the bare iterable elsewhere (the caller prints plain lines)."""
    if not enabled or not sys.stderr.isatty():
        return iterable
    return tqdm(iterable, total=total, desc=desc, leave=False, dynamic_ncols=True)
