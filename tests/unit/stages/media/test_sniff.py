"""Type from content, never the name; refuse what is not a regular file."""

from __future__ import annotations

import io
import os
import shutil
import tempfile
from collections.abc import Iterator
from fractions import Fraction
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from redactd.core.errors import PermanentInputError
from redactd.stages.media.sniff import MediaType, sniff, sniff_bytes


def _image_bytes(pil_format: str) -> bytes:
    rng = np.random.default_rng(1)
    im = Image.fromarray(rng.integers(0, 255, (24, 32, 3), dtype=np.uint8), "RGB")
    buf = io.BytesIO()
    im.save(buf, format=pil_format)
    return buf.getvalue()


@pytest.mark.parametrize(
    ("pil_format", "expected"),
    [("JPEG", "jpeg"), ("PNG", "png"), ("TIFF", "tiff"), ("WEBP", "webp"), ("BMP", "bmp")],
)
def test_images_are_recognised_by_content_whatever_their_name(
    tmp_path: Path, pil_format: str, expected: str
) -> None:
    p = tmp_path / "misleading.mp4"
    p.write_bytes(_image_bytes(pil_format))
    assert sniff(p) == MediaType("image", expected)


def _video(path: Path, container: str, codec: str, frames: int = 4) -> Path:
    """A real tiny video written by PyAV (the test may use av; media/ may not)."""
    import av

    rng = np.random.default_rng(2)
    with av.open(str(path), "w", format=container) as out:
        stream = out.add_stream(codec, rate=10)
        stream.width, stream.height, stream.pix_fmt = 64, 48, "yuv420p"
        if codec == "libx265":
            stream.options = {"x265-params": "log-level=none"}
        stream.time_base = Fraction(1, 10)
        for i in range(frames):
            arr = rng.integers(0, 255, (48, 64, 3), dtype=np.uint8)
            frame = av.VideoFrame.from_ndarray(arr, format="rgb24")
            frame.pts = i
            for pkt in stream.encode(frame):
                out.mux(pkt)
        for pkt in stream.encode():
            out.mux(pkt)
    return path


@pytest.mark.parametrize(
    ("container", "codec", "expected"),
    [
        ("mp4", "libx264", "mp4"),
        ("mov", "libx264", "mov"),
        ("matroska", "libx264", "mkv"),
        ("webm", "libvpx", "webm"),
        ("avi", "mpeg4", "avi"),
        ("mpegts", "libx264", "mpegts"),
        ("h264", "libx264", "h264"),
        ("hevc", "libx265", "hevc"),
        ("flv", "flv", "flv"),
        ("mpeg", "mpeg2video", "mpegps"),
    ],
)
def test_real_videos_are_recognised_by_content(
    tmp_path: Path, container: str, codec: str, expected: str
) -> None:
    p = _video(tmp_path / "holiday.jpg", container, codec)
    assert sniff(p) == MediaType("video", expected)


def test_shared_sample_video_is_mp4(shared: Path) -> None:
    for p in sorted((shared / "eval" / "video").glob("*.mp4")):
        assert sniff(p) == MediaType("video", "mp4")


def test_crafted_container_headers() -> None:
    """Containers PyAV cannot write here, from their documented magic bytes."""
    assert sniff_bytes(b"DHAV\xfd\x00\x00\x00" + bytes(64)) == MediaType("video", "dav")
    assert sniff_bytes(b"\x00\x00\x00\x08wide" + bytes(32)) == MediaType("video", "mov")
    m2ts = b"".join(b"\x00\x00\x00\x00\x47" + bytes(187) for _ in range(8))
    assert sniff_bytes(m2ts) == MediaType("video", "mpegts")


@pytest.mark.parametrize(
    "brand", [b"heic", b"mif1", b"avif", b"M4A "], ids=["heic", "mif1", "avif", "m4a"]
)
def test_iso_bmff_stills_and_audio_are_not_videos(brand: bytes) -> None:
    head = b"\x00\x00\x00\x18ftyp" + brand + b"\x00\x00\x00\x00" + brand + bytes(64)
    assert sniff_bytes(head) is None


