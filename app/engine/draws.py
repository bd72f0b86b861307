"""Reproducible random draws: the same keys give the same draw in every process."""

from __future__ import annotations

import hashlib

__all__ = ["unit_draw"]


def unit_draw(*parts: object) -> float:
    """A uniform draw in [0, 1) fixed by ``parts``, identical in every process.

    ``hash()`` is salted per process and ``random.Random`` state would have to be
    stored, so a keyed digest is what makes draws reproducible across restarts.
    """
    key = "\x1f".join(str(part) for part in parts).encode()
    digest = hashlib.blake2b(key, digest_size=8).digest()
    return int.from_bytes(digest, "big") / 2.0**64
