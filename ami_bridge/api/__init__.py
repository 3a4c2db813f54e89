"""The personal router's HTTP API: `make_app` builds it, `serve` listens (docs/api.md).

`app` holds the routes and the rules of access, `auth` passwords, tokens and the login
throttle, `inputs` the checks every request field passes, `openapi` the document and its
Markdown page, `client` the synchronous client the command line uses.
"""

from ami_bridge.api.app import make_app, serve

__all__ = ["make_app", "serve"]
