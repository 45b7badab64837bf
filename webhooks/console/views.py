"""The console's pages. Each view: who is signed in, one domain call, render (or redirect).

The console calls the same domain functions as the REST API; the queries of its own (the inbox,
failed deliveries, contacts) live in `bridge.inbox`. Every page runs a fixed number of queries.
"""

from __future__ import annotations

import hashlib
import logging
import re
from datetime import datetime
from typing import Any

import redis
from flask import (
    Response,
    flash,
    g,
    make_response,
    redirect,
    render_template,
    request,
    url_for,
)
from flask.typing import ResponseReturnValue
from flask_wtf.csrf import CSRFError, generate_csrf
from sqlalchemy.exc import OperationalError
from werkzeug.exceptions import HTTPException

# The domain functions the console shares with the API, imported here and in bridge.inbox only.
from bridge import conversations, inbox
from bridge.db import transaction
from bridge.errors import BridgeError, Conflict, Forbidden, NotFound, ValidationError
from bridge.inbound import list_inbound
from bridge.messages import Draft, cancel_message, post_channel_message, post_message
from bridge.models import InboundStatus
from bridge.phones import mask_phone
from bridge.threads import mark_viewed
from webhooks.console import bp
from webhooks.console.signing_in import signed_in_as
from webhooks.context import runtime
from workers.enqueue import enqueue_posted

log = logging.getLogger(__name__)

POLL_SECONDS = 1  # a new SMS shows within 3 s: the worker stores it within 1 s, the page polls
MAX_REPLY = 1600 * 10
_TOKEN_SLOT = "__csrf_token__"
# The unmatched list's cursor, as the API's `before` of /v1/inbound: malformed is a 422, a
# well-formed id that names no SMS of the list a 404 (bridge.pages.page).
_INBOUND_CURSOR = re.compile(r"in_[A-Za-z0-9]{1,60}")


@bp.after_request
def _headers(response: Response) -> Response:
    # Everything is served by the app itself: no inline script, no other origin, no framing.
    response.headers.setdefault(
        "Content-Security-Policy",
        "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self'; "
        "object-src 'none'; base-uri 'none'; form-action 'self'; frame-ancestors 'none'",
    )
    response.headers.setdefault("X-Frame-Options", "DENY")
    response.headers.setdefault("X-Content-Type-Options", "nosniff")
    response.headers.setdefault("Referrer-Policy", "same-origin")
    if request.endpoint != "console.static":
        response.headers.setdefault("Cache-Control", "no-store")
    return response


@bp.app_template_filter("console_time")
def _console_time(moment: datetime | None) -> str:
    return moment.strftime("%Y-%m-%d %H:%M UTC") if moment else ""


@bp.app_template_filter("console_mask")
def _console_mask(phone: str | None) -> str:
    return mask_phone(phone).replace("***", "…")


@bp.app_context_processor
def _context() -> dict[str, Any]:
    return {"me": g.get("console"), "poll_seconds": POLL_SECONDS}


# -- reading --------------------------------------------------------------------------------------


@bp.get("/", endpoint="inbox")
def inbox_view() -> ResponseReturnValue:
    me = signed_in_as()
    search = request.args.get("q", "")
    rt = runtime()
    with transaction(rt.sessions) as db:
        page = inbox.inbox_page(
            db, rt.settings, me.actor, search=search, after=request.args.get("after")
        )
    return render_template("console/inbox.html", page=page, search=search)


def _conversation_page(
    channel_id: str, *, error: str | None = None, draft: str = "", status: int = 200
) -> ResponseReturnValue:
    me = signed_in_as()
    with transaction(runtime().sessions) as db:
        conversation = conversations.load_conversation(db, me.organization_id, channel_id)
        if conversation.thread_id is not None:
            mark_viewed(db, me.actor, conversation.thread_id)
    fragment, etag = _live_fragment(conversation)
    page = render_template(
        "console/conversation.html",
        c=conversation,
        messages_html=fragment,
        etag=etag,
        error=error,
        draft=draft,
    )
    return page, status


@bp.get("/channels/<channel_id>")
def conversation(channel_id: str) -> ResponseReturnValue:
    return _conversation_page(channel_id)


@bp.get("/channels/<channel_id>/live")
def live(channel_id: str) -> ResponseReturnValue:
    """The conversation's message list alone, polled by the page; 304 while nothing changed."""
    g.console_passive = True  # polling is not use: the session still expires when left idle
    me = signed_in_as()
    with transaction(runtime().sessions) as db:
        conversation = conversations.load_conversation(db, me.organization_id, channel_id)
    fragment, etag = _live_fragment(conversation)
    unchanged = etag in request.if_none_match
    response = make_response("" if unchanged else fragment, 304 if unchanged else 200)
    response.set_etag(etag)
    return response


