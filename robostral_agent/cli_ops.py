"""Operator commands of ``robostral``: instruct, estop, reset, status, approve, reject.

Each command opens one client node with a unique name (``robostral_cli_<hex>``) in a private
ROS context, in the namespace given by ``--namespace`` (default: ``$ROBOSTRAL_NAMESPACE``,
else the root), in the domain of ``ROS_DOMAIN_ID``; it waits for the nodes it talks to
(publishers and subscribers matched) before it speaks, and every wait has a timeout. Nothing
here is imported until a command runs, so ``robostral --help`` stays fast and ROS-free.

Exit codes:

``instruct``  0 the plan was approved and executed (``succeeded``), or a stop instruction
              tripped the latch as asked; 1 the agent failed (``error``, ``busy``), the
              instruction was dropped by a stop, or the execution ``failed``/``aborted``;
              3 refused: the supervisor rejected the plan (any reason, including an
              operator's rejection or an approval timeout) or the agent refused the text
              (``rejected_input``); 4 not found; 5 timed out (no agent, no status, no
              verdict or no result within ``--wait``)
others        0 done and confirmed; 1 failed or not confirmed in time (the message says why)
all           2 usage error; 130 interrupted (Ctrl-C)
"""

from __future__ import annotations

import argparse
import json
import os
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any, Final

if TYPE_CHECKING:
    from rich.console import Console

    from robostral_agent.contract import GoalProposal, Verdict
    from robostral_agent.ros.cell_client import CellClient
    from robostral_agent.ros.instruction_runner import InstructionRun

EXIT_OK: Final = 0
EXIT_FAILED: Final = 1
EXIT_REJECTED: Final = 3
EXIT_NOT_FOUND: Final = 4
EXIT_TIMEOUT: Final = 5
EXIT_INTERRUPTED: Final = 130
NAMESPACE_ENV: Final = 'ROBOSTRAL_NAMESPACE'
SUPERVISOR: Final = 'safety_supervisor'
AGENT: Final = 'robostral_agent'
LAST_VERDICTS: Final = 5


# --- shared plumbing -------------------------------------------------------------------------


def console() -> Console:
    from rich.console import Console

    return Console(highlight=False, soft_wrap=True)


def add_namespace(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        '--namespace',
        default=os.environ.get(NAMESPACE_ENV, ''),
        help=f'namespace of the cell (default: ${NAMESPACE_ENV}, else the root namespace); '
        'ROS_DOMAIN_ID selects the domain',
    )


def positive_number(text: str) -> float:
    """argparse type: a number > 0 (seconds, factors)."""
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f'{text!r} is not a number') from None
    if not value > 0:
        raise argparse.ArgumentTypeError(f'must be > 0, got {text}')
    return value


def add_wait(parser: argparse.ArgumentParser, default: float, what: str) -> None:
    parser.add_argument(
        '--wait', type=positive_number, default=default, metavar='S',
        help=f'{what} (seconds, default {default:g})',
    )  # fmt: skip


@contextmanager
def _client(namespace: str, **kwargs: Any) -> Iterator[CellClient]:
    from robostral_agent.ros.cell_client import CellClient

    client = CellClient(namespace, name='robostral_cli', **kwargs)
    try:
        yield client
    finally:
        client.close()


def _where(client: CellClient) -> str:
    domain = os.environ.get('ROS_DOMAIN_ID', '0') or '0'
    return f'namespace {client.namespace or "/"}, ROS_DOMAIN_ID {domain}'


def _interruptible(handler: Callable[[argparse.Namespace], int]) -> Callable[..., int]:
    def run(args: argparse.Namespace) -> int:
        try:
            return handler(args)
        except KeyboardInterrupt:
            print('interrupted')
            return EXIT_INTERRUPTED

    run.__doc__ = handler.__doc__
    return run


def _matched(client: CellClient, wait_s: float, pubs: list[Any], subs: list[Any]) -> bool:
    """Wait until ``pubs`` reach a subscriber and ``subs`` hear a publisher."""
    return bool(
        client.wait(
            lambda: client.subscribers_matched(pubs) and client.publishers_matched(subs), wait_s
        )
    )


# --- instruct --------------------------------------------------------------------------------


