"""redactd: on-premise anonymization of faces and licence plates in images and videos."""

from __future__ import annotations

import sys

__version__ = "0.1.0"

# No telemetry. `import openvino` imports OpenVINO's model converter, which
# starts Intel's telemetry client with the opt-in dialog off: unless a consent
# file says no, every import forks a child that posts an event to Google
# Analytics, and writes a client id and a usage counter under ~/intel (NNCF,
# used by `redactd models quantize`, does the same). An on-premise anonymiser
# must not call out nor leave identifiers behind, so the client is made
# unimportable before anything imports OpenVINO; the converter and NNCF then
# fall back to their built-in no-op stubs. (It also takes ~50 ms and a fork
# off every start.) Tested by tests/integration/test_no_telemetry.py.
sys.modules.setdefault("openvino_telemetry", None)  # type: ignore[arg-type]
