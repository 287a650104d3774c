"""The worker's Faust app takes its network bindings from the settings."""

from __future__ import annotations

from freshrec.settings import Settings
from streams.app import faust_app


def test_worker_web_server_binds_loopback_unless_configured() -> None:
    """Issue 13.4: the worker's web server bound 0.0.0.0 whatever the settings said."""
    assert faust_app(Settings(), app_id="bind-default").conf.web_bind == "127.0.0.1"
    wide = Settings(worker_web_host="0.0.0.0", worker_web_port=7070)
    conf = faust_app(wide, app_id="bind-wide").conf
    assert (conf.web_bind, conf.web_port) == ("0.0.0.0", 7070)
