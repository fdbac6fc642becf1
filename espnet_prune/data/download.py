"""Resumable, verified downloads and safe, idempotent extraction of corpus archives.

Corpus archives are large (LibriSpeech train-clean-100: 6.3 GB), so an interrupted download resumes
from its ``.part`` file with an HTTP Range request, and a file only gets its final name once its
size (and md5, where published) is verified. Nothing here runs in the tests except against local files.
"""

from __future__ import annotations

import functools
import hashlib
import http.client
import logging
import os
import shutil
import tarfile
import tempfile
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any, Callable, Optional

from espnet_prune.data.errors import DataPrepError

logger = logging.getLogger(__name__)

Opener = Callable[[urllib.request.Request], Any]
"""Opens a request and returns a response with ``read``, ``headers`` and ``status`` (urlopen-like)."""

default_opener: Opener = functools.partial(urllib.request.urlopen, timeout=60)

_CHUNK = 1 << 20


def md5sum(path: Path) -> str:
    """Hex md5 digest of a file, read in chunks."""
    digest = hashlib.md5()
    with open(path, "rb") as f:
        while block := f.read(_CHUNK):
            digest.update(block)
    return digest.hexdigest()


def _fetch_into(url: str, part: Path, opener: Opener) -> None:
    """Append the rest of ``url`` to ``part`` (Range request), or restart when the server ignores it."""
    offset = part.stat().st_size if part.exists() else 0
    headers = {"User-Agent": "espnet_prune"}
    if offset:
        headers["Range"] = f"bytes={offset}-"
    try:
        response = opener(urllib.request.Request(url, headers=headers))
    except urllib.error.HTTPError as exc:
        if exc.code == 416 and offset:  # nothing left to fetch: the part file is already complete
            return
        raise DataPrepError(f"{url}: download failed: HTTP {exc.code} {exc.reason}") from exc
    except urllib.error.URLError as exc:
        raise DataPrepError(f"{url}: download failed: {exc.reason}") from exc
    with response:
        status = getattr(response, "status", None)  # None for file:// URLs
        resumed = bool(offset) and status == 206
        if resumed and not str(response.headers.get("Content-Range", "")).startswith(f"bytes {offset}-"):
            raise DataPrepError(
                f"{url}: server answered the range request from byte {offset} with "
                f"Content-Range {response.headers.get('Content-Range')!r}; delete {part} and rerun"
            )
        if offset and not resumed:
            logger.info("%s: server ignored the range request, downloading from the start", url)
            offset = 0
        length = response.headers.get("Content-Length")
        expected = offset + int(length) if length is not None else None
        if offset:
            logger.info("%s: resuming at byte %d", url, offset)
        with open(part, "ab" if resumed else "wb") as f:
            try:
                while block := response.read(_CHUNK):
                    f.write(block)
            except (OSError, http.client.HTTPException) as exc:
                raise DataPrepError(
                    f"{url}: download interrupted after {f.tell()} bytes ({exc}); rerun to resume"
                ) from exc
    size = part.stat().st_size
    if expected is not None and size != expected:
        raise DataPrepError(f"{url}: got {size} of {expected} bytes in {part}; rerun to resume")


def download_file(url: str, dest: Path, md5: Optional[str] = None, opener: Opener = default_opener) -> Path:
    """Download ``url`` to ``dest`` (resuming ``dest.part``), verify ``md5`` when given.

    An existing ``dest`` is kept when it matches ``md5`` (or when no md5 is given).
    """
    dest = Path(dest)
    if dest.is_file():
        if md5 is None or md5sum(dest) == md5:
            logger.info("%s: already downloaded", dest)
            return dest
        raise DataPrepError(f"{dest}: exists but its md5 is not {md5}; delete it and rerun")
    dest.parent.mkdir(parents=True, exist_ok=True)
    part = dest.with_name(dest.name + ".part")
    logger.info("downloading %s -> %s", url, dest)
    _fetch_into(url, part, opener)
    if md5 is not None:
        actual = md5sum(part)
        if actual != md5:
            part.unlink()
            raise DataPrepError(
                f"{url}: md5 {actual} differs from the published {md5}; removed {part}, rerun"
            )
    os.replace(part, dest)
    return dest


def _merge(src: Path, dst: Path) -> None:
    """Move the tree ``src`` into ``dst``; whole folders are renamed, existing files are kept."""
    if not dst.exists():
        os.rename(src, dst)
    elif src.is_dir() and dst.is_dir():
        for child in sorted(src.iterdir()):
            _merge(child, dst / child.name)


def extract_tar(archive: Path, dest: Path) -> None:
    """Extract a tar archive into ``dest`` safely (no paths outside it) and all-or-nothing per folder.

    The archive is unpacked into a temporary folder inside ``dest`` and its top-level entries are moved
    in afterwards, so an interrupted extraction never leaves a partial corpus folder.
    """
    dest = Path(dest)
    dest.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=".extract-", dir=dest))
    try:
        logger.info("extracting %s -> %s", archive, dest)
        try:
            with tarfile.open(archive) as tar:
                tar.extractall(tmp, filter="data")
        except (tarfile.TarError, EOFError, OSError) as exc:
            raise DataPrepError(f"{archive}: cannot extract ({exc}); delete it and rerun") from exc
        for child in sorted(tmp.iterdir()):
            _merge(child, dest / child.name)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
