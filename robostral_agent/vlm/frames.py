"""Camera frames as the agent uses them: RGB + metric depth + intrinsics, checked and paired.

The node hands over whatever the camera driver published; this module decides whether it
can be used, and says why not with a reason code: unsupported encodings, colour and depth
of different sizes, a missing or inconsistent ``CameraInfo``, frames too old, colour and
depth too far apart in time.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Final, Generic, TypeVar

import numpy as np

from robostral_agent.contract import Stamp
from robostral_agent.geometry import CameraIntrinsics
from robostral_agent.vlm.errors import ReasonError

NO_FRAME: Final = 'NO_FRAME'
NO_CAMERA_INFO: Final = 'NO_CAMERA_INFO'
BAD_CAMERA_INFO: Final = 'BAD_CAMERA_INFO'
BAD_IMAGE: Final = 'BAD_IMAGE'
UNSUPPORTED_ENCODING: Final = 'UNSUPPORTED_ENCODING'
FRAME_MISMATCH: Final = 'FRAME_MISMATCH'
STALE_FRAME: Final = 'STALE_FRAME'

COLOR_ENCODINGS: Final = ('rgb8', 'bgr8', 'mono8')
DEPTH_ENCODINGS: Final = ('32FC1', '16UC1')

T = TypeVar('T')


class FrameError(ReasonError):
    """A frame cannot be used; ``code`` is one of this module's reason codes."""


@dataclass(frozen=True)
class Frame:
    """A registered RGB-D pair: ``color`` ``(H, W, 3)`` uint8 RGB, ``depth`` ``(H, W)`` metres."""

    color: np.ndarray
    depth: np.ndarray
    intrinsics: CameraIntrinsics
    stamp: Stamp
    frame_id: str


def color_to_rgb(image: np.ndarray, encoding: str) -> np.ndarray:
    """``rgb8`` as is (no copy), ``bgr8`` channel-swapped, ``mono8`` replicated."""
    if encoding == 'rgb8':
        return image
    if encoding == 'bgr8':
        return image[..., ::-1]
    if encoding == 'mono8':
        return np.repeat(image[..., None], 3, axis=2)
    raise FrameError(
        UNSUPPORTED_ENCODING,
        f'colour encoding {encoding!r} is not one of {", ".join(COLOR_ENCODINGS)}',
    )


def depth_to_metres(image: np.ndarray, encoding: str) -> np.ndarray:
    """``32FC1`` metres as is; ``16UC1`` millimetres -> float32 metres (0 stays 0: invalid)."""
    if encoding == '32FC1':
        return image
    if encoding == '16UC1':
        return image.astype(np.float32) * np.float32(1e-3)
    raise FrameError(
        UNSUPPORTED_ENCODING,
        f'depth encoding {encoding!r} is not one of {", ".join(DEPTH_ENCODINGS)}',
    )


def make_frame(
    color: np.ndarray,
    color_encoding: str,
    depth: np.ndarray,
    depth_encoding: str,
    intrinsics: CameraIntrinsics | None,
    stamp: Stamp,
    frame_id: str = '',
) -> Frame:
    """Check and normalise one colour/depth pair (sizes, encodings, intrinsics)."""
    rgb = color_to_rgb(color, color_encoding)
    metres = depth_to_metres(depth, depth_encoding)
    if rgb.shape[:2] != metres.shape[:2]:
        raise FrameError(
            FRAME_MISMATCH,
            f'colour is {rgb.shape[1]}x{rgb.shape[0]} but depth is '
            f'{metres.shape[1]}x{metres.shape[0]}: depth must be registered to colour',
        )
    if intrinsics is None:
        raise FrameError(NO_CAMERA_INFO, 'no CameraInfo received yet')
    if (intrinsics.width, intrinsics.height) != (rgb.shape[1], rgb.shape[0]):
        raise FrameError(
            FRAME_MISMATCH,
            f'CameraInfo is {intrinsics.width}x{intrinsics.height}, '
            f'the image {rgb.shape[1]}x{rgb.shape[0]}',
        )
    return Frame(rgb, metres, intrinsics, stamp, frame_id)


@dataclass(frozen=True)
class Stamped(Generic[T]):
    """Anything with a stamp in nanoseconds (a buffered message)."""

    stamp_ns: int
    item: T


def pair_frames(
    colors: Sequence[Stamped[T]], depths: Sequence[Stamped[T]], max_skew_s: float
) -> tuple[Stamped[T], Stamped[T]]:
    """The newest colour frame that has a depth frame within ``max_skew_s``, and that depth.

    Newest first: an instruction is about the scene now. Among the depth frames within the
    skew of that colour frame, the closest in time wins.
    """
    if not colors or not depths:
        missing = 'colour' if not colors else 'depth'
        raise FrameError(NO_FRAME, f'no {missing} frame received yet')
    limit = round(max_skew_s * 1e9)
    for color in sorted(colors, key=lambda c: c.stamp_ns, reverse=True):
        depth = min(depths, key=lambda d: abs(d.stamp_ns - color.stamp_ns))
        if abs(depth.stamp_ns - color.stamp_ns) <= limit:
            return color, depth
    newest_c = max(c.stamp_ns for c in colors)
    newest_d = max(d.stamp_ns for d in depths)
    raise FrameError(
        FRAME_MISMATCH,
        f'no colour/depth pair within {max_skew_s * 1e3:.0f} ms '
        f'(newest colour and depth differ by {abs(newest_c - newest_d) / 1e6:.0f} ms)',
    )


def check_age(stamp: Stamp, now: Stamp, max_age_s: float) -> None:
    """Refuse frames older than ``max_age_s`` (a frozen camera must not drive the robot)."""
    age = (now.to_ns() - stamp.to_ns()) * 1e-9
    if age > max_age_s:
        raise FrameError(STALE_FRAME, f'newest frame is {age:.2f} s old (limit {max_age_s} s)')
