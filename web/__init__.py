"""The web pages: host console, viewer room and distributor dashboard.

The pages are plain HTML, CSS and JavaScript modules under `web/static/`, served as they are (no
build step). They talk to livesell like any client: the public HTTP API and the hub.
"""

from __future__ import annotations

from web.errors import error_reply, prefers_html
from web.pages import routes

__all__ = ["error_reply", "prefers_html", "routes"]
