"""Server-side sessions in Redis: the cookie holds a random id and nothing else.

A session lives under the SHA-256 of its id (someone reading Redis cannot replay a cookie) and
expires after `IDLE` without a request from its user; the console's background polling does not
count as use. Signing in rotates the id, so an id planted before sign-in is worth nothing after.
The API and Twilio's webhooks carry no cookie and never reach Redis through here.
"""

from __future__ import annotations

import hashlib
import json
import logging
import re
import secrets
from datetime import timedelta
from typing import Any

import redis
from flask import Flask, Request, Response, g, request
from flask.sessions import SessionInterface, SessionMixin
from werkzeug.datastructures import CallbackDict

log = logging.getLogger(__name__)

COOKIE_NAME = "bridge_console"
COOKIE_PATH = "/console"
IDLE = timedelta(hours=12)
KEY_PREFIX = "bridge:console:session:"
_SID = re.compile(r"\A[A-Za-z0-9_\-]{43}\Z")


class ServerSession(CallbackDict[str, Any], SessionMixin):
    """The session's data, with the id it is stored under (None until first saved)."""

    def __init__(self, initial: dict[str, Any] | None = None, sid: str | None = None) -> None:
        def changed(_: CallbackDict[str, Any]) -> None:
            self.modified = True

        super().__init__(initial, changed)
        self.sid = sid
        self.modified = False
        self.rotate = False

    def regenerate(self) -> None:
        """Store the session under a new id from the next save on (call at sign-in)."""
        self.rotate = True
        self.modified = True


def _key(sid: str) -> str:
    return KEY_PREFIX + hashlib.sha256(sid.encode()).hexdigest()


class RedisSessionInterface(SessionInterface):
    """Flask sessions kept in Redis with an idle expiry."""

    def __init__(self, connection: Any, secure: bool) -> None:
        self._redis = connection
        self._secure = secure

    def open_session(self, app: Flask, request: Request) -> ServerSession:
        sid = request.cookies.get(COOKIE_NAME)
        if not sid or not _SID.match(sid):
            return ServerSession()
        try:
            raw = self._redis().get(_key(sid))
        except redis.RedisError:
            log.warning("console session not read: Redis did not answer")
            return ServerSession()
        if raw is None:
            return ServerSession()
        try:
            data = json.loads(raw)
        except ValueError:
            return ServerSession()
        return ServerSession(data if isinstance(data, dict) else {}, sid)

    def save_session(self, app: Flask, session: SessionMixin, response: Response) -> None:
        assert isinstance(session, ServerSession)
        store = self._redis()
        try:
            if not session:
                if session.sid is not None:
                    store.delete(_key(session.sid))
                    response.delete_cookie(COOKIE_NAME, path=COOKIE_PATH)
                return
            old = session.sid
            sid = None if session.rotate else old  # a rotated session gets a new id
            fresh = sid is None
            if sid is None:
                if old is not None:
                    store.delete(_key(old))
                sid = session.sid = secrets.token_urlsafe(32)
                session.rotate = False
                session.modified = True
            # Background polling is not use: it saves what changed but leaves the expiry alone.
            passive = bool(g.get("console_passive")) and not fresh
            if session.modified and passive:
                store.set(_key(sid), json.dumps(dict(session)), keepttl=True, xx=True)
            elif session.modified:
                store.set(_key(sid), json.dumps(dict(session)), ex=IDLE)
            elif not passive:
                store.expire(_key(sid), IDLE)
        except redis.RedisError:
            log.warning("console session not saved: Redis did not answer")
            return
        if session.modified:
            response.set_cookie(
                COOKIE_NAME,
                sid,
                path=COOKIE_PATH,
                httponly=True,
                samesite="Lax",
                secure=self._secure or request.is_secure,
            )
        response.vary.add("Cookie")
