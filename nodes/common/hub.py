"""Opt-in model downloads from the Hugging Face Hub into the registered model folders."""

from __future__ import annotations

import os
from typing import Callable

from .. import host


def download(kind: str, name: str, repos: dict[str, str], patterns: Callable[[str], list[str]], folder: str | None = None) -> str:
    """Fetch ``name``'s repository (``repos[name]``, or ``name`` itself when it is ``owner/repo``) into ``folder``.

    ``folder`` defaults to ``models/<kind>/<repo name>``; ``patterns(repo)`` are the files fetched.
    Refused, with the reason, for an unknown name or when ``HF_HUB_OFFLINE`` is set.
    """
    from huggingface_hub import constants, snapshot_download

    repo = repos.get(name, name if "/" in name else None)
    if repo is None:
        raise FileNotFoundError(f"model_name: no Hub repository is known for '{name}'; download it by hand.")
    if constants.HF_HUB_OFFLINE:
        raise FileNotFoundError(
            f"model_name: '{name}' is missing and HF_HUB_OFFLINE is set, so it was not downloaded from {repo}."
        )
    folder = folder or os.path.join(host.model_dirs(kind)[0], name.split("/")[-1])
    snapshot_download(repo, local_dir=folder, allow_patterns=patterns(repo))
    return folder
