"""Opt-in model downloads into the registered model folders: Hugging Face Hub repositories and release files.

Both resume: the Hub client keeps an unfinished file under ``<folder>/.cache/huggingface/download`` and
continues it with a Range request; :func:`fetch_file` keeps ``<file>.part`` and does the same. Both show
a progress bar on stderr and are refused, with the reason, when ``HF_HUB_OFFLINE`` is set.
"""

from __future__ import annotations

import os
import sys
import urllib.error
import urllib.request
from typing import Callable

from .. import host

CHUNK = 1 << 20


def offline() -> bool:
    """True when ``HF_HUB_OFFLINE`` asks for no network access (in the environment, or as the Hub client read it)."""
    if os.environ.get("HF_HUB_OFFLINE", "").strip().lower() in ("1", "true", "yes", "on"):
        return True
    constants = sys.modules.get("huggingface_hub.constants")
    return bool(getattr(constants, "HF_HUB_OFFLINE", False))


def _refuse_offline(name: str, source: str) -> None:
    if offline():
        raise FileNotFoundError(f"model_name: '{name}' is missing and HF_HUB_OFFLINE is set, so it was not downloaded from {source}; "
                                "unset HF_HUB_OFFLINE to download it.")


def download(kind: str, name: str, repos: dict[str, str], patterns: Callable[[str], list[str]], folder: str | None = None) -> str:
    """Fetch ``name``'s repository (``repos[name]``, or ``name`` itself when it is ``owner/repo``) into ``folder``.

    ``folder`` defaults to ``models/<kind>/<repo name>``; ``patterns(repo)`` are the files fetched.
    Refused, with the reason, for an unknown name or when ``HF_HUB_OFFLINE`` is set.
    """
    repo = repos.get(name, name if "/" in name else None)
    if repo is None:
        raise FileNotFoundError(f"model_name: no Hub repository is known for '{name}'; download it by hand.")
    _refuse_offline(name, repo)
    from huggingface_hub import constants, snapshot_download
    from huggingface_hub.errors import HfHubHTTPError, LocalEntryNotFoundError

    folder = folder or os.path.join(host.model_dirs(kind)[0], name.split("/")[-1])
    print(f"downloading {repo} into {folder} (an interrupted download continues where it stopped)", file=sys.stderr, flush=True)
    try:
        snapshot_download(repo, local_dir=folder, allow_patterns=patterns(repo))
    except (HfHubHTTPError, LocalEntryNotFoundError, OSError) as e:
        first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise ConnectionError(f"model_name: downloading {repo} from {constants.ENDPOINT} failed: {first}") from None
    return folder


def fetch_file(url: str, path: str, name: str) -> str:
    """Download ``url`` to ``path`` (atomically, resuming ``path.part``); returns ``path``."""
    _refuse_offline(name, url)
    from tqdm.auto import tqdm

    part = path + ".part"
    os.makedirs(os.path.dirname(path), exist_ok=True)
    done = os.path.getsize(part) if os.path.exists(part) else 0
    request = urllib.request.Request(url, headers={"Range": f"bytes={done}-"} if done else {})
    print(f"downloading {url} into {path}", file=sys.stderr, flush=True)
    try:
        with urllib.request.urlopen(request, timeout=60) as reply:
            if done and reply.status != 206:
                done = 0  # the server ignored the range: start over
            total = done + int(reply.headers.get("Content-Length") or 0) or None
            with open(part, "ab" if done else "wb") as out, tqdm(total=total, initial=done, unit="B", unit_scale=True,
                                                                 desc=os.path.basename(path), file=sys.stderr) as bar:
                while chunk := reply.read(CHUNK):
                    out.write(chunk)
                    bar.update(len(chunk))
    except urllib.error.HTTPError as e:
        raise ConnectionError(f"model_name: downloading {url} failed: HTTP {e.code} {e.reason}") from None
    except (urllib.error.URLError, OSError) as e:
        raise ConnectionError(f"model_name: downloading {url} failed ({getattr(e, 'reason', e)}); run again to resume") from None
    if total is not None and os.path.getsize(part) != total:
        raise ConnectionError(f"model_name: downloading {url} stopped at {os.path.getsize(part)} of {total} bytes; run again to resume")
    os.replace(part, path)
    return path
