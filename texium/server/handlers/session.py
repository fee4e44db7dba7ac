"""/api/auth/session — the dashboard signs in with an API key and keeps a session cookie.

The cookie holds a random session token (HttpOnly, SameSite=Strict) whose session is stored
(texium.core.records.sessions): signing out, revoking the key and the session's lifetime end
it on the server, so a copied cookie stops working too. Requests authenticated by the cookie
that change state must also send the session's `X-CSRF-Token` (given here); requests with a
key need neither.
"""

import tornado.web

from texium.server.handlers.base import SESSION_COOKIE, ApiHandler


class SessionHandler(ApiHandler):
    public = True
    carries_secrets = True  # the CSRF token

    def _signed_in(self) -> dict:
        user = self.user
        return {
            "user": {k: user.get(k) for k in ("_id", "name", "email", "role")},
            # A key needs no CSRF token; a session has its own.
            "csrf_token": self.session["csrf_token"] if self.session else "",
            "auth_required": self.context.access.required,
        }

    async def get(self) -> None:
        if self.user is None:
            if self.context.access.required:
                raise tornado.web.HTTPError(401, reason="Not signed in")
            self.success("Authentication is not required on this server", auth_required=False, user=None)
            return
        self.success("Signed in", **self._signed_in())

    async def post(self) -> None:
        token, self.session, self.user = await self.vouch(self.blocking, self.context.keys.sign_in, self.json_body())
        self.set_cookie(
            SESSION_COOKIE,
            token,
            expires_days=None,
            httponly=True,
            samesite="Strict",
            secure=self.context.access.scheme(self.request) == "https",  # TLS here or at a trusted proxy
            path="/",
        )
        self.success("Signed in", **self._signed_in())

    async def delete(self) -> None:
        token = self.get_cookie(SESSION_COOKIE)
        if token:
            await self.blocking(self.context.keys.sessions.end, token)
        self.clear_cookie(SESSION_COOKIE, path="/")
        self.success("Signed out")
