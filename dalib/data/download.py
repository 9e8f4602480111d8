"""Download and unpack the image benchmarks: resumable, checksummed, and safe to extract.

A download streams into ``<name>.part``, resumes it with an HTTP ``Range`` request, and gives it
the final name only once it is verified. An archive unpacks into a hidden staging folder and
moves into place only when every member is in; a member that would land outside is refused.
When the network fails, the error says where to put a copy downloaded by hand.
"""

from __future__ import annotations

import hashlib
import http.client
import lzma
import os
import shutil
import tarfile
import tempfile
import urllib.error
import urllib.request
import warnings
import zipfile
import zlib
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path, PurePosixPath

from tqdm import tqdm

from dalib.data.roots import ENV_VAR
from dalib.errors import DalibError

CHUNK = 1 << 20
TAR_SUFFIXES = (".tar", ".tar.gz", ".tgz", ".tar.bz2", ".tbz2", ".tar.xz", ".txz")
# tarfile's "data" filter (Python >= 3.10.12) also drops setuid bits and unsafe modes.
_TAR_FILTER = {"filter": "data"} if hasattr(tarfile, "data_filter") else {}
_BROKEN_ARCHIVE = (tarfile.TarError, zipfile.BadZipFile, EOFError, zlib.error, lzma.LZMAError)


@dataclass(frozen=True)
class Archive:
    """One downloadable archive and the folder it unpacks to, relative to its benchmark's folder.

    ``sha256`` is ``None`` where the publisher gives no checksum.
    """

    url: str
    filename: str
    sha256: str | None
    extracts_to: str


def download(
    url: str, destination: Path, sha256: str | None, *, timeout: float = 30, progress: bool = True
) -> Path:
    """Stream ``url`` to ``destination`` through ``<name>.part``, resuming a partial one.

    The ``.part`` takes the final name only after its SHA-256 matched ``sha256``, so nothing
    half-written ever carries it. Without a checksum, the computed one is reported for pinning.
    """
    destination = Path(destination)
    destination.parent.mkdir(parents=True, exist_ok=True)
    part = destination.with_name(destination.name + ".part")
    try:
        _receive(url, part, timeout=timeout, progress=progress)
    except (OSError, http.client.HTTPException) as error:  # URLError and timeouts are OSErrors
        raise _could_not_download(url, destination, part, error) from error
    _verify(part, destination, sha256)
    part.replace(destination)
    return destination


def extract(archive: Path, into: Path) -> None:
    """Unpack ``archive`` (.zip, .tar, .tar.gz/.tgz, .tar.bz2, .tar.xz) into ``into``, all or none.

    Members go to a hidden staging folder inside ``into`` (same file system, so moving them up
    is a rename) and move up only when all are in; any failure removes the staging folder.
    Members that would land outside ``into``, links that point outside and device files are
    refused.
    """
    archive, into = Path(archive), Path(into)
    unpack = _unpacker(archive)
    into.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{archive.name}.", dir=into))
    try:
        unpack(archive, staging)
        _move_up(archive, staging, into)
    except _BROKEN_ARCHIVE as error:
        raise DalibError(
            f"could not extract {archive} ({_one_line(error)}); "
            "delete it and run again to download it afresh"
        ) from error
    finally:
        shutil.rmtree(staging, ignore_errors=True)


def fetch(url: str, sha256: str | None, root: Path, archive_name: str, *, extracted: str) -> Path:
    """``root/extracted``; downloads ``root/archive_name`` and unpacks it into ``root`` if needed.

    Idempotent: an existing ``root/extracted`` is returned as it is, and an archive already in
    ``root`` is not downloaded again when it matches ``sha256`` (or when there is no checksum).
    """
    root = Path(root)
    target = root / extracted
    if target.exists():
        return target
    archive = root / archive_name
    if not (archive.exists() and (sha256 is None or _sha256(archive) == sha256.lower())):
        download(url, archive, sha256)
    extract(archive, root)
    if not target.exists():
        raise DalibError(
            f"{archive} did not unpack to {target}; delete the archive and run again, "
            f"or unpack a good copy into {root} yourself"
        )
    return target


def _receive(url: str, part: Path, *, timeout: float, progress: bool) -> None:
    """Bring ``part`` up to the whole body of ``url``, asking only for the bytes it lacks."""
    offset = part.stat().st_size if part.exists() else 0
    try:
        response = urllib.request.urlopen(_request(url, offset), timeout=timeout)
    except urllib.error.HTTPError as error:
        error.close()  # it holds the connection open
        if error.code != 416 or not offset:
            raise
        if _total_size(error.headers.get("Content-Range")) == offset:
            return  # the .part is already whole; it only missed its rename
        part.unlink()  # the .part is longer than the file, or the server will not say: start over
        return _receive(url, part, timeout=timeout, progress=progress)
    with response:
        if response.status != 206:  # the server ignored Range and sends everything
            offset = 0
        _copy(response, part, offset, progress=progress)


