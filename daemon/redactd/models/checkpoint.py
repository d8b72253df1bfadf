"""Read a PyTorch checkpoint (``torch.save`` zip) into numpy arrays, without torch.

A ``.pt`` file is a zip holding ``<prefix>/data.pkl`` (a pickle of the
object tree) and one file per tensor storage (``<prefix>/data/<key>``).
Unpickling normally imports and calls whatever the pickle names, which is
how a hostile checkpoint runs code. Here the ``Unpickler`` resolves names
only from an allow-list:

* torch's tensor rebuild functions and storage types become small functions
  that build a numpy array from the storage bytes (dtype from the storage
  type, size / stride / offset honoured: ``numpy.lib.stride_tricks``);
* module classes (``torch.nn.*``, ``ultralytics.nn.*``) and the training
  config containers (``omegaconf``) become ``Record``: an object that only
  keeps what ``__setstate__`` / ``__dict__`` gives it (``_modules``,
  ``_parameters``, ``_buffers``, plain attributes) and never runs code;
* a few harmless builtins (``dict``, ``set``, ``OrderedDict``, ...).

Any other global is refused with ``CheckpointError`` before anything is
built from it. ``load`` never imports torch or the checkpoint's own package.
"""

from __future__ import annotations

import collections
import functools
import pickle
import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any, ClassVar

import numpy as np

from redactd.core.errors import ModelError


class CheckpointError(ModelError):
    """The checkpoint is unreadable, or names a class outside the allow-list."""


#: torch storage type -> numpy dtype (little-endian, as ``byteorder`` must say)
STORAGE_DTYPES: dict[str, np.dtype[Any]] = {
    "HalfStorage": np.dtype("<f2"),
    "FloatStorage": np.dtype("<f4"),
    "DoubleStorage": np.dtype("<f8"),
    "LongStorage": np.dtype("<i8"),
    "IntStorage": np.dtype("<i4"),
    "ShortStorage": np.dtype("<i2"),
    "CharStorage": np.dtype("i1"),
    "ByteStorage": np.dtype("u1"),
    "BoolStorage": np.dtype("?"),
}

#: Module prefixes whose classes load as ``Record`` (state only, no code).
RECORD_MODULES: tuple[str, ...] = (
    "torch.nn.modules.",
    "ultralytics.nn.modules",
    "ultralytics.nn.tasks",
    "omegaconf.",
)

_MAX_PICKLE = 16 << 20  # the object tree of a detection checkpoint is ~120 KB
_MAX_STORAGE = 512 << 20


class Record:
    """A stand-in for an allowed class: its qualified name and the state pickled for it.

    Each allowed class name gets its own subclass (``_record_class``) so the
    pickle's NEWOBJ (``cls.__new__(cls)``) and REDUCE (``cls(*args)``) both
    work; neither runs anything but storing arguments and state.
    """

    cls: ClassVar[str] = ""
    args: tuple[Any, ...]
    state: dict[str, Any]

    def __new__(cls, *args: Any, **_kw: Any) -> Record:
        self = super().__new__(cls)
        self.args = args
        self.state = {}
        return self

    def __init__(self, *args: Any, **_kw: Any) -> None:
        pass

    def __setstate__(self, state: Any) -> None:
        # nn.Module pickles its __dict__; some classes pickle (dict, slots)
        if isinstance(state, tuple) and len(state) == 2 and isinstance(state[1], dict):
            state = {**(state[0] or {}), **state[1]}
        self.state = dict(state) if isinstance(state, dict) else {"value": state}

    @property
    def name(self) -> str:
        return self.cls.rsplit(".", 1)[-1]

    @property
    def modules(self) -> dict[str, Record]:
        m = self.state.get("_modules") or {}
        return {k: v for k, v in m.items() if isinstance(v, Record)}

    def tensor(self, key: str) -> np.ndarray | None:
        """A parameter or buffer (``weight``, ``running_mean``...), or None."""
        for table in ("_parameters", "_buffers"):
            t = (self.state.get(table) or {}).get(key)
            if t is not None:
                return np.asarray(t)
        return None

    def get(self, key: str, default: Any = None) -> Any:
        return self.state.get(key, default)

    def __repr__(self) -> str:
        return f"Record({self.cls})"


@functools.cache
def _record_class(qualname: str) -> type[Record]:
    return type(qualname.rsplit(".", 1)[-1], (Record,), {"cls": qualname})


@dataclass(frozen=True)
class _StorageType:
    name: str

    @property
    def dtype(self) -> np.dtype[Any]:
        return STORAGE_DTYPES[self.name]


