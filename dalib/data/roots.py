"""Where datasets live: a config key, then ``$DALIB_DATA``, then a per-user cache folder."""

from __future__ import annotations

import os
from pathlib import Path

from dalib.errors import DalibError

ENV_VAR = "DALIB_DATA"


def default_cache() -> Path:
    """``$XDG_CACHE_HOME/dalib`` (``~/.cache/dalib`` when unset)."""
    return Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "dalib"


def data_root(root: str | os.PathLike | None = None) -> Path:
    """The data folder: ``root`` from the config if given, else ``$DALIB_DATA``, else the cache."""
    if root is not None:
        return Path(root).expanduser()
    if os.environ.get(ENV_VAR):
        return Path(os.environ[ENV_VAR]).expanduser()
    return default_cache()


def where_from(root: str | os.PathLike | None) -> str:
    """How the data folder was chosen, for error messages."""
    if root is not None:
        return "the config's root"
    if os.environ.get(ENV_VAR):
        return f"${ENV_VAR}"
    return f"the default cache (set ${ENV_VAR} or the config's root to change it)"


def require(path: Path, root: str | os.PathLike | None, how_to_get: str) -> Path:
    """``path`` if it exists; otherwise one line saying where dalib looked and how to get it."""
    if not path.exists():
        raise DalibError(f"{path} not found (data folder from {where_from(root)}); {how_to_get}")
    return path
