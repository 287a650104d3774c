"""``freshrec stack up|down|env|status``: the local broker and Redis for development and the demo.

Registered by the top-level command (:mod:`cli.main`) like every part's ``cli``
module; it uses nothing but :mod:`freshrec.stack`.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from freshrec import stack
from freshrec.settings import Settings


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    parser = sub.add_parser(
        "stack",
        help="start, stop or show the local broker and redis-server",
        description="A Kafka-compatible broker (Tansu, in memory) and a redis-server on free "
        "loopback ports, for development and the demo; pids, ports and logs are kept in "
        "--state-dir. Exit codes: 0 done; 1 nothing to show (env, status) or already running "
        "(up).",
    )
    actions = parser.add_subparsers(dest="action", required=True, metavar="ACTION")
    for name, text in (
        ("up", "start the broker and redis-server; prints their settings as export lines"),
        ("down", "stop the broker and redis-server that 'up' started in this state directory"),
        ("env", 'print the export lines of the running stack (eval "$(freshrec stack env)")'),
        ("status", "say whether the stack of this state directory runs, with pids and ports"),
    ):
        action = actions.add_parser(name, help=text, description=text[0].upper() + text[1:] + ".")
        action.add_argument(
            "--state-dir",
            type=Path,
            default=Path(".freshrec"),
            help="where the pids, ports and logs of the stack are kept (default: .freshrec)",
        )
    parser.set_defaults(func=run)


def run(args: argparse.Namespace, settings: Settings) -> int:
    if args.action == "down":
        stopped = stack.down(args.state_dir)
        print("stopped " + ", ".join(stopped) if stopped else "no stack was running")
        return 0
    if args.action == "status":
        state = stack.running(args.state_dir)
        if state is None:
            print(f"no stack is running in {args.state_dir}; start one with 'freshrec stack up'")
            return 1
        print(
            f"running: broker pid {state.broker_pid} on {stack.LOOPBACK}:{state.broker_port}, "
            f"redis pid {state.redis_pid} on {stack.LOOPBACK}:{state.redis_port}; "
            f"logs in {args.state_dir}/"
        )
        return 0
    if args.action == "env":
        state = stack.running(args.state_dir)
        if state is None:
            print(
                f"no stack is running in {args.state_dir}; start one with 'freshrec stack up'",
                file=sys.stderr,
            )
            return 1
    else:
        # No topics are created here: ``publish`` and ``worker`` create theirs when missing.
        state = stack.up(args.state_dir)
        print(
            f"# broker pid {state.broker_pid}, redis pid {state.redis_pid}; "
            f"logs in {args.state_dir}/"
        )
        print('# use these settings (eval "$(freshrec stack env)"):')
    for key, value in state.env.items():
        print(f"export {key}={value}")
    return 0
