"""How browsers reach this server: over TLS served here, or over https ended by a proxy.

TLS_CERT_FILE and TLS_KEY_FILE make the server speak https itself. Behind a proxy the scheme the
browser used is decided by AccessPolicy.scheme (X-Forwarded-Proto from TRUSTED_PROXIES, or an
https PUBLIC_URL); whichever way, https answers carry Strict-Transport-Security so the browser
never falls back to plain http.
"""

from __future__ import annotations

import ssl

import tornado.web


def tls_context(cert_file: str, key_file: str) -> ssl.SSLContext | None:
    """The server's TLS context, or None without a certificate; ValueError (one line) when the
    files cannot be used."""
    if not cert_file and not key_file:
        return None
    if not cert_file or not key_file:
        raise ValueError("TLS_CERT_FILE and TLS_KEY_FILE must be set together")
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    try:
        context.load_cert_chain(cert_file, key_file)
    except (OSError, ssl.SSLError) as exc:
        reason = getattr(exc, "strerror", None) or getattr(exc, "reason", None) or str(exc)
        raise ValueError(f"Cannot use TLS_CERT_FILE {cert_file} / TLS_KEY_FILE {key_file}: {reason}") from None
    return context


def set_transport_headers(handler: tornado.web.RequestHandler) -> None:
    """Strict-Transport-Security on every answer the browser got over https (HSTS_SECONDS)."""
    access, seconds = handler.settings.get("texium_access"), handler.settings.get("texium_hsts_seconds")
    if access is not None and seconds and access.scheme(handler.request) == "https":
        handler.set_header("Strict-Transport-Security", f"max-age={int(seconds)}")
