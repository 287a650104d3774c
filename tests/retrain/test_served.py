"""A command pointed at an empty model store while the workers serve a model says so.

Issue 26, item 2: with the settings the README suggested, ``freshrec models list``
read ``./var/models`` ("no model versions") and ``freshrec retrain`` published into
a new store no worker follows, gated against popularity, exit 0.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from cli.main import main
from freshrec.settings import Settings
from schemas.recs import DATA_FIELD, RecItem, RecList, encode, popular_key

pytestmark = pytest.mark.integration


@pytest.fixture
def served_elsewhere(
    settings: Settings, redis_client: object, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> Path:
    """Redis holds the popular list of model ``v-served``; FRESHREC_MODEL_STORE is empty."""
    popular = RecList(None, "popular", "v-served", 1, 2, (RecItem("m1", 3.0),))
    redis_client.hset(popular_key(settings.key_prefix), DATA_FIELD, encode(popular))  # type: ignore[attr-defined]
    empty = tmp_path / "empty-store"
    for key, value in settings.replace(model_store=str(empty)).as_env().items():
        monkeypatch.setenv(key, value)
    return empty


def test_models_list_on_an_empty_store_names_the_served_model(
    served_elsewhere: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["models", "list"]) == 1
    err = capsys.readouterr().err
    assert f"the model store {served_elsewhere} holds no model" in err
    assert "the workers serve model v-served" in err
    assert 'eval "$(freshrec stack env)"' in err


def test_retrain_into_an_empty_store_is_refused_unless_forced(
    served_elsewhere: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    argv = ["retrain", "--format", "synthetic", "--synthetic", "60,20,1200", "--no-tune"]
    assert main(argv) == 2
    assert "the workers serve model v-served" in capsys.readouterr().err
    assert not served_elsewhere.exists() or not any(served_elsewhere.iterdir())
