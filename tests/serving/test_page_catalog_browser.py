"""The page's catalog part in a real browser (issue 22): the catalog's items with their tags,
a tag filter on the list and the catalog, and a "more like this" row for a clicked title."""

from __future__ import annotations

from pathlib import Path

import pytest

from freshrec.model_store import ModelStore
from models.version import load_current_version
from retrain.similar_lists import write_similar_lists
from tests.serving.conftest import RunningSystem
from tests.serving.test_page_browser import CHROMIUM_ARGS, chromium

pytestmark = [pytest.mark.integration, pytest.mark.slow]


def test_catalog_tag_filter_and_more_like_this_in_the_browser(
    running_system: RunningSystem, redis_client: object, artifacts: Path
) -> None:
    from playwright.sync_api import sync_playwright

    settings = running_system.settings
    version = load_current_version(ModelStore(settings.model_store))
    assert version is not None
    write_similar_lists(redis_client, settings.key_prefix, version, 20)  # type: ignore[arg-type]
    base = running_system.api.url
    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=chromium(), args=CHROMIUM_ARGS)
        try:
            page = browser.new_page(viewport={"width": 1100, "height": 1200})
            page.goto(base + "/")
            page.wait_for_selector("#catalog tr[data-item]")
            assert "cluster-" in page.inner_text("#catalog")  # items with their tags
            page.fill("#user", "nobody-yet")
            page.click("#show")
            page.wait_for_selector("#recs tr[data-item]")

            page.fill("#tag-filter", "cluster-3")
            page.click("#apply-tags")
            page.wait_for_function(
                "() => [...document.querySelectorAll('#recs tr[data-item]')].length > 0 && "
                "[...document.querySelectorAll('#recs tr[data-item]')].every("
                "tr => tr.innerText.includes('cluster-3'))",
                timeout=10_000,
            )
            page.wait_for_function(
                "() => [...document.querySelectorAll('#catalog tr[data-item]')].every("
                "tr => tr.innerText.includes('cluster-3'))",
                timeout=10_000,
            )
            page.fill("#tag-filter", "")
            page.click("#apply-tags")
            page.wait_for_function(
                "() => !document.getElementById('catalog').innerText.includes('No catalog') && "
                "[...document.querySelectorAll('#catalog tr[data-item]')].some("
                "tr => !tr.innerText.includes('cluster-3'))",
                timeout=10_000,
            )
            clicked = page.get_attribute("#catalog tr[data-item]", "data-item")
            page.click("#catalog tr[data-item] .title")
            page.wait_for_function(
                "() => document.getElementById('similar').dataset.signature !== ''",
                timeout=10_000,
            )
            shown = (page.get_attribute("#similar", "data-signature") or "").split(",")
            shot = artifacts / "page-catalog.png"
            shot.unlink(missing_ok=True)
            page.screenshot(path=str(shot), full_page=True)
            print(f"screenshot: {shot}")
        finally:
            browser.close()
    assert clicked not in shown and len(shown) == 8
    assert shown == [i for i in shown if i in version.item_ids.ids]
