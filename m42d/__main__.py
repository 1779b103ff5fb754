"""``python -m m42d`` runs the daemon, exactly like the ``m42d`` script."""

from __future__ import annotations

import sys

from m42d.daemon import main

if __name__ == "__main__":
    sys.exit(main())
