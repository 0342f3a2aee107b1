"""The farm's access key: seals the audit chain and keys the token HMACs.

One random key in a file only its owner can read, made on the first ``qrt up`` and
kept across restarts (tokens and the audit chain outlive a farm). Back it up with the
store: without it no stored token can be checked and the chain cannot be verified.
Each use gets its own key derived from it, so one never stands in for the other.
"""

from __future__ import annotations

import hashlib
import hmac
import os
import secrets
from pathlib import Path

from qrt_ray.errors import ConfigError

KEY_BYTES = 32
ENV_FILE = "QRT_ACCESS_KEY_FILE"


def derive(key: bytes, purpose: str) -> bytes:
    """The key for one purpose (``tokens``, ``audit``)."""
    return hmac.new(key, f"qrt-access/{purpose}".encode(), hashlib.sha256).digest()


def load_or_create(path: Path) -> bytes:
    """The key in ``path``, made (mode 0600, folder 0700) when there is none.

    Raises:
        ConfigError: the file exists but is not a key, or others may read it.
    """
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        pass
    else:
        with os.fdopen(fd, "w") as out:
            out.write(secrets.token_hex(KEY_BYTES) + "\n")
    if path.stat().st_mode & 0o077:
        raise ConfigError(
            f"access key file {path.name}: others may read it; chmod 600 it "
            "(tokens and the audit chain are only as safe as this file)"
        )
    text = path.read_text(encoding="ascii", errors="replace").strip()
    try:
        key = bytes.fromhex(text)
    except ValueError:
        key = b""
    if len(key) != KEY_BYTES:
        raise ConfigError(
            f"access key file {path.name}: not a qrt access key ({2 * KEY_BYTES} hex "
            "digits); restore it from your backup, or move it away to make a new one "
            "(which invalidates every token)"
        )
    return key
