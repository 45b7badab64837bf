"""The one module-level app: what gunicorn loads (`gunicorn webhooks.wsgi:app`)."""

import sys

from bridge.errors import ConfigurationError
from webhooks import create_app

try:
    app = create_app()
except ConfigurationError as exc:
    # The settings' own lines, not a traceback; 4 is gunicorn's "App failed to load": it halts.
    print(f"web: {exc}", file=sys.stderr, flush=True)
    sys.exit(4)
