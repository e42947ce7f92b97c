"""Utilities every other package may use (the bottom layer): atomic file writes, the progress-bar
rule, optional-dependency checks and provenance (versions, git commit)."""
from .io import atomic_open, atomic_path, atomic_write_bytes, new_file_mode
from .optional import require
from .progress import in_ci, progress_enabled
from .provenance import __version__, git_commit, utc_now, versions

__all__ = ["atomic_open", "atomic_path", "atomic_write_bytes", "new_file_mode", "require",
           "in_ci", "progress_enabled", "__version__", "git_commit", "utc_now", "versions"]
