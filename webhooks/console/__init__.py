"""The console at /console: where an organization's dispatchers read and answer SMS (DESIGN 7).

Server-rendered with Jinja, one stylesheet and a few lines of JavaScript that poll a conversation
for news. Signing in exchanges an API key for a server-side session (`sessions`); every request
checks that the key is still unrevoked. CSRF tokens (Flask-WTF) guard every form: the check runs
for this blueprint only, so the API (bearer keys) and Twilio's webhooks (signatures), which no
cookie authenticates, are exempt by construction, as is any such blueprint added later.
"""

from __future__ import annotations

from typing import cast

from flask import Blueprint, Flask
from flask.blueprints import BlueprintSetupState
from flask_wtf.csrf import CSRFProtect

from bridge.runtime import Runtime
from webhooks.console.sessions import COOKIE_NAME, RedisSessionInterface

bp = Blueprint(
    "console",
    __name__,
    url_prefix="/console",
    template_folder="templates",
    static_folder="static",
)
csrf = CSRFProtect()


@bp.record_once
def _install(state: BlueprintSetupState) -> None:
    app = cast(Flask, state.app)
    rt: Runtime = app.extensions["bridge"]
    app.config.update(
        # Checked in this blueprint's before_request, not app-wide (see the module docstring).
        WTF_CSRF_CHECK_DEFAULT=False,
        # The token lives as long as its session, which expires on its own after 12 idle hours.
        WTF_CSRF_TIME_LIMIT=None,
        SESSION_COOKIE_NAME=COOKIE_NAME,
    )
    app.session_interface = RedisSessionInterface(
        lambda: rt.redis, secure=rt.settings.public_base_url.startswith("https://")
    )
    csrf.init_app(app)


from webhooks.console import signing_in, views  # noqa: E402, F401  (register the routes on bp)
