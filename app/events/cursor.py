"""The cursor of the order-event stream: where a client is, opaque, versioned and signed.

A cursor says which audit rows a client has had: every row at or before ``position`` in
the stream's order ``(stream_key, seq)`` (migration 013), plus, when ``seen`` is set, every
row whose transaction is visible in that snapshot. ``seen`` comes from ``eventsCursor``: a
query read the rows of its snapshot, some of which are not settled yet (a transaction that
was still running held the snapshot's xmin back), and the stream must neither repeat them
nor skip the rows of that same stretch the query did not see. Every row visible in a
snapshot has a key below its xmax (its whole chain committed before it), so ``seen`` is
dropped once the position passes xmax; its size is bounded by the transactions that were
running at once, not by the rows.

The wire form is base64url of ``version | flags | key | seq [| xmin | xmax | n | xip...] |
mac``, the MAC an HMAC-SHA256 (first 16 bytes) under the database's key (migration 013's
``order_api_private.event_cursor_key``): a cursor that does not decode, or whose MAC does
not match, is refused as BAD_USER_INPUT. A cursor names a position, never an event, so one
that points at another trader's event reveals nothing: the stream resumes after that point
with the caller's own rows.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import struct
from dataclasses import dataclass

from app.orders.errors import InvalidInput

VERSION = 1
_HEAD = struct.Struct(">BBQq")  # version, flags, stream key, seq
_SNAPSHOT = struct.Struct(">QQH")  # xmin, xmax, number of running transactions
_XID = struct.Struct(">Q")
_MAC_BYTES = 16
_HAS_SNAPSHOT = 1
MAX_RUNNING = 8192
"""Running transactions a snapshot may list: more than any max_connections we configure."""


@dataclass(frozen=True, slots=True)
class Snapshot:
    """A PostgreSQL snapshot (``pg_snapshot``): transactions below ``xmin`` had ended, those
    from ``xmax`` on had not started, those in ``running`` were running."""

    xmin: int
    xmax: int
    running: tuple[int, ...]

    @classmethod
    def parse(cls, text: str) -> Snapshot:
        """From pg_snapshot's text form ``xmin:xmax:xip,xip``."""
        xmin, xmax, running = text.split(":")
        return cls(int(xmin), int(xmax), tuple(int(x) for x in running.split(",") if x))

    def __str__(self) -> str:
        return f"{self.xmin}:{self.xmax}:{','.join(map(str, self.running))}"


@dataclass(frozen=True, slots=True)
class Cursor:
    stream_key: int
    seq: int
    seen: Snapshot | None = None

    @classmethod
    def of_snapshot(cls, snapshot: Snapshot) -> Cursor:
        """After every row visible in ``snapshot``: those with keys below its xmin (all of
        them visible or rolled back), and the rest that it shows."""
        return cls(snapshot.xmin, 0, snapshot)

    def after(self, stream_key: int, seq: int) -> Cursor:
        """The cursor once the row at (stream_key, seq) is delivered too."""
        seen = self.seen if self.seen is not None and stream_key < self.seen.xmax else None
        return Cursor(stream_key, seq, seen)


class CursorCodec:
    """Signs and checks cursors with one database's key."""

    def __init__(self, key: bytes) -> None:
        self._key = key

    def _mac(self, body: bytes) -> bytes:
        return hmac.new(self._key, body, hashlib.sha256).digest()[:_MAC_BYTES]

    def encode(self, cursor: Cursor) -> str:
        seen = cursor.seen
        body = _HEAD.pack(
            VERSION, 0 if seen is None else _HAS_SNAPSHOT, cursor.stream_key, cursor.seq
        )
        if seen is not None:
            body += _SNAPSHOT.pack(seen.xmin, seen.xmax, len(seen.running))
            body += b"".join(_XID.pack(x) for x in seen.running)
        return base64.urlsafe_b64encode(body + self._mac(body)).rstrip(b"=").decode()

    def decode(self, text: str, *, argument: str = "after") -> Cursor:
        """The cursor, or BAD_USER_INPUT when it is malformed or was not signed here."""
        refused = InvalidInput(argument, "not a cursor of orderEvents or eventsCursor")
        if len(text) > 4 * (_HEAD.size + _SNAPSHOT.size + 8 * MAX_RUNNING + _MAC_BYTES) // 3 + 4:
            raise refused
        try:
            raw = base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))
        except (binascii.Error, ValueError):
            raise refused from None
        body, mac = raw[:-_MAC_BYTES], raw[-_MAC_BYTES:]
        if len(body) < _HEAD.size or not hmac.compare_digest(mac, self._mac(body)):
            raise refused
        # Signed here, so well formed unless a later version wrote it.
        version, flags, stream_key, seq = _HEAD.unpack_from(body)
        if version != VERSION or flags not in (0, _HAS_SNAPSHOT):
            raise refused
        if not flags:
            if len(body) != _HEAD.size:
                raise refused
            return Cursor(stream_key, seq)
        xmin, xmax, count = _SNAPSHOT.unpack_from(body, _HEAD.size)
        start = _HEAD.size + _SNAPSHOT.size
        if len(body) != start + _XID.size * count:
            raise refused
        running = tuple(_XID.unpack_from(body, start + _XID.size * i)[0] for i in range(count))
        return Cursor(stream_key, seq, Snapshot(xmin, xmax, running))
