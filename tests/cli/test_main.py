"""The ``freshrec`` command as a new user meets it: one line per failure, documented exit codes.

Each test runs the real entry point in a child process (as ``freshrec`` would
run), so what is checked is exactly what the user sees on stderr.
"""

from __future__ import annotations

import argparse
import os
import re
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from cli.main import EXIT_CODES, EXIT_FAILED, EXIT_TRANSIENT, EXIT_USAGE, build_parser, parse
from freshrec import __version__
from freshrec.stack import free_port

EXAMPLES = Path(__file__).parents[2] / "examples"


def freshrec(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "cli", *args],
        capture_output=True,
        text=True,
        timeout=60,
        env={
            **{k: v for k, v in os.environ.items() if not k.startswith("FRESHREC_")},
            **(env or {}),
        },
    )


def one_line(stderr: str) -> str:
    """The only line of ``stderr``; fails on a traceback or on raw librdkafka lines."""
    lines = stderr.strip().splitlines()
    assert len(lines) == 1, stderr
    assert "Traceback" not in stderr
    return lines[0]


def test_version() -> None:
    """Issue 13.8: there was no ``freshrec --version``."""
    result = freshrec("--version")
    assert result.returncode == 0
    assert result.stdout.strip() == f"freshrec {__version__}"


def test_publish_missing_file_is_one_line_not_a_file_not_found_traceback() -> None:
    """Issue 13.5: ``freshrec publish <missing file>`` printed a FileNotFoundError traceback."""
    result = freshrec("publish", "no-such-events.jsonl")
    assert result.returncode == EXIT_FAILED
    line = one_line(result.stderr)
    assert "cannot read no-such-events.jsonl: No such file or directory" in line
    assert "JSON-lines file" in line


def test_api_port_out_of_range_is_a_config_error_not_an_overflow_traceback() -> None:
    """Issue 13.5: ``FRESHREC_API_PORT=99999 freshrec api`` died in an OverflowError."""
    result = freshrec("api", env={"FRESHREC_API_PORT": "99999"})
    assert result.returncode == EXIT_USAGE
    assert "FRESHREC_API_PORT=99999 is above its maximum 65535" in one_line(result.stderr)


def test_api_workers_zero_names_the_flag_not_the_variable() -> None:
    """Issue 13.8: ``api --workers 0`` blamed FRESHREC_API_WORKERS, which the user never set."""
    result = freshrec("api", "--workers", "0")
    assert result.returncode == EXIT_USAGE
    assert "argument --workers: must be at least 1 (got 0)" in result.stderr
    assert "FRESHREC_API_WORKERS" not in result.stderr


@pytest.mark.parametrize("value", ["0", "65536"])
def test_api_port_outside_1_to_65535_is_refused_naming_the_flag(value: str) -> None:
    """Issue 13.5: ports are 1-65535; ``--port 0`` bound a random port no client could know."""
    result = freshrec("api", "--port", value)
    assert result.returncode == EXIT_USAGE
    assert f"argument --port: must be a port from 1 to 65535 (got {value})" in result.stderr


def test_api_with_an_unreadable_catalog_fails_at_once_in_one_line() -> None:
    result = freshrec("api", "--port", str(free_port()), "--catalog", "no-such-items.csv")
    assert result.returncode == EXIT_FAILED  # a missing file, as for publish
    line = one_line(result.stderr)
    assert "cannot read the item catalog no-such-items.csv" in line
    assert "FRESHREC_API_CATALOG" in line


def test_dlq_list_negative_limit_is_refused() -> None:
    """Issue 13.8: ``dlq list --limit -5`` was taken as 0."""
    result = freshrec("dlq", "list", "--limit", "-5")
    assert result.returncode == EXIT_USAGE
    assert "argument --limit: must not be negative (got -5)" in result.stderr


@pytest.mark.parametrize("command", [("publish", str(EXAMPLES / "events.jsonl")), ("dlq", "list")])
def test_no_broker_fails_within_seconds_with_one_clean_line(command: tuple[str, ...]) -> None:
    """Issue 13.7: with no broker, ``publish`` took 10 s and ``dlq list`` 30 s to fail, and
    printed librdkafka's raw ``%3|...|FAIL|`` lines first."""
    env = {"FRESHREC_BOOTSTRAP_SERVERS": f"127.0.0.1:{free_port()}"}
    started = time.monotonic()
    result = freshrec(*command, env=env)
    elapsed = time.monotonic() - started
    assert result.returncode == EXIT_TRANSIENT
    line = one_line(result.stderr)
    assert (
        "no answer from the broker at 127.0.0.1:" in line and "FRESHREC_BOOTSTRAP_SERVERS" in line
    )
    assert "%3|" not in result.stderr and "rdkafka" not in result.stderr
    assert elapsed < 6, f"took {elapsed:.1f}s"