def _request(url: str, offset: int) -> urllib.request.Request:
    """A GET for ``url`` from byte ``offset`` on."""
    request = urllib.request.Request(url, headers={"User-Agent": "dalib"})
    if offset:
        request.add_header("Range", f"bytes={offset}-")
    return request


def _total_size(content_range: str | None) -> int | None:
    """The full size from a ``Content-Range: bytes */<size>`` header, if it gives one."""
    size = (content_range or "").rpartition("/")[2].strip()
    return int(size) if size.isdigit() else None


def _copy(response: http.client.HTTPResponse, part: Path, offset: int, *, progress: bool) -> None:
    """Write the body to ``part`` from byte ``offset`` on (0 overwrites), with a progress bar."""
    length = response.headers.get("Content-Length")
    total = offset + int(length) if length and length.isdigit() else None
    with (
        part.open("ab" if offset else "wb") as out,
        tqdm(
            total=total,
            initial=offset,
            unit="B",
            unit_scale=True,
            unit_divisor=1024,
            desc=part.name.removesuffix(".part"),
            disable=None if progress else True,  # None: off when stderr is not a terminal
        ) as bar,
    ):
        while chunk := response.read(CHUNK):
            out.write(chunk)
            bar.update(len(chunk))
        if total is not None and out.tell() < total:  # http.client reads a cut body as its end
            raise ConnectionError(f"connection closed after {out.tell()} of {total} bytes")


def _verify(part: Path, destination: Path, sha256: str | None) -> None:
    """Check ``part`` against ``sha256``; delete it on a mismatch, report the hash if unpinned."""
    actual = _sha256(part)
    if sha256 is None:
        warnings.warn(
            f"dalib: {destination.name} has no published checksum; its SHA-256 is {actual}",
            stacklevel=3,
        )
    elif actual != sha256.lower():
        part.unlink()
        raise DalibError(
            f"{destination.name} has SHA-256 {actual}, expected {sha256}: the download is damaged "
            f"or the file changed upstream; run again to download it afresh, or place a copy "
            f"with the expected checksum at {destination}"
        )


def _sha256(path: Path) -> str:
    """The SHA-256 of the file at ``path``, read in chunks."""
    digest = hashlib.sha256()
    with path.open("rb") as file:
        while chunk := file.read(CHUNK):
            digest.update(chunk)
    return digest.hexdigest()


def _could_not_download(url: str, destination: Path, part: Path, error: Exception) -> DalibError:
    """One line with the reason, how to resume, and how to do without the network."""
    if isinstance(error, urllib.error.HTTPError):
        reason = f"HTTP {error.code} {error.reason}"
    else:
        reason = _one_line(getattr(error, "reason", error))
    kept = part.stat().st_size if part.exists() else 0
    resume = f"run again to resume from the {kept} bytes in {part.name}, or " if kept else ""
    return DalibError(
        f"could not download {url} ({reason}); {resume}download it yourself and place it at "
        f"{destination}, or set ${ENV_VAR} to a folder that has it"
    )


def _one_line(error: object) -> str:
    """``error`` as one line, its type name when it has no message."""
    text = " ".join(str(error).split())
    return text or type(error).__name__


def _unpacker(archive: Path) -> Callable[[Path, Path], None]:
    """The function that unpacks ``archive``, chosen by its file name."""
    name = archive.name.lower()
    if name.endswith(".zip"):
        return _unzip
    if name.endswith(TAR_SUFFIXES):
        return _untar
    raise DalibError(
        f"{archive.name} is not an archive dalib can unpack; "
        "use .zip, .tar, .tar.gz/.tgz, .tar.bz2 or .tar.xz"
    )


def _unzip(archive: Path, staging: Path) -> None:
    """Unpack a zip member by member, refusing names that leave ``staging``."""
    with zipfile.ZipFile(archive) as zipped:
        for info in zipped.infolist():
            _check_name(archive, staging, info.filename)
            zipped.extract(info, staging)


def _untar(archive: Path, staging: Path) -> None:
    """Unpack a (compressed) tar; each member is checked just before it is written."""
    with tarfile.open(archive, "r:*") as tar:  # "r:*" reads the compression from the bytes
        tar.extractall(staging, members=_checked(archive, tar, staging), **_TAR_FILTER)


def _checked(archive: Path, tar: tarfile.TarFile, staging: Path) -> Iterator[tarfile.TarInfo]:
    """The members of ``tar``, each checked against what earlier members put on disk."""
    for member in tar:
        if not (member.isfile() or member.isdir() or member.issym() or member.islnk()):
            raise _refused(archive, member.name, "is a device file or pipe")
        _check_name(archive, staging, member.name)
        if member.issym():
            folder = os.path.realpath(staging / os.path.dirname(member.name))
            _check_inside(archive, staging, member.name, os.path.join(folder, member.linkname))
        elif member.islnk():
            _check_inside(archive, staging, member.name, staging / member.linkname)
        yield member


