"""Benchmark: the MuJoCo work cell on this machine's CPU.

Measures (prints a table and one JSON line):

* render: colour + depth 640x480 from one pass (frames/s, one thread), and scene load
  (model rebuild + renderer rebind, what the dataset generator pays per scene);
* physics: real-time factor of a pick-and-place with nothing else running;
* node-like: physics paced at 1x real time in a thread while the main thread renders at
  ``--camera-hz`` (as sim_node does): the camera rate and real-time factor achieved;
* pick-and-place: simulated duration (its wall time at 1x real time) and the wall time when
  physics runs as fast as it can.

Run: ``.venv/bin/python bench/bench_sim.py [--runs N] [--camera-hz 10]``.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import threading
import time

from robostral_agent.contract import Scene, SceneObject
from robostral_agent.paths import config_file
from robostral_agent.safety.policy import load_policy
from robostral_agent.sim import WorkCell, plans, random_scene
from robostral_agent.sim.simulation import Simulation

TARGET = SceneObject('cube', 'red', (0.47, 0.06), 0.4)
OTHERS = (
    SceneObject('ball', 'blue', (0.33, -0.18)),
    SceneObject('cylinder', 'green', (0.58, 0.2)),
)


def bench_render(frames: int) -> dict[str, float]:
    with WorkCell(random_scene(3)) as wc:
        wc.render()  # warm-up (shader compilation)
        start = time.perf_counter()
        for _ in range(frames):
            wc.render()
        fps = frames / (time.perf_counter() - start)
        loads = []
        for seed in range(10):
            t0 = time.perf_counter()
            wc.load_scene(random_scene(seed))
            loads.append(time.perf_counter() - t0)
    return {'render_fps': fps, 'scene_load_ms': 1e3 * statistics.median(loads)}


def bench_physics(runs: int) -> dict[str, float]:
    policy = load_policy(config_file('safety_policy.yaml'))
    rtfs, walls, sims = [], [], []
    for _ in range(runs):
        with Simulation(Scene((TARGET, *OTHERS)), policy, render=False) as sim:
            start = time.perf_counter()
            result = sim.run(plans.pick_place(TARGET, 'left'))
            wall = time.perf_counter() - start
            assert result.status == 'succeeded', result
            rtfs.append(sim.time / wall)
            walls.append(wall)
            sims.append(sim.time)
    return {
        'physics_rtf': statistics.median(rtfs),
        'pick_place_sim_s': statistics.median(sims),
        'pick_place_wall_fast_s': statistics.median(walls),
    }


def bench_node_like(camera_hz: float) -> dict[str, float]:
    """Physics paced to the wall clock in a thread, rendering at ``camera_hz`` here."""
    policy = load_policy(config_file('safety_policy.yaml'))
    sim = Simulation(Scene((TARGET, *OTHERS)), policy)
    lock = threading.Lock()
    done = threading.Event()
    results: list[object] = []

    def physics() -> None:
        wall0, sim0 = time.perf_counter(), sim.time
        next_report = 0.0
        while not done.is_set():
            with lock:
                behind = sim0 + (time.perf_counter() - wall0) - sim.time
                for _ in range(max(0, int(behind / sim.cell.timestep))):
                    if sim.time >= next_report:
                        sim.report_safety(True)  # a 20 Hz supervisor
                        next_report += 0.05
                    result = sim.step()
                    if result is not None:
                        results.append(result)
                        done.set()
            time.sleep(0.004)

    with lock:
        sim.report_safety(True)
        assert sim.submit(plans.pick_place(TARGET, 'left')) is None
    thread = threading.Thread(target=physics)
    frames, start, sim_start = 0, time.perf_counter(), sim.time
    thread.start()
    period = 1.0 / camera_hz
    next_frame = start
    while not done.is_set():
        now = time.perf_counter()
        if now < next_frame:
            time.sleep(next_frame - now)
            continue
        next_frame += period
        with lock:
            sim.cell.update_render_scene()
        sim.cell.render_pending()
        frames += 1
    thread.join()
    wall = time.perf_counter() - start
    status = getattr(results[0], 'status', '?')
    sim.close()
    return {
        'node_camera_hz': frames / wall,
        'node_rtf': (sim.time - sim_start) / wall,
        'pick_place_wall_1x_s': wall,
        'node_pick_place_status': status,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument('--frames', type=int, default=100, help='frames in the render test')
    parser.add_argument('--runs', type=int, default=3, help='pick-and-places, fast mode')
    parser.add_argument('--camera-hz', type=float, default=10.0, help='node-like camera rate')
    args = parser.parse_args()
    load_before = os.getloadavg()[0]  # other work on a shared machine moves every figure
    figures: dict[str, float | str] = {}
    figures.update(bench_render(args.frames))
    figures.update(bench_physics(args.runs))
    figures.update(bench_node_like(args.camera_hz))
    f = figures
    rows = [
        ('render colour+depth 640x480 (1 thread)', f'{f["render_fps"]:.1f} frames/s', '>= 10'),
        ('scene load (model + renderer rebind)', f'{f["scene_load_ms"]:.0f} ms', ''),
        ('physics real-time factor (no rendering)', f'{f["physics_rtf"]:.1f} x', '>= 1'),
        (f'node-like: camera (asked {args.camera_hz:g})', f'{f["node_camera_hz"]:.1f} Hz', '>=10'),
        ('node-like: physics real-time factor', f'{f["node_rtf"]:.2f} x', '>= 1'),
        ('pick-and-place, simulated time', f'{f["pick_place_sim_s"]:.2f} s', ''),
        ('pick-and-place wall time at 1x', f'{f["pick_place_wall_1x_s"]:.2f} s', '< 10'),
        ('pick-and-place wall time, physics flat out', f'{f["pick_place_wall_fast_s"]:.2f} s', ''),
    ]  # fmt: skip
    figures['load_average_1min'] = max(load_before, os.getloadavg()[0])
    rows.append(
        ('load average (1 min, worst of start/end)', f'{figures["load_average_1min"]:.2f}', '')
    )
    width = max(len(r[0]) for r in rows)
    print(f'{"measure":<{width}}  {"value":>16}  target')
    for name, value, target in rows:
        print(f'{name:<{width}}  {value:>16}  {target}')
    print(json.dumps({'bench': 'sim', **figures}, sort_keys=True))


if __name__ == '__main__':
    main()
