"""Settings: parsed from FRESHREC_* variables, validated at start, documented in the README."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from freshrec.errors import ConfigError
from freshrec.settings import Settings, settings_table


def test_defaults_are_valid() -> None:
    s = Settings.from_env({})
    assert s.bootstrap_servers == "127.0.0.1:9092"
    assert s.list_length >= s.api_max_k


def test_values_are_parsed_to_their_types() -> None:
    s = Settings.from_env(
        {
            "FRESHREC_BATCH_SIZE": "250",
            "FRESHREC_BATCH_MAX_WAIT_S": "0.2",
            "FRESHREC_KEY_PREFIX": "x:",
            "FRESHREC_BOOTSTRAP_SERVERS": "a:9092, b:9093",
        }
    )
    assert (s.batch_size, s.batch_max_wait_s, s.key_prefix) == (250, 0.2, "x:")


@pytest.mark.parametrize(
    ("env", "message"),
    [
        ({"FRESHREC_BATCH_SIZE": "many"}, r"FRESHREC_BATCH_SIZE='many' is not a valid int"),
        ({"FRESHREC_BATCH_SIZE": "0"}, r"FRESHREC_BATCH_SIZE=0 is below its minimum 1"),
        ({"FRESHREC_REDIS_SOCKET_TIMEOUT_S": "-1"}, r"below its minimum"),
        ({"FRESHREC_BOOTSTRAP_SERVERS": "localhost"}, r"'localhost' is not host:port"),
        ({"FRESHREC_REDIS_URL": "http://x"}, r"must start with redis://"),
        ({"FRESHREC_LOG_LEVEL": "LOUD"}, r"is not one of DEBUG"),
        ({"FRESHREC_API_DEFAULT_K": "500"}, r"larger than FRESHREC_API_MAX_K"),
        ({"FRESHREC_LIST_LENGTH": "50"}, r"must be at least FRESHREC_API_MAX_K"),
        (
            {"FRESHREC_BATCHSIZE": "5"},
            r"^unknown setting FRESHREC_BATCHSIZE; did you mean FRESHREC_BATCH_SIZE\?$",
        ),
    ],
)
def test_bad_values_fail_naming_the_variable(env: dict[str, str], message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        Settings.from_env(env)


def test_a_misspelt_setting_names_the_closest_one_not_all_of_them() -> None:
    """Issue 26, item 6: a typo got a list of 70 names instead of the one meant."""
    with pytest.raises(ConfigError) as caught:
        Settings.from_env({"FRESHREC_REDIS_ULR": "redis://x", "FRESHREC_ZZZ_QQQ": "1"})
    assert str(caught.value) == (
        "unknown setting FRESHREC_REDIS_ULR; did you mean FRESHREC_REDIS_URL?; "
        "unknown setting FRESHREC_ZZZ_QQQ; the README's settings table lists every setting"
    )


def test_overrides_win_and_replace_revalidates() -> None:
    s = Settings.from_env({"FRESHREC_BATCH_SIZE": "5"}, batch_size=7)
    assert s.batch_size == 7
    with pytest.raises(ConfigError):
        s.replace(batch_size=0)


def test_as_env_round_trips() -> None:
    s = Settings(batch_size=3, key_prefix="p:", api_token="secret")
    assert Settings.from_env(s.as_env()) == s


def test_readme_settings_table_is_current() -> None:
    readme = (Path(__file__).parents[2] / "README.md").read_text()
    assert settings_table() in readme, (
        "README settings table is stale: regenerate it with `python -m freshrec.readme`"
    )


def test_every_setting_is_documented() -> None:
    for line in settings_table().splitlines()[2:]:
        assert re.match(r"^\| `FRESHREC_[A-Z0-9_]+` \| .+ \| .{10,} \|$", line), line


@pytest.mark.parametrize(
    ("env", "message"),
    [
        ({"FRESHREC_API_PORT": "99999"}, r"FRESHREC_API_PORT=99999 is above its maximum 65535"),
        ({"FRESHREC_API_PORT": "-1"}, r"FRESHREC_API_PORT=-1 is below its minimum 1"),
        ({"FRESHREC_API_PORT": "0"}, r"FRESHREC_API_PORT=0 is below its minimum 1"),
        ({"FRESHREC_WORKER_WEB_PORT": "70000"}, r"FRESHREC_WORKER_WEB_PORT=70000 is above"),
        # Faust's web server refused port 0 with an ImproperlyConfigured traceback
        ({"FRESHREC_WORKER_WEB_PORT": "0"}, r"FRESHREC_WORKER_WEB_PORT=0 is below its minimum 1"),
        ({"FRESHREC_PUBLISH_TIMEOUT_S": "nan"}, r"FRESHREC_PUBLISH_TIMEOUT_S=nan must be a finite"),
        ({"FRESHREC_RETRY_DEADLINE_S": "inf"}, r"FRESHREC_RETRY_DEADLINE_S=inf must be a finite"),
        ({"FRESHREC_BATCH_MAX_WAIT_S": "-inf"}, r"must be a finite number"),
    ],
)
def test_port_out_of_range_and_nan_or_inf_are_config_errors_not_overflow(
    env: dict[str, str], message: str
) -> None:
    """Issue 13.5: FRESHREC_API_PORT=99999 ended in an OverflowError traceback at bind time,
    and nan/inf passed every minimum (nan < x is False)."""
    with pytest.raises(ConfigError, match=message):
        Settings.from_env(env)


def test_worker_and_api_bind_loopback_by_default() -> None:
    """Issue 13.4: the worker's web server bound 0.0.0.0 with no setting to change it."""
    s = Settings.from_env({})
    assert (s.worker_web_host, s.api_host) == ("127.0.0.1", "127.0.0.1")
    assert Settings.from_env({"FRESHREC_WORKER_WEB_HOST": "0.0.0.0"}).worker_web_host == "0.0.0.0"


@pytest.mark.parametrize("url", ["redis://127.0.0.1:7000/1", "unix:///run/redis.sock"])
def test_a_cluster_url_names_a_node_with_database_zero(url: str) -> None:
    """redis-py refuses another database on a cluster, late and in its own words."""
    with pytest.raises(ConfigError, match="database 0"):
        Settings.from_env({"FRESHREC_REDIS_URL": url, "FRESHREC_REDIS_CLUSTER": "true"})
    cluster = {"FRESHREC_REDIS_URL": "redis://10.0.0.5:7000", "FRESHREC_REDIS_CLUSTER": "1"}
    assert Settings.from_env(cluster).redis_cluster
