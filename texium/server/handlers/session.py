"""/api/auth/session — the dashboard signs in with an API key and keeps a session cookie.

The cookie is signed, HttpOnly and SameSite=Strict, and names the key it was made from, so
revoking that key ends the session. Requests authenticated by the cookie that change state
must also send `X-CSRF-Token` (given here); requests with a key need neither.
"""

import tornado.web

from texium.server.handlers.base import SESSION_COOKIE, ApiHandler


class SessionHandler(ApiHandler):
    public = True
    carries_secrets = True  # the CSRF token

    def _signed_in(self, key_id: str) -> dict:
        user = self.user
        return {
            "user": {k: user.get(k) for k in ("_id", "name", "email", "role")},
            "csrf_token": self.context.access.csrf_token(key_id),
            "auth_required": self.context.access.required,
        }

    async def get(self) -> None:
        session = self.get_signed_cookie(SESSION_COOKIE, max_age_days=31)
        if self.user is None:
            if self.context.access.required:
                raise tornado.web.HTTPError(401, reason="Not signed in")
            self.success("Authentication is not required on this server", auth_required=False, user=None)
            return
        key_id = session.decode("ascii", "replace") if session and not self.by_key else ""
        self.success("Signed in", **self._signed_in(key_id))

    async def post(self) -> None:
        key_id, self.user = await self.vouch(self.blocking, self.context.keys.sign_in, self.json_body())
        self.set_signed_cookie(
            SESSION_COOKIE,
            key_id,
            expires_days=None,
            httponly=True,
            samesite="Strict",
            secure=self.request.protocol == "https",
            path="/",
        )
        self.success("Signed in", **self._signed_in(key_id))

    async def delete(self) -> None:
        self.clear_cookie(SESSION_COOKIE, path="/")
        self.success("Signed out")
