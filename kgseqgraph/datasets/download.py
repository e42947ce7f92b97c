"""Downloading raw dataset files: streamed to a temporary file with a tqdm bar, checked against a
sha256 and moved into place atomically, so an interrupted download never leaves a partial file
under ``root/raw``."""
from __future__ import annotations

import hashlib
import logging
import os
import shutil
import sys
import tempfile
import urllib.error
import urllib.request
import zipfile
from pathlib import Path

from tqdm.auto import tqdm

from ..utils.io import new_file_mode
from ..utils.progress import progress_enabled

__all__ = ["DownloadError", "download_url", "sha256sum", "extract_zip_member"]

log = logging.getLogger("kgseqgraph")

_CHUNK = 1 << 20


class DownloadError(RuntimeError):
    """A file could not be downloaded, or its content does not match the expected sha256."""


def sha256sum(path: str | os.PathLike, chunk_size: int = _CHUNK) -> str:
    """Hex sha256 digest of the file at ``path``, read in chunks of ``chunk_size`` bytes."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(chunk_size):
            h.update(block)
    return h.hexdigest()


def download_url(
    url: str,
    dst: str | os.PathLike,
    *,
    sha256: str | None = None,
    timeout: float = 30.0,
    progress: bool | None = None,
) -> Path:
    """Download ``url`` to ``dst``.

    The body is streamed into a temporary file in ``dst``'s folder, its sha256 is compared with
    ``sha256`` (when given) and only then is it renamed to ``dst`` (:func:`os.replace`, atomic on
    one file system).

    Args:
        url: ``http(s)://`` or ``file://`` address.
        dst: destination path; parent folders are created.
        sha256: expected hex digest; a mismatch raises :class:`DownloadError` and keeps nothing.
        timeout: seconds to wait for the connection and for each read.
        progress: show a tqdm bar (default: only when stderr is a terminal and not under CI).

    Raises:
        DownloadError: the server could not be reached, answered with an error, or the content
            has the wrong digest.
    """
    dst = Path(dst)
    dst.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp_name = tempfile.mkstemp(prefix=f".{dst.name}.", suffix=".part", dir=dst.parent)
    os.fchmod(fd, new_file_mode(dst))  # the user's umask, not mkstemp's 0o600
    tmp = Path(tmp_name)
    h = hashlib.sha256()
    try:
        with os.fdopen(fd, "wb") as out:
            try:
                response = urllib.request.urlopen(url, timeout=timeout)  # noqa: S310 (fixed URLs)
            except (urllib.error.URLError, OSError, ValueError) as exc:
                raise DownloadError(f"could not download {url}: {exc}") from exc
            with response:
                total = response.headers.get("Content-Length")
                bar = tqdm(total=int(total) if total else None, unit="B", unit_scale=True,
                           unit_divisor=1024, desc=dst.name,
                           disable=not progress_enabled(progress))
                with bar:
                    try:
                        while block := response.read(_CHUNK):
                            out.write(block)
                            h.update(block)
                            bar.update(len(block))
                    except (urllib.error.URLError, OSError) as exc:
                        raise DownloadError(f"download of {url} was interrupted: {exc}") from exc
        digest = h.hexdigest()
        if sha256 is not None and digest != sha256.lower():
            raise DownloadError(f"{url}: sha256 {digest} does not match the expected {sha256}; "
                                f"the file was not kept")
        os.replace(tmp, dst)
        log.info("downloaded %s -> %s (sha256 %s)", url, dst, digest)
        return dst
    finally:
        if tmp.exists():
            tmp.unlink()


def extract_zip_member(archive: str | os.PathLike, member: str, dst: str | os.PathLike) -> Path:
    """Extract the member of ``archive`` whose base name is ``member`` to ``dst`` (atomically).

    Raises:
        DownloadError: the archive has no such member.
    """
    dst = Path(dst)
    with zipfile.ZipFile(archive) as zf:
        names = [n for n in zf.namelist() if Path(n).name == member and not n.endswith("/")]
        if not names:
            raise DownloadError(f"{archive} has no member named {member!r} "
                                f"(members: {zf.namelist()[:10]})")
        fd, tmp_name = tempfile.mkstemp(prefix=f".{dst.name}.", suffix=".part", dir=dst.parent)
        os.fchmod(fd, new_file_mode(dst))
        try:
            with os.fdopen(fd, "wb") as out, zf.open(names[0]) as src:
                shutil.copyfileobj(src, out, _CHUNK)
            os.replace(tmp_name, dst)
        finally:
            if os.path.exists(tmp_name):
                os.unlink(tmp_name)
    return dst
