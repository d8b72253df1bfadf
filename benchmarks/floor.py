"""The floor: what decode + encode alone cost, with redactd's encoder settings and no detection.

No anonymizer can be faster than reading every frame and writing it again.
Two variants: frames handed from the decoder to the encoder as they are
(``native``), and through a BGR ndarray and back (``ndarray``), which is
what any per-pixel masking needs at least.
"""

from __future__ import annotations

import time
from pathlib import Path

import av


def decode_encode(
    src: Path, dst: Path, preset: str, crf: int, through_array: bool
) -> tuple[int, float]:
    """Re-encode ``src`` into ``dst`` with libx264; returns (frames, seconds)."""
    t0 = time.perf_counter()
    n = 0
    with av.open(str(src)) as inp, av.open(str(dst), "w") as out:
        vin = inp.streams.video[0]
        vin.thread_type = "AUTO"
        vout = out.add_stream("libx264", rate=vin.average_rate or 25)
        vout.width, vout.height, vout.pix_fmt = vin.width, vin.height, "yuv420p"
        vout.options = {"preset": preset, "crf": str(crf)}
        for frame in inp.decode(vin):
            if through_array:
                frame = av.VideoFrame.from_ndarray(frame.to_ndarray(format="bgr24"), format="bgr24")
            else:
                frame.pts = None
            for p in vout.encode(frame):
                out.mux(p)
            n += 1
        for p in vout.encode():
            out.mux(p)
    return n, time.perf_counter() - t0
