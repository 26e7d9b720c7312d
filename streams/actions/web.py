"""The policy agent's web UI (aiohttp, in a thread of the agent): incidents, the Now page, /metrics, /healthz.

Pages: ``GET /`` (Now: kill switches engaged, rollouts by stage, rules pending or firing, the
latest incidents), ``GET /incidents``, ``GET /incidents/{id}`` (one firing episode: the rule, the
chart, the timeline, the actions and their outcomes, the masked findings, the drift report, the
Grafana link), ``GET /metrics`` (Prometheus), ``GET /healthz``.

Changes: ``POST /killswitch/{model}/release`` (``reason``) and ``POST /rollouts/{model}/{version}/promote``
(``stage``: the rollout's next one) make the same calls as ``streamwarden killswitch release`` and
``streamwarden rollout set``, so they are audited the same way (the actions topic, the control topic,
with ``by: human:<name>``). They need the admin token of the gateway's admin endpoints
(``gateway_admin_token``): either ``Authorization: Bearer <token>`` (a script; the actor from
``X-Streamwarden-Actor``), or a session from ``POST /login`` (name and token) in an HttpOnly,
SameSite=Strict cookie, with the CSRF token of the page's form. With no token set they are off.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import hmac
import logging
import os
import socket
import threading
import time
from collections.abc import Callable
from urllib.parse import quote

from aiohttp import web
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest

from streams.actions import pages
from streams.actions.incidents import IncidentStore
from streams.actions.killswitch import publish_rollout, set_switch
from streams.auth import bearer_matches
from streams.errors import ConfigurationError
from streams.policy.rules import check_rollout_stage
from streams.settings import Settings

log = logging.getLogger(__name__)

COOKIE = "streamwarden_session"
SESSION_S = 8 * 3600


def public_url(settings: Settings) -> str | None:
    """Where people reach the web UI (the incident links in alerts); None when it does not run."""
    if settings.policy_public_url:
        return settings.policy_public_url.rstrip("/")
    if not settings.policy_web_port:
        return None
    host = settings.policy_web_host
    if host in ("0.0.0.0", "::", ""):
        host = socket.gethostname()
    return f"http://{host}:{settings.policy_web_port}"


def incident_url(settings: Settings, episode_id: str | None) -> str | None:
    base = public_url(settings)
    return f"{base}/incidents/{episode_id}" if base and episode_id else None


def _redirect(location: str) -> web.Response:
    return web.Response(status=303, headers={"Location": location})


def _safe_next(value: str | None, default: str = "/") -> str:
    """Only a path of this site (no scheme, no host, no '//'): an open redirect otherwise."""
    if value and value.startswith("/") and not value.startswith("//") and "\\" not in value:
        return value
    return default


class WebUI:
    def __init__(self, settings: Settings, store: IncidentStore, registry: CollectorRegistry, ready: Callable[[], bool] = lambda: True):
        self.settings = settings
        self.store = store
        self.registry = registry
        self.is_ready = ready
        self._key = os.urandom(32)  # signs sessions; a restarted agent asks people to sign in again
        self._loop: asyncio.AbstractEventLoop | None = None
        self._runner: web.AppRunner | None = None
        self._thread: threading.Thread | None = None
        self._started = threading.Event()
        self.error: BaseException | None = None
        self.port: int | None = None

    # -- the server ----------------------------------------------------------------------

    def app(self) -> web.Application:
        app = web.Application(client_max_size=64 * 1024)
        app.router.add_get("/", self.now)
        app.router.add_get("/incidents", self.incidents)
        app.router.add_get("/incidents/{id}", self.incident)
        app.router.add_get("/login", self.login_form)
        app.router.add_post("/login", self.login)
        app.router.add_post("/logout", self.logout)
        app.router.add_post("/killswitch/{model}/release", self.release)
        app.router.add_post("/rollouts/{model}/{version}/promote", self.promote)
        app.router.add_get("/metrics", self.metrics)
        app.router.add_get("/healthz", self.healthz)
        return app

    def start(self, timeout_s: float = 30.0) -> WebUI:
        self._thread = threading.Thread(target=self._run, name="streamwarden-policy-web", daemon=True)
        self._thread.start()
        self._started.wait(timeout_s)
        if self.error is not None:
            raise self.error
        return self

    def _run(self) -> None:
        loop = self._loop = asyncio.new_event_loop()
        asyncio.set_event_loop(loop)
        try:
            self._runner = web.AppRunner(self.app(), access_log=None)
            loop.run_until_complete(self._runner.setup())
            site = web.TCPSite(self._runner, self.settings.policy_web_host, self.settings.policy_web_port)
            loop.run_until_complete(site.start())
            server = getattr(site, "_server", None)
            sockets = getattr(server, "sockets", None) or []
            self.port = sockets[0].getsockname()[1] if sockets else self.settings.policy_web_port
        except BaseException as exc:  # noqa: BLE001 - handed to start()
            self.error = exc
            self._started.set()
            loop.close()
            return
        self._started.set()
        loop.run_forever()
        loop.run_until_complete(self._runner.cleanup())
        loop.close()

    def stop(self) -> None:
        if self._loop is not None and self._loop.is_running():
            self._loop.call_soon_threadsafe(self._loop.stop)
        if self._thread is not None:
            self._thread.join(10)

    # -- who is asking -------------------------------------------------------------------

    @property
    def _token(self) -> str | None:
        t = self.settings.gateway_admin_token
        return t.get_secret_value() if t is not None and t.get_secret_value() else None

    def _sign(self, text: str) -> str:
        return hmac.new(self._key, text.encode(), hashlib.sha256).hexdigest()

    def _session(self, request: web.Request) -> tuple[str | None, str]:
        """The signed-in name (None: nobody) and the session cookie's value."""
        raw = request.cookies.get(COOKIE, "")
        try:
            name_b64, exp, sig = raw.split(".")
            if not hmac.compare_digest(sig, self._sign(f"{name_b64}.{exp}")) or float(exp) < time.time() or self._token is None:
                return None, ""
            return base64.urlsafe_b64decode(name_b64.encode()).decode(), raw
        except ValueError:
            return None, ""

    def _csrf(self, session: str) -> str:
        return self._sign("csrf:" + session)[:40] if session else ""

    def viewer(self, request: web.Request) -> pages.Viewer:
        user, session = self._session(request)
        return pages.Viewer(user=user, csrf=self._csrf(session), admin_enabled=self._token is not None)

    def _bearer_ok(self, request: web.Request) -> bool:
        return bearer_matches(request.headers.get("Authorization"), self._token)

    async def _actor(self, request: web.Request) -> tuple[str | None, dict, web.Response | None]:
        """Who makes a change (name, form), or the refusal: 403 when changes are off, 401 unauthenticated, 403 bad CSRF."""
        form = dict(await request.post())
        if self._token is None:
            return None, form, self._html(403, "Changes are off", "Set gateway_admin_token to make changes from this page.", request)
        if self._bearer_ok(request):
            return request.headers.get("X-Streamwarden-Actor", "web-admin")[:64], form, None
        user, session = self._session(request)
        if user is None:
            return None, form, self._html(401, "Sign in first", "A change needs a signed-in session or the admin bearer token.", request)
        given = str(form.get("csrf", ""))
        if not given or not hmac.compare_digest(given.encode(), self._csrf(session).encode()):
            return (
                None,
                form,
                self._html(403, "Refused", "The form's CSRF token is missing or wrong: reload the page and try again.", request),
            )
        return user, form, None

    def _html(self, status: int, title: str, text: str, request: web.Request) -> web.Response:
        return web.Response(status=status, text=pages.message_page(title, text, self.viewer(request)), content_type="text/html")

    # -- pages ---------------------------------------------------------------------------

    async def now(self, request: web.Request) -> web.Response:
        with self.store.lock:
            body = pages.now_page(
                self.store.now, self.store.listing(), self.viewer(request), request.query.get("notice"), request.query.get("error") == "1"
            )
        return web.Response(text=body, content_type="text/html")

    async def incidents(self, request: web.Request) -> web.Response:
        with self.store.lock:
            body = pages.incidents_page(self.store.listing(), self.store.max_incidents, self.viewer(request))
        return web.Response(text=body, content_type="text/html")

    async def incident(self, request: web.Request) -> web.Response:
        with self.store.lock:
            inc = self.store.get(request.match_info["id"])
            if inc is None:
                return self._html(
                    404,
                    "No such incident",
                    f"This agent keeps the last {self.store.max_incidents} incidents, rebuilt from the actions topic; "
                    "this one is not among them (yet: a just-started agent is still reading the topic).",
                    request,
                )
            switch = self.store.now.switches.get(inc.model)
            body = pages.incident_page(inc, self.viewer(request), bool(switch and switch.engaged), request.query.get("notice"))
        return web.Response(text=body, content_type="text/html")

    async def login_form(self, request: web.Request) -> web.Response:
        return web.Response(text=pages.login_page(self.viewer(request), _safe_next(request.query.get("next"))), content_type="text/html")

    async def login(self, request: web.Request) -> web.Response:
        form = await request.post()
        name, token, nxt = str(form.get("name", "")).strip()[:64], str(form.get("token", "")), _safe_next(str(form.get("next", "")))
        expected = self._token
        if expected is None or not name or not hmac.compare_digest(token.encode(), expected.encode()):
            log.warning("web UI: a sign-in was refused")
            return web.Response(
                status=401, text=pages.login_page(self.viewer(request), nxt, "Wrong token (or no name)."), content_type="text/html"
            )
        name_b64 = base64.urlsafe_b64encode(name.encode()).decode()
        exp = str(int(time.time() + SESSION_S))
        resp = _redirect(nxt)
        resp.set_cookie(
            COOKIE,
            f"{name_b64}.{exp}.{self._sign(f'{name_b64}.{exp}')}",
            max_age=SESSION_S,
            httponly=True,
            samesite="Strict",
            secure=(self.settings.policy_public_url or "").startswith("https://"),
            path="/",
        )
        log.warning("web UI: %s signed in", name)
        return resp

    async def logout(self, request: web.Request) -> web.Response:
        user, form, denied = await self._actor(request)
        if denied is not None:
            return denied
        resp = _redirect("/")
        resp.del_cookie(COOKIE, path="/")
        return resp

    async def release(self, request: web.Request) -> web.Response:
        user, form, denied = await self._actor(request)
        if denied is not None:
            return denied
        model = request.match_info["model"]
        reason = str(form.get("reason", "")).strip()
        nxt = _safe_next(str(form.get("next", "")))
        if not reason:
            return self._html(400, "A reason is required", "It is recorded in the audit log.", request)
        loop = asyncio.get_running_loop()
        state, record = await loop.run_in_executor(
            None, lambda: set_switch(self.settings, model, False, reason[:2000], None, by=f"human:{user}")
        )
        self.store.set_switch(state, model)
        log.warning("web UI: kill switch of %s released by %s (%s): %s", model, user, record.action_id, reason)
        sep = "&" if "?" in nxt else "?"
        return _redirect(f"{nxt}{sep}notice={quote(f'Kill switch of {model} released by {user} ({record.action_id}).')}")

    async def promote(self, request: web.Request) -> web.Response:
        user, form, denied = await self._actor(request)
        if denied is not None:
            return denied
        model, version = request.match_info["model"], request.match_info["version"]
        stage = str(form.get("stage", ""))
        with self.store.lock:
            policy = self.store.policy
        current = policy.rollout_of(model, version)
        try:
            check_rollout_stage(policy, model, version, stage)
            if current is None or current.next_stage != stage:
                raise ConfigurationError(f"{model} {version} is not one stage before {stage!r} (the page was stale?)")
        except ConfigurationError as exc:
            return _redirect(f"/?error=1&notice={quote(str(exc))}")
        loop = asyncio.get_running_loop()
        await loop.run_in_executor(
            None, lambda: publish_rollout(self.settings, model, version, stage, current.previous_version, by=f"human:{user}")
        )
        log.warning("web UI: rollout of %s %s set to stage %s by %s", model, version, stage, user)
        return _redirect(f"/?notice={quote(f'{model} {version} promoted to {stage} by {user}.')}")

    async def metrics(self, request: web.Request) -> web.Response:
        return web.Response(body=generate_latest(self.registry), content_type=CONTENT_TYPE_LATEST.split(";")[0])

    async def healthz(self, request: web.Request) -> web.Response:
        ready = self.is_ready()
        return web.json_response(
            {"status": "ok" if ready else "starting", "incidents": len(self.store.incidents)}, status=200 if ready else 503
        )
