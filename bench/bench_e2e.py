"""Benchmark: instruction -> verdict and instruction -> execution result over the full graph.

The simulator, the supervisor and the agent run as child processes with the shipped config
(exactly as ``robostral eval`` starts them, embedded model unless ``--model``); this script is
the operator: per generated evaluation case it loads the scene, sends the instruction and
follows it (:mod:`robostral_agent.ros.eval_runner`). Times are taken in this process, on the
monotonic clock, from the publish of the instruction to the arrival of:

* the agent's final status (``to_status``: screening, model, grounding, two DDS hops),
* the supervisor's first verdict (``to_verdict``: the above plus the policy check and audit
  append, fsynced, and one more hop),
* the executor's result (``to_result``: the above plus the simulated motion at
  ``--real-time-factor``; pick_place is about 6.5 s of simulated time).

Prints a table (p50 / p95 / max per measure, result latency per task) and one JSON line.
Run: ``.venv/bin/python bench/bench_e2e.py [--cases 30] [--seed 5] [--model DIR]``.
"""

from __future__ import annotations

import argparse
import json
import os
import tempfile
import time
import uuid
from collections import defaultdict
from pathlib import Path

from robostral_agent.evaluation.cases import CaseGenerator
from robostral_agent.evaluation.report import percentiles
from robostral_agent.launcher import CellSettings
from robostral_agent.paths import config_file
from robostral_agent.ros.cell_runner import simulated_cell
from robostral_agent.ros.eval_runner import run_cases
from robostral_agent.safety.policy import load_policy


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument('--cases', type=int, default=30)
    parser.add_argument('--seed', type=int, default=5)
    parser.add_argument('--model', default='', help='model directory (default: embedded)')
    parser.add_argument('--real-time-factor', type=float, default=1.0)
    args = parser.parse_args()

    policy = load_policy(config_file('safety_policy.yaml'))
    cases = CaseGenerator(policy.policy).generate(args.cases, args.seed)
    run_dir = Path(tempfile.mkdtemp(prefix='bench-e2e-'))
    settings = CellSettings(
        namespace=f'/bench_e2e_{uuid.uuid4().hex[:6]}', run_dir=run_dir,
        audit_log=run_dir / 'audit.jsonl', policy_file=policy.path,
        model_path=str(Path(args.model).resolve()) if args.model else '',
        real_time_factor=args.real_time_factor,
    )  # fmt: skip
    t0 = time.monotonic()
    with simulated_cell(settings, debug_images=True) as cell:
        startup_s = time.monotonic() - t0
        cell.reset_latch()
        t1 = time.monotonic()
        cell.client.peaks.clear()
        records = run_cases(cell, cases, policy.policy)
        run_s = time.monotonic() - t1
        peaks = dict(cell.client.peaks)

    measures: dict[str, list[float]] = defaultdict(list)
    for record in records:
        for key in ('status', 'verdict', 'result'):
            value = record.latency_ms.get(key)
            if value is not None:
                measures[f'to_{key}'].append(value)
                if key == 'result':
                    measures[f'to_result[{record.expect["task"]}]'].append(value)
    results = {name: percentiles(values) for name, values in sorted(measures.items())}
    load = os.getloadavg()[0]
    print(f'e2e over the full graph: {len(records)} cases (seed {args.seed}), startup '
          f'{startup_s:.1f} s, run {run_s:.1f} s, load average {load:.2f}')  # fmt: skip
    print(f'{"measure (ms)":28} {"p50":>9} {"p95":>9} {"max":>9} {"n":>4}')
    for name, stats in results.items():
        print(f'{name:28} {stats["p50"]:9.1f} {stats["p95"]:9.1f} {stats["max"]:9.1f} '
              f'{stats["n"]:4d}')  # fmt: skip
    correct = sum(r.correct for r in records)
    for name, value in peaks.items():
        print(f'peak {name}: {value:.0f}')
    print(json.dumps({
        'bench': 'e2e', 'cases': len(records), 'seed': args.seed, 'correct': correct,
        'real_time_factor': args.real_time_factor, 'startup_s': round(startup_s, 1),
        'run_s': round(run_s, 1), 'loadavg_1min': load, 'latency_ms': results,
        'diagnostics_peaks': peaks,
    }))  # fmt: skip


if __name__ == '__main__':
    main()
