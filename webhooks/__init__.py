"""The web process: the REST API, Twilio's webhooks and the ops endpoints, built by `create_app`."""

from __future__ import annotations

from flask import Flask
from werkzeug.middleware.proxy_fix import ProxyFix

from bridge.logs import configure_logging
from bridge.runtime import Runtime
from bridge.settings import Settings, load_settings, require_web_settings

MAX_BODY = 64 * 1024


def create_app(settings: Settings | None = None, runtime: Runtime | None = None) -> Flask:
    """Build the Flask app from settings (read from the environment when not given)."""
    settings = runtime.settings if runtime else settings or load_settings()
    require_web_settings(settings)
    runtime = runtime or Runtime(settings)
    configure_logging(runtime.settings)
    app = Flask(__name__)
    app.config["MAX_CONTENT_LENGTH"] = MAX_BODY
    app.config["SECRET_KEY"] = runtime.settings.secret_key
    app.json.sort_keys = False  # type: ignore[attr-defined]
    app.extensions["bridge"] = runtime
    # Heroku's router ends TLS and forwards one hop: trust its X-Forwarded-For and -Proto. It sets
    # no X-Forwarded-Host, so a client's would pass through untouched: that one is not trusted.
    app.wsgi_app = ProxyFix(app.wsgi_app, x_for=1, x_proto=1)  # type: ignore[method-assign]

    from webhooks import api, console, errors, ops, twilio
    from webhooks.http import bound_streamed_body
    from workers.enqueue import install_enqueue_on_commit

    install_enqueue_on_commit(runtime)  # events recorded by a request go out after its commit
    errors.register(app)
    # Before anything reads the body: the API, Twilio's webhooks and the console alike.
    app.before_request(lambda: bound_streamed_body(MAX_BODY))
    ops.init_app(app)
    app.register_blueprint(api.bp)
    app.register_blueprint(twilio.bp)
    app.register_blueprint(ops.bp)
    app.register_blueprint(console.bp)
    return app
