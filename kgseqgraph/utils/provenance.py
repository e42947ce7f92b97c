"""What produced a result: the package version, the versions of the software it ran on, the git
commit of the working tree and the time."""
from __future__ import annotations

import datetime
import platform
import subprocess
from pathlib import Path

__all__ = ["__version__", "versions", "git_commit", "utc_now"]

__version__ = "0.1.0"


def versions() -> dict[str, str]:
    """Versions of the software that produced a result."""
    import numpy
    import torch

    out = {"kgseqgraph": __version__, "torch": str(torch.__version__),
           "numpy": str(numpy.__version__), "python": platform.python_version()}
    try:
        import torch_geometric

        out["torch_geometric"] = str(torch_geometric.__version__)
    except ImportError:  # pragma: no cover
        pass
    return out


def git_commit(path: str | Path = ".") -> dict[str, str | bool | None]:
    """``{"commit": <sha or None>, "dirty": <uncommitted changes to tracked files>}`` of the git
    work tree holding ``path`` (``None`` / ``False`` outside one)."""
    def run(*args: str) -> str | None:
        try:
            out = subprocess.run(["git", *args], cwd=path, capture_output=True, text=True,
                                 timeout=30)
        except (OSError, subprocess.SubprocessError):
            return None
        return out.stdout.strip() if out.returncode == 0 else None

    sha = run("rev-parse", "HEAD")
    status = run("status", "--porcelain", "--untracked-files=no")
    return {"commit": sha, "dirty": bool(status) if status is not None else False}


def utc_now() -> str:
    """The current time, ISO 8601 in UTC (seconds)."""
    return datetime.datetime.now(datetime.timezone.utc).replace(microsecond=0).isoformat()
