"""The compliance export's two formats: writing rows out, and reading an export back.

Every column is written in its canonical text (app/audit/chain.py), hashes included, so an
export verifies offline with the same code as the database. A NULL must stay distinguishable
from an empty text (the hash tells them apart): in JSON Lines it is ``null``; in CSV it is
an empty *unquoted* field, and every value, even an empty one, is quoted. Python's csv
module cannot tell the two apart when reading, hence the small reader below.
"""

from __future__ import annotations

import json
from collections.abc import Iterator, Mapping
from typing import Literal, TextIO

from app.audit.chain import COLUMNS, texts

Format = Literal["csv", "jsonl"]
_NUMBERS = ("seq", "retry_attempt")
"""Written as JSON numbers in JSON Lines."""


class ExportError(Exception):
    """An export file that cannot be read as one (the message names the line)."""


def _csv_field(value: str | None) -> str:
    return "" if value is None else '"' + value.replace('"', '""') + '"'


def write_header(out: TextIO, fmt: Format) -> None:
    if fmt == "csv":
        out.write(",".join(COLUMNS) + "\n")


def write_row(out: TextIO, fmt: Format, row: Mapping[str, object]) -> None:
    values = texts(row)
    if fmt == "csv":
        out.write(",".join(_csv_field(values[name]) for name in COLUMNS) + "\n")
        return
    record: dict[str, object] = dict(values)
    for name in _NUMBERS:
        if values[name] is not None:
            record[name] = int(values[name])  # type: ignore[arg-type]
    out.write(json.dumps(record, ensure_ascii=False, separators=(",", ":")) + "\n")


def read_rows(stream: TextIO) -> Iterator[dict[str, str | None]]:
    """The rows of an export, either format (JSON Lines starts with ``{``)."""
    first = stream.readline()
    if first.startswith("{"):
        yield from _jsonl_rows(first, stream)
        return
    header = first.rstrip("\r\n").split(",")
    if tuple(header) != COLUMNS:
        raise ExportError(
            "line 1: neither a JSON Lines nor a CSV audit export (the CSV header must be "
            + ",".join(COLUMNS)
            + ")"
        )
    for line_number, record in _csv_records(stream, first_line=2):
        if len(record) != len(COLUMNS):
            raise ExportError(f"line {line_number}: {len(record)} fields, not {len(COLUMNS)}")
        yield dict(zip(COLUMNS, record, strict=True))


def _jsonl_rows(first: str, stream: TextIO) -> Iterator[dict[str, str | None]]:
    line_number = 1
    line = first
    while line:
        if line.strip():
            try:
                record = json.loads(line)
            except json.JSONDecodeError as error:
                raise ExportError(f"line {line_number}: not JSON ({error.msg})") from None
            if not isinstance(record, dict) or set(record) != set(COLUMNS):
                raise ExportError(
                    f"line {line_number}: not an audit row (its keys must be "
                    + ", ".join(COLUMNS)
                    + ")"
                )
            row: dict[str, str | None] = {}
            for name in COLUMNS:
                value = record[name]
                if isinstance(value, int) and not isinstance(value, bool) and name in _NUMBERS:
                    value = str(value)
                if value is not None and not isinstance(value, str):
                    raise ExportError(f"line {line_number}: {name} is not a text or null")
                row[name] = value
            yield row
        line_number += 1
        line = stream.readline()


def _csv_records(stream: TextIO, *, first_line: int) -> Iterator[tuple[int, list[str | None]]]:
    """RFC 4180 records, telling an unquoted empty field (NULL) from a quoted one."""
    record: list[str | None] = []
    field: list[str] = []
    quoted = inside = False
    line_number = first_line
    start = line_number
    for line in stream:
        i = 0
        while i < len(line):
            ch = line[i]
            if inside:
                if ch == '"' and line.startswith('"', i + 1):
                    field.append('"')
                    i += 1
                elif ch == '"':
                    inside = False
                else:
                    field.append(ch)
            elif ch == '"' and not quoted:
                inside = quoted = True
            elif ch in ",\n":
                record.append("".join(field) if quoted else None)
                field, quoted = [], False
                if ch == "\n":
                    yield start, record
                    record = []
                    start = line_number + 1
            elif ch != "\r":
                raise ExportError(f"line {line_number}: an unquoted value (every value is quoted)")
            i += 1
        line_number += 1
    if inside or record or field:
        raise ExportError(f"line {start}: the file ends inside a row")