def help_text(capsys: pytest.CaptureFixture[str], *words: str) -> str:
    """What ``freshrec <words> --help`` prints, from the parser in this process (a process
    of its own per help text cost seconds each on a loaded machine)."""
    with pytest.raises(SystemExit) as done:
        parse(build_parser(), [*words, "--help"])
    assert done.value.code == 0
    return capsys.readouterr().out


def test_stack_subcommands_are_described_and_status_exists(
    capsys: pytest.CaptureFixture[str],
) -> None:
    """Issue 13.8: ``stack up/down/env`` had no descriptions, and there was no ``stack status``."""
    top = help_text(capsys, "stack")
    for action in ("up", "down", "env", "status"):
        assert action in top
        assert len(help_text(capsys, "stack", action).split("\n\n")[1]) > 20
    status = freshrec("stack", "status", "--state-dir", "/nonexistent-freshrec-state")
    assert status.returncode == 1
    assert "no stack is running" in status.stdout


@pytest.mark.parametrize(
    ("argv", "code", "text"),
    [
        (["models", "show", "nope"], EXIT_FAILED, "no model version nope"),
        (
            ["train", "--format", "movielens1m", "--data", "/nonexistent"],
            EXIT_FAILED,
            "cannot read",
        ),
        (["worker"], EXIT_TRANSIENT, "no answer from the broker"),
        (["dlq", "replay"], EXIT_TRANSIENT, "no answer from the broker"),
        (["stack", "env", "--state-dir", "/nonexistent-freshrec-state"], EXIT_FAILED, "no stack"),
    ],
)
def test_subcommand_failures_are_one_line_with_a_documented_exit_code(
    tmp_path: Path, argv: list[str], code: int, text: str
) -> None:
    """Issue 13.5: the audit of every subcommand: no traceback, one line, a known code."""
    env = {
        "FRESHREC_BOOTSTRAP_SERVERS": f"127.0.0.1:{free_port()}",
        "FRESHREC_MODEL_STORE": str(tmp_path / "store"),
    }
    result = freshrec(*argv, env=env)
    assert result.returncode == code
    assert text in one_line(result.stderr)


def test_train_into_an_unusable_model_store_fails_before_training(tmp_path: Path) -> None:
    """Issue 13.5's audit: ``freshrec train`` with FRESHREC_MODEL_STORE under a file trained
    first, then failed with "Not a directory: ..." and no word of the setting to fix."""
    (tmp_path / "file").write_text("")
    store = tmp_path / "file" / "store"
    result = freshrec("train", "--format", "synthetic", env={"FRESHREC_MODEL_STORE": str(store)})
    assert result.returncode == EXIT_FAILED
    assert one_line(result.stderr) == (
        f"freshrec train: cannot create the model store {store}: Not a directory; "
        "set FRESHREC_MODEL_STORE to a writable directory"
    )


def test_worker_with_its_port_taken_or_an_unusable_data_dir_fails_in_one_line(
    tmp_path: Path, broker: str, redis_url: str
) -> None:
    """Issue 13.5's audit: with the broker and Redis up, ``freshrec worker`` with its web port
    taken or FRESHREC_DATA_DIR under a file ended in Faust's 50-line tracebacks."""
    (tmp_path / "file").write_text("")
    services = {"FRESHREC_BOOTSTRAP_SERVERS": broker, "FRESHREC_REDIS_URL": redis_url}
    with socket.socket() as held:
        held.bind(("127.0.0.1", 0))
        held.listen()
        port = int(held.getsockname()[1])
        taken = freshrec("worker", env={**services, "FRESHREC_WORKER_WEB_PORT": str(port)})
    assert taken.returncode == EXIT_FAILED
    assert one_line(taken.stderr) == (
        f"freshrec worker: the worker's web server cannot listen on 127.0.0.1:{port} (Address "
        "already in use); free the port or set FRESHREC_WORKER_WEB_PORT (or "
        "FRESHREC_WORKER_WEB_HOST)"
    )
    data = tmp_path / "file" / "worker"
    unusable = freshrec(
        "worker",
        env={
            **services,
            "FRESHREC_DATA_DIR": str(data),
            "FRESHREC_WORKER_WEB_PORT": str(free_port()),
        },
    )
    assert unusable.returncode == EXIT_FAILED
    assert one_line(unusable.stderr) == (
        f"freshrec worker: cannot create the worker's data directory {data}: Not a directory; "
        "set FRESHREC_DATA_DIR to a writable directory"
    )