def test_empty_file(tmp_path: Path) -> None:
    p = tmp_path / "empty.jpg"
    p.write_bytes(b"")
    with pytest.raises(PermanentInputError) as ei:
        sniff(p)
    assert ei.value.reason == "empty_file"


@pytest.mark.parametrize(
    ("name", "content"),
    [
        ("random.jpg", np.random.default_rng(3).bytes(5000)),
        ("notes.png", b"Dear diary,\nthis is plain text, not a picture.\n" * 20),
        ("tiny.bmp", b"BM"),  # two bytes of chance, no DIB header
        ("start.h264", b"\x00\x00\x01"),  # a start code and nothing else
    ],
)
def test_unknown_content_is_unsupported(tmp_path: Path, name: str, content: bytes) -> None:
    p = tmp_path / name
    p.write_bytes(content)
    with pytest.raises(PermanentInputError) as ei:
        sniff(p)
    assert ei.value.reason == "unsupported_type"


def test_symlink_to_a_valid_image_is_refused(tmp_path: Path) -> None:
    real = tmp_path / "real.jpg"
    real.write_bytes(_image_bytes("JPEG"))
    link = tmp_path / "link.jpg"
    link.symlink_to(real)
    with pytest.raises(PermanentInputError) as ei:
        sniff(link)
    assert ei.value.reason == "not_regular_file"


def test_directory_named_like_an_image_is_refused(tmp_path: Path) -> None:
    d = tmp_path / "photo.jpg"
    d.mkdir()
    with pytest.raises(PermanentInputError) as ei:
        sniff(d)
    assert ei.value.reason == "not_regular_file"


def test_fifo_is_refused_without_blocking(tmp_path: Path) -> None:
    fifo = tmp_path / "pipe.jpg"
    os.mkfifo(fifo)
    # No writer: a blocking open would hang here (pytest-timeout would fail it).
    with pytest.raises(PermanentInputError) as ei:
        sniff(fifo)
    assert ei.value.reason == "not_regular_file"


def test_missing_file_is_unreadable(tmp_path: Path) -> None:
    with pytest.raises(PermanentInputError) as ei:
        sniff(tmp_path / "gone.jpg")
    assert ei.value.reason == "unreadable"


@pytest.fixture
def world_dir() -> Iterator[Path]:
    """A folder another user can enter (pytest's tmp_path is 0700)."""
    d = Path(tempfile.mkdtemp(prefix="redactd-sniff-"))
    d.chmod(0o755)
    try:
        yield d
    finally:
        shutil.rmtree(d, ignore_errors=True)


def test_unreadable_file(world_dir: Path) -> None:
    p = world_dir / "locked.jpg"
    p.write_bytes(_image_bytes("JPEG"))
    p.chmod(0o000)
    if os.geteuid() != 0:
        with pytest.raises(PermanentInputError) as ei:
            sniff(p)
        assert ei.value.reason == "unreadable"
        return
    # root reads anything (CAP_DAC_OVERRIDE): check in a forked child that
    # has become an unprivileged user, through the same code.
    r, w = os.pipe()
    pid = os.fork()
    if pid == 0:  # pragma: no cover - runs in the child
        try:
            os.close(r)
            os.setgroups([])
            os.setgid(65534)
            os.setuid(65534)
            try:
                sniff(p)
                out = b"no error"
            except PermanentInputError as e:
                out = e.reason.encode()
            except BaseException as e:
                out = type(e).__name__.encode()
            os.write(w, out)
        finally:
            os._exit(0)
    os.close(w)
    with os.fdopen(r, "rb") as f:
        answer = f.read().decode()
    os.waitpid(pid, 0)
    assert answer == "unreadable"
