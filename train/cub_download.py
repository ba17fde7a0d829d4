"""Download and unpack the official CUB-200-2011 archive for ``train/train_birds.py --download``.

This is the only code that touches the network for the birds data, which is why it lives with the training scripts
and not in the library (``explainer/birds/cub.py`` reads a folder that is already on disk).
"""

from __future__ import annotations

import hashlib
import os
import shutil
import tarfile
import tempfile
import urllib.error
import urllib.request
from pathlib import Path
from typing import IO, Callable

from explainer.birds.cub import CUB_FOLDER

CUB_URL = "https://data.caltech.edu/records/65de6-vp158/files/CUB_200_2011.tgz"
CUB_MD5 = "97eceeb196236b17998738112f37df78"


class CubDownloadError(RuntimeError):
    """The CUB archive could not be downloaded or verified; the message says how to get it by hand."""


class CubChecksumError(CubDownloadError):
    """The archive's md5 differs from the expected one (corrupt or wrong file)."""


def _md5_of(path: Path) -> str:
    digest = hashlib.md5()
    with path.open("rb") as handle:
        for chunk in iter(lambda: handle.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def verify_and_extract(archive: Path, dest: Path, md5: str = CUB_MD5) -> Path:
    """Check the archive's md5, then extract it into a temporary folder inside dest and move its top-level entries
    into dest with atomic renames, so an interrupted run never leaves a half-extracted CUB_200_2011/. Returns dest."""
    archive, dest = Path(archive), Path(dest)
    actual = _md5_of(archive)
    if actual != md5.lower():
        raise CubChecksumError(
            f"{archive}: md5 is {actual}, expected {md5}; the file is corrupt or not the CUB archive"
        )
    dest.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=".cub-extract-", dir=dest))
    try:
        with tarfile.open(archive, "r:*") as tar:
            tar.extractall(staging, filter="data")
        entries = sorted(staging.iterdir())
        clashes = [entry.name for entry in entries if (dest / entry.name).exists()]
        if clashes:
            raise CubDownloadError(f"{dest} already holds {clashes}; remove them or extract elsewhere")
        for entry in entries:
            os.replace(entry, dest / entry.name)
    except tarfile.TarError as error:
        raise CubDownloadError(f"{archive}: cannot be extracted ({error})") from error
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return dest


def download_cub(
    dest: str | Path,
    url: str = CUB_URL,
    md5: str = CUB_MD5,
    opener: Callable[[str], IO[bytes]] | None = None,
) -> Path:
    """Download the official CUB-200-2011 archive into dest, verify its md5 and extract it; returns dest (a folder
    that `read_cub` accepts). Does nothing if dest already holds CUB_200_2011/images.txt. `opener(url)` returns a
    readable binary stream (default: urllib with a 60 s timeout); tests inject a local one."""
    dest = Path(dest)
    if (dest / CUB_FOLDER / "images.txt").is_file():
        return dest
    dest.mkdir(parents=True, exist_ok=True)
    archive = dest / "CUB_200_2011.tgz"
    partial = dest / "CUB_200_2011.tgz.part"
    open_url = opener if opener is not None else (lambda address: urllib.request.urlopen(address, timeout=60))
    if not archive.is_file():
        try:
            with open_url(url) as response, partial.open("wb") as handle:
                shutil.copyfileobj(response, handle, 1 << 20)
        except (urllib.error.URLError, OSError, TimeoutError) as error:
            partial.unlink(missing_ok=True)
            raise CubDownloadError(
                f"could not download {url} ({error}). Download CUB_200_2011.tgz by hand (md5 {md5}), extract it, "
                f"and pass the folder that contains CUB_200_2011/ with --data."
            ) from error
        os.replace(partial, archive)
    try:
        verify_and_extract(archive, dest, md5)
    except CubChecksumError:
        archive.unlink(missing_ok=True)  # a corrupt archive must not be reused by the next call
        raise
    archive.unlink()
    return dest
