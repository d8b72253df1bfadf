"""Build an OpenVINO IR of a YOLOv8 detection checkpoint, without torch.

``redactd.models.checkpoint`` reads the checkpoint's object tree (modules as
``Record``s, tensors as numpy arrays); this module walks the layer list of
the ``DetectionModel`` and rebuilds the same computation with OpenVINO's own
operations (``openvino.opset13``):

* ``Conv`` = Conv2d with the BatchNorm folded into its weights and bias
  (w * g / sqrt(var + eps), b = beta - mean * g / sqrt(var + eps)), then
  SiLU as x * sigmoid(x);
* ``C2f`` = cv1, split into two halves, a chain of ``Bottleneck``s (two
  Convs, plus the input when the layer has a shortcut) each appended, concat,
  cv2;
* ``SPPF`` = cv1, three chained 5x5 stride-1 max pools, concat, cv2;
* ``Upsample`` = nearest, scale 2; ``Concat`` along channels;
* ``Detect`` = per stride a box branch (64 = 4 sides x 16 bins) and a class
  branch; the box distances are the softmax over the 16 bins weighted by the
  bin index (DFL) times the stride, the class scores a sigmoid.

The network's input is ``images`` [1, 3, H, W] RGB in 0..1, H and W dynamic
(multiples of 32); its output ``output0`` [1, 4 + classes, N] holds, for each
anchor cell of stride 8, then 16, then 32 (row-major), the distances in input
pixels from the cell centre to the left, top, right and bottom edge of the
box, then the class scores. The cell centres depend on H and W only, so the
adapter (``redactd.stages.detect.yolo_plate``) adds them; the graph stays free of
shape arithmetic.

OpenVINO is imported inside ``build`` / ``save`` (an offline step of
``redactd models fetch``; ``redactd.stages.detect.runtime`` stays the only module
that runs models). Anything in the checkpoint this does not know (another
layer type, a segmentation head) is refused with ``ModelError``.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from redactd.core.errors import ModelError
from redactd.models.checkpoint import Record

INPUT = "images"
OUTPUT = "output0"
STRIDES = (8, 16, 32)


@dataclass(frozen=True)
class YoloInfo:
    """What the checkpoint says about itself (recorded in the provenance)."""

    classes: tuple[str, ...]
    strides: tuple[int, ...]
    reg_max: int
    layers: int
    parameters: int
    trainer_version: str  # the training package's version stored in the checkpoint
    date: str


def detection_model(ckpt: Any) -> Record:
    """The ``DetectionModel`` of a checkpoint dict: its EMA weights when present."""
    if not isinstance(ckpt, dict):
        raise ModelError("checkpoint is not a training checkpoint (no model)")
    model = ckpt.get("ema") or ckpt.get("model")
    if not isinstance(model, Record) or model.name != "DetectionModel":
        raise ModelError("checkpoint holds no YOLO detection model")
    return model


def info(ckpt: Any) -> YoloInfo:
    model = detection_model(ckpt)
    layers = list(_layers(model))
    head = layers[-1]
    names = model.get("names") or {}
    n = sum(int(np.asarray(t).size) for t in _tensors(model) if t.dtype.kind == "f")
    return YoloInfo(
        classes=tuple(str(names[k]) for k in sorted(names)),
        strides=tuple(int(s) for s in np.asarray(model.get("stride")).tolist()),
        reg_max=int(head.get("reg_max", 16)),
        layers=len(layers),
        parameters=n,
        trainer_version=str(ckpt.get("version", "")),
        date=str(ckpt.get("date", "")),
    )


def _layers(model: Record) -> list[Record]:
    seq = model.modules.get("model")
    if seq is None:
        raise ModelError("checkpoint model has no layer list")
    return [seq.modules[k] for k in seq.modules]


def _tensors(rec: Record) -> list[np.ndarray]:
    out = []
    for table in ("_parameters", "_buffers"):
        for v in (rec.get(table) or {}).values():
            if isinstance(v, np.ndarray):
                out.append(v)
    for child in rec.modules.values():
        out.extend(_tensors(child))
    return out


# --------------------------------------------------------------------------- graph


class _Builder:
    def __init__(self) -> None:
        import openvino.opset13 as ops

        self.ops = ops

    def const(self, a: np.ndarray) -> Any:
        return self.ops.constant(np.ascontiguousarray(a, dtype=np.float32))

    def conv2d(self, x: Any, conv: Record, bn: Record | None) -> Any:
        w = _need(conv.tensor("weight"), "conv weight").astype(np.float64)
        b = conv.tensor("bias")
        bias = np.zeros(w.shape[0]) if b is None else b.astype(np.float64)
        if bn is not None:
            g = _need(bn.tensor("weight"), "bn weight").astype(np.float64)
            beta = _need(bn.tensor("bias"), "bn bias").astype(np.float64)
            mean = _need(bn.tensor("running_mean"), "bn mean").astype(np.float64)
            var = _need(bn.tensor("running_var"), "bn var").astype(np.float64)
            k = g / np.sqrt(var + float(bn.get("eps", 1e-5)))
            w = w * k[:, None, None, None]
            bias = (bias - mean) * k + beta
        stride = _pair(conv.get("stride", 1))
        pad = _pair(conv.get("padding", 0))
        dil = _pair(conv.get("dilation", 1))
        groups = int(conv.get("groups", 1))
        if groups != 1:
            # [O, I/g, kh, kw] -> [g, O/g, I/g, kh, kw]
            wg = w.reshape(groups, w.shape[0] // groups, *w.shape[1:])
            y = self.ops.group_convolution(x, self.const(wg), stride, pad, pad, dil)
        else:
            y = self.ops.convolution(x, self.const(w), stride, pad, pad, dil)
        return self.ops.add(y, self.const(bias.reshape(1, -1, 1, 1)))

    def silu(self, x: Any) -> Any:
        return self.ops.multiply(x, self.ops.sigmoid(x))

    def conv(self, x: Any, m: Record) -> Any:
        """ultralytics ``Conv``: conv, bn, SiLU (a plain Conv2d passes through)."""
        if m.name == "Conv2d":
            return self.conv2d(x, m, None)
        if m.name != "Conv":
            raise ModelError(f"checkpoint: unexpected block {m.name} where a Conv belongs")
        mods = m.modules
        y = self.conv2d(x, mods["conv"], mods.get("bn"))
        act = mods.get("act")
        if act is None or act.name == "SiLU":
            return self.silu(y)
        if act.name == "Identity":
            return y
        raise ModelError(f"checkpoint: unsupported activation {act.name}")

    def c2f(self, x: Any, m: Record) -> Any:
        mods = m.modules
        y = self.conv(x, mods["cv1"])
        parts = list(self.ops.split(y, self.ops.constant(np.int64(1)), 2).outputs())
        for b in mods["m"].modules.values():
            if b.name != "Bottleneck":
                raise ModelError(f"checkpoint: unexpected block {b.name} in C2f")
            z = self.conv(self.conv(parts[-1], b.modules["cv1"]), b.modules["cv2"])
            if b.get("add"):
                z = self.ops.add(z, parts[-1])
            parts.append(z)
        return self.conv(self.ops.concat(parts, 1), mods["cv2"])

    def sppf(self, x: Any, m: Record) -> Any:
        mods = m.modules
        pool = mods["m"]
        k = int(_pair(pool.get("kernel_size", 5))[0])
        y = [self.conv(x, mods["cv1"])]
        for _ in range(3):
            y.append(
                self.ops.max_pool(
                    y[-1], [1, 1], [1, 1], [k // 2] * 2, [k // 2] * 2, [k, k]
                ).output(0)
            )
        return self.conv(self.ops.concat(y, 1), mods["cv2"])

    def upsample(self, x: Any, m: Record) -> Any:
        if m.get("mode") != "nearest" or float(m.get("scale_factor") or 0) != 2.0:
            raise ModelError("checkpoint: only nearest x2 upsampling is supported")
        return self.ops.interpolate(
            x,
            self.ops.constant(np.array([2.0, 2.0], np.float32)),
            mode="nearest",
            shape_calculation_mode="scales",
            axes=self.ops.constant(np.array([2, 3], np.int64)),
            coordinate_transformation_mode="asymmetric",
            nearest_mode="floor",
        )

    def detect(self, feats: list[Any], m: Record, strides: tuple[int, ...]) -> Any:
        mods = m.modules
        reg = int(m.get("reg_max", 16))
        nc = int(m.get("nc"))
        box_branches = list(mods["cv2"].modules.values())
        cls_branches = list(mods["cv3"].modules.values())
        if not (len(feats) == len(box_branches) == len(cls_branches) == len(strides)):
            raise ModelError("checkpoint: Detect head does not match its strides")
        bins = self.const(np.arange(reg, dtype=np.float32).reshape(1, 1, reg, 1))
        outs = []
        for f, bb, cb, s in zip(feats, box_branches, cls_branches, strides, strict=True):
            box, cls = f, f
            for layer in bb.modules.values():
                box = self.conv(box, layer)
            for layer in cb.modules.values():
                cls = self.conv(cls, layer)
            # [1, 4*reg, h, w] -> [1, 4, reg, h*w]; softmax over the bins; expectation
            shape = self.ops.constant(np.array([0, 4, reg, -1], np.int64))
            box = self.ops.reshape(box, shape, True)
            box = self.ops.softmax(box, 2)
            dist = self.ops.reduce_sum(
                self.ops.multiply(box, bins), self.ops.constant(np.int64(2)), False
            )
            dist = self.ops.multiply(dist, self.const(np.array(float(s))))
            cls = self.ops.reshape(cls, self.ops.constant(np.array([0, nc, -1], np.int64)), True)
            outs.append(self.ops.concat([dist, self.ops.sigmoid(cls)], 1))
        return self.ops.concat(outs, 2)


def _need(a: np.ndarray | None, what: str) -> np.ndarray:
    if a is None:
        raise ModelError(f"checkpoint: {what} is missing")
    return a


def _pair(v: Any) -> list[int]:
    if isinstance(v, (tuple, list)):
        return [int(x) for x in v] if len(v) == 2 else [int(v[0])] * 2
    return [int(v)] * 2


def build(ckpt: Any) -> Any:
    """The ``openvino.Model`` of the checkpoint's detection model (see the module doc)."""
    import openvino as ov

    model = detection_model(ckpt)
    strides = tuple(int(s) for s in np.asarray(model.get("stride")).tolist())
    b = _Builder()
    param = b.ops.parameter([1, 3, -1, -1], np.float32, name=INPUT)
    param.output(0).get_tensor().set_names({INPUT})
    outs: list[Any] = []  # each layer's output, by layer index ("f" refers to them)
    result = None
    for i, layer in enumerate(_layers(model)):
        src = layer.get("f", -1)
        try:
            inputs = [
                (outs[j] if j >= 0 else outs[i + j]) if (i or j != -1) else param.output(0)
                for j in (src if isinstance(src, list) else [src])
            ]
        except (IndexError, TypeError):
            raise ModelError("checkpoint: a layer takes an input that does not exist") from None
        x = inputs[0]
        kind = layer.name
        if kind == "Conv":
            y = b.conv(x, layer)
        elif kind == "C2f":
            y = b.c2f(x, layer)
        elif kind == "SPPF":
            y = b.sppf(x, layer)
        elif kind == "Upsample":
            y = b.upsample(x, layer)
        elif kind == "Concat":
            y = b.ops.concat(inputs, int(layer.get("d", 1)))
        elif kind == "Detect":
            result = b.detect(inputs, layer, strides)
            y = result
        else:
            raise ModelError(f"checkpoint: unsupported layer type {kind}")
        outs.append(y.output(0) if hasattr(y, "output") else y)
    if result is None:
        raise ModelError("checkpoint: no Detect head")
    res = b.ops.result(result)
    res.output(0).get_tensor().set_names({OUTPUT})
    return ov.Model([res], [param], "yolov8_detect")


def save(ov_model: Any, xml: Path) -> None:
    """Write ``xml`` and its ``.bin`` (FP32 weights: the checkpoint's FP16 values exactly)."""
    import openvino as ov

    ov.save_model(ov_model, str(xml), compress_to_fp16=False)


def convert(checkpoint_path: Path, xml: Path) -> YoloInfo:
    """Read ``checkpoint_path`` (torch-free) and save its IR as ``xml`` + ``.bin``."""
    from redactd.models import checkpoint

    ckpt = checkpoint.load(checkpoint_path)
    meta = info(ckpt)
    save(build(ckpt), xml)
    return meta
