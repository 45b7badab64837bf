"""Who the console acts as: signing in with an API key, acting as the organization or one of its
users, signing out, and the check before every page (the key still active, the input storable).
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from flask import Response, flash, g, redirect, render_template, request, session, url_for
from flask.typing import ResponseReturnValue

from bridge import conversations, keys
from bridge.actors import Actor
from bridge.db import transaction
from bridge.errors import NotFound, ValidationError
from bridge.models import SubscriberType
from bridge.organizations import get_user
from webhooks.console import bp, csrf
from webhooks.context import runtime

_CONTROL = re.compile("[\x00-\x08\x0b\x0c\x0e-\x1f\x7f]")
_OPEN = {"console.sign_in", "console.static"}  # reachable without signing in


@dataclass(frozen=True)
class SignedIn:
    """Who the console acts as in this request."""

    key_id: str
    organization_id: str
    organization_name: str
    actor: Actor
    actor_name: str


@bp.before_request
def _authenticate() -> ResponseReturnValue | None:
    if request.endpoint == "console.static":
        return None
    _refuse_unstorable_input()
    csrf.protect()
    g.console = _signed_in()
    if g.console is None and request.endpoint not in _OPEN:
        if request.endpoint == "console.live":
            return Response("signed out", 401, mimetype="text/plain")
        return redirect(url_for("console.sign_in"))
    return None


def _refuse_unstorable_input() -> None:
    """No control characters but tab, CR and LF in a field, a query or an id (DESIGN 6)."""
    for value in (request.view_args or {}).values():
        if isinstance(value, str) and _CONTROL.search(value):
            raise NotFound("no such page")
    fields = [*request.args.values(), *(request.form.values() if request.form else [])]
    if any(_CONTROL.search(value) for value in fields):
        raise ValidationError("The form holds a control character that is not allowed.")


def _signed_in() -> SignedIn | None:
    """The session's key and actor, after asking the database that the key is not revoked."""
    key_id = session.get("key_id")
    if not isinstance(key_id, str):
        return None
    with runtime().sessions() as db:
        holder = keys.active_key_holder(db, key_id)
    if holder is None or holder.organization_id != session.get("organization_id"):
        session.clear()
        flash("You have been signed out: the API key you signed in with was revoked.", "error")
        return None
    if session.get("actor_type") == SubscriberType.USER:
        actor = Actor.user(holder.organization_id, str(session.get("actor_id")))
        name = str(session.get("actor_name") or "a user")
    else:
        actor = Actor.organization(holder.organization_id)
        name = holder.organization_name
    return SignedIn(key_id, holder.organization_id, holder.organization_name, actor, name)


def signed_in_as() -> SignedIn:
    """Who is signed in (the pages past sign-in are reached only then)."""
    signed_in: SignedIn = g.console
    return signed_in


# -- signing in and out ---------------------------------------------------------------------------


@bp.route("/sign-in", methods=["GET", "POST"])
def sign_in() -> ResponseReturnValue:
    if request.method == "GET":
        if g.console is not None:
            return redirect(url_for("console.inbox"))
        return render_template("console/sign_in.html")
    key = request.form.get("api_key", "").strip()
    holder = None
    if key:
        with transaction(runtime().sessions) as db:
            holder = keys.sign_in(db, key)
    if holder is None:
        message = (
            "That API key is unknown or has been revoked."
            if key
            else "Enter an API key to sign in."
        )
        return render_template("console/sign_in.html", error=message), 401 if key else 422
    session.clear()
    session.regenerate()  # type: ignore[attr-defined]
    session.update(
        key_id=holder.key_id,
        organization_id=holder.organization_id,
        actor_type=SubscriberType.API_KEY,
        actor_id=holder.organization_id,
        actor_name=holder.organization_name,
    )
    return redirect(url_for("console.act_as"), 303)


@bp.route("/act-as", methods=["GET", "POST"])
def act_as() -> ResponseReturnValue:
    me = signed_in_as()
    error = None
    if request.method == "POST":
        choice = request.form.get("actor", "")
        if choice == me.organization_id:
            session.update(
                actor_type=SubscriberType.API_KEY,
                actor_id=me.organization_id,
                actor_name=me.organization_name,
            )
            return redirect(url_for("console.inbox"), 303)
        try:
            with runtime().sessions() as db:
                user = get_user(db, me.organization_id, choice)
        except NotFound:
            error = "Choose the organization or one of its users."
        else:
            session.update(actor_type=SubscriberType.USER, actor_id=user.id, actor_name=user.name)
            return redirect(url_for("console.inbox"), 303)
    with runtime().sessions() as db:
        users = conversations.list_users(db, me.organization_id)
    page = render_template("console/act_as.html", users=users, error=error)
    return page, 422 if error else 200


@bp.post("/sign-out")
def sign_out() -> ResponseReturnValue:
    session.clear()
    flash("You are signed out.", "info")
    return redirect(url_for("console.sign_in"), 303)
