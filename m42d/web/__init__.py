"""The browser client: static ES modules served by the relay's WebSocket listener.

Everything a browser loads lives in this package as written (no build step):
``index.html``, ``app.css``, ``app.js``, the UI modules in ``ui/``, the
protocol cores in ``lib/`` and the vendored QR encoder in ``vendor/``.
:mod:`m42d.web.pages` turns a request path into the response for one of them;
the listener (``m42d_ws``) answers plain HTTP GETs with it and upgrades the
rest.
"""

from __future__ import annotations
