"""The agent node's camera buffer: the last few colour/depth messages and the CameraInfo.

Subscription callbacks only append (no conversion at camera rate); when an instruction is
processed, :meth:`FrameBuffer.frame` pairs the newest colour and depth messages whose stamps
are close enough and converts just that pair into a :class:`~robostral_agent.vlm.frames.
Frame`. The buffer is shared between the executor thread (writers) and the agent's worker
thread (reader), hence the lock.
"""

from __future__ import annotations

import threading
from collections import deque

from sensor_msgs.msg import CameraInfo, Image

from robostral_agent.ros.conversions import (
    ConversionError,
    camera_info_to_intrinsics,
    image_to_numpy,
    msg_to_stamp,
)
from robostral_agent.vlm import frames
from robostral_agent.vlm.frames import Frame, FrameError, Stamped


def _stamped(msg: Image) -> Stamped[Image]:
    return Stamped(msg_to_stamp(msg.header.stamp).to_ns(), msg)


class FrameBuffer:
    """Bounded buffers of colour and depth messages, plus the latest ``CameraInfo``."""

    def __init__(self, depth: int) -> None:
        self._lock = threading.Lock()
        self._colors: deque[Stamped[Image]] = deque(maxlen=depth)
        self._depths: deque[Stamped[Image]] = deque(maxlen=depth)
        self._info: CameraInfo | None = None

    def add_color(self, msg: Image) -> None:
        with self._lock:
            self._colors.append(_stamped(msg))

    def add_depth(self, msg: Image) -> None:
        with self._lock:
            self._depths.append(_stamped(msg))

    def set_info(self, msg: CameraInfo) -> None:
        with self._lock:
            self._info = msg

    def counts(self) -> tuple[int, int, bool]:
        with self._lock:
            return len(self._colors), len(self._depths), self._info is not None

    def frame(self, max_skew_s: float) -> Frame:
        """The newest usable pair, converted; :class:`FrameError` says why there is none."""
        with self._lock:
            color, depth = frames.pair_frames(list(self._colors), list(self._depths), max_skew_s)
            info = self._info
        for msg, allowed in (
            (color.item, frames.COLOR_ENCODINGS),
            (depth.item, frames.DEPTH_ENCODINGS),
        ):
            if msg.encoding not in allowed:
                raise FrameError(
                    frames.UNSUPPORTED_ENCODING,
                    f'encoding {msg.encoding!r} is not one of {", ".join(allowed)}',
                )
        try:
            color_array = image_to_numpy(color.item)
            depth_array = image_to_numpy(depth.item)
        except ConversionError as exc:
            raise FrameError(frames.BAD_IMAGE, str(exc)) from exc
        intrinsics = None
        if info is not None:
            try:
                intrinsics = camera_info_to_intrinsics(info)
            except ConversionError as exc:
                raise FrameError(frames.BAD_CAMERA_INFO, str(exc)) from exc
        return frames.make_frame(
            color_array,
            color.item.encoding,
            depth_array,
            depth.item.encoding,
            intrinsics,
            msg_to_stamp(color.item.header.stamp),
            color.item.header.frame_id,
        )
