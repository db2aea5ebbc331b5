"""The gateway: for callers that cannot embed the client, one stateless hop in front of the fleet.

    app.py             `Gateway`: one `ModelClient` and the routes below, plus /health and /metrics
    openai_api.py      /v1/...: the OpenAI API through the client's router, streams passed through
    management_api.py  /api/server/... and /api/v1/chat/completions: the multi-model management API
    control_api.py     /api/fleet, /api/events, /api/instances/...: the dashboard's view and actions
    feed.py            the live view, pushed to every open dashboard from the one watch
    guard.py           the admin token that writes need
    metrics.py         what this replica saw of each instance
    replies.py         the management API's {"success", "msg"} answers
    server.py          binding and serving
    static/            the dashboard: plain HTML, CSS and a script

It depends on the client, the registry and `management`, never the other
way round; every replica watches the registry itself and keeps nothing that
another replica would need.
"""

from .app import Gateway
from .server import serve

__all__ = ["Gateway", "serve"]