def instruct_exit_code(run: InstructionRun) -> int:
    """The exit code of ``robostral instruct`` for a finished run (module docstring)."""
    from robostral_agent.vlm.intent import is_stop_intent

    if run.timed_out or run.status is None:
        return EXIT_TIMEOUT
    state = run.status.state
    if state == 'not_found':
        return EXIT_NOT_FOUND
    if state == 'stopped':
        return EXIT_OK if is_stop_intent(run.instruction.text) else EXIT_FAILED
    if state == 'rejected_input':
        return EXIT_REJECTED
    if state != 'proposed':
        return EXIT_FAILED
    if run.verdict is None:
        return EXIT_TIMEOUT
    if not run.verdict.approved:
        return EXIT_REJECTED
    if run.result is None:
        return EXIT_TIMEOUT
    return EXIT_OK if run.result.status == 'succeeded' else EXIT_FAILED


def plan_lines(proposal: GoalProposal) -> list[str]:
    lines = [f'plan {proposal.id} ({proposal.model.name}):']
    for i, step in enumerate(proposal.steps, start=1):
        x, y, z = step.target.position
        what = f' {step.object}' if step.object else ''
        lines.append(
            f'  {i}. {step.task}{what}  target ({x:.3f}, {y:.3f}, {z:.3f}) '
            f'in {step.target.frame_id}  confidence {step.confidence:.2f}'
        )
    return lines


def verdict_line(verdict: Verdict) -> str:
    if verdict.state == 'approved':
        return f'verdict: APPROVED (policy {verdict.policy_version[:12]})'
    if verdict.state == 'pending_approval':
        return (
            f'verdict: PENDING APPROVAL ({verdict.detail or "held for an operator"}); approve '
            f'with: robostral approve {verdict.proposal_id}  (or: robostral reject '
            f'{verdict.proposal_id})'
        )
    return f'verdict: REJECTED {", ".join(verdict.reasons)}: {verdict.detail}'


def _instruct(args: argparse.Namespace) -> int:
    from robostral_agent.ros.instruction_runner import Timeouts, follow

    out = console()
    deadline = time.monotonic() + args.wait
    with _client(args.namespace) as client:
        needed_pubs = [client.instruction_pub]
        needed_subs = [client.status_sub, client.proposal_sub, client.verdict_sub]
        if not _matched(client, args.wait, needed_pubs, needed_subs):
            missing = []
            if not client.subscribers_matched(needed_pubs):
                missing.append('no agent subscribes to robostral/instruction')
            if not client.publishers_matched([client.verdict_sub]):
                missing.append('no supervisor publishes robostral/verdict')
            out.print(
                f'TIMED OUT after {args.wait:g} s: {"; ".join(missing) or "nodes not matched"} '
                f'({_where(client)}); are the nodes running?'
            )
            return EXIT_TIMEOUT
        if not client.publishers_matched([client.result_sub]):
            out.print('note: no executor publishes robostral/execution_result yet')

        def show(kind: str, run: InstructionRun) -> None:
            if kind == 'sent':
                who = f' as {args.operator}' if args.operator else ''
                out.print(f'instruction {run.instruction.id}{who}: {run.instruction.text!r}')
            elif kind == 'status' and run.status is not None:
                ms = f' in {run.status_ms:.0f} ms' if run.status_ms is not None else ''
                detail = f': {run.status.detail}' if run.status.state != 'proposed' else ''
                out.print(f'agent: {run.status.state}{ms}{detail}')
            elif kind == 'proposal' and run.proposal is not None:
                for line in plan_lines(run.proposal):
                    out.print(line)
            elif kind == 'pending' and run.pending is not None:
                out.print(verdict_line(run.pending))
                out.print(f'waiting up to {max(0.0, deadline - time.monotonic()):.0f} s ...')
            elif kind == 'verdict' and run.verdict is not None:
                out.print(verdict_line(run.verdict))
                if run.verdict.approved:
                    out.print('executing ...')
            elif kind == 'result' and run.result is not None:
                out.print(f'execution: {run.result.status.upper()} {run.result.detail}')

        budget = args.wait
        run = follow(
            client, args.text, operator=args.operator,
            timeouts=Timeouts(budget, budget, budget, budget), on_event=show, deadline=deadline,
        )  # fmt: skip
        if run.waiting_for:
            out.print(f'TIMED OUT after {args.wait:g} s waiting for the {run.waiting_for}')
    code = instruct_exit_code(run)
    if args.json:
        print(json.dumps(_run_document(run, code)))
    return code


