"""``GET /dashboard``: the page `stakeflow report` writes, served live, behind STAKEFLOW_API_TOKEN.

A browser signs in once through a form (``POST /dashboard/login``, the token in the body) and then
carries an HttpOnly, SameSite=Strict cookie scoped to ``/dashboard``: the token never appears in a URL,
where history, proxies and Referer headers would keep it, and no script on the page can read the
cookie. The cookie holds an HMAC of a fixed label under the token, not the token itself, so a leaked
cookie does not reveal the token (and changing the token signs every browser out). Scripts may send
``Authorization: Bearer <token>`` instead, as for ``/runs``. A token put in the query string is refused
(400) without looking at it. Responses carry a Content-Security-Policy that lets the page reach no
host at all: the page is self-contained, and the policy makes sure of it.
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
from html import escape
from typing import TYPE_CHECKING, Any
from urllib.parse import parse_qs

from starlette.requests import Request
from starlette.responses import HTMLResponse, RedirectResponse, Response

from stakeflow.core.errors import InputError
from stakeflow.webhooks.context import read_body

if TYPE_CHECKING:
    from stakeflow.webhooks.context import Context

COOKIE = "stakeflow_dashboard"
PATH = "/dashboard"
SESSION_S = 12 * 3600
MAX_LOGIN_BYTES = 4096
_LABEL = b"stakeflow dashboard session v1"
HEADERS = {
    # Vega compiles its expressions with Function(): 'unsafe-eval'. Nothing may be fetched from anywhere.
    "Content-Security-Policy": "default-src 'none'; script-src 'unsafe-inline' 'unsafe-eval'; "
    "style-src 'unsafe-inline'; img-src data:; form-action 'self'; base-uri 'none'; frame-ancestors 'none'",
    "Cache-Control": "no-store",
    "Referrer-Policy": "no-referrer",
    "X-Content-Type-Options": "nosniff",
}


def session_value(token: str) -> str:
    """The cookie's value for ``token``: proves the sign-in without carrying the token."""
    return hmac.new(token.encode(), _LABEL, hashlib.sha256).hexdigest()


def signed_in(api_token: str, request: Request) -> bool:
    """A valid session cookie, or ``Authorization: Bearer <token>``; both compared in constant time."""
    cookie = request.cookies.get(COOKIE, "")
    if cookie and hmac.compare_digest(cookie.encode(), session_value(api_token).encode()):
        return True
    scheme, _, given = request.headers.get("authorization", "").partition(" ")
    return scheme.lower() == "bearer" and hmac.compare_digest(given.strip().encode(), api_token.encode())


def _page(title: str, body: str, status: int) -> HTMLResponse:
    html = (
        f'<!DOCTYPE html><html lang="en"><head><meta charset="utf-8"><title>{escape(title)}</title><style>'
        "body{font:15px system-ui,sans-serif;background:#f6f7f9;margin:0}main{max-width:420px;margin:12vh auto;"
        "background:#fff;padding:24px 28px;border-radius:8px;box-shadow:0 1px 3px #0002}input{width:100%;"
        "padding:8px;margin:8px 0 14px;box-sizing:border-box}button{padding:8px 16px}.err{color:#b3261e}"
        f"</style></head><body><main>{body}</main></body></html>"
    )
    return HTMLResponse(html, status, headers=HEADERS)


def login_form(message: str = "", status: int = 401) -> HTMLResponse:
    note = f'<p class="err" id="login-error">{escape(message)}</p>' if message else ""
    return _page(
        "stakeflow dashboard: sign in",
        "<h1>stakeflow dashboard</h1>"
        f'{note}<form method="post" action="{PATH}/login"><label for="token">API token (STAKEFLOW_API_TOKEN)</label>'
        '<input id="token" name="token" type="password" autocomplete="current-password" required autofocus>'
        '<button type="submit">Sign in</button></form>',
        status,
    )


def _disabled() -> HTMLResponse:
    return _page(
        "stakeflow dashboard: disabled",
        '<h1>stakeflow dashboard</h1><p class="err">The dashboard is disabled: set STAKEFLOW_API_TOKEN in the '
        "server's environment and restart <code>stakeflow serve</code>.</p>",
        401,
    )


def _token_in_url(request: Request) -> bool:
    return any("token" in key.lower() for key in request.query_params)


async def show(ctx: Context, request: Request, note: dict[str, Any]) -> Response:
    """The dashboard for ``?since=30d&agent=NAME``, or the sign-in form."""
    if _token_in_url(request):
        return login_form("A token never goes in a URL (it would stay in history and logs): sign in here.", 400)
    if ctx.api_token is None:
        return _disabled()
    if not signed_in(ctx.api_token, request):
        return login_form()
    from stakeflow.cli.costs import parse_since
    from stakeflow.services.report import build_report

    try:
        window = parse_since(request.query_params.get("since", "30d"))
    except InputError as e:
        return _page("stakeflow dashboard", f'<p class="err">{escape(str(e))}</p>', 400)
    agent = request.query_params.get("agent") or None
    # The queries and the page take seconds on a large store: off the event loop, so hooks keep answering.
    page = await asyncio.to_thread(build_report, ctx.settings, window, agent)
    return HTMLResponse(page, headers=HEADERS)


async def login(ctx: Context, request: Request, note: dict[str, Any]) -> Response:
    """The form's POST: a right token sets the session cookie and goes to the dashboard."""
    if ctx.api_token is None:
        return _disabled()
    body = await read_body(request, MAX_LOGIN_BYTES)
    try:
        fields = parse_qs(body.decode("utf-8", "replace"), max_num_fields=8)
    except ValueError:
        return login_form("Send the form as it is: one token field.", 400)
    token = (fields.get("token") or [""])[0]
    if not hmac.compare_digest(token.encode(), ctx.api_token.encode()):
        return login_form("That is not the server's STAKEFLOW_API_TOKEN.")
    response = RedirectResponse(PATH, 303, headers=HEADERS)
    response.set_cookie(
        COOKIE,
        session_value(ctx.api_token),
        max_age=SESSION_S,
        path=PATH,
        httponly=True,
        samesite="strict",
        secure=request.url.scheme == "https",
    )
    return response


async def logout(ctx: Context, request: Request, note: dict[str, Any]) -> Response:
    response = RedirectResponse(PATH, 303, headers=HEADERS)
    response.delete_cookie(COOKIE, path=PATH, httponly=True, samesite="strict")
    return response
