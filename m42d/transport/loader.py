"""Finding transport plugins: the ``m42d.transports`` entry-point group, keyed by scheme.

One broken plugin must never take the daemon or the other transports down,
so each is loaded on its own and a failure is logged and skipped.
"""

from __future__ import annotations

import importlib.metadata
import logging

from m42d.transport.api import ENTRY_POINT_GROUP, Transport

__all__ = ["load_transports"]

logger = logging.getLogger("m42d.transport")


def load_transports() -> dict[str, Transport]:
    """Every transport plugin that loads, keyed by URL scheme.

    A plugin that fails to import, to construct, or that does not look like a
    :class:`Transport` is logged on the ``m42d.transport`` logger and skipped.
    """
    found: dict[str, Transport] = {}
    for entry in importlib.metadata.entry_points(group=ENTRY_POINT_GROUP):
        try:
            factory = entry.load()
            transport = factory()
        except Exception:
            logger.exception(
                "transport plugin %r (%s) failed to load; skipped", entry.name, entry.value
            )
            continue
        if not isinstance(transport, Transport):
            logger.error(
                "transport plugin %r (%s) does not provide open_listener and connect; skipped",
                entry.name,
                entry.value,
            )
            continue
        found[entry.name] = transport
    return found
