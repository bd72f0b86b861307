"""The canonical serialization of an execution_logs row and the check of a chain.

Mirrors ``public.execution_logs_canonical`` (migration 005, where the format is defined):

    execution_logs/v1|<seq>|<id>|<order_id>|...|<prev_hash>

each field ``~`` when NULL, else ``<length in characters>:<value>``, the value in its
canonical text (uuids lowercase, integers in decimal, timestamps in UTC with six fractional
digits and a ``Z``, hashes in lowercase hex). The hash is the SHA-256 of that text in UTF-8.

``ChainChecker`` takes rows in chain order (order_id, then seq) one at a time and keeps only
the previous row, so a chain of any length is checked in constant memory.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from uuid import UUID

FORMAT = "execution_logs/v1"
FIELDS = (
    "seq",
    "id",
    "order_id",
    "trader_id",
    "action",
    "status",
    "timestamp",
    "reason",
    "retry_attempt",
    "error_code",
    "created_at",
    "prev_hash",
)
"""The hashed fields, in their canonical order."""
COLUMNS = (*FIELDS, "hash")
"""What an export holds for each row."""


def text_of(value: object) -> str | None:
    """A column's value in its canonical text, as the database's function writes it."""
    if value is None or isinstance(value, str):
        return value
    if isinstance(value, bool):
        raise TypeError("no audit column is boolean")
    if isinstance(value, int):
        return str(value)
    if isinstance(value, UUID):
        return str(value)
    if isinstance(value, datetime):
        if value.tzinfo is None:
            raise ValueError("audit timestamps carry a time zone")
        t = value.astimezone(UTC)
        return (
            f"{t.year:04d}-{t.month:02d}-{t.day:02d}T{t.hour:02d}:{t.minute:02d}"
            f":{t.second:02d}.{t.microsecond:06d}Z"
        )
    if isinstance(value, bytes | bytearray | memoryview):
        return bytes(value).hex()
    raise TypeError(f"no canonical text for {type(value).__name__}")


def texts(row: Mapping[str, object]) -> dict[str, str | None]:
    """Every exported column of ``row`` in canonical text."""
    return {name: text_of(row[name]) for name in COLUMNS}


def canonical(row: Mapping[str, object]) -> str:
    parts = [FORMAT]
    for name in FIELDS:
        value = text_of(row[name])
        parts.append("~" if value is None else f"{len(value)}:{value}")
    return "|".join(parts)


def digest(row: Mapping[str, object]) -> str:
    """The row's hash, in hex, from its content and its stored prev_hash."""
    return hashlib.sha256(canonical(row).encode("utf-8")).hexdigest()


@dataclass(frozen=True)
class Problem:
    """A row that does not verify, and why."""

    seq: str | None
    id: str | None
    order_id: str | None
    reason: str

    def __str__(self) -> str:
        return f"row seq={self.seq} id={self.id} (order {self.order_id}): {self.reason}"


@dataclass
class ChainChecker:
    """Checks rows given in chain order, keeping only the previous one."""

    rows: int = 0
    chains: int = 0
    entering: int = 0
    """Chains whose first row seen refers to a predecessor not among the rows checked."""
    _order: str | None = None
    _previous: dict[str, str | None] | None = None

    def check(
        self,
        row: Mapping[str, object],
        *,
        predecessor_known: bool,
        predecessor_hash: str | None = None,
    ) -> Iterator[Problem]:
        """Problems of ``row``. With ``predecessor_known`` (rows from the database), a chain's
        first row must link to ``predecessor_hash``, the stored hash of the row before it
        (None: there is none). Without (an export), its stored prev_hash is taken as given."""
        current = texts(row)
        self.rows += 1

        def problem(reason: str) -> Problem:
            return Problem(current["seq"], current["id"], current["order_id"], reason)

        if current["hash"] != digest(current):
            yield problem(
                "its content does not match its hash (rewritten, or inserted out of band)"
            )
        if current["order_id"] != self._order:
            self._order = current["order_id"]
            self.chains += 1
            if predecessor_known:
                if current["prev_hash"] != predecessor_hash:
                    yield problem(
                        "it is its chain's first row but refers to a previous row"
                        " (the rows before it were removed)"
                        if predecessor_hash is None
                        else "its previous hash does not match the stored hash of the row"
                        " before it in its chain"
                    )
            elif current["prev_hash"] is not None:
                self.entering += 1
        else:
            assert self._previous is not None
            if current["prev_hash"] != self._previous["hash"]:
                yield problem(
                    f"it does not follow row seq={self._previous['seq']}"
                    f" id={self._previous['id']}, the row before it in its chain: a row"
                    " between them was removed, or one of them was inserted or rewritten"
                )
        self._previous = current
