"""The worker's topic check (issue 28): the refusal line names each topic and its count."""

from __future__ import annotations

import pytest

from freshrec.settings import Settings
from streams.topology import TopologyError, check_topics, mismatch, worker_topics

S = Settings(topic_partitions=8, app_id="fr")


def test_topics_that_all_have_the_configured_count_pass() -> None:
    assert mismatch(S, dict.fromkeys(worker_topics(S), 8)) is None


def test_a_missing_topic_is_no_mismatch() -> None:
    """The worker creates the event topics at start, Faust the changelog."""
    assert mismatch(S, {"watch": 8}) is None


def test_the_refusal_names_every_wrong_topic_with_its_count_and_the_right_ones() -> None:
    counts = {"watch": 4, "rate": 4, "fr-user-state-changelog": 4, "forget": 8}
    line = mismatch(S, counts)
    assert line is not None and "\n" not in line
    assert "FRESHREC_TOPIC_PARTITIONS=8" in line
    assert "fr-user-state-changelog has 4, rate has 4, watch has 4" in line
    assert "(forget: 8)" in line


def test_the_changelog_is_one_of_the_worker_topics() -> None:
    assert "fr-user-state-changelog" in worker_topics(S)


@pytest.mark.integration
def test_check_topics_refuses_on_the_broker(settings: Settings, topics: list[str]) -> None:
    check_topics(settings)  # the fixture created them with the settings' count
    with pytest.raises(TopologyError, match=f"{settings.topic_watch} has 4"):
        check_topics(settings.replace(topic_partitions=2))
