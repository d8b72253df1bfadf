"""INT8 post-training quantization with NNCF: the only module of redactd that imports ``nncf``.

``quantize`` takes a manifest model (verified in the store), a calibration
set of model inputs prepared exactly as the detector prepares them at run
time (``redactd.pipeline.calibration``), runs ``nncf.quantize`` with the OpenVINO
backend (no torch), and installs the result as a derived model
(``redactd.models.derived``): an OpenVINO IR with a dynamic H and W input,
like the runtime uses, plus ``provenance.json``.

Both ``nncf`` and ``openvino`` are imported inside the function: the daemon
never needs nncf (an optional extra, ``pip install 'redactd[quantize]'``),
and ``redactd.stages.detect.runtime`` stays the only module that runs models. This
is an offline tool: it reads the source model, hands it to nncf and writes
the result; it never serves detections.

Settings (measured in ``benchmarks/int8.py``, results in
``benchmarks/RESULTS.md``, "INT8 CenterFace (NNCF)"): ``preset`` is nncf's
(``performance``: symmetric weights and activations, nncf's own default for
CNNs; ``mixed``: asymmetric activations); ``heads="float"`` leaves the
convolutions that produce the model's outputs unquantized (found by walking
back from each output), ``"int8"`` quantizes them too; fast bias correction
is nncf's default.

Writing: nncf's result is saved into a private temporary folder, then copied
into a staging folder inside the store while hashing, the provenance is
written beside it, and the folder is installed with the same atomic swap and
store lock as ``redactd models fetch``. A failure leaves the store as it was.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import hashlib
import logging
import os
import secrets
import shutil
import sys
import tempfile
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, Literal, Protocol

import numpy as np

from redactd import __version__
from redactd.core import log
from redactd.core.errors import ModelError, RedactdError
from redactd.core.fsutil import TMP_PREFIX, fsync_dir, fsync_file
from redactd.models import derived
from redactd.models.fetch import DIR_MODE, FILE_MODE, install_staged, store_lock
from redactd.models.manifest import ModelSpec

Preset = Literal["performance", "mixed"]
Heads = Literal["int8", "float"]

INSTALL_HINT = "pip install 'redactd[quantize]'"

#: Ops allowed between an output and the convolution that produces it (a head).
_HEAD_PASSTHROUGH = frozenset({"Add", "Sigmoid", "Reshape", "Transpose", "Concat", "Multiply"})


class CalibrationSource(Protocol):
    """Model inputs in a fixed order; may be iterated more than once (nncf may)."""

    def __len__(self) -> int: ...

    def __iter__(self) -> Iterator[np.ndarray]: ...


@dataclass(frozen=True)
class QuantizeOptions:
    """How nncf quantizes (see the module doc); the defaults are the measured choice."""

    preset: Preset = "performance"
    heads: Heads = "float"
    fast_bias_correction: bool = True


@dataclass(frozen=True)
class QuantizeResult:
    """What ``quantize`` installed."""

    name: str
    action: Literal["installed", "replaced"]
    provenance: derived.Provenance
    seconds: float

    def lines(self) -> list[str]:
        """Summary lines: counts and hashes, never calibration file names."""
        p = self.provenance
        out = [
            f"{self.name}: {self.action} ({p.samples} calibration samples from {p.frames} "
            f"frames, {self.seconds:.0f} s)",
            f"  calibration digest {p.calibration_digest}",
        ]
        out += [f"  {f} sha256 {d}" for f, d in sorted(p.files.items())]
        out.append(f"  {p.summary()}")
        return out


class _Hashed:
    """Re-iterable view of the calibration inputs that records each input's sha256.

    The digest covers exactly what nncf consumed: a hash per position (so a
    second pass over the data does not count twice), hashed over dtype, shape
    and bytes.
    """

    def __init__(self, source: CalibrationSource) -> None:
        self.source = source
        self.hashes: dict[int, str] = {}

    def __len__(self) -> int:
        return len(self.source)

    def __iter__(self) -> Iterator[np.ndarray]:
        for i, blob in enumerate(self.source):
            if i not in self.hashes:
                h = hashlib.sha256(f"{blob.dtype}:{blob.shape}:".encode())
                h.update(np.ascontiguousarray(blob).tobytes())
                self.hashes[i] = h.hexdigest()
            yield blob

    def digest(self) -> str:
        """sha256 over the sorted per-sample hashes (order of files does not matter)."""
        return hashlib.sha256("\n".join(sorted(self.hashes.values())).encode()).hexdigest()


def require_nncf() -> Any:
    """The ``nncf`` module; ``ModelError`` telling how to install it when it is missing."""
    try:
        import nncf
    except ImportError as e:
        raise ModelError(f"quantization needs nncf, which is not installed: {INSTALL_HINT}") from e
    return nncf


def head_nodes(model: Any) -> list[str]:
    """Friendly names of the convolutions that produce the model's outputs."""
    heads: list[str] = []
    for out in model.outputs:
        node = out.get_node()
        for _ in range(8):
            if node.get_input_size() == 0:
                break
            node = node.input_value(0).get_node()
            kind = node.get_type_name()
            if kind in ("Convolution", "GroupConvolution", "MatMul"):
                if node.get_friendly_name() not in heads:
                    heads.append(node.get_friendly_name())
                break
            if kind not in _HEAD_PASSTHROUGH:
                break
    return heads


