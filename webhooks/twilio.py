"""Twilio's webhooks: inbound SMS and delivery status callbacks (DESIGN 5.5)."""

from __future__ import annotations

from flask import Blueprint

bp = Blueprint("twilio", __name__, url_prefix="/twilio")
