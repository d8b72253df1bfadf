"""The OpenVINO boundary: the only module of redactd that imports ``openvino``.

``Runtime`` owns one ``openvino.Core`` configured from ``[runtime]`` (device,
compiled-model cache, performance hint, precision, threads) and compiles
models into ``Network`` objects. Adapters (``centerface``, ``yunet``,
``omz_ssd``) only see numpy arrays in and out.

Errors are wrapped where they cross this boundary:

* at load time every OpenVINO failure becomes ``redactd.core.errors.ModelError``
  (the service refuses to start on a model it cannot run);
* at inference time it becomes ``InferenceError`` (a ``RuntimeError``), which
  the pipeline treats as a detector failure on that input: fail closed.

Input sizes. CenterFace and YuNet run at the size of the image they get
(rounded to a multiple of 32), so a model is used at many sizes: every photo
has its own, while video frames and tiles repeat one size. A ``"dynamic"``
network compiles once with ``[1, C, -1, -1]`` and serves any size at once;
sizes seen ``static_after`` (64) times get their own static compilation
(5-10 % faster per inference at 512x384, 10-20 % at 1280x736 on the CPU
plugin, see ``benchmarks/runtime_shapes.py``), made on a background thread
while the dynamic one goes on serving: a compilation takes 150-400 ms of
CPU, which a video frame or a photo batch should not wait for. It pays only
for a size used a few hundred times more (the frames of a video, a camera's
photos), hence the high threshold: with 8, a batch of 100 photos compiled
four sizes it barely used again and ran 15 % slower.
Those live in an LRU bounded by a pixel budget (a compiled model holds its
activation buffers: hundreds of MB at 2 Mpx) and bypass the on-disk cache
(one blob of ~7 MB per size would grow the cache without bound when every
photo has its own size); only the one main compilation per model is cached.
"""

from __future__ import annotations

import contextlib
import threading
from collections import OrderedDict
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import numpy as np
import openvino as ov

from redactd.core.config import RuntimeConfig
from redactd.core.errors import ModelError

ShapePolicy = Literal["fixed", "dynamic"]

_PRECISIONS = {"f32": "f32", "bf16": "bf16", "f16": "f16"}
#: Input shapes whose prepared state a dynamic CPU network keeps (see ``Runtime.compile_model``).
CPU_SHAPE_CACHE = 32
#: Calls after which the use counts of input sizes halve (see ``Network._pick``).
_AGING = 256


class InferenceError(RuntimeError):
    """Inference failed at run time; callers MUST treat it as a detector failure.

    The message names the model and the exception type only (never input data).
    """


@dataclass(frozen=True)
class TensorSpec:
    """What an adapter expects of one model input or output.

    ``names``: the tensor must carry one of these names (OpenVINO tensors may
    have several); empty = take the tensor at the same position. ``rank``:
    the number of dimensions (-1 = do not check).
    """

    names: tuple[str, ...] = ()
    rank: int = -1


@dataclass(frozen=True)
class NetworkIO:
    """The input an adapter feeds and the outputs it reads, in this order."""

    input: TensorSpec
    outputs: tuple[TensorSpec, ...]


@dataclass(frozen=True)
class ExecutionInfo:
    """Where and how a compiled network really runs (for start logs and job records)."""

    device: str
    precision: str


def _short(e: BaseException) -> str:
    """The first informative line of an OpenVINO error (they start with source locations).

    These describe the model or the device, never an input image.
    """
    lines = [ln.strip() for ln in str(e).splitlines() if ln.strip()]
    useful = [ln for ln in lines if not ln.startswith("Exception from ")]
    first = (useful or lines or [""])[0]
    return f"{type(e).__name__}: {first[:200]}" if first else type(e).__name__