def _run_document(run: InstructionRun, code: int) -> dict[str, Any]:
    from robostral_agent.ros.eval_runner import plan_steps

    return {
        'instruction': run.instruction.to_dict(),
        'status': run.status.to_dict() if run.status else None,
        'plan': plan_steps(run.proposal),
        'verdict': run.verdict.to_dict() if run.verdict else None,
        'result': run.result.to_dict() if run.result else None,
        'waiting_for': run.waiting_for,
        'latency_ms': {'status': run.status_ms, 'verdict': run.verdict_ms,
                       'result': run.result_ms},
        'exit_code': code,
    }  # fmt: skip


# --- estop / reset -----------------------------------------------------------------------------


def _estop(args: argparse.Namespace) -> int:
    out = console()
    pressed = not args.release
    with _client(args.namespace) as client:
        if not _matched(client, args.wait, [client.estop_pub], []):
            out.print(f'FAILED: nobody subscribes to robostral/estop ({_where(client)})')
            return EXIT_FAILED
        t_sent = time.monotonic()
        client.estop(pressed)
        if pressed:
            confirmed = client.wait(
                lambda: (
                    client.safety_ok is not None
                    and client.safety_ok.t > t_sent
                    and not client.safety_ok.msg
                ),
                args.wait,
            )
            if not confirmed:
                out.print(f'e-stop sent, but safety_ok was not seen false within {args.wait:g} s')
                return EXIT_FAILED
            out.print(
                'E-STOP pressed: the supervisor latched, safety_ok is false. To resume: '
                'robostral estop --release, then robostral reset'
            )
            return EXIT_OK
        released = client.wait(lambda: _estop_state(client, t_sent) == 'false', args.wait)
        if not released:
            out.print(f'release sent, but the supervisor did not confirm within {args.wait:g} s')
            return EXIT_FAILED
        out.print('e-stop input released; the latch stays set until: robostral reset')
        return EXIT_OK


def _estop_state(client: CellClient, after: float) -> str:
    status = client.node_status(SUPERVISOR)
    if status is None or status.t <= after:
        return ''
    return str(status.msg['values'].get('estop_pressed', ''))


def _reset(args: argparse.Namespace) -> int:
    from robostral_agent.ros.cell_client import ClientError

    out = console()
    with _client(args.namespace) as client:
        try:
            response = client.reset(args.wait)
        except ClientError as exc:
            out.print(f'FAILED: {exc}')
            return EXIT_FAILED
    if response.success:
        out.print(f'reset: {response.message}')
        return EXIT_OK
    hint = ' (robostral estop --release first)' if 'release' in response.message else ''
    out.print(f'reset REFUSED: {response.message}{hint}')
    return EXIT_FAILED


# --- approve / reject --------------------------------------------------------------------------


def _decide(args: argparse.Namespace, approve: bool) -> int:
    out = console()
    with _client(args.namespace) as client:
        if not _matched(client, args.wait, [client.decision_pub], [client.verdict_sub]):
            out.print(f'FAILED: no supervisor on robostral/operator_decision ({_where(client)})')
            return EXIT_FAILED
        client.decide(args.proposal_id, approve, args.operator)
        verdict = client.wait(lambda: client.verdict_for(args.proposal_id), args.wait)
    if verdict is None:
        out.print(
            f'no verdict on {args.proposal_id} within {args.wait:g} s: it is not held for '
            'approval (unknown id, already decided, or expired)'
        )
        return EXIT_FAILED
    out.print(verdict_line(verdict.msg))
    return EXIT_OK if verdict.msg.approved == approve else EXIT_FAILED


def _approve(args: argparse.Namespace) -> int:
    return _decide(args, True)


def _reject(args: argparse.Namespace) -> int:
    return _decide(args, False)


# --- status ------------------------------------------------------------------------------------


def audit_verdicts(path: str, count: int = LAST_VERDICTS, tail_bytes: int = 262144) -> list:
    """The last ``count`` verdicts recorded in a (local, readable) audit log; [] otherwise."""
    from robostral_agent.contract import ContractError, decode_verdict

    try:
        with Path(path).open('rb') as fh:
            fh.seek(0, os.SEEK_END)
            fh.seek(max(0, fh.tell() - tail_bytes))
            lines = fh.read().splitlines()
    except OSError:
        return []
    found = []
    for raw in reversed(lines):
        try:
            record = json.loads(raw)
            if record.get('kind') == 'decision' and 'verdict' in record.get('data', {}):
                found.append(decode_verdict(record['data']['verdict']))
        except (ValueError, ContractError, AttributeError, TypeError):
            continue
        if len(found) >= count:
            break
    return found[::-1]