def _live_fragment(conversation: conversations.Conversation) -> tuple[str, str]:
    """The message list's HTML and its ETag, which changes with the content only.

    Each CSRF token is signed with its time, so the ETag is taken over a placeholder.
    """
    html = render_template("console/_messages.html", c=conversation, token=_TOKEN_SLOT)
    etag = hashlib.sha256(html.encode()).hexdigest()[:32]
    return html.replace(_TOKEN_SLOT, generate_csrf()), etag


@bp.get("/unmatched")
def unmatched() -> ResponseReturnValue:
    me = signed_in_as()
    before = request.args.get("before") or None
    if before is not None and not _INBOUND_CURSOR.fullmatch(before):
        raise ValidationError("before must be the id of an inbound SMS", "before")
    with transaction(runtime().sessions) as db:
        rows, has_more = list_inbound(
            db,
            me.organization_id,
            InboundStatus.UNMATCHED,
            limit=inbox.PAGE_SIZE,
            before=before,
        )
    next_before = rows[-1].id if has_more and rows else None
    return render_template("console/unmatched.html", rows=rows, next_before=next_before)


@bp.get("/failed")
def failed() -> ResponseReturnValue:
    me = signed_in_as()
    with transaction(runtime().sessions) as db:
        rows, after = conversations.failed_deliveries(
            db, me.organization_id, request.args.get("after")
        )
    return render_template("console/failed.html", rows=rows, after=after)


@bp.get("/contacts")
def contacts() -> ResponseReturnValue:
    me = signed_in_as()
    with transaction(runtime().sessions) as db:
        rows, after = conversations.contacts_page(db, me.organization_id, request.args.get("after"))
    return render_template("console/contacts.html", rows=rows, after=after)


# -- writing --------------------------------------------------------------------------------------


@bp.post("/channels/<channel_id>/reply")
def reply(channel_id: str) -> ResponseReturnValue:
    """Post as the signed-in actor to the thread that last published here, or to the channel."""
    me = signed_in_as()
    text = request.form.get("text", "")
    rt = runtime()
    try:
        with transaction(rt.sessions) as db:
            channel, thread_id = conversations.reply_thread(db, me.organization_id, channel_id)
            if thread_id is not None:
                posted = post_message(db, rt.settings, me.actor, thread_id, Draft.of(text))
            else:
                posted = post_channel_message(db, rt.settings, me.actor, channel, Draft.of(text))
    except ValidationError as exc:
        return _conversation_page(channel_id, error=exc.message, draft=text[:MAX_REPLY], status=422)
    enqueue_posted(rt.redis, posted)  # after commit; never fails the request
    flash("Sent.", "info")
    return redirect(url_for("console.conversation", channel_id=channel_id, _anchor="reply"), 303)


@bp.post("/messages/<message_id>/cancel")
def cancel(message_id: str) -> ResponseReturnValue:
    me = signed_in_as()
    with transaction(runtime().sessions) as db:
        message = cancel_message(db, me.actor, message_id)
        channel_id = message.channel_id
    flash("The scheduled message was canceled.", "info")
    if channel_id is None:
        return redirect(url_for("console.inbox"), 303)
    return redirect(url_for("console.conversation", channel_id=channel_id), 303)


# -- errors: HTML pages, never a 500 for bad input -------------------------------------------------


def _error_page(status: int, title: str, message: str) -> Response:
    response = make_response(
        render_template("console/error.html", status=status, title=title, message=message),
        status,
    )
    return response


@bp.errorhandler(CSRFError)
def _csrf_error(exc: CSRFError) -> Response:
    return _error_page(
        400,
        "The form could not be accepted",
        "It was not sent from a console page of this session (its security token was missing "
        "or out of date). Go back, reload the page and try again.",
    )


@bp.errorhandler(BridgeError)
def _domain_error(exc: BridgeError) -> Response:
    message = getattr(exc, "message", str(exc))
    if isinstance(exc, NotFound):
        return _error_page(404, "Not found", "There is no such page in this organization.")
    if isinstance(exc, ValidationError):
        return _error_page(422, "That did not work", message)
    if isinstance(exc, Forbidden):
        return _error_page(403, "Not allowed", message)
    if isinstance(exc, Conflict):
        return _error_page(409, "That did not work", message)
    log.exception("unhandled domain error")
    return _error_page(500, "Something went wrong", "The error was logged.")


@bp.errorhandler(HTTPException)
def _http_error(exc: HTTPException) -> Response:
    status = exc.code or 500
    titles = {404: "Not found", 405: "Not allowed", 413: "Too large"}
    return _error_page(status, titles.get(status, exc.name), exc.description or exc.name)


@bp.errorhandler(OperationalError)
def _database_away(exc: OperationalError) -> Response:
    log.warning("database unavailable: %s", type(exc.orig).__name__)
    return _error_page(503, "Try again shortly", "The database is not answering.")


@bp.errorhandler(redis.RedisError)
def _redis_away(exc: redis.RedisError) -> Response:
    log.warning("redis unavailable: %s", type(exc).__name__)
    return _error_page(503, "Try again shortly", "Redis is not answering.")