class Runtime:
    """One OpenVINO core for the process, configured from ``RuntimeConfig``."""

    def __init__(self, cfg: RuntimeConfig, concurrency: int = 1) -> None:
        self.cfg = cfg
        self.device = cfg.device
        #: The hint compilations get: ``"auto"`` resolved by how many callers
        #: should infer side by side (``registry.load`` decides: concurrent
        #: jobs of one-pass profiles). Jobs sharing one LATENCY network take
        #: turns, each inference spread over every core; THROUGHPUT streams of
        #: fewer threads run side by side, which pays for small inputs only.
        self.hint = cfg.performance_hint
        if self.hint == "auto":
            self.hint = "THROUGHPUT" if concurrency > 1 else "LATENCY"
        try:
            self._core = ov.Core()
            if cfg.cache_dir is not None:
                _make_private_dir(cfg.cache_dir)
                self._core.set_property({"CACHE_DIR": str(cfg.cache_dir)})
        except OSError as e:
            raise ModelError(f"runtime.cache_dir cannot be created: {e.strerror}") from e
        except Exception as e:
            raise ModelError(f"OpenVINO runtime cannot start: {_short(e)}") from e

    @property
    def version(self) -> str:
        return str(ov.get_version())

    def compile_config(self) -> dict[str, Any]:
        """Properties passed to every ``compile_model`` call."""
        props: dict[str, Any] = {"PERFORMANCE_HINT": self.hint}
        if self.cfg.precision != "auto":
            props["INFERENCE_PRECISION_HINT"] = _PRECISIONS[self.cfg.precision]
        if self.cfg.num_threads > 0:
            props["INFERENCE_NUM_THREADS"] = self.cfg.num_threads
        return props

    def load(
        self,
        path: Path,
        io: NetworkIO,
        *,
        name: str,
        policy: ShapePolicy = "fixed",
        static_after: int = 64,
        static_budget_px: int = 3_000_000,
    ) -> Network:
        """Read, check and compile the model at ``path``.

        The model's input and outputs are checked against ``io`` (names and
        ranks); a mismatch raises ``ModelError``, as does any OpenVINO failure.
        ``policy="dynamic"`` makes the input's last two dimensions (H, W) free;
        then sizes used ``static_after`` times (0 = never) get a static
        compilation (in the background) while their summed H*W stays within
        ``static_budget_px``.
        """
        try:
            model = self._core.read_model(str(path))
        except Exception as e:
            raise ModelError(f"model {name!r} cannot be read by OpenVINO: {_short(e)}") from e
        in_index, out_index = _check_io(model, io, name)
        if policy == "dynamic":
            port = model.inputs[in_index]
            shape = port.get_partial_shape()
            if shape.rank.is_dynamic or shape.rank.get_length() != 4:
                raise ModelError(f"model {name!r}: a dynamic input needs rank 4")
            channels = shape[1]
            try:
                model.reshape({port: ov.PartialShape([1, channels, -1, -1])})
            except Exception as e:
                raise ModelError(
                    f"model {name!r} cannot take a dynamic input size: {_short(e)}"
                ) from e
        return Network(
            self,
            model,
            name=name,
            in_index=in_index,
            out_index=out_index,
            policy=policy,
            static_after=static_after,
            static_budget_px=static_budget_px,
        )

    def compile_model(
        self, model: ov.Model, name: str, cache: bool = True, dynamic: bool = False
    ) -> ov.CompiledModel:
        props = self.compile_config()
        if not cache:
            props["CACHE_DIR"] = ""  # per-call override of the core's cache folder
        if dynamic and self.device.upper() == "CPU":
            # The CPU plugin keeps per-shape state of a dynamic model, ~5 MB per
            # distinct input size, up to 5000 sizes by default: months of photos
            # in sizes of their own would grow the daemon by gigabytes.
            props["CPU_RUNTIME_CACHE_CAPACITY"] = CPU_SHAPE_CACHE
        try:
            return self._core.compile_model(model, self.device, props)
        except Exception as e:
            raise ModelError(
                f"model {name!r} cannot be compiled for device {self.device!r}: {_short(e)}"
            ) from e


_primed: set[str] = set()
_primed_lock = threading.Lock()


