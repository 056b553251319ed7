"""Benchmark: the supervisor core in-process (no DDS).

* ``evaluate``: rule evaluation of a two-step pick-and-place plan against a policy with 10
  keep-out zones (transit path checks included). Target: p99 under 0.5 ms.
* ``propose``: the whole core path for the same message: strict JSON decoding, evaluation,
  latch/replay/rate checks and the write-ahead audit record (with fsync).
* ``audit_append``: one audit record, written and fsynced.

Prints a table and one JSON line. Run: ``.venv/bin/python bench/bench_safety.py [--runs N]``.
"""

from __future__ import annotations

import argparse
import copy
import json
import os
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import yaml

from robostral_agent.contract import decode_goal_proposal
from robostral_agent.paths import config_file
from robostral_agent.safety import examples as ex
from robostral_agent.safety.audit import AuditLog
from robostral_agent.safety.latch import LatchStore
from robostral_agent.safety.policy import LoadedPolicy, parse_policy
from robostral_agent.safety.rules import PolicyEvaluator
from robostral_agent.safety.supervisor import Supervisor

NOW = 1_700_000_000 * 10**9

# Eight more zones around the cell, some near the plan's path (their bounding boxes overlap
# its segments, so the exact tests run), none on it: the plan is approved, every check runs.
EXTRA_ZONES = [
    {'name': 'left_post', 'type': 'cylinder', 'center': [0.55, 0.25], 'radius': 0.03,
     'z_min': 0.0, 'z_max': 0.6},
    {'name': 'right_post', 'type': 'cylinder', 'center': [0.55, -0.25], 'radius': 0.03,
     'z_min': 0.0, 'z_max': 0.6},
    {'name': 'camera_mast', 'type': 'cylinder', 'center': [0.2, 0.5], 'radius': 0.04,
     'z_min': 0.0, 'z_max': 0.6},
    {'name': 'light', 'type': 'box', 'min': [0.35, 0.15, 0.45], 'max': [0.5, 0.3, 0.6]},
    {'name': 'cable_tray', 'type': 'box', 'min': [0.7, -0.55, 0.0], 'max': [0.75, 0.55, 0.1]},
    {'name': 'sensor', 'type': 'box', 'min': [0.43, 0.12, 0.0], 'max': [0.47, 0.16, 0.05]},
    {'name': 'clamp', 'type': 'box', 'min': [0.3, -0.2, 0.0], 'max': [0.36, -0.1, 0.08]},
    {'name': 'hose', 'type': 'cylinder', 'center': [0.6, 0.45], 'radius': 0.02,
     'z_min': 0.0, 'z_max': 0.4},
]  # fmt: skip


def bench_policy() -> dict:
    document = yaml.safe_load(config_file('safety_policy.yaml').read_text())
    document['keepout_zones'] = [*document['keepout_zones'], *EXTRA_ZONES]
    document['max_goal_rate_hz'] = 1e9  # measure the checks, not the rate limiter
    return document


def percentiles(fn: Callable[[int], object], runs: int) -> dict[str, float]:
    for i in range(min(200, runs)):
        fn(-1 - i)  # warm-up
    times = np.empty(runs)
    for i in range(runs):
        start = time.perf_counter()
        fn(i)
        times[i] = (time.perf_counter() - start) * 1e3
    return {
        'p50_ms': float(np.percentile(times, 50)),
        'p99_ms': float(np.percentile(times, 99)),
        'max_ms': float(times.max()),
        'runs': runs,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument('--runs', type=int, default=5000, help='timed runs per case')
    args = parser.parse_args()
    document = bench_policy()
    policy = parse_policy(document)
    assert len(policy.keepout_zones) == 10
    evaluator = PolicyEvaluator(policy)
    text = ex.to_text(ex.pick_place(NOW))
    proposal = decode_goal_proposal(text, check_values=False)
    assert evaluator.evaluate(proposal, NOW) == [], 'the benchmark plan must be approved'

    results = {'evaluate': percentiles(lambda i: evaluator.evaluate(proposal, NOW), args.runs)}
    with tempfile.TemporaryDirectory() as tmp:
        audit = AuditLog(Path(tmp) / 'audit.jsonl', NOW)
        loaded = LoadedPolicy(policy, '0' * 64, 'bench')
        sup = Supervisor(loaded, audit, LatchStore(Path(tmp) / 'state.json'), NOW)
        assert sup.reset(NOW).success
        docs = {}

        def propose(i: int) -> None:
            outcome = sup.propose(docs[i], NOW)
            assert outcome.approved, outcome.verdicts[0].reasons

        for i in range(-200, args.runs):
            doc = copy.deepcopy(ex.pick_place(NOW))
            doc['id'] = f'bench-{i}'
            docs[i] = ex.to_text(doc)
        results['propose'] = percentiles(propose, args.runs)
        record = {'verdict': {'proposal_id': 'x' * 32, 'state': 'approved'}, 'proposal': text}
        results['audit_append'] = percentiles(
            lambda i: audit.append('decision', NOW, record), args.runs
        )
        sup.close(NOW)

    print(f'{"case":<14} {"p50 ms":>8} {"p99 ms":>8} {"max ms":>8} {"runs":>6}')
    for name, r in results.items():
        print(
            f'{name:<14} {r["p50_ms"]:8.3f} {r["p99_ms"]:8.3f} {r["max_ms"]:8.3f} {r["runs"]:6d}'
        )
    target = results['evaluate']['p99_ms'] < 0.5
    print(f'target evaluate p99 < 0.5 ms: {"met" if target else "NOT met"}')
    print(f'load average (1 min, shared 2-core machine): {os.getloadavg()[0]:.2f}')
    summary = {'bench': 'safety', 'loadavg_1min': os.getloadavg()[0], 'zones': 10, 'steps': 2}
    print(json.dumps({**summary, **results, 'evaluate_p99_target_met': target}))


if __name__ == '__main__':
    main()
