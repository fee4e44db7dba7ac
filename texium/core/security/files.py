"""Owner-only directories and files for what Texium keeps on disk (database, backups, reports).

Modes are set explicitly (os.open's mode, then chmod), so they do not depend on the umask:
directories 0700, files 0600.
"""

from __future__ import annotations

import logging
import os
import stat

DIR_MODE = 0o700
FILE_MODE = 0o600

log = logging.getLogger("texium.files")


def private_dir(path: str) -> bool:
    """Create `path` (and missing parents) with mode 0700; True when `path` was created here.

    An existing directory keeps its mode (it may be shared on purpose); a warning is logged when
    other users can read or enter it.
    """
    try:
        os.makedirs(path, mode=DIR_MODE)
    except FileExistsError:
        if not os.path.isdir(path):
            raise
        warn_if_open(path)
        return False
    os.chmod(path, DIR_MODE)  # makedirs' mode is filtered by the umask
    return True


def warn_if_open(path: str) -> None:
    try:
        mode = stat.S_IMODE(os.stat(path).st_mode)
    except OSError:
        return
    if mode & 0o077:
        log.warning("%s is accessible to other users (mode %04o); consider chmod 700", path, mode)


def create_private_file(path: str) -> bool:
    """Create an empty file with mode 0600 if it does not exist; True when it was created here."""
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_NOFOLLOW", 0), FILE_MODE)
    except FileExistsError:
        return False
    try:
        os.fchmod(fd, FILE_MODE)
    finally:
        os.close(fd)
    return True


def restrict_file(path: str) -> None:
    """Take the group and other permissions off an existing file we own (no error if it is gone)."""
    try:
        info = os.stat(path)
    except FileNotFoundError:
        return
    if stat.S_ISREG(info.st_mode) and info.st_mode & 0o077 and info.st_uid == os.geteuid():
        os.chmod(path, stat.S_IMODE(info.st_mode) & ~0o077)


def private_opener(path: str, flags: int) -> int:
    """`open(..., opener=private_opener)`: the file is created 0600 (and an existing one made 0600)."""
    fd = os.open(path, flags, FILE_MODE)
    try:
        os.fchmod(fd, FILE_MODE)
    except OSError:
        os.close(fd)
        raise
    return fd
