"""Plain JSON values from what the service records (numpy numbers, paths, times, records)."""

from __future__ import annotations

from datetime import datetime
from pathlib import Path
from typing import Any

from pydantic import BaseModel

__all__ = ["record_to_dict", "to_jsonable"]


def to_jsonable(value: Any) -> Any:
    """Plain JSON types (numpy scalars and arrays, paths and tuples converted).

    Non-finite floats become ``None``: NaN and infinities are not JSON.
    """
    if isinstance(value, dict):
        return {str(k): to_jsonable(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [to_jsonable(v) for v in value]
    if isinstance(value, bool | str) or value is None:
        return value
    if isinstance(value, int):
        return int(value)
    if isinstance(value, float):
        return value if value == value and abs(value) != float("inf") else None
    if hasattr(value, "tolist"):
        return to_jsonable(value.tolist())
    if isinstance(value, Path | datetime):
        return str(value)
    return repr(value)


def record_to_dict(record: BaseModel, **extra: Any) -> dict[str, Any]:
    """A record's fields as a JSON-ready dict (times in ISO 8601, paths as text), plus ``extra``.

    What the CLI prints with ``--json``.
    """
    out: dict[str, Any] = {}
    for name in type(record).model_fields:
        value = getattr(record, name)
        if isinstance(value, datetime):
            value = value.isoformat()
        elif isinstance(value, Path):
            value = str(value)
        elif isinstance(value, dict):
            value = dict(value)
        out[name] = value
    out.update(extra)
    return out
