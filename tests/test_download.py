"""Downloads over a real socket from a server on 127.0.0.1, and extraction of real archives."""

from __future__ import annotations

import hashlib
import io
import re
import shutil
import socket
import tarfile
import zipfile
from pathlib import Path

import pytest

from dalib.data.download import ARCHIVES, TAR_SUFFIXES, download, extract, fetch
from dalib.errors import DalibError
from tests.local_http import Files

DATA = bytes(range(256)) * 1200  # 300 KiB, so that a cut leaves a real partial file
SHA = hashlib.sha256(DATA).hexdigest()
CUT = 100_000
MANUAL = "download it yourself and place it at"


def part_of(path: Path) -> Path:
    return path.with_name(path.name + ".part")


def get(server: Files, dest: Path, sha256: str | None = SHA) -> Path:
    return download(f"{server.url}/data.bin", dest, sha256, timeout=5, progress=False)


def test_download_verifies_and_takes_the_final_name(server, tmp_path):
    server.files["/data.bin"] = DATA
    dest = tmp_path / "new" / "data.bin"
    assert get(server, dest) == dest
    assert dest.read_bytes() == DATA
    assert not part_of(dest).exists()


def test_wrong_checksum_leaves_no_file(server, tmp_path):
    server.files["/data.bin"] = DATA
    dest = tmp_path / "data.bin"
    with pytest.raises(DalibError) as error:
        get(server, dest, sha256="ab" * 32)
    assert all(word in str(error.value) for word in ("data.bin", "ab" * 32, SHA, "run again"))
    assert not dest.exists()
    assert not part_of(dest).exists()


def test_without_checksum_the_computed_one_is_reported(server, tmp_path):
    server.files["/data.bin"] = DATA
    with pytest.warns(UserWarning, match=SHA):
        get(server, tmp_path / "data.bin", sha256=None)


def test_an_interrupted_download_resumes_where_it_stopped(server, tmp_path):
    server.files["/data.bin"] = DATA
    server.drop_after["/data.bin"] = CUT
    dest = tmp_path / "data.bin"
    with pytest.raises(DalibError, match=f"resume from the {CUT} bytes in data.bin.part"):
        get(server, dest)
    assert not dest.exists()
    assert part_of(dest).read_bytes() == DATA[:CUT]

    get(server, dest)
    assert server.requests[-1] == ("/data.bin", f"bytes={CUT}-")
    assert dest.read_bytes() == DATA
    assert not part_of(dest).exists()


def test_a_server_that_ignores_range_gives_the_whole_file(server, tmp_path):
    server.files["/data.bin"] = DATA
    server.ignore_range = True
    dest = tmp_path / "data.bin"
    part_of(dest).write_bytes(b"x" * CUT)
    get(server, dest)
    assert server.requests == [("/data.bin", f"bytes={CUT}-")]
    assert dest.read_bytes() == DATA


def test_a_whole_part_file_is_kept_on_416(server, tmp_path):
    server.files["/data.bin"] = DATA
    dest = tmp_path / "data.bin"
    part_of(dest).write_bytes(DATA)
    get(server, dest)
    assert server.requests == [("/data.bin", f"bytes={len(DATA)}-")]
    assert dest.read_bytes() == DATA


def test_a_part_file_longer_than_the_file_starts_over_on_416(server, tmp_path):
    server.files["/data.bin"] = DATA
    dest = tmp_path / "data.bin"
    part_of(dest).write_bytes(DATA + b"junk")
    get(server, dest)
    assert server.requests == [("/data.bin", f"bytes={len(DATA) + 4}-"), ("/data.bin", None)]
    assert dest.read_bytes() == DATA


