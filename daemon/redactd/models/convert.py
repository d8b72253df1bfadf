"""Make a derived ``ir`` model: convert a fetched checkpoint into an OpenVINO IR.

``redactd models fetch`` calls ``make`` (holding the store lock) for every
fetched model that has an ``ir`` recipe (``redactd.models.derived``), when
its IR is absent, altered, or was made from another version of the source.
The source is verified against the manifest first; the checkpoint is read
without torch (``redactd.models.checkpoint``) and rebuilt with OpenVINO's
operations (``redactd.models.yolo_convert``). The IR is written into a
staging folder inside the store, hashed, described by ``provenance.json``
and installed with the same atomic swap as a fetched model. A failure leaves
the store as it was.
"""

from __future__ import annotations

import datetime as dt
import secrets
import shutil
from dataclasses import replace
from pathlib import Path
from typing import Literal

from redactd import __version__
from redactd.core.errors import ModelError
from redactd.core.fsutil import fsync_file, sha256_file
from redactd.models import derived, yolo_convert
from redactd.models.fetch import DIR_MODE, FILE_MODE, install_staged
from redactd.models.manifest import ModelSpec

CONVERTER = "redactd.models.yolo_convert"


def make(
    source: ModelSpec, recipe: derived.Recipe, store: Path, work: Path
) -> tuple[Literal["installed", "replaced"], derived.Provenance]:
    """Build ``recipe`` from the installed ``source``; the caller holds the store lock."""
    import openvino as ov

    if recipe.kind != "ir" or recipe.source != source.name:
        raise ModelError(f"model {recipe.name!r} is not converted from {source.name!r}")
    source.verify(store)
    stage = work / f"build-{secrets.token_hex(4)}"
    stage.mkdir(mode=DIR_MODE)
    try:
        try:
            meta = yolo_convert.convert(source.main_path(store), stage / recipe.main)
        except ModelError as e:
            raise ModelError(
                f"model {recipe.name!r}: converting {source.name!r} failed: {e}"
            ) from e
        files = {}
        for f in (recipe.main, recipe.weights):
            (stage / f).chmod(FILE_MODE)
            files[f] = sha256_file(stage / f)
        prov = _provenance(source, recipe, files, meta, ov.get_version())
        path = stage / derived.PROVENANCE
        path.write_text(prov.to_json(), "utf-8")
        path.chmod(FILE_MODE)
        for f in (recipe.main, recipe.weights, derived.PROVENANCE):
            fsync_file(stage / f)
        # install_staged needs the target's name only; its files were hashed above
        target = replace(source, name=recipe.name, main=recipe.main, files=files, pypi=None)
        try:
            action = install_staged(target, stage, store, work)
        except OSError as e:
            raise ModelError(
                f"model {recipe.name!r}: installing the converted model failed: {e.strerror or e}"
            ) from e
        return action, prov
    finally:
        shutil.rmtree(stage, ignore_errors=True)


def _provenance(
    source: ModelSpec,
    recipe: derived.Recipe,
    files: dict[str, str],
    meta: yolo_convert.YoloInfo,
    openvino_version: str,
) -> derived.Provenance:
    """What the IR was made from and how: the checkpoint's facts, the converter's contract."""
    return derived.Provenance(
        name=recipe.name,
        source=source.name,
        source_files=dict(source.files),
        files=files,
        main=recipe.main,
        calibration_digest="",
        samples=0,
        frames=0,
        seed=0,
        preset="",
        heads="float",
        fast_bias_correction=False,
        nncf_version="",
        openvino_version=openvino_version,
        redactd_version=__version__,
        created=dt.datetime.now(dt.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ"),
        kind="ir",
        conversion={
            "converter": CONVERTER,
            "input": f"{yolo_convert.INPUT} [1,3,H,W] RGB 0..1, H and W dynamic",
            "output": f"{yolo_convert.OUTPUT} [1,4+classes,N] ltrb px, class scores",
            "weights": "FP32 (the checkpoint's values; batch norm folded)",
            "classes": list(meta.classes),
            "strides": list(meta.strides),
            "reg_max": meta.reg_max,
            "layers": meta.layers,
            "parameters": meta.parameters,
            "checkpoint_trainer_version": meta.trainer_version,
            "checkpoint_date": meta.date,
        },
    )
