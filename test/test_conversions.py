"""Image / CameraInfo / PoseStamped conversions: every encoding, padding, byte order, errors."""

from __future__ import annotations

import array
import math

import numpy as np
import pytest
from builtin_interfaces.msg import Time
from sensor_msgs.msg import CameraInfo, Image

from robostral_agent.contract import Stamp, Target
from robostral_agent.geometry import CameraIntrinsics
from robostral_agent.ros import conversions as conv

RNG = np.random.default_rng(7)
SAMPLES = {
    'rgb8': RNG.integers(0, 256, (5, 7, 3), dtype=np.uint8),
    'bgr8': RNG.integers(0, 256, (5, 7, 3), dtype=np.uint8),
    'mono8': RNG.integers(0, 256, (5, 7), dtype=np.uint8),
    '32FC1': RNG.uniform(0.1, 3.0, (5, 7)).astype(np.float32),
    '16UC1': RNG.integers(0, 65536, (5, 7), dtype=np.uint16),
}


def _manual_message(
    image: np.ndarray, encoding: str, pad: int = 0, big_endian: bool = False
) -> Image:
    """Build a message byte by byte, independently of the code under test."""
    arr = image.astype(image.dtype.newbyteorder('>' if big_endian else '<'))
    rows = [arr[r].tobytes() + b'\xab' * pad for r in range(arr.shape[0])]
    msg = Image()
    msg.height, msg.width = arr.shape[0], arr.shape[1]
    msg.encoding = encoding
    msg.is_bigendian = big_endian
    msg.step = len(rows[0])
    msg.data = array.array('B', b''.join(rows))
    return msg


@pytest.mark.parametrize('encoding', SAMPLES)
@pytest.mark.parametrize('pad', [0, 1, 5, 64])
def test_image_to_numpy_every_encoding_with_row_padding(encoding: str, pad: int) -> None:
    expected = SAMPLES[encoding]
    out = conv.image_to_numpy(_manual_message(expected, encoding, pad))
    assert out.dtype == expected.dtype.newbyteorder('=')
    np.testing.assert_array_equal(out, expected)


@pytest.mark.parametrize('encoding', ['32FC1', '16UC1'])
def test_big_endian_images_are_swapped_to_native(encoding: str) -> None:
    expected = SAMPLES[encoding]
    out = conv.image_to_numpy(_manual_message(expected, encoding, pad=3, big_endian=True))
    assert out.dtype.isnative
    np.testing.assert_array_equal(out, expected)


def test_is_bigendian_is_irrelevant_for_bytes() -> None:
    msg = _manual_message(SAMPLES['rgb8'], 'rgb8')
    msg.is_bigendian = True
    np.testing.assert_array_equal(conv.image_to_numpy(msg), SAMPLES['rgb8'])


def test_image_to_numpy_is_a_view_of_the_buffer() -> None:
    msg = conv.numpy_to_image(SAMPLES['32FC1'], '32FC1')
    out = conv.image_to_numpy(msg)
    assert not out.flags.owndata
    assert np.shares_memory(out, np.frombuffer(msg.data, np.uint8))


@pytest.mark.parametrize('encoding', SAMPLES)
def test_numpy_to_image_round_trip(encoding: str) -> None:
    image = SAMPLES[encoding]
    msg = conv.numpy_to_image(image, encoding, Stamp(3, 4), 'camera_color_optical_frame')
    assert (msg.height, msg.width, msg.encoding) == (5, 7, encoding)
    assert msg.step == 7 * image.itemsize * (3 if image.ndim == 3 else 1)
    assert (msg.header.stamp.sec, msg.header.stamp.nanosec) == (3, 4)
    assert msg.header.frame_id == 'camera_color_optical_frame'
    np.testing.assert_array_equal(conv.image_to_numpy(msg), image)


def test_numpy_to_image_accepts_views_and_single_channel_3d() -> None:
    big = RNG.integers(0, 256, (10, 14, 3), dtype=np.uint8)
    view = big[::2, ::2]  # non-contiguous
    np.testing.assert_array_equal(conv.image_to_numpy(conv.numpy_to_image(view, 'rgb8')), view)
    depth = SAMPLES['32FC1'][:, :, None]
    msg = conv.numpy_to_image(depth, '32FC1', Time(sec=1, nanosec=2))
    np.testing.assert_array_equal(conv.image_to_numpy(msg), depth[:, :, 0])
    swapped = SAMPLES['16UC1'].astype('>u2')
    np.testing.assert_array_equal(
        conv.image_to_numpy(conv.numpy_to_image(swapped, '16UC1')), SAMPLES['16UC1']
    )


