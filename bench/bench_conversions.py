"""Benchmark: sensor_msgs/Image <-> numpy for 640x480 rgb8 and 32FC1.

Compares robostral_agent.ros.conversions with the naive paths people write first
(``np.array(list(msg.data))`` one way, ``msg.data = arr.tobytes()`` / ``arr.ravel().tolist()``
the other), and prints a table and a JSON line. Run: ``.venv/bin/python
bench/bench_conversions.py [--runs N]``.
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from collections.abc import Callable

import numpy as np
from sensor_msgs.msg import Image

from robostral_agent.ros.conversions import image_to_numpy, numpy_to_image


def measure(fn: Callable[[], object], runs: int) -> dict[str, float]:
    fn()  # warm-up
    times = []
    for _ in range(runs):
        start = time.perf_counter()
        fn()
        times.append((time.perf_counter() - start) * 1e3)
    times.sort()
    return {
        'median_ms': statistics.median(times),
        'p95_ms': times[min(len(times) - 1, int(0.95 * len(times)))],
    }


def naive_to_numpy(msg: Image, dtype: np.dtype, shape: tuple[int, ...]) -> np.ndarray:
    return np.array(list(msg.data), dtype=np.uint8).view(dtype).reshape(shape)


def naive_from_numpy_tolist(arr: np.ndarray, encoding: str) -> Image:
    msg = Image(height=arr.shape[0], width=arr.shape[1], encoding=encoding)
    msg.step = arr.strides[0]
    msg.data = arr.view(np.uint8).ravel().tolist()
    return msg


def naive_from_numpy_bytes(arr: np.ndarray, encoding: str) -> Image:
    msg = Image(height=arr.shape[0], width=arr.shape[1], encoding=encoding)
    msg.step = arr.strides[0]
    msg.data = arr.tobytes()
    return msg


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument('--runs', type=int, default=1000, help='timed runs per case')
    parser.add_argument('--naive-runs', type=int, default=20, help='runs of the slow naive path')
    args = parser.parse_args()
    rng = np.random.default_rng(0)
    images = {
        'rgb8': rng.integers(0, 256, (480, 640, 3), dtype=np.uint8),
        '32FC1': rng.uniform(0.2, 2.0, (480, 640)).astype(np.float32),
    }
    results = []
    for encoding, arr in images.items():
        msg = numpy_to_image(arr, encoding)
        assert np.array_equal(image_to_numpy(msg), arr)
        dtype = arr.dtype
        cases = [
            ('image->numpy', 'robostral', lambda m=msg: image_to_numpy(m), args.runs),
            ('image->numpy', 'np.array(list(data))',
             lambda m=msg, d=dtype, s=arr.shape: naive_to_numpy(m, d, s), args.naive_runs),
            ('numpy->image', 'robostral', lambda a=arr, e=encoding: numpy_to_image(a, e),
             args.runs),
            ('numpy->image', 'data = arr.tobytes()',
             lambda a=arr, e=encoding: naive_from_numpy_bytes(a, e), args.runs),
            ('numpy->image', 'data = ravel().tolist()',
             lambda a=arr, e=encoding: naive_from_numpy_tolist(a, e), args.naive_runs),
        ]  # fmt: skip
        for direction, method, fn, runs in cases:
            results.append(
                {'encoding': encoding, 'direction': direction, 'method': method, 'runs': runs,
                 **measure(fn, runs)}
            )  # fmt: skip
    print(f'{"encoding":8} {"direction":13} {"method":24} {"runs":>5} {"median ms":>10} '
          f'{"p95 ms":>9}')  # fmt: skip
    for r in results:
        print(f'{r["encoding"]:8} {r["direction"]:13} {r["method"]:24} {r["runs"]:>5} '
              f'{r["median_ms"]:>10.4f} {r["p95_ms"]:>9.4f}')  # fmt: skip
    print(json.dumps({'benchmark': 'conversions', 'results': results}))


if __name__ == '__main__':
    main()