def status_lines(client: CellClient) -> list[str]:
    """safety_ok, the supervisor's latch and policy, the agent, the last verdicts."""
    with client.journal_lock:
        safety = client.safety_ok
        supervisor = client.node_status(SUPERVISOR)
        agent = client.node_status(AGENT)
        seen = [v.msg for v in list(client.verdicts)[-LAST_VERDICTS:]]
    lines = []
    if safety is None:
        lines.append('safety_ok: not heard')
    else:
        age = time.monotonic() - safety.t
        lines.append(f'safety_ok: {str(safety.msg).lower()} (heard {age:.1f} s ago)')
    if supervisor is None:
        lines.append('supervisor: no diagnostics heard')
        verdicts = seen
    else:
        v = supervisor.msg['values']
        latch = 'LATCHED' if v.get('latched') == 'true' else 'not latched'
        lines.append(f'supervisor: {v.get("state", "?")} ({latch}): {v.get("reason", "")}')
        lines.append(f'policy: version {v.get("policy_version", "")[:16]}  {v.get("policy_file")}')
        lines.append(
            f'e-stop input: {v.get("estop_pressed")}; pending approval: '
            f'{v.get("pending_approval")}; approved {v.get("approved")}, rejected '
            f'{v.get("rejected")}'
        )
        lines.append(f'audit log: {v.get("audit_log")} ({v.get("audit_records")} records)')
        verdicts = audit_verdicts(v.get('audit_log', '')) or seen
    if agent is not None:
        a = agent.msg['values']
        lines.append(
            f'agent: {a.get("state")} model {a.get("model") or "-"} on {a.get("device") or "-"}'
            f', last latency {a.get("last_latency_ms")} ms'
        )
    lines.append('last verdicts:' if verdicts else 'last verdicts: none')
    for verdict in verdicts[-LAST_VERDICTS:]:
        reasons = f' {",".join(verdict.reasons)}' if verdict.reasons else ''
        lines.append(
            f'  {verdict.state}{reasons}  proposal {verdict.proposal_id or "-"}  '
            f'instruction {verdict.instruction_id or "-"}'
        )
    return lines


def _status(args: argparse.Namespace) -> int:
    out = console()
    with _client(args.namespace) as client:
        heard = client.wait(
            lambda: client.node_status(SUPERVISOR) is not None and client.safety_ok is not None,
            args.wait,
        )
        if not heard and not args.watch:
            for line in status_lines(client):
                out.print(line)
            out.print(f'FAILED: no supervisor heard within {args.wait:g} s ({_where(client)})')
            return EXIT_FAILED
        client.wait(lambda: client.node_status(AGENT) is not None, 1.5)  # 1 Hz diagnostics
        for line in status_lines(client):
            out.print(line)
        if not args.watch:
            return EXIT_OK
        _watch(client, out)
    return EXIT_OK


def _watch(client: CellClient, out: Console) -> None:
    """Print a line on every change of safety_ok or latch state and on every verdict."""
    last: tuple[Any, ...] = ()
    shown = client.verdict_count
    beat = time.monotonic()
    while True:
        client.wait(lambda seen=shown: client.verdict_count > seen, 0.5)
        with client.journal_lock:
            safety = client.safety_ok
            supervisor = client.node_status(SUPERVISOR)
            fresh_count = min(client.verdict_count - shown, len(client.verdicts))
            new = list(client.verdicts)[len(client.verdicts) - fresh_count :]
            shown = client.verdict_count
        fresh = safety is not None and time.monotonic() - safety.t < 1.0
        values = supervisor.msg['values'] if supervisor else {}
        state = (
            str(safety.msg).lower() if fresh and safety else 'silent',
            values.get('state', '?'),
            values.get('reason', ''),
        )
        now = time.strftime('%H:%M:%S')
        for item in new:
            out.print(f'{now} {verdict_line(item.msg)} (proposal {item.msg.proposal_id})')
        if state != last or time.monotonic() - beat > 10.0:
            out.print(f'{now} safety_ok={state[0]} supervisor={state[1]} ({state[2]})')
            last, beat = state, time.monotonic()