@pytest.mark.parametrize(
    ('mutate', 'message'),
    [
        (lambda m: setattr(m, 'encoding', 'yuv422'), 'unsupported encoding'),
        (lambda m: setattr(m, 'encoding', ''), 'unsupported encoding'),
        (lambda m: setattr(m, 'step', m.step - 1), 'shorter than a row'),
        (lambda m: setattr(m, 'step', m.step + 4), 'expected step'),
        (lambda m: setattr(m, 'height', m.height + 1), 'expected step'),
        (lambda m: setattr(m, 'data', m.data[:-1]), 'expected step'),
        (lambda m: setattr(m, 'width', 0), 'empty image'),
    ],
)
def test_inconsistent_images_are_refused(mutate, message: str) -> None:
    msg = _manual_message(SAMPLES['rgb8'], 'rgb8', pad=0)
    mutate(msg)
    with pytest.raises(conv.ConversionError, match=message):
        conv.image_to_numpy(msg)


def test_width_mismatch_that_still_fits_the_step_is_caught_by_size() -> None:
    """rgb8 reinterpreted as 32FC1 with the same step: sizes agree, rows do not."""
    msg = _manual_message(SAMPLES['rgb8'], 'rgb8')  # step 21
    msg.encoding = '32FC1'  # 7 px * 4 bytes = 28 > 21
    with pytest.raises(conv.ConversionError, match='shorter than a row'):
        conv.image_to_numpy(msg)


@pytest.mark.parametrize(
    ('image', 'encoding', 'message'),
    [
        (SAMPLES['rgb8'], 'rgba8', 'unsupported encoding'),
        (SAMPLES['rgb8'], 'mono8', 'shape'),
        (SAMPLES['mono8'], 'rgb8', 'shape'),
        (SAMPLES['32FC1'].astype(np.float64), '32FC1', 'dtype'),
        (SAMPLES['16UC1'].astype(np.int32), '16UC1', 'dtype'),
        (np.zeros((0, 4), np.uint8), 'mono8', 'empty'),
    ],
)
def test_numpy_to_image_refuses_mismatches(image: np.ndarray, encoding: str, message: str):
    with pytest.raises(conv.ConversionError, match=message):
        conv.numpy_to_image(image, encoding)


def test_camera_info_round_trip_and_errors() -> None:
    intr = CameraIntrinsics(612.0, 611.0, 320.5, 239.5, 640, 480)
    info = conv.intrinsics_to_camera_info(intr, Stamp(1, 2), 'cam')
    assert list(info.p) == [612.0, 0.0, 320.5, 0.0, 0.0, 611.0, 239.5, 0.0, 0.0, 0.0, 1.0, 0.0]
    back = conv.camera_info_to_intrinsics(info)
    assert back.k == intr.k
    assert (back.width, back.height) == (640, 480)
    assert not back.distorted

    empty = CameraInfo()  # all zeros: what a driver publishes before calibration
    with pytest.raises(conv.ConversionError, match='invalid CameraInfo'):
        conv.camera_info_to_intrinsics(empty)
    fisheye = conv.intrinsics_to_camera_info(intr)
    fisheye.distortion_model = 'equidistant'
    fisheye.d = [0.1, 0.0, 0.0, 0.0]
    with pytest.raises(conv.ConversionError, match='distortion model'):
        conv.camera_info_to_intrinsics(fisheye)
    real = conv.intrinsics_to_camera_info(intr)
    real.d = [0.1, -0.05, 0.0, 0.0, 0.0]
    assert conv.camera_info_to_intrinsics(real).distortion == (0.1, -0.05, 0.0, 0.0, 0.0)


def test_pose_round_trip() -> None:
    target = Target('base_link', (0.42, 0.05, 0.02), (1.0, 0.0, 0.0, 0.0))
    msg = conv.target_to_pose(target, Stamp(5, 6))
    assert msg.header.frame_id == 'base_link'
    assert (msg.header.stamp.sec, msg.header.stamp.nanosec) == (5, 6)
    assert conv.pose_to_target(msg) == target
    s = math.sqrt(0.5)
    other = Target('world', (1.0, 2.0, 3.0), (0.0, 0.0, s, s))
    assert conv.pose_to_target(conv.target_to_pose(other)) == other
    assert conv.msg_to_stamp(conv.stamp_to_msg(Stamp(7, 8))) == Stamp(7, 8)