def test_an_unknown_option_before_the_command_is_named() -> None:
    """Issue 26, item 6: ``freshrec --bogus`` said only that a command is required."""
    result = freshrec("--bogus")
    assert result.returncode == EXIT_USAGE
    assert "freshrec: error: unrecognized option --bogus" in result.stderr


def _leaf_commands(
    parser: argparse.ArgumentParser, path: tuple[str, ...] = ()
) -> Iterator[tuple[tuple[str, ...], argparse.ArgumentParser]]:
    subs = [a for a in parser._actions if isinstance(a, argparse._SubParsersAction)]
    if not subs:
        yield path, parser
        return
    for name, child in subs[0].choices.items():
        yield from _leaf_commands(child, (*path, name))


def test_the_readmes_exit_code_table_is_what_the_command_uses() -> None:
    """Issue 26, item 6: the README's table, read from the README, against the code's."""
    readme = (Path(__file__).parents[2] / "README.md").read_text()
    section = readme.split("## Exit codes of the `freshrec` command", 1)[1].split("\n## ", 1)[0]
    codes = {int(m) for m in re.findall(r"^\| (\d+) \|", section, re.MULTILINE)}
    assert codes == set(EXIT_CODES)


def test_every_commands_argument_errors_exit_2_with_its_own_usage(
    capsys: pytest.CaptureFixture[str],
) -> None:
    """Issue 26, item 6: the README's table says bad arguments exit 2; checked on every parser
    (parsing only: no command runs), with an unknown flag and with a value each typed flag
    refuses, and the usage shown is the command's own (``freshrec demo --no-such-flag``
    showed the top-level usage)."""
    leaves = list(_leaf_commands(build_parser()))
    assert len(leaves) > 15
    refused = 0
    for path, parser in leaves:
        with pytest.raises(SystemExit) as unknown:
            parse(build_parser(), [*path, "--no-such-flag"])
        err = capsys.readouterr().err
        assert unknown.value.code == EXIT_USAGE, path
        assert f"usage: freshrec {' '.join(path)}" in err, err
        for action in parser._actions:
            if not action.option_strings or not callable(action.type):
                continue
            try:
                action.type(BAD_VALUE)
            except (ValueError, TypeError, argparse.ArgumentTypeError):
                pass
            else:
                continue  # a path or a name: any text parses, the command judges it
            with pytest.raises(SystemExit) as bad:
                parse(build_parser(), [*path, action.option_strings[0], BAD_VALUE])
            err = capsys.readouterr().err
            assert bad.value.code == EXIT_USAGE, (path, action.option_strings)
            assert action.option_strings[0] in err, (path, err)
            refused += 1
    assert refused > 10


BAD_VALUE = "not a value"


@pytest.mark.parametrize(
    ("argv", "text"),
    [
        (["train", "--format", "movielens100k"], "--data FILE is required with --format"),
        (["evaluate", "--format", "synthetic", "--synthetic", "12,x"], "is not USERS,ITEMS"),
        (["train", "--format", "synthetic", "--ratio", "1.5"], "--ratio must be strictly"),
    ],
)
def test_argument_problems_found_after_parsing_exit_2_too(argv: list[str], text: str) -> None:
    """Issue 26, item 6: ``train --format movielens100k`` without ``--data`` and a malformed
    ``--synthetic`` exited 1, which the README's table keeps for failures, not arguments."""
    result = freshrec(*argv)
    assert result.returncode == EXIT_USAGE, result.stderr
    assert text in result.stderr


def test_a_split_that_leaves_a_part_empty_names_the_cause_and_what_to_try(
    tmp_path: Path,
) -> None:
    """Issue 26, item 6: it said only "the split left the training or the test part empty"."""
    events = tmp_path / "few.jsonl"
    events.write_text("".join((EXAMPLES / "events.jsonl").read_text().splitlines(True)[:3]))
    result = freshrec("evaluate", "--format", "events", "--data", str(events), "--no-tune")
    assert result.returncode == EXIT_FAILED
    line = one_line(result.stderr)
    assert "of 3 events from 1 user(s) left the test part empty" in line
    assert "try --split last-n" in line