def _prime_numpy_bridge(types: Sequence[Any]) -> None:
    """Make OpenVINO's Python bindings set up their numpy bridge on this thread.

    The first ``Tensor.data`` of a process initialises a function-local static
    inside ``_pyopenvino`` whose initialiser releases and re-takes the GIL
    (pybind11's ``gil_safe_call_once_and_store``). When two threads make their
    first inference at the same moment, one waits for that static while holding
    the GIL and the other waits for the GIL inside it: both hang for good
    (seen with ``process --jobs 2`` on THROUGHPUT networks; reproduced 7 times
    in 40 with two bare requests). Touching ``.data`` once per element type,
    on the loading thread before any worker infers, leaves nothing to race for.
    """
    with _primed_lock:
        for t in types:
            key = str(t)
            if key in _primed:
                continue
            with contextlib.suppress(Exception):  # a type without a numpy view
                ov.Tensor(t, ov.Shape([1])).data  # noqa: B018 - the access is the point
            _primed.add(key)


def _make_private_dir(path: Path) -> None:
    """Create the cache folder with mode 0700 (compiled blobs are the service's own state)."""
    if not path.is_dir():
        path.mkdir(parents=True, mode=0o700, exist_ok=True)
        path.chmod(0o700)  # mkdir's mode is filtered by the umask


def _port_names(port: Any) -> set[str]:
    try:
        return set(port.get_names())
    except Exception:  # a tensor without names
        return set()


def _check_io(model: ov.Model, io: NetworkIO, name: str) -> tuple[int, list[int]]:
    """Resolve the adapter's expected tensors to port indices; ModelError on mismatch."""

    def find(ports: Sequence[Any], spec: TensorSpec, pos: int, kind: str) -> int:
        if spec.names:
            hits = [i for i, p in enumerate(ports) if _port_names(p) & set(spec.names)]
            if not hits:
                raise ModelError(
                    f"model {name!r}: no {kind} named {' or '.join(spec.names)} "
                    "(the file does not match its manifest recipe)"
                )
            idx = hits[0]
        else:
            if pos >= len(ports):
                raise ModelError(
                    f"model {name!r}: expected at least {pos + 1} {kind}s, found {len(ports)}"
                )
            idx = pos
        if spec.rank >= 0:
            rank = ports[idx].get_partial_shape().rank
            if rank.is_dynamic or rank.get_length() != spec.rank:
                raise ModelError(
                    f"model {name!r}: {kind} {idx} has rank {rank}, expected {spec.rank} "
                    "(the file does not match its manifest recipe)"
                )
        return idx

    try:
        inputs, outputs = list(model.inputs), list(model.outputs)
    except Exception as e:  # pragma: no cover - a broken model object
        raise ModelError(f"model {name!r}: cannot list its tensors: {_short(e)}") from e
    if len(inputs) != 1:
        raise ModelError(f"model {name!r}: expected one input, found {len(inputs)}")
    in_index = find(inputs, io.input, 0, "input")
    out_index = [find(outputs, spec, i, "output") for i, spec in enumerate(io.outputs)]
    return in_index, out_index


def _optimal_requests(compiled: ov.CompiledModel) -> int:
    """How many requests the compiled model runs at once (its streams): 1 under LATENCY."""
    try:
        return max(1, int(compiled.get_property("OPTIMAL_NUMBER_OF_INFER_REQUESTS")))
    except Exception:  # a plugin without the property: no concurrency
        return 1


class _Compiled:
    """A compiled model and its pool of reusable infer requests.

    One request per concurrent caller, up to ``limit`` (the model's streams):
    under the THROUGHPUT hint the CPU plugin runs that many inferences at
    once, one per stream, so callers on different threads (passes of one
    image, frames of a video, jobs) really overlap. Requests are made on
    first need (each holds its own activation buffers).
    """

    def __init__(self, compiled: ov.CompiledModel, limit: int | None = None) -> None:
        self.compiled = compiled
        self.limit = _optimal_requests(compiled) if limit is None else max(1, limit)
        self._free: list[Any] = [compiled.create_infer_request()]
        self._made = 1
        self._cond = threading.Condition()

    @contextlib.contextmanager
    def request(self) -> Iterator[Any]:
        with self._cond:
            while not self._free and self._made >= self.limit:
                self._cond.wait()
            if self._free:
                req = self._free.pop()
            else:
                self._made += 1
                req = self.compiled.create_infer_request()
        try:
            yield req
        finally:
            with self._cond:
                self._free.append(req)
                self._cond.notify()


