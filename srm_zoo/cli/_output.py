"""Writing result rows as an aligned table, CSV or JSON."""
import csv
import json
import sys
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence, TextIO

__all__ = ['format_table', 'write_rows']


def _cell(value: Any) -> str:
    if value is None:
        return ''
    if isinstance(value, float):
        return f'{value:.3f}'
    if isinstance(value, (list, tuple)):
        return ','.join(map(str, value))
    return str(value)


def format_table(rows: Sequence[Dict[str, Any]], columns: Optional[Sequence[str]] = None) -> str:
    """Rows as a plain, aligned text table (floats to 3 decimals, None as blank)."""
    if not rows:
        return ''
    columns = list(columns or rows[0].keys())
    cells = [[_cell(row.get(c)) for c in columns] for row in rows]
    widths = [max(len(c), *(len(r[i]) for r in cells)) for i, c in enumerate(columns)]
    lines = ['  '.join(c.ljust(w) for c, w in zip(columns, widths)).rstrip()]
    lines += ['  '.join(v.ljust(w) for v, w in zip(r, widths)).rstrip() for r in cells]
    return '\n'.join(lines)


def write_rows(rows: List[Dict[str, Any]], fmt: str, path: Optional[str] = None,
               stream: Optional[TextIO] = None) -> None:
    """Write rows as ``table`` (floats to 3 decimals), ``csv`` or ``json`` (values as they are) to ``path`` (or
    ``stream``, by default the current stdout)."""
    out = Path(path).open('w', newline='') if path else (stream or sys.stdout)
    try:
        if fmt == 'json':
            json.dump(rows, out, indent=2)
            out.write('\n')
        elif fmt == 'csv':
            writer = csv.DictWriter(out, fieldnames=list(rows[0].keys()) if rows else [])
            writer.writeheader()
            writer.writerows({k: v if isinstance(v, float) else _cell(v) for k, v in row.items()} for row in rows)
        else:
            out.write(format_table(rows) + '\n')
    finally:
        if path:
            out.close()
