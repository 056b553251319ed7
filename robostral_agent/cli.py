"""The ``robostral`` command: operator and integrator tools, one argparse subcommand each.

Exit codes, for every subcommand: 0 success, 1 the check or operation failed (the message
says why), 2 usage error (argparse). Each subcommand registers itself with a function
``register(commands)`` that adds its parser and sets ``handler`` (``args -> exit code``);
later commands (``instruct``, ``estop``, ``reset``, ``status``, ``approve``, ``reject``,
``demo``, ``eval``) live in their own modules and are added to :data:`COMMANDS`. Handlers
import what they need lazily, so ``robostral audit verify`` never loads ROS or torch.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Final

EXIT_OK: Final = 0
EXIT_FAILED: Final = 1
EXIT_USAGE: Final = 2

Commands = argparse._SubParsersAction  # the object add_subparsers() returns
Register = Callable[[Commands], None]


# --- robostral audit ... ----------------------------------------------------------------------


def _audit_verify(args: argparse.Namespace) -> int:
    from robostral_agent.safety.audit import AuditError, verify_file

    path = str(args.file)
    try:
        report = verify_file(args.file, use_head=not args.no_head)
    except AuditError as exc:
        print(f'ERROR: {exc}')
        return EXIT_FAILED
    for note in report.notes:
        print(f'note: {note}')
    for line in report.recovered:
        print(
            f'note: line {line} was torn by a crash and is accounted for by the recovery '
            'record that follows it'
        )
    if not report.ok:
        where = f'record {report.error_seq}'
        if report.error_line is not None:
            where += f' (line {report.error_line})'
        print(
            f'BROKEN: {path}: {where}: {report.error}; the {report.records} records before '
            'it verify'
        )
        return EXIT_FAILED
    torn = report.torn_line is not None
    if torn:
        print(
            f'warning: line {report.torn_line} is a torn last line ({len(report.torn_bytes)} '
            'bytes without a newline: a crash mid-write): it is not part of the chain; the '
            f'{report.records} records before it verify'
        )
    tip = f', last record {report.last_seq}, hash {report.last_hash[:16]}' * (report.records > 0)
    print(f'OK: {path}: {report.records} records, hash chain intact{tip}')
    return EXIT_FAILED if torn and args.strict else EXIT_OK


def register_audit(commands: Commands) -> None:
    audit = commands.add_parser(
        'audit',
        help='check the supervisor audit log',
        description='Tools for the safety supervisor audit log (hash-chained JSON lines).',
    )
    sub = audit.add_subparsers(dest='audit_command', metavar='COMMAND', required=True)
    verify = sub.add_parser(
        'verify',
        help='verify the hash chain of an audit log',
        description=(
            'Verify every record of an audit log: its hash, its sequence number and its link '
            'to the record before it, and the log against its head file (FILE.head). Exits 0 '
            'and prints the record count when the chain holds; exits 1 naming the first '
            'broken record otherwise. A torn last line (a crash mid-write) is reported, and '
            'everything before it is verified.'
        ),
    )
    verify.add_argument('file', metavar='FILE', type=Path, help='the audit log (JSON lines)')
    verify.add_argument('--strict', action='store_true', help='exit 1 when the last line is torn')
    verify.add_argument(
        '--no-head',
        action='store_true',
        help='ignore FILE.head (then deleting the final records cannot be detected)',
    )
    verify.set_defaults(handler=_audit_verify)


def register_ops(commands: Commands) -> None:
    from robostral_agent.cli_ops import register_ops as register

    register(commands)


def register_run(commands: Commands) -> None:
    from robostral_agent.cli_run import register_run as register

    register(commands)


# Subcommands in the order --help lists them.
COMMANDS: Final[tuple[Register, ...]] = (register_ops, register_audit, register_run)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog='robostral',
        description='Robostral Agent: operator and integrator command line.',
        epilog='exit codes: 0 success, 1 failure (the message says why), 2 usage error',
    )
    commands = parser.add_subparsers(dest='command', metavar='COMMAND', required=True)
    for register in COMMANDS:
        register(commands)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``robostral`` console script; returns the exit code."""
    args = build_parser().parse_args(argv)
    return int(args.handler(args))


if __name__ == '__main__':
    sys.exit(main())
