"""The paper-trading venue: simulated prices and fills, state in a SQLite file.

- ``venue``     ``PaperVenue``, the ``Venue`` the engine talks to (submit, cancel, poll)
- ``storage``   the SQLite file several processes share: orders, executions, attempts
- ``matching``  pure: which ticks fill an order, at what price, in what parts
- ``failures``  invalid orders, and refusals injected on purpose (tests, chaos runs)
- ``prices``    the reference price of a symbol at a tick (seeded walk or a CSV)
"""

from app.engine.paper.matching import execution_id_for
from app.engine.paper.venue import PaperVenue

__all__ = ["PaperVenue", "execution_id_for"]