def _rebuild_tensor(
    storage: np.ndarray,
    offset: int,
    size: tuple[int, ...],
    stride: tuple[int, ...],
    *_rest: Any,
) -> np.ndarray:
    size, stride = tuple(int(s) for s in size), tuple(int(s) for s in stride)
    if not size:
        return np.array(storage[int(offset)])
    need = int(offset) + 1 + sum((n - 1) * s for n, s in zip(size, stride, strict=False) if n > 0)
    if any(n == 0 for n in size):
        return np.zeros(size, storage.dtype)
    if offset < 0 or need > storage.size or any(s < 0 for s in stride):
        raise CheckpointError("checkpoint: a tensor lies outside its storage")
    item = storage.dtype.itemsize
    view = np.lib.stride_tricks.as_strided(
        storage[int(offset):],
        shape=size,
        strides=tuple(s * item for s in stride),
        writeable=False,
    )
    return np.ascontiguousarray(view)


def _rebuild_parameter(data: np.ndarray, *_rest: Any) -> np.ndarray:
    return data


def _size(*args: Any) -> tuple[int, ...]:
    return tuple(args[0]) if len(args) == 1 else tuple(args)


_FUNCTIONS: dict[tuple[str, str], Any] = {
    ("torch._utils", "_rebuild_tensor_v2"): _rebuild_tensor,
    ("torch._utils", "_rebuild_parameter"): _rebuild_parameter,
    ("torch", "Size"): _size,
    ("collections", "OrderedDict"): collections.OrderedDict,
    ("collections", "defaultdict"): collections.defaultdict,
    ("builtins", "dict"): dict,
    ("builtins", "set"): set,
    ("builtins", "list"): list,
    ("builtins", "tuple"): tuple,
    ("__builtin__", "dict"): dict,
    ("__builtin__", "set"): set,
    ("typing", "Any"): object,  # omegaconf records type hints; never called
}


class _Unpickler(pickle.Unpickler):
    def __init__(self, f: IO[bytes], zf: zipfile.ZipFile, prefix: str) -> None:
        super().__init__(f)
        self._zf = zf
        self._prefix = prefix
        self._storages: dict[str, np.ndarray] = {}

    def find_class(self, module: str, name: str) -> Any:
        fn = _FUNCTIONS.get((module, name))
        if fn is not None:
            return fn
        if module == "torch" and name in STORAGE_DTYPES:
            return _StorageType(name)
        if module.startswith(RECORD_MODULES) and name.isidentifier():
            return _record_class(f"{module}.{name}")
        raise CheckpointError(f"checkpoint names a class that is not allowed: {module}.{name}")

    def persistent_load(self, pid: Any) -> Any:
        # ("storage", storage type, key, location, numel)
        if not (isinstance(pid, tuple) and len(pid) >= 5 and pid[0] == "storage"):
            raise CheckpointError("checkpoint: unknown persistent reference")
        stype, key, numel = pid[1], str(pid[2]), int(pid[4])
        if not isinstance(stype, _StorageType) or not key.isalnum():
            raise CheckpointError("checkpoint: bad storage reference")
        if key not in self._storages:
            try:
                info = self._zf.getinfo(f"{self._prefix}/data/{key}")
            except KeyError:
                raise CheckpointError("checkpoint: a tensor storage is missing") from None
            if info.file_size > _MAX_STORAGE or info.file_size != numel * stype.dtype.itemsize:
                raise CheckpointError("checkpoint: a tensor storage has the wrong size")
            raw = self._zf.read(info)
            self._storages[key] = np.frombuffer(raw, dtype=stype.dtype)
        return self._storages[key]


def load(path: Path) -> Any:
    """The unpickled object tree of checkpoint ``path`` (tensors as numpy arrays)."""
    try:
        with zipfile.ZipFile(path) as zf:
            pkls = [n for n in zf.namelist() if n.endswith("/data.pkl") and n.count("/") == 1]
            if len(pkls) != 1:
                raise CheckpointError("checkpoint: not a torch zip checkpoint")
            prefix = pkls[0].split("/", 1)[0]
            order = f"{prefix}/byteorder"
            if order in zf.namelist() and zf.read(order).strip() != b"little":
                raise CheckpointError("checkpoint: big-endian tensors are not supported")
            info = zf.getinfo(pkls[0])
            if info.file_size > _MAX_PICKLE:
                raise CheckpointError("checkpoint: the object tree is too large")
            with zf.open(info) as f:
                return _Unpickler(f, zf, prefix).load()
    except CheckpointError:
        raise
    except (OSError, zipfile.BadZipFile, pickle.UnpicklingError, EOFError, ValueError,
            TypeError, AttributeError, IndexError, KeyError) as e:
        raise CheckpointError(f"checkpoint is unreadable ({type(e).__name__})") from e
