"""A Jupyter server extension the lab loads: nothing answers an anonymous caller.

Jupyter Server leaves ``GET /api`` open (it returns the server version) so that clients can probe
it. A lab exposed on a shared server should not tell scanners which version to attack, so this
extension serves ``/api`` to authenticated callers only; everything else in the server already asks
for the token or password (the lab also sets ``ServerApp.allow_unauthenticated_access = False``).
"""

from __future__ import annotations

import json
from typing import Any

import jupyter_server
from jupyter_server.base.handlers import APIHandler
from jupyter_server.utils import url_path_join
from tornado import web


class AuthenticatedVersionHandler(APIHandler):
    """``GET /api``: the server version, for authenticated callers (403 otherwise, as every API)."""

    _track_activity = False

    @web.authenticated
    def get(self) -> None:
        """Answer with the version, as Jupyter's own handler does."""
        self.finish(json.dumps({"version": jupyter_server.__version__}))


def _jupyter_server_extension_points() -> list[dict[str, str]]:
    return [{"module": "cudalab.lab.jupyter_ext"}]


def _load_jupyter_server_extension(serverapp: Any) -> None:
    """Register the handler; handlers added by extensions take precedence over the server's own."""
    base = serverapp.web_app.settings.get("base_url", "/")
    serverapp.web_app.add_handlers(".*$", [(url_path_join(base, r"/api/?"), AuthenticatedVersionHandler)])
