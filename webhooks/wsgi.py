"""The one module-level app: what gunicorn loads (`gunicorn webhooks.wsgi:app`)."""

from webhooks import create_app

app = create_app()