def closed_port() -> int:
    """A port on 127.0.0.1 that nothing listens on."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def test_an_unreachable_host_says_how_to_do_without(tmp_path):
    dest = tmp_path / "data.bin"
    url = f"http://127.0.0.1:{closed_port()}/data.bin"
    with pytest.raises(DalibError) as error:
        download(url, dest, SHA, timeout=5, progress=False)
    message = str(error.value)
    assert "\n" not in message
    assert f"could not download {url}" in message
    assert f"{MANUAL} {dest}, or set $DALIB_DATA" in message
    assert not dest.exists()


def test_a_404_says_how_to_do_without(server, tmp_path):
    dest = tmp_path / "data.bin"
    with pytest.raises(DalibError) as error:
        get(server, dest)
    message = str(error.value)
    assert "\n" not in message
    assert "HTTP 404" in message
    assert f"{MANUAL} {dest}" in message
    assert not dest.exists()


GOOD = {"bench/a.txt": b"a", "bench/sub/b.txt": b"b"}
COMPRESSION = {".tar": "", ".tar.gz": "gz", ".tgz": "gz", ".tar.bz2": "bz2", ".tbz2": "bz2"}
COMPRESSION |= {".tar.xz": "xz", ".txz": "xz"}


def write_zip(path: Path, members: dict[str, bytes]) -> Path:
    with zipfile.ZipFile(path, "w") as zipped:
        for name, data in members.items():
            zipped.writestr(name, data)
    return path


def tar_member(name: str, data: bytes = b"", kind: bytes = tarfile.REGTYPE, link: str = ""):
    info = tarfile.TarInfo(name)
    info.type, info.linkname, info.size = kind, link, len(data)
    return info, io.BytesIO(data)


def write_tar(path: Path, members: list, compression: str = "gz") -> Path:
    with tarfile.open(path, f"w:{compression}") as tar:
        for info, data in members:
            tar.addfile(info, data)
    return path


@pytest.mark.parametrize("suffix", [".zip", *TAR_SUFFIXES])
def test_extract_unpacks_and_leaves_no_staging_folder(tmp_path, suffix):
    archive = tmp_path / f"bench{suffix}"
    if suffix == ".zip":
        write_zip(archive, GOOD)
    else:
        members = [tar_member(name, data) for name, data in GOOD.items()]
        link = tar_member("bench/link", kind=tarfile.SYMTYPE, link="sub/b.txt")
        write_tar(archive, [*members, link], COMPRESSION[suffix])
    into = tmp_path / "into"
    extract(archive, into)
    assert [path.name for path in into.iterdir()] == ["bench"]
    for name, data in GOOD.items():
        assert (into / name).read_bytes() == data
    if suffix != ".zip":
        assert (into / "bench" / "link").read_bytes() == b"b"


SYM, HARD, DEVICE = tarfile.SYMTYPE, tarfile.LNKTYPE, tarfile.CHRTYPE
# id: (archive, [(member, tar type or None for a file, link target)], the member to refuse)
UNSAFE = {
    "zip with ..": (".zip", [("../../evil", None, "")], "../../evil"),
    "zip with an absolute path": (".zip", [("{outside}/evil", None, "")], "{outside}/evil"),
    "tar with ..": (".tar.gz", [("../../evil", None, "")], "../../evil"),
    "tar with an absolute path": (".tar.gz", [("{outside}/evil", None, "")], "{outside}/evil"),
    "symlink to an absolute path outside": (
        ".tar.gz",
        [("bench/out", SYM, "{outside}"), ("bench/out/evil", None, "")],
        "bench/out",
    ),
    "symlink climbing out": (".tar.gz", [("bench/up", SYM, "../../..")], "bench/up"),
    "symlink climbing out through another symlink": (
        ".tar.gz",
        [("here", SYM, "."), ("here/up", SYM, "../evil")],
        "here/up",
    ),
    "hard link outside": (".tar.gz", [("bench/hard", HARD, "../../evil")], "bench/hard"),
    "device file": (".tar.gz", [("bench/tty", DEVICE, "")], "bench/tty"),
}


def everything_under(path: Path) -> list[Path]:
    return sorted(path.rglob("*"))


@pytest.mark.parametrize("case", UNSAFE.values(), ids=UNSAFE.keys())
def test_extract_refuses_members_that_leave_the_folder(tmp_path, case):
    suffix, members, bad = case
    outside = tmp_path / "outside"
    outside.mkdir()
    into = tmp_path / "data" / "into"
    into.mkdir(parents=True)
    members = [
        (name.format(outside=outside), kind, link.format(outside=outside))
        for name, kind, link in members
    ]
    archive = tmp_path / f"bad{suffix}"
    if suffix == ".zip":
        write_zip(archive, {"bench/ok.txt": b"ok"} | {name: b"x" for name, _, _ in members})
    else:
        tar = [
            tar_member(name, b"x") if kind is None else tar_member(name, kind=kind, link=link)
            for name, kind, link in members
        ]
        write_tar(archive, [tar_member("bench/ok.txt", b"ok"), *tar])
    before = everything_under(tmp_path)

    with pytest.raises(DalibError) as error:
        extract(archive, into)
    assert repr(bad.format(outside=outside)) in str(error.value)
    assert "\n" not in str(error.value)
    assert everything_under(tmp_path) == before  # nothing outside, nothing half-extracted inside


def test_extract_refuses_a_damaged_archive(tmp_path):
    archive = tmp_path / "bench.tar.gz"
    archive.write_bytes(b"not an archive")
    with pytest.raises(DalibError, match=r"could not extract .*delete it and run again"):
        extract(archive, tmp_path / "into")
    assert list((tmp_path / "into").iterdir()) == []


def test_extract_does_not_replace_what_is_there(tmp_path):
    archive = write_zip(tmp_path / "bench.zip", GOOD)
    into = tmp_path / "into"
    (into / "bench").mkdir(parents=True)
    with pytest.raises(DalibError, match="bench already there"):
        extract(archive, into)
    assert everything_under(into) == [into / "bench"]


def test_fetch_downloads_once_and_extracts_once(server, tmp_path):
    blob = tmp_path / "blob.tar.gz"
    write_tar(blob, [tar_member(name, data) for name, data in GOOD.items()])
    server.files["/bench.tar.gz"] = blob.read_bytes()
    sha = hashlib.sha256(blob.read_bytes()).hexdigest()
    root = tmp_path / "data"

    def fetch_bench() -> Path:
        return fetch(f"{server.url}/bench.tar.gz", sha, root, "bench.tar.gz", extracted="bench")

    assert fetch_bench() == root / "bench"
    assert fetch_bench() == root / "bench"
    assert (root / "bench" / "sub" / "b.txt").read_bytes() == b"b"
    assert len(server.requests) == 1

    shutil.rmtree(root / "bench")  # the verified archive is still there: unpacked, not fetched
    assert (fetch_bench() / "a.txt").read_bytes() == b"a"
    assert len(server.requests) == 1


def test_the_catalogue_lists_unpackable_archives():
    assert set(ARCHIVES) == {"office31", "officehome", "visda2017", "domainnet"}
    for archives in ARCHIVES.values():
        assert len({archive.extracts_to for archive in archives}) == len(archives)
        for archive in archives:
            assert archive.url.startswith(("http://", "https://"))
            assert archive.filename.lower().endswith((".zip", *TAR_SUFFIXES))
            assert archive.sha256 is None or re.fullmatch(r"[0-9a-f]{64}", archive.sha256)
