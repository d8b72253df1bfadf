"""Audio of the output: streams copied packet by packet, or re-encoded to AAC (PyAV).

A stream whose codec the output container can carry is copied unchanged;
any other (e.g. G.711 of a ``.dav`` into MP4) is decoded and re-encoded to
AAC. Packets arrive from the reading half through a queue and are written
by the writing half (``AudioStreams.drain``), so reading and writing may run
in different threads.
"""

from __future__ import annotations

from collections import deque
from typing import Any

import av
import av.error


class AudioStreams:
    """The audio streams of one output container, by input stream index."""

    def __init__(self, out: Any) -> None:
        self.out = out
        self._streams: dict[int, Any] = {}
        self._coders: dict[int, AudioReencoder] = {}
        self.packets = 0
        self.reencoded = 0

    def add(self, a: Any) -> Any:
        """Add the output stream for input audio stream ``a`` (no metadata: the
        caller copies what it keeps); returns it."""
        codec = a.codec_context.name
        if codec in self.out.supported_codecs:
            stream = self.out.add_stream_from_template(a)
            stream.metadata.clear()
        else:
            coder = AudioReencoder(self.out, a)
            self._coders[a.index] = coder
            stream = coder.stream
        self._streams[a.index] = stream
        return stream

    def drain(self, pending: deque[Any]) -> None:
        """Write every queued input packet to its output stream."""
        while pending:
            pkt = pending.popleft()
            idx = pkt.stream.index
            coder = self._coders.get(idx)
            if coder is not None:
                self.out.mux(coder.encode(pkt))
                self.reencoded += 1
            else:
                pkt.stream = self._streams[idx]
                self.out.mux(pkt)
            self.packets += 1

    def flush(self) -> None:
        """Write what the re-encoders still hold."""
        for coder in self._coders.values():
            self.out.mux(coder.flush())


class AudioReencoder:
    """Audio whose codec the output container cannot hold, re-encoded to AAC."""

    def __init__(self, out: Any, src: Any) -> None:
        cc = src.codec_context
        self.rate = int(cc.sample_rate or 48000)
        # By channel count: G.711 streams often declare an unordered layout
        # ("1 channels") that the AAC encoder refuses.
        layout = "mono" if int(cc.channels or 1) == 1 else "stereo"
        self.stream = out.add_stream("aac", rate=self.rate)
        self.stream.layout = layout
        self.stream.format = "fltp"
        # AAC allows at most 6 bits per sample and channel: G.711 at 8 kHz
        # cannot take the encoder's default 128 kbit/s.
        channels = int(cc.channels or 1) if layout == "mono" else 2
        self.stream.bit_rate = min(64000, 6 * self.rate) * channels
        self.src = src
        self.resampler = av.AudioResampler(format="fltp", layout=layout, rate=self.rate)

    def encode(self, pkt: Any) -> list[Any]:
        out: list[Any] = []
        try:
            frames = self.src.decode(pkt)
        except av.error.FFmpegError:
            return out  # an undecodable audio packet is silence, not a privacy risk
        for f in frames:
            # The resampler carries the input's timestamps over (audio that
            # starts after the video stays in sync).
            for r in self.resampler.resample(f):
                out.extend(self.stream.encode(r))
        return out

    def flush(self) -> list[Any]:
        out: list[Any] = []
        for r in self.resampler.resample(None):
            out.extend(self.stream.encode(r))
        out.extend(self.stream.encode(None))
        return out
