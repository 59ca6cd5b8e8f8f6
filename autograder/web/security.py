"""What keeps the workspace as safe as Jupyter's server: a grader's token (in the link, once) becomes an
HttpOnly, SameSite=Strict cookie; every POST carries an XSRF token derived from that cookie and must come
from our own origin as JSON; a Host header naming another domain is refused (DNS rebinding); every
response forbids inline scripts, framing and sniffing."""

from __future__ import annotations

import hashlib
import hmac
from urllib.parse import urlencode, urlsplit

from starlette.requests import Request
from starlette.responses import PlainTextResponse, RedirectResponse

COOKIE = "autograder_token"
XSRF_HEADER = "x-xsrf-token"
LOCAL_HOSTS = frozenset({"127.0.0.1", "localhost", "::1"})
HEADERS = {
    "content-security-policy": "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self'; "
                               "connect-src 'self'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'",
    "x-frame-options": "DENY",
    "x-content-type-options": "nosniff",
    "referrer-policy": "no-referrer",
    "cache-control": "no-store",
}


def xsrf_token(secret: str, token: str) -> str:
    """The value a page sends back with each POST: only a page that read it from our origin knows it."""
    return hmac.new(secret.encode(), token.encode("utf-8", "backslashreplace"), hashlib.sha256).hexdigest()


def host_name(host_header: str) -> str:
    """`example.org:8000` -> `example.org`, `[::1]:8000` -> `::1`."""
    return (urlsplit(f"//{host_header}").hostname or "").lower()


class Guard:
    """ASGI middleware in front of every route; `graders(token)` finds the grader a token belongs to."""

    def __init__(self, app, *, graders, secret, allowed_hosts: frozenset[str]):
        self.app, self.graders, self.secret, self.allowed_hosts = app, graders, secret, allowed_hosts

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)

        async def send_with_headers(message):
            if message["type"] == "http.response.start":
                message["headers"] = [*message.get("headers", []),
                                      *((k.encode(), v.encode()) for k, v in HEADERS.items())]
            await send(message)

        response = self.refusal(Request(scope), scope)
        if response is not None:
            return await response(scope, receive, send_with_headers)
        await self.app(scope, receive, send_with_headers)

    def refusal(self, request: Request, scope) -> object | None:
        """None when the request may go on (the grader then in scope["state"]), else the response to send."""
        if host_name(request.headers.get("host", "")) not in self.allowed_hosts:
            return PlainTextResponse("this server answers only to the host names it was started for", 403)
        if request.url.path.startswith("/static/"):
            return None
        token = request.query_params.get("token")
        if token is not None and request.method == "GET":
            if self.graders(token) is None:
                return PlainTextResponse("this token is not (or no longer) valid: ask the instructor for yours", 403)
            rest = urlencode([(k, v) for k, v in request.query_params.multi_items() if k != "token"])
            target = scope.get("root_path", "") + request.url.path + (f"?{rest}" if rest else "")
            response = RedirectResponse(target, 303)  # the token leaves the address bar and the history
            response.set_cookie(COOKIE, token, httponly=True, samesite="strict", path="/")
            return response
        token = request.cookies.get(COOKIE, "")
        grader = self.graders(token) if token else None
        if grader is None:
            return PlainTextResponse("open the link with your token that `autograder serve` printed (or that the "
                                     "instructor gave you)", 403)
        if request.method not in ("GET", "HEAD"):
            origin = request.headers.get("origin")
            if origin is not None and urlsplit(origin).netloc != request.headers.get("host"):
                return PlainTextResponse("a request from another site", 403)
            if not hmac.compare_digest(request.headers.get(XSRF_HEADER, ""), xsrf_token(self.secret, token)):
                return PlainTextResponse("missing or wrong XSRF token: reload the page", 403)
            if request.headers.get("content-type", "").split(";")[0].strip() != "application/json":
                return PlainTextResponse("changes are sent as JSON", 415)
        scope.setdefault("state", {})["grader"] = grader
        scope["state"]["xsrf"] = xsrf_token(self.secret, token)
        return None