class Network:
    """A compiled model ready for ``infer``; thread-safe.

    Up to ``parallel`` callers infer at once (the compiled model's streams:
    1 under the LATENCY hint, one per stream under THROUGHPUT); more wait.

    ``input_shape`` is the static input shape, or ``None`` for a dynamic
    network (then H and W may be anything the model supports).
    """

    def __init__(
        self,
        runtime: Runtime,
        model: ov.Model,
        *,
        name: str,
        in_index: int,
        out_index: list[int],
        policy: ShapePolicy,
        static_after: int,
        static_budget_px: int,
    ) -> None:
        self.name = name
        self._runtime = runtime
        self._model = model
        self._in = in_index
        self._out = out_index
        self._policy = policy
        self._static_after = static_after
        self._budget = static_budget_px
        self._lock = threading.Lock()
        self._seen: dict[tuple[int, ...], int] = {}
        self._calls = 0
        #: static compilations made so far (for benchmarks and tests)
        self.compiles = 0
        self._static: OrderedDict[tuple[int, ...], _Compiled] = OrderedDict()
        #: the background static compilation in progress (one at a time)
        self._worker: threading.Thread | None = None
        #: sizes whose static compilation failed: served by the main one for good
        self._failed: set[tuple[int, ...]] = set()
        self._closed = False
        self._main = _Compiled(runtime.compile_model(model, name, dynamic=policy == "dynamic"))
        _prime_numpy_bridge([p.get_element_type() for p in (*model.inputs, *model.outputs)])
        #: inferences this network runs at once (static compilations get the same)
        self.parallel = self._main.limit
        self.execution = self._execution_info(self._main.compiled)
        shape = model.inputs[in_index].get_partial_shape()
        self.input_shape: tuple[int, ...] | None = (
            tuple(int(d.get_length()) for d in shape) if shape.is_static else None
        )

    def _execution_info(self, compiled: ov.CompiledModel) -> ExecutionInfo:
        device, precision = self._runtime.device, "unknown"
        with contextlib.suppress(Exception):  # not every plugin reports it
            devices = compiled.get_property("EXECUTION_DEVICES")
            device = ",".join(str(d) for d in devices) if devices else device
        # AUTO/GPU may not expose the precision on the compiled model
        with contextlib.suppress(Exception):
            hint = compiled.get_property("INFERENCE_PRECISION_HINT")
            precision = str(hint.get_type_name()) if hasattr(hint, "get_type_name") else str(hint)
        return ExecutionInfo(device=device, precision=precision)

    def metadata(self, *keys: str) -> str | None:
        """A string stored in the model file's runtime info, ``None`` when absent.

        ONNX metadata sits under ``framework``: e.g. ``metadata("framework",
        "character")`` is the PP-OCR recogniser's character dictionary.
        """
        try:
            if not self._model.has_rt_info(list(keys)):
                return None
            return str(self._model.get_rt_info(list(keys)).astype(str))
        except Exception:  # an unusual rt_info layout: treat as absent
            return None

    @property
    def static_sizes(self) -> list[tuple[int, ...]]:
        """Input shapes that currently have their own static compilation (LRU order)."""
        return list(self._static)

    def _pick(self, shape: tuple[int, ...]) -> _Compiled:
        """The compilation serving ``shape``; may start a static one (see the module doc).

        A size is promoted once used ``static_after`` times, and only if the
        sizes it would evict from the pixel budget were used at most half as
        often: without that margin, sizes taking turns (the passes of every
        photo) would evict each other and recompile on nearly every call.
        Use counts halve every ``_AGING`` calls, so the sizes of the current
        work (the next video) win over those of past work. The compilation
        runs on a background thread; until it is ready (or if it fails) the
        dynamic compilation serves the size, so promotion never delays a call.
        Called with ``self._lock`` held.
        """
        pixels = shape[-1] * shape[-2]
        if self._policy == "fixed" or self._static_after <= 0 or pixels > self._budget:
            return self._main
        self._calls += 1
        if self._calls % _AGING == 0 or len(self._seen) > 1024:
            self._seen = {
                s: n // 2 for s, n in self._seen.items() if n // 2 > 0 or s in self._static
            }
        count = self._seen.get(shape, 0) + 1
        self._seen[shape] = count
        hit = self._static.get(shape)
        if hit is not None:
            self._static.move_to_end(shape)
            return hit
        if (
            count < self._static_after
            or self._worker is not None
            or self._closed
            or shape in self._failed
            or self._evictions(shape) is None
        ):
            return self._main
        self._worker = threading.Thread(
            target=self._compile_static, args=(shape,), name="redactd-compile", daemon=True
        )
        self._worker.start()
        return self._main

    def _evictions(self, shape: tuple[int, ...]) -> list[tuple[int, ...]] | None:
        """Static sizes to drop to make room for ``shape`` (least recently used
        first), or ``None`` when one of them is busier (see ``_pick``)."""
        count = self._seen.get(shape, 0)
        evict: list[tuple[int, ...]] = []
        used = shape[-1] * shape[-2] + sum(s[-1] * s[-2] for s in self._static)
        for old in self._static:
            if used <= self._budget:
                break
            if 2 * self._seen.get(old, 0) > count:
                return None
            evict.append(old)
            used -= old[-1] * old[-2]
        return evict

    def _compile_static(self, shape: tuple[int, ...]) -> None:
        """Background thread: reshape and compile for ``shape``, then install it."""
        compiled: _Compiled | None = None
        try:
            model = self._model.clone()
            model.reshape({model.inputs[self._in]: ov.PartialShape(list(shape))})
            compiled = _Compiled(
                self._runtime.compile_model(model, self.name, cache=False), self.parallel
            )
        except Exception:  # the dynamic compilation keeps serving this size
            compiled = None
        with self._lock:
            self._worker = None
            if compiled is None:
                self._failed.add(shape)
                return
            # The use counts moved on while compiling: decide on them again.
            evict = None if self._closed else self._evictions(shape)
            if evict is None:
                return
            for old in evict:
                del self._static[old]
            self._static[shape] = compiled
            self.compiles += 1

    def settle(self, timeout: float | None = None) -> None:
        """Wait for the background static compilation in progress, if any."""
        with self._lock:
            worker = self._worker
        if worker is not None:
            worker.join(timeout)

    def infer(self, blob: np.ndarray) -> list[np.ndarray]:
        """Run one input; returns the outputs in the adapter's ``NetworkIO`` order.

        The arrays are copies (the request's buffers are reused by the next call).
        Raises ``InferenceError`` on any failure.
        """
        if self.input_shape is not None and tuple(blob.shape) != self.input_shape:
            raise InferenceError(
                f"model {self.name!r}: input shape {tuple(blob.shape)} != {self.input_shape}"
            )
        try:
            with self._lock:  # size bookkeeping only; inference runs outside the lock
                target = self._pick(tuple(int(s) for s in blob.shape))
            with target.request() as request:
                request.infer({self._in: blob})
                return [
                    np.array(request.get_output_tensor(i).data, copy=True) for i in self._out
                ]
        except InferenceError:
            raise
        except Exception as e:
            raise InferenceError(
                f"inference failed on model {self.name!r} ({type(e).__name__})"
            ) from e

    def close(self) -> None:
        """Drop the compiled models (frees their memory)."""
        with self._lock:
            self._closed = True  # a compilation finishing now is not installed
            worker = self._worker
            self._static.clear()
            self._seen.clear()
        if worker is not None:
            # Not left compiling in native code while the interpreter shuts down.
            worker.join()