def quantize(
    source: ModelSpec,
    store: Path,
    calibration: CalibrationSource,
    *,
    seed: int,
    frames: int | None = None,
    options: QuantizeOptions | None = None,
    tiling: dict[str, Any] | None = None,
) -> QuantizeResult:
    """Quantize manifest model ``source`` on ``calibration`` and install the derived model.

    ``calibration`` MUST yield the inputs the detector's network gets at run
    time (NCHW float32, any H and W); ``frames`` (the pictures they came
    from; default: the ``frames`` attribute of ``calibration`` after nncf
    has read it), ``seed`` and ``tiling`` are recorded in the provenance. Raises
    ``ModelError`` when nncf is missing, the source model is not installed or
    fails its sha256, there is no calibration input, or nncf or the write
    fails; the store is then unchanged.
    """
    opts = options or QuantizeOptions()
    recipe = derived.recipe_for_source(source.name)
    nncf = require_nncf()
    import openvino as ov

    if len(calibration) == 0:
        raise ModelError("no calibration input")
    source.verify(store)
    t0 = _now()
    model = _read_dynamic(ov, source, store)
    data = _Hashed(calibration)
    quantized = _run_nncf(nncf, model, data, opts, source.name)
    if not data.hashes:
        raise ModelError("no calibration input reached the quantizer")
    with tempfile.TemporaryDirectory(prefix="redactd-quantize-") as tmp:
        out = Path(tmp)
        _save(ov, quantized, out / recipe.main)
        prov = derived.Provenance(
            name=recipe.name,
            source=source.name,
            source_files=dict(source.files),
            files={},  # filled while copying
            main=recipe.main,
            calibration_digest=data.digest(),
            samples=len(data.hashes),
            frames=frames if frames is not None else int(getattr(calibration, "frames", 0)),
            seed=seed,
            tiling=dict(tiling or {}),
            preset=opts.preset,
            heads=opts.heads,
            fast_bias_correction=opts.fast_bias_correction,
            nncf_version=str(getattr(nncf, "__version__", "unknown")),
            openvino_version=str(ov.get_version()),
            redactd_version=__version__,
            created=_now().strftime("%Y-%m-%dT%H:%M:%SZ"),
        )
        action, prov = _install_artefact(recipe, source, store, out, prov)
    return QuantizeResult(recipe.name, action, prov, (_now() - t0).total_seconds())


def _save(ov: Any, model: Any, path: Path) -> None:
    """The quantized model as IR at ``path``, weights kept as quantized (``ModelError``)."""
    try:
        ov.save_model(model, str(path), compress_to_fp16=False)
    except Exception as e:
        raise ModelError(f"the quantized model cannot be saved: {type(e).__name__}") from e


