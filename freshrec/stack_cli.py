"""``freshrec stack up|down|env``: the local broker and Redis for development and the demo.

Registered by the top-level command (:mod:`cli.main`) like every part's ``cli``
module; it uses nothing but :mod:`freshrec.stack`.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from freshrec import stack
from freshrec.settings import Settings


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    parser = sub.add_parser("stack", help="start or stop the local broker and redis-server")
    parser.add_argument("action", choices=("up", "down", "env"))
    parser.add_argument(
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
    if args.action == "env":
        state = stack.read_state(args.state_dir)
        if state is None:
            print("no stack is running; start one with 'freshrec stack up'")
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