# --- registration ------------------------------------------------------------------------------


def _finish(
    parser: argparse.ArgumentParser,
    wait_s: float,
    wait_help: str,
    handler: Callable[[argparse.Namespace], int],
) -> None:
    """The tail every operation shares: ``--wait``, ``--namespace`` (in this order, the
    last options of its help) and its handler, which answers Ctrl-C with exit code 130."""
    add_wait(parser, wait_s, wait_help)
    add_namespace(parser)
    parser.set_defaults(handler=_interruptible(handler))


def register_ops(commands: argparse._SubParsersAction) -> None:
    epilog = 'exit codes: see robostral --help; 2 usage error; 130 interrupted'
    p = commands.add_parser(
        'instruct',
        help='send an instruction and follow it to its end',
        description=(
            'Send an instruction to the agent (robostral/instruction, JSON with a fresh id) '
            "and follow it: the plan (steps, targets, confidences), the supervisor's "
            'verdict with its reasons, and the execution result. A plan held for approval '
            'prints the command that approves it and keeps waiting.'
        ),
        epilog='exit codes: 0 approved and executed (or a stop that latched as asked); '
        '1 agent error/busy or execution failed/aborted; 3 rejected (supervisor, operator '
        'or rejected_input); 4 not found; 5 timed out; 2 usage; 130 interrupted',
    )
    p.add_argument(
        'text', metavar='TEXT', help='the instruction, e.g. "put the red cube in the left bin"'
    )
    p.add_argument('--operator', default='', help='operator name recorded with the instruction')
    add_wait(p, 60.0, 'give up after this long, for the whole run')
    p.add_argument('--json', action='store_true', help='also print the run as one JSON line')
    add_namespace(p)
    p.set_defaults(handler=_interruptible(_instruct))

    p = commands.add_parser(
        'estop',
        help='press (or --release) the software e-stop',
        description=(
            'Publish robostral/estop true (pressed: the supervisor latches at once and '
            'safety_ok drops) and wait until safety_ok is seen false; with --release publish '
            'false and wait until the supervisor reports the input released. The latch then '
            'stays set until robostral reset.'
        ),
        epilog=epilog,
    )
    p.add_argument('--release', action='store_true', help='release the e-stop input instead')
    _finish(p, 5.0, 'how long to wait for the supervisor', _estop)

    p = commands.add_parser(
        'reset',
        help='clear the supervisor latch',
        description=(
            "Call robostral/reset and print the supervisor's answer. It succeeds only when "
            'the e-stop input is released (robostral estop --release) and the policy is '
            'loaded; proposals made before the reset stay rejected.'
        ),
        epilog=epilog,
    )
    _finish(p, 10.0, 'how long to wait for the service', _reset)

    p = commands.add_parser(
        'status',
        help='safety_ok, latch, policy version, last verdicts',
        description=(
            "Print safety_ok, the supervisor's latch state and reason, the policy version, "
            "the e-stop input, counters, the agent's state and the last verdicts (from the "
            'audit log when it is readable here, else those seen on robostral/verdict). '
            'With --watch, keep printing a line on every change and every verdict until '
            'Ctrl-C.'
        ),
        epilog=epilog,
    )
    p.add_argument('--watch', action='store_true', help='keep printing changes until Ctrl-C')
    _finish(p, 5.0, 'how long to listen for the supervisor', _status)

    for name, handler, verb in (('approve', _approve, 'approve'), ('reject', _reject, 'reject')):
        p = commands.add_parser(
            name,
            help=f'{verb} a plan held for approval',
            description=(
                f'Publish an operator decision to {verb} the plan PROPOSAL_ID (held with '
                'state pending_approval) on robostral/operator_decision and print the '
                'verdict that follows. Exits 1 when no verdict follows (unknown id, '
                'already decided, expired, or an operator the policy does not authorise).'
            ),
            epilog=epilog,
        )
        p.add_argument('proposal_id', metavar='PROPOSAL_ID', help='the id printed by instruct')
        p.add_argument('--operator', default='', help='operator name recorded with the decision')
        _finish(p, 10.0, 'how long to wait for the verdict', handler)