def _read_dynamic(ov: Any, source: ModelSpec, store: Path) -> Any:
    """The source model as an OpenVINO model with a dynamic H and W input (``ModelError``)."""
    try:
        path = source.main_path(store)
        # convert_model folds the ONNX import's shape arithmetic (e.g. the Reshape
        # feeding each depthwise kernel); without it nncf leaves those weights
        # unfolded and the CPU plugin runs every depthwise convolution in f32
        model = (
            ov.convert_model(str(path))
            if path.suffix == ".onnx"
            else ov.Core().read_model(str(path))
        )
        port = model.inputs[0]
        channels = port.get_partial_shape()[1]
        # the runtime's "dynamic" policy: one input, any H and W
        model.reshape({port: ov.PartialShape([1, channels, -1, -1])})
    except Exception as e:
        raise ModelError(
            f"model {source.name!r} cannot be read for quantization: {type(e).__name__}"
        ) from e
    return model


def _run_nncf(nncf: Any, model: Any, data: _Hashed, opts: QuantizeOptions, name: str) -> Any:
    """``nncf.quantize`` with ``opts`` on all of ``data``; its failures as ``ModelError``."""
    ignored = None
    if opts.heads == "float":
        names = head_nodes(model)
        if names:
            ignored = nncf.IgnoredScope(names=names, validate=False)
    preset = {
        "performance": nncf.QuantizationPreset.PERFORMANCE,
        "mixed": nncf.QuantizationPreset.MIXED,
    }[opts.preset]
    # nncf logs its graph decisions at INFO (node names; noise for operators)
    nncf.set_log_level(logging.WARNING)
    try:
        # nncf draws progress bars on stdout; stdout is for results here
        with contextlib.redirect_stdout(sys.stderr):
            return nncf.quantize(
                model,
                nncf.Dataset(data),
                preset=preset,
                target_device=nncf.TargetDevice.CPU,
                subset_size=len(data),
                fast_bias_correction=opts.fast_bias_correction,
                ignored_scope=ignored,
            )
    except (RedactdError, OSError, MemoryError):
        raise
    except Exception as e:
        detail = log.scrub(str(e).strip().splitlines()[0] if str(e).strip() else "")[:200]
        raise ModelError(f"nncf could not quantize {name!r}: {type(e).__name__}: {detail}") from e


def _now() -> dt.datetime:
    return dt.datetime.now(dt.timezone.utc)


def _copy_hashed(src: Path, dst: Path) -> str:
    h = hashlib.sha256()
    fd = os.open(dst, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, FILE_MODE)
    with src.open("rb") as fin, os.fdopen(fd, "wb") as fout:
        for chunk in iter(lambda: fin.read(1 << 20), b""):
            h.update(chunk)
            fout.write(chunk)
        fout.flush()
        os.fsync(fout.fileno())
    dst.chmod(FILE_MODE)  # O_CREAT's mode is filtered by the umask
    return h.hexdigest()


def _install_artefact(
    recipe: derived.Recipe,
    source: ModelSpec,
    store: Path,
    built: Path,
    prov: derived.Provenance,
) -> tuple[Literal["installed", "replaced"], derived.Provenance]:
    """Stage ``built``'s IR plus the provenance inside the store, then swap it in."""
    try:
        store.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise ModelError(f"the model store cannot be created: {e.strerror}") from e
    with store_lock(store):
        work = store / f"{TMP_PREFIX}{secrets.token_hex(6)}"
        try:
            work.mkdir(mode=0o700)
            stage = work / "stage"
            stage.mkdir(mode=DIR_MODE)
            files = {f: _copy_hashed(built / f, stage / f) for f in (recipe.main, recipe.weights)}
            prov = replace(prov, files=files)
            (stage / derived.PROVENANCE).write_text(prov.to_json(), "utf-8")
            (stage / derived.PROVENANCE).chmod(FILE_MODE)
            fsync_file(stage / derived.PROVENANCE)
            fsync_dir(stage)
            # install_staged needs the target's name only; its files are checked above
            target = ModelSpec(
                name=recipe.name,
                task=source.task,
                decoder=source.decoder,
                licence=source.licence,
                main=recipe.main,
                files=files,
            )
            action = install_staged(target, stage, store, work)
        except OSError as e:
            raise ModelError(
                f"model {recipe.name!r}: writing the quantized model failed: {e.strerror or e}"
            ) from e
        finally:
            shutil.rmtree(work, ignore_errors=True)
    return action, prov


def calibration_digest(blobs: Iterable[np.ndarray]) -> str:
    """The digest ``quantize`` records, computed over ``blobs`` (for checks and tests)."""
    data = _Hashed(list(blobs))
    for _ in data:
        pass
    return data.digest()
