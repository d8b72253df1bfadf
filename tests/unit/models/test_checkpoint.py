"""The torch-free checkpoint reader: tensors from storages, modules as records, nothing else.

The pickles are written opcode by opcode here (no torch on this machine), in
the layout ``torch.save`` uses: ``<prefix>/data.pkl`` plus one file per
storage under ``<prefix>/data/``.
"""

from __future__ import annotations

import re
import struct
import zipfile
from pathlib import Path

import numpy as np
import pytest

from redactd.models import checkpoint
from redactd.models.checkpoint import CheckpointError, Record

PROTO = b"\x80\x02"
MARK, TUPLE, REDUCE, BINPERSID, STOP = b"(", b"t", b"R", b"Q", b"."
EMPTY_DICT, EMPTY_TUPLE, SETITEM, SETITEMS, BUILD, NEWOBJ = b"}", b")", b"s", b"u", b"b", b"\x81"
NEWFALSE = b"\x89"


def _g(module: str, name: str) -> bytes:
    return b"c" + module.encode() + b"\n" + name.encode() + b"\n"


def _s(text: str) -> bytes:
    raw = text.encode()
    return b"X" + struct.pack("<I", len(raw)) + raw


def _i(n: int) -> bytes:
    return b"J" + struct.pack("<i", n)


def _ints(*ns: int) -> bytes:
    return MARK + b"".join(_i(n) for n in ns) + TUPLE


def _tensor(storage: str, key: str, numel: int, offset: int, size: tuple, stride: tuple) -> bytes:
    persid = MARK + _s("storage") + _g("torch", storage) + _s(key) + _s("cpu") + _i(numel) + TUPLE
    return (
        _g("torch._utils", "_rebuild_tensor_v2")
        + MARK
        + persid
        + BINPERSID
        + _i(offset)
        + _ints(*size)
        + _ints(*stride)
        + NEWFALSE
        + _g("collections", "OrderedDict")
        + EMPTY_TUPLE
        + REDUCE
        + TUPLE
        + REDUCE
    )


def _write(path: Path, pkl: bytes, storages: dict[str, bytes], prefix: str = "archive") -> Path:
    with zipfile.ZipFile(path, "w") as zf:
        zf.writestr(f"{prefix}/data.pkl", pkl)
        zf.writestr(f"{prefix}/byteorder", "little")
        for key, raw in storages.items():
            zf.writestr(f"{prefix}/data/{key}", raw)
    return path


def _conv_module(weight: bytes) -> bytes:
    """A ``Conv2d`` record (NEWOBJ + BUILD, as nn.Module pickles) with a ``weight`` parameter."""
    params = (
        _g("collections", "OrderedDict")
        + EMPTY_TUPLE
        + REDUCE
        + _s("weight")
        + _g("torch._utils", "_rebuild_parameter")
        + MARK
        + weight
        + NEWFALSE
        + _g("collections", "OrderedDict")
        + EMPTY_TUPLE
        + REDUCE
        + TUPLE
        + REDUCE
        + SETITEM
    )
    state = EMPTY_DICT + MARK + _s("_parameters") + params + _s("stride") + _ints(2, 2) + SETITEMS
    return _g("torch.nn.modules.conv", "Conv2d") + EMPTY_TUPLE + NEWOBJ + state + BUILD


def test_tensors_are_rebuilt_with_dtype_size_stride_and_offset(tmp_path: Path) -> None:
    half = np.arange(8, dtype="<f2")
    longs = np.array([7, 8, 9, 10], dtype="<i8")
    pkl = (
        PROTO
        + EMPTY_DICT
        + MARK
        # a transposed 2x3 view starting at element 1 of an 8-element half storage
        + _s("t")
        + _tensor("HalfStorage", "0", 8, 1, (2, 3), (1, 2))
        + _s("n")
        + _tensor("LongStorage", "1", 4, 0, (4,), (1,))
        + _s("m")
        + _conv_module(_tensor("HalfStorage", "0", 8, 0, (2, 2), (2, 1)))
        + SETITEMS
        + STOP
    )
    path = _write(tmp_path / "ok.pt", pkl, {"0": half.tobytes(), "1": longs.tobytes()})
    ck = checkpoint.load(path)
    t = ck["t"]
    assert t.dtype == np.float16
    np.testing.assert_array_equal(t, np.array([[1, 3, 5], [2, 4, 6]], dtype=np.float16))
    assert ck["n"].dtype == np.int64 and ck["n"].tolist() == [7, 8, 9, 10]
    m = ck["m"]
    assert isinstance(m, Record) and m.name == "Conv2d" and m.get("stride") == (2, 2)
    np.testing.assert_array_equal(m.tensor("weight"), [[0, 1], [2, 3]])


@pytest.mark.parametrize(
    ("module", "name"),
    [("os", "system"), ("builtins", "eval"), ("subprocess", "Popen"), ("torch", "load")],
)
def test_a_class_outside_the_allow_list_is_refused_and_never_called(
    tmp_path: Path, module: str, name: str
) -> None:
    marker = tmp_path / "pwned"
    pkl = PROTO + _g(module, name) + MARK + _s(f"touch {marker}") + TUPLE + REDUCE + STOP
    path = _write(tmp_path / "hostile.pt", pkl, {})
    with pytest.raises(CheckpointError, match=re.escape(f"not allowed: {module}.{name}")):
        checkpoint.load(path)
    assert not marker.exists()


def test_a_hostile_global_inside_a_module_state_is_refused(tmp_path: Path) -> None:
    marker = tmp_path / "pwned"
    evil = _g("posix", "system") + MARK + _s(f"touch {marker}") + TUPLE + REDUCE
    state = EMPTY_DICT + _s("training") + evil + SETITEM
    pkl = PROTO + _g("ultralytics.nn.modules", "Conv") + EMPTY_TUPLE + NEWOBJ + state + BUILD + STOP
    with pytest.raises(CheckpointError, match=r"posix\.system"):
        checkpoint.load(_write(tmp_path / "nested.pt", pkl, {}))
    assert not marker.exists()


def test_a_tensor_reaching_past_its_storage_is_refused(tmp_path: Path) -> None:
    pkl = PROTO + _tensor("FloatStorage", "0", 4, 2, (3,), (1,)) + STOP
    path = _write(tmp_path / "oob.pt", pkl, {"0": np.zeros(4, "<f4").tobytes()})
    with pytest.raises(CheckpointError, match="outside its storage"):
        checkpoint.load(path)


def test_a_storage_of_the_wrong_size_or_missing_is_refused(tmp_path: Path) -> None:
    pkl = PROTO + _tensor("FloatStorage", "0", 4, 0, (4,), (1,)) + STOP
    short = _write(tmp_path / "short.pt", pkl, {"0": b"\0" * 12})
    with pytest.raises(CheckpointError, match="wrong size"):
        checkpoint.load(short)
    missing = _write(tmp_path / "missing.pt", pkl, {})
    with pytest.raises(CheckpointError, match="missing"):
        checkpoint.load(missing)


def test_not_a_checkpoint_is_a_short_error(tmp_path: Path) -> None:
    (tmp_path / "x.pt").write_bytes(b"not a zip")
    with pytest.raises(CheckpointError, match="unreadable"):
        checkpoint.load(tmp_path / "x.pt")
    with zipfile.ZipFile(tmp_path / "y.pt", "w") as zf:
        zf.writestr("other.txt", "x")
    with pytest.raises(CheckpointError, match="not a torch zip"):
        checkpoint.load(tmp_path / "y.pt")