def _check_name(archive: Path, staging: Path, name: str) -> None:
    """Refuse an absolute name, a ``..`` part, or a path that resolves outside ``staging``."""
    pure = PurePosixPath(name.replace("\\", "/"))
    if pure.is_absolute() or ".." in pure.parts or (pure.parts and ":" in pure.parts[0]):
        raise _refused(archive, name, "has an absolute path or a '..' part")
    _check_inside(archive, staging, name, staging / pure)


def _check_inside(archive: Path, staging: Path, name: str, path: str | Path) -> None:
    """Refuse member ``name`` if ``path``, with every link followed, is outside ``staging``."""
    root = os.path.realpath(staging)
    if os.path.commonpath([root, os.path.realpath(path)]) != root:
        raise _refused(archive, name, "points outside the folder it unpacks into")


def _refused(archive: Path, name: str, why: str) -> DalibError:
    """The one-line refusal of an unsafe member."""
    return DalibError(
        f"refusing to extract {archive}: member {name!r} {why}; nothing was extracted, "
        "delete the archive and get a trustworthy copy"
    )


def _move_up(archive: Path, staging: Path, into: Path) -> None:
    """Move the unpacked entries from ``staging`` into ``into``, if none would replace another."""
    entries = sorted(staging.iterdir())
    clashes = [entry.name for entry in entries if os.path.lexists(into / entry.name)]
    if clashes:
        raise DalibError(
            f"cannot extract {archive} into {into}: {', '.join(clashes)} already there; "
            "move or delete them and run again"
        )
    for entry in entries:
        entry.rename(into / entry.name)


def _archive(url: str, filename: str) -> Archive:
    """An archive without a published checksum that unpacks to the folder named like the file."""
    return Archive(url, filename, None, filename.split(".")[0])


_TSINGHUA = "https://cloud.tsinghua.edu.cn/f/"
_VISDA = "http://csr.bu.edu/ftp/visda17/clf/"
_DOMAINNET = "http://csr.bu.edu/ftp/visda/2019/multi-source/"

# Public locations only; none of their publishers gives a checksum, so every sha256 is None.
ARCHIVES: dict[str, list[Archive]] = {
    # Transfer-Learning-Library, tllib/vision/datasets/office31.py (Office31.download_list).
    "office31": [
        _archive(f"{_TSINGHUA}2c1dd9fbcaa9455aa4ad/?dl=1", "image_list.zip"),
        _archive(f"{_TSINGHUA}ec12dfcddade43ab8101/?dl=1", "amazon.tgz"),
        _archive(f"{_TSINGHUA}a41d818ae2f34da7bb32/?dl=1", "dslr.tgz"),
        _archive(f"{_TSINGHUA}8a41009a166e4131adcd/?dl=1", "webcam.tgz"),
    ],
    # Transfer-Learning-Library, tllib/vision/datasets/officehome.py (OfficeHome.download_list).
    "officehome": [
        _archive(f"{_TSINGHUA}ca3a3b6a8d554905b4cd/?dl=1", "image_list.zip"),
        _archive(f"{_TSINGHUA}4691878067d04755beab/?dl=1", "Art.tgz"),
        _archive(f"{_TSINGHUA}0d41e7da4558408ea5aa/?dl=1", "Clipart.tgz"),
        _archive(f"{_TSINGHUA}76186deacd7c4fa0a679/?dl=1", "Product.tgz"),
        _archive(f"{_TSINGHUA}dee961894cc64b1da1d7/?dl=1", "Real_World.tgz"),
    ],
    # Image lists: Transfer-Learning-Library, tllib/vision/datasets/visda2017.py. Images: the
    # challenge's own server, VisionLearningGroup/taskcv-2017-public, classification/README.md.
    "visda2017": [
        _archive(f"{_TSINGHUA}c107de37b8094c5398dc/?dl=1", "image_list.zip"),
        _archive(f"{_VISDA}train.tar", "train.tar"),
        _archive(f"{_VISDA}validation.tar", "validation.tar"),
    ],
    # Image lists: Transfer-Learning-Library, tllib/vision/datasets/domainnet.py. Images: the
    # cleaned version on http://ai.bu.edu/M3SDA/, as listed in the same file.
    "domainnet": [
        _archive(f"{_TSINGHUA}90ecb35bbd374e5e8c41/?dl=1", "image_list.zip"),
        _archive(f"{_DOMAINNET}groundtruth/clipart.zip", "clipart.zip"),
        _archive(f"{_DOMAINNET}infograph.zip", "infograph.zip"),
        _archive(f"{_DOMAINNET}groundtruth/painting.zip", "painting.zip"),
        _archive(f"{_DOMAINNET}quickdraw.zip", "quickdraw.zip"),
        _archive(f"{_DOMAINNET}real.zip", "real.zip"),
        _archive(f"{_DOMAINNET}sketch.zip", "sketch.zip"),
    ],
}
