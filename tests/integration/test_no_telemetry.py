"""redactd never runs OpenVINO's or NNCF's telemetry client.

A bare ``import openvino`` (2026.4, openvino-telemetry 2025.2) with no consent
file forks a child that posts an event to Google Analytics and writes
``~/intel/openvino_ga_cid`` and ``~/intel/stats`` (seen here: 2440 imports
counted on one development machine). ``redactd/__init__.py`` makes the client
unimportable; these tests run real processes with a fresh ``HOME`` and no CI
variables (the client stays silent when ``CI=true``, which would hide the
problem in CI), load a real network and, where NNCF is installed, NNCF too.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

SCRIPT = textwrap.dedent(
    """
    import json, sys
    from pathlib import Path
    import redactd.cli  # the entry point's import order
    from redactd.core.config import RuntimeConfig
    from redactd.stages.detect.runtime import NetworkIO, Runtime, TensorSpec
    import numpy as np
    import openvino as ov
    import openvino.opset13 as ops
    import openvino.tools.ovc  # the module that starts the client when it can

    x = ops.parameter([1, 3, 32, 32], ov.Type.f32, name="x")
    path = Path(sys.argv[1])
    ov.save_model(ov.Model([ops.relu(x)], [x]), str(path))
    net = Runtime(RuntimeConfig(cache_dir=None)).load(
        path, NetworkIO(TensorSpec(), (TensorSpec(),)), name="relu"
    )
    net.infer(np.zeros((1, 3, 32, 32), np.float32))
    try:
        from redactd.models import quantize
        quantize.require_nncf()
        nncf = True
    except Exception:
        nncf = False
    print(json.dumps({
        "telemetry_module": repr(sys.modules.get("openvino_telemetry", "absent")),
        "nncf": nncf,
    }))
    """
)

CI_VARIABLES = ("CI", "TF_BUILD", "JENKINS_URL", "NNCF_CI", "NNCF_DEV")


def _clean_env(home: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in CI_VARIABLES}
    env["HOME"] = str(home)
    return env


def test_openvino_and_nncf_leave_no_telemetry_trace(tmp_path: Path) -> None:
    home = tmp_path / "home"
    home.mkdir()
    out = subprocess.run(
        [sys.executable, "-c", SCRIPT, str(tmp_path / "relu.xml")],
        env=_clean_env(home),
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert out.returncode == 0, out.stderr[-2000:]
    report = json.loads(out.stdout.strip().splitlines()[-1])
    # None in sys.modules: every `import openvino_telemetry` raises ImportError.
    assert report["telemetry_module"] == "None"
    assert report["nncf"], "nncf (a test dependency) did not import"
    # No client id, usage counter or consent file written anywhere in HOME.
    assert sorted(p.relative_to(home).as_posix() for p in home.rglob("*")) == []
