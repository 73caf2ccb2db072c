"""Per-epoch training log as CSV and JSON lines, and progress display."""
import csv
import json
import sys
from pathlib import Path
from typing import Any, Dict, Iterable, List

from tqdm import tqdm

__all__ = ['write_log', 'progress']


def write_log(rows: List[Dict[str, Any]], output: Path) -> None:
    """Rewrite ``log.csv`` and ``log.jsonl`` in ``output`` with one row per finished epoch."""
    if not rows:
        return
    with (output / 'log.jsonl').open('w') as handle:
        handle.writelines(json.dumps(row) + '\n' for row in rows)
    columns = list(dict.fromkeys(key for row in rows for key in row))
    with (output / 'log.csv').open('w', newline='') as handle:
        writer = csv.DictWriter(handle, fieldnames=columns)
        writer.writeheader()
        writer.writerows(rows)


def progress(iterable: Iterable, total: int, desc: str, enabled: bool) -> Iterable:
    """A tqdm bar on a terminal; the bare iterable elsewhere (the caller prints plain lines)."""
    if not enabled or not sys.stderr.isatty():
        return iterable
    return tqdm(iterable, total=total, desc=desc, leave=False, dynamic_ncols=True)
