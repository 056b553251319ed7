"""ROS message <-> numpy / contract conversions, zero-copy where numpy can view the buffer.

``cv_bridge`` is not available for ROS 2 from PyPI, and it would only cover images; this
module does the five encodings of the contract with the checks that matter on a real cell:
row padding (``step``), byte order, and size, step or encoding mismatches are refused with a
:class:`ConversionError` that says what is wrong, never silently turned into a wrong image.
"""

from __future__ import annotations

import array
import sys
from typing import Final

import numpy as np
from builtin_interfaces.msg import Time
from geometry_msgs.msg import PoseStamped
from sensor_msgs.msg import CameraInfo, Image

from robostral_agent.contract import Stamp, Target
from robostral_agent.geometry import CameraIntrinsics, GeometryError

# encoding -> (numpy dtype, channels)
ENCODINGS: Final[dict[str, tuple[np.dtype, int]]] = {
    'rgb8': (np.dtype(np.uint8), 3),
    'bgr8': (np.dtype(np.uint8), 3),
    'mono8': (np.dtype(np.uint8), 1),
    '32FC1': (np.dtype(np.float32), 1),
    '16UC1': (np.dtype(np.uint16), 1),
}
_HOST_BIG_ENDIAN: Final = sys.byteorder == 'big'


class ConversionError(ValueError):
    """A message cannot be converted faithfully (unsupported, inconsistent or truncated)."""


def image_to_numpy(msg: Image) -> np.ndarray:
    """A ``(H, W, 3)`` or ``(H, W)`` array over the message's buffer (no copy).

    The array is a view: it shares memory with ``msg.data`` and stays valid as long as the
    message does. Only a big-endian multi-byte image on a little-endian host is copied, since
    numpy code downstream expects native byte order.
    """
    encoding = msg.encoding
    if encoding not in ENCODINGS:
        raise ConversionError(
            f'unsupported encoding {encoding!r}; supported: {", ".join(ENCODINGS)}'
        )
    dtype, channels = ENCODINGS[encoding]
    height, width, step = int(msg.height), int(msg.width), int(msg.step)
    if height <= 0 or width <= 0:
        raise ConversionError(f'empty image: {width}x{height}')
    pixel_bytes = channels * dtype.itemsize
    if step < width * pixel_bytes:
        raise ConversionError(
            f'step {step} is shorter than a row of {width} {encoding} pixels '
            f'({width * pixel_bytes} bytes)'
        )
    size = len(msg.data)
    if size != step * height:
        raise ConversionError(
            f'data holds {size} bytes, expected step*height = {step}*{height} = {step * height}'
        )
    big = bool(msg.is_bigendian) and dtype.itemsize > 1
    view_dtype = dtype.newbyteorder('>' if big else '<')
    shape = (height, width, channels) if channels > 1 else (height, width)
    strides = (step, pixel_bytes, dtype.itemsize) if channels > 1 else (step, pixel_bytes)
    image = np.ndarray(shape, view_dtype, buffer=memoryview(msg.data), strides=strides)
    if big != _HOST_BIG_ENDIAN and dtype.itemsize > 1:
        return image.astype(dtype)  # a byte swap cannot be a view
    return image


