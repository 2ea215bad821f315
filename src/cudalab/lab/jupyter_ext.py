"""A Jupyter server extension the lab loads: nothing tells an anonymous caller what runs here.

Jupyter Server leaves ``GET /api`` open (it returns the server version) so that clients can probe it,
Tornado names itself and its version in every response's ``Server`` header, and the static files the
login page needs include JupyterLab's ``package.json`` (every package and version the lab ships). A
lab exposed on a shared server should not tell scanners which version to attack, so this extension

- serves ``/api`` to authenticated callers only;
- does not serve the static manifests (``package.json``, ``build_log.json``) or source maps: an
  anonymous caller is refused as for any page, an authenticated one told they are not served (the
  lab's pages use none of them; ``pip show`` tells a user the versions);
- drops the ``Server`` header from every response.

Everything else in the server already asks for the token or password (the lab also sets
``ServerApp.allow_unauthenticated_access = False``).
"""

from __future__ import annotations

import json
from typing import Any

import jupyter_server
from jupyter_server.base.handlers import APIHandler, JupyterHandler
from jupyter_server.utils import url_path_join
from tornado import httputil, web

#: Static files that describe the installation rather than draw the login page.
REVEALING = r"/static/(?:.*/)?(?:package\.json|build_log\.json|[^/]*\.map)"


class AuthenticatedVersionHandler(APIHandler):
    """``GET /api``: the server version, for authenticated callers (403 otherwise, as every API)."""

    _track_activity = False

    @web.authenticated
    def get(self) -> None:
        """Answer with the version, as Jupyter's own handler does."""
        self.finish(json.dumps({"version": jupyter_server.__version__}))


class RevealingStaticHandler(JupyterHandler):
    """The static files that list versions: refused without credentials, not served with them."""

    _track_activity = False

    @web.authenticated
    def get(self, *args: Any) -> None:
        raise web.HTTPError(404, "not served by this lab")


class NoServerHeader(web.OutputTransform):
    """Drops ``Server: TornadoServer/x.y`` from every response."""

    def transform_first_chunk(
        self, status_code: int, headers: httputil.HTTPHeaders, chunk: bytes, finishing: bool
    ) -> tuple[int, httputil.HTTPHeaders, bytes]:
        if "Server" in headers:
            del headers["Server"]
        return status_code, headers, chunk


def _jupyter_server_extension_points() -> list[dict[str, str]]:
    return [{"module": "cudalab.lab.jupyter_ext"}]


def _load_jupyter_server_extension(serverapp: Any) -> None:
    """Register the handlers (those added by extensions take precedence over the server's own) and the
    transform."""
    app = serverapp.web_app
    base = app.settings.get("base_url", "/")
    app.add_handlers(".*$", [(url_path_join(base, r"/api/?"), AuthenticatedVersionHandler)])
    app.add_handlers(".*$", [(url_path_join(base, REVEALING), RevealingStaticHandler)])
    app.add_transform(NoServerHeader)
