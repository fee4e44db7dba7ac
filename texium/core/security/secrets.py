"""Encryption at rest for server passwords, instance URL passwords and secret job arguments
(Fernet: authenticated AES, from `cryptography`)."""

from __future__ import annotations

import os
from pathlib import Path

from cryptography.fernet import Fernet, InvalidToken

from texium.core.security.files import private_dir


def load_or_create_key(secret_key: str, data_dir: str) -> bytes:
    """The configured key, else one generated once into `<data_dir>/secret.key` (mode 0600)."""
    if secret_key:
        return secret_key.encode()
    path = Path(data_dir) / "secret.key"
    if path.exists():
        return path.read_bytes().strip()
    private_dir(str(path.parent))  # 0700 whatever the umask (with MongoDB this may create DATA_DIR)
    key = Fernet.generate_key()
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:  # another process won the race: use its key
        return path.read_bytes().strip()
    with os.fdopen(fd, "wb") as handle:
        handle.write(key)
    return key


class SecretBox:
    def __init__(self, key: bytes):
        try:
            self._fernet = Fernet(key)
        except (ValueError, TypeError):
            raise ValueError("SECRET_KEY must be a Fernet key (32 url-safe base64-encoded bytes)") from None

    def encrypt(self, plaintext: str) -> str:
        return self._fernet.encrypt(plaintext.encode()).decode()

    def decrypt(self, token: str) -> str:
        try:
            return self._fernet.decrypt(token.encode()).decode()
        except InvalidToken:
            raise ValueError("stored secret cannot be decrypted with this SECRET_KEY") from None
