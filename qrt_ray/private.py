"""Files that hold secrets or users' data: readable by their owner only.

The Ray auth token, the job store (with its WAL and result blobs) and the farm's logs
are created 0600 in folders created 0700. A file or folder qrt-ray made earlier with
looser modes is tightened when it is opened again, if this user owns it; folders
the user chose and qrt-ray did not create (``/tmp``, a project folder) are left alone.
"""

from __future__ import annotations

import logging
import os
import stat
from pathlib import Path

logger = logging.getLogger("qrt.private")

FILE_MODE = 0o600
DIR_MODE = 0o700


def private_dir(path: Path, *, tighten: bool = False) -> Path:
    """Create ``path`` and any missing parents with mode 0700.

    Args:
        path: the folder.
        tighten: also set 0700 on ``path`` itself if it exists with a looser mode
            and this user owns it (for folders qrt-ray owns, such as its data dir).
    """
    missing = []
    cur = path
    while not cur.exists():
        missing.append(cur)
        if cur.parent == cur:
            break
        cur = cur.parent
    for folder in reversed(missing):
        try:
            folder.mkdir(mode=DIR_MODE)
        except FileExistsError:
            continue
        os.chmod(folder, DIR_MODE)  # mkdir's mode is cut by the umask, never widened
    if tighten and not missing:
        _tighten(path, DIR_MODE)
    return path


def private_file(path: Path) -> Path:
    """Make sure ``path`` exists with mode 0600 (created so, or tightened if ours)."""
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, FILE_MODE)
    except FileExistsError:
        _tighten(path, FILE_MODE)
    else:
        os.close(fd)
    return path


def write_private(path: Path, data: str) -> Path:
    """Write ``data`` to a new or existing file that only its owner can read."""
    private_dir(path.parent)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, FILE_MODE)
    with os.fdopen(fd, "w") as out:
        out.write(data)
    _tighten(path, FILE_MODE)  # O_CREAT's mode applies only to a file it creates
    return path


def _tighten(path: Path, mode: int) -> None:
    try:
        info = path.stat()
    except OSError:
        return
    if info.st_uid != os.geteuid() or stat.S_IMODE(info.st_mode) & 0o077 == 0:
        return
    try:
        os.chmod(path, mode)
        logger.info("made %s private (mode %o)", path, mode)
    except OSError:
        logger.warning("could not make %s private", path, exc_info=True)