def numpy_to_image(
    image: np.ndarray, encoding: str, stamp: Stamp | Time | None = None, frame_id: str = ''
) -> Image:
    """An ``Image`` holding ``image``: one copy into the message's ``array.array`` buffer.

    rclpy stores an assigned ``array.array('B')`` as is; a list is converted element by
    element (about 400x slower at 640x480, see bench/bench_conversions.py). The message owns
    its buffer, so this one copy is the minimum.
    """
    if encoding not in ENCODINGS:
        raise ConversionError(
            f'unsupported encoding {encoding!r}; supported: {", ".join(ENCODINGS)}'
        )
    dtype, channels = ENCODINGS[encoding]
    arr = np.asarray(image)
    if arr.dtype.newbyteorder('=') != dtype.newbyteorder('='):
        raise ConversionError(f'{encoding} needs dtype {dtype}, got {arr.dtype}')
    expected_ndim = 3 if channels > 1 else 2
    if arr.ndim == 3 and channels == 1 and arr.shape[2] == 1:
        arr = arr[:, :, 0]
    if arr.ndim != expected_ndim or (channels > 1 and arr.shape[2] != channels):
        wanted = '(H, W, 3)' if channels > 1 else '(H, W)'
        raise ConversionError(f'{encoding} needs shape {wanted}, got {arr.shape}')
    if arr.shape[0] == 0 or arr.shape[1] == 0:
        raise ConversionError(f'empty image: {arr.shape}')
    arr = np.ascontiguousarray(arr, dtype=dtype.newbyteorder('='))
    msg = Image()
    if stamp is not None:
        msg.header.stamp = stamp if isinstance(stamp, Time) else stamp_to_msg(stamp)
    msg.header.frame_id = frame_id
    msg.height, msg.width = int(arr.shape[0]), int(arr.shape[1])
    msg.encoding = encoding
    msg.is_bigendian = _HOST_BIG_ENDIAN and dtype.itemsize > 1
    msg.step = msg.width * channels * dtype.itemsize
    buffer = array.array('B')
    buffer.frombytes(memoryview(arr).cast('B'))
    msg.data = buffer
    return msg


def camera_info_to_intrinsics(msg: CameraInfo) -> CameraIntrinsics:
    """Pinhole ``k`` and OpenCV-ordered distortion of a ``CameraInfo``."""
    model = msg.distortion_model
    coeffs = [float(c) for c in msg.d]
    if model not in ('', 'plumb_bob', 'rational_polynomial') and any(c != 0 for c in coeffs):
        raise ConversionError(f'unsupported distortion model {model!r} with non-zero d')
    try:
        return CameraIntrinsics.from_k(list(msg.k), int(msg.width), int(msg.height), coeffs)
    except GeometryError as exc:
        raise ConversionError(f'invalid CameraInfo: {exc}') from exc


def intrinsics_to_camera_info(
    intrinsics: CameraIntrinsics, stamp: Stamp | Time | None = None, frame_id: str = ''
) -> CameraInfo:
    """A ``CameraInfo`` (plumb_bob, identity rectification) for rendered or ideal cameras."""
    msg = CameraInfo()
    if stamp is not None:
        msg.header.stamp = stamp if isinstance(stamp, Time) else stamp_to_msg(stamp)
    msg.header.frame_id = frame_id
    msg.width, msg.height = intrinsics.width, intrinsics.height
    msg.distortion_model = 'plumb_bob'
    d = list(intrinsics.distortion) + [0.0] * max(0, 5 - len(intrinsics.distortion))
    msg.d = d
    msg.k = intrinsics.k
    msg.r = [1.0, 0.0, 0.0, 0.0, 1.0, 0.0, 0.0, 0.0, 1.0]
    fx, fy, cx, cy = intrinsics.fx, intrinsics.fy, intrinsics.cx, intrinsics.cy
    msg.p = [fx, 0.0, cx, 0.0, 0.0, fy, cy, 0.0, 0.0, 0.0, 1.0, 0.0]
    return msg


def stamp_to_msg(stamp: Stamp) -> Time:
    return Time(sec=stamp.sec, nanosec=stamp.nanosec)


def msg_to_stamp(msg: Time) -> Stamp:
    return Stamp(int(msg.sec), int(msg.nanosec))


def pose_to_target(msg: PoseStamped) -> Target:
    p, q = msg.pose.position, msg.pose.orientation
    return Target(
        frame_id=msg.header.frame_id,
        position=(float(p.x), float(p.y), float(p.z)),
        orientation=(float(q.x), float(q.y), float(q.z), float(q.w)),
    )


def target_to_pose(target: Target, stamp: Stamp | Time | None = None) -> PoseStamped:
    msg = PoseStamped()
    msg.header.frame_id = target.frame_id
    if stamp is not None:
        msg.header.stamp = stamp if isinstance(stamp, Time) else stamp_to_msg(stamp)
    p, q = msg.pose.position, msg.pose.orientation
    p.x, p.y, p.z = (float(v) for v in target.position)
    q.x, q.y, q.z, q.w = (float(v) for v in target.orientation)
    return msg
