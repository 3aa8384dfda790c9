"""Files that appear whole or not at all."""

from __future__ import annotations

import os
import tempfile
from contextlib import contextmanager
from typing import Iterator


@contextmanager
def atomic_path(path: str) -> Iterator[str]:
    """Yield a hidden temporary path beside ``path``; rename it onto ``path`` only if the block succeeds.

    Readers (a playlist, a stream, ComfyUI's /view) never see a half-written file: on any error the
    temporary file is removed and ``path`` is left as it was.
    """
    folder, name = os.path.split(os.path.abspath(path))
    os.makedirs(folder, exist_ok=True)
    stem, ext = os.path.splitext(name)
    fd, tmp = tempfile.mkstemp(prefix=f".{stem}.", suffix=f".part{ext}", dir=folder)
    os.close(fd)
    try:
        yield tmp
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.remove(tmp)
        raise


def check_writable(folder: str, input_name: str) -> None:
    """Raise a clear error when ``folder`` cannot be created or written."""
    try:
        os.makedirs(folder, exist_ok=True)
    except OSError as exc:
        raise ValueError(f"{input_name}: cannot create the folder {folder} ({exc.strerror}); choose a writable location.") from exc
    if not os.access(folder, os.W_OK):
        raise ValueError(f"{input_name}: the folder {folder} is not writable; fix its permissions or choose another folder.")
