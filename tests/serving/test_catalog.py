"""The item catalog: three file formats, unknown ids shown as ids, titles on GET /recs."""

from __future__ import annotations

from pathlib import Path

import pytest

from freshrec.errors import ConfigError
from serving.catalog import MOVIELENS_GENRES, Entry, load
from tests.serving.conftest import ApiClient, ListWriter


def test_movielens_u_item_with_genre_flags(tmp_path: Path) -> None:
    flags = ["0"] * len(MOVIELENS_GENRES)
    flags[MOVIELENS_GENRES.index("Animation")] = "1"
    flags[MOVIELENS_GENRES.index("Comedy")] = "1"
    line = "1|Toy Story (1995)|01-Jan-1995||http://x|" + "|".join(flags)
    path = tmp_path / "u.item"
    path.write_bytes(
        (line + "\n2|Caf\xe9 (1996)|||x|" + "|".join(["0"] * 19) + "\n").encode("latin-1")
    )
    catalog = load(path)
    assert catalog.entries["1"] == Entry("Toy Story (1995)", ("Animation", "Comedy"))
    assert catalog.title("2") == "Café (1996)"


def test_csv_and_jsonl(tmp_path: Path) -> None:
    csv_path = tmp_path / "items.csv"
    csv_path.write_text('id,title,tags\nm1,"Alien, the",sci-fi|horror\nm2,Heat,\n')
    jsonl_path = tmp_path / "items.jsonl"
    jsonl_path.write_text(
        '{"id": "m1", "title": "Alien", "tags": ["sci-fi"]}\n\n{"id": 7, "title": "Up"}\n'
    )
    assert load(csv_path).entries == {
        "m1": Entry("Alien, the", ("sci-fi", "horror")),
        "m2": Entry("Heat", ()),
    }
    assert load(jsonl_path).entries == {"m1": Entry("Alien", ("sci-fi",)), "7": Entry("Up", ())}


def test_unknown_ids_show_as_ids(tmp_path: Path) -> None:
    path = tmp_path / "items.csv"
    path.write_text("id,title\nm1,Alien\n")
    catalog = load(path)
    assert (catalog.title("m1"), catalog.title("m9"), catalog.tags("m9")) == ("Alien", "m9", ())


@pytest.mark.parametrize(
    ("name", "content", "message"),
    [
        ("missing.csv", None, "cannot read the item catalog"),
        ("items.txt", "x", "unknown format"),
        ("items.csv", "name,title\n", "must name id and title"),
        ("items.jsonl", '{"id": "m1"}\n', "line 1"),
    ],
)
def test_a_bad_catalog_fails_with_one_line(
    tmp_path: Path, name: str, content: str | None, message: str
) -> None:
    path = tmp_path / name
    if content is not None:
        path.write_text(content)
    with pytest.raises(ConfigError, match=message):
        load(path)


@pytest.mark.integration
async def test_fields_title_adds_titles_and_leaves_the_plain_answer_alone(
    api_client: ApiClient, write_list: ListWriter, tmp_path: Path
) -> None:
    path = tmp_path / "items.csv"
    path.write_text("id,title,tags\nm1,Alien,sci-fi|horror\nm2,Heat,crime\n")
    write_list("kim", ["m1", "m2", "m3"], because={"m1": "m2"})
    async with api_client(api_catalog=str(path)) as client:
        plain = await (await client.get("/recs/kim?k=3")).json()
        titled = await (await client.get("/recs/kim?k=3&fields=title,tags")).json()
        bad = await client.get("/recs/kim?fields=price")
        bad_code = (await bad.json())["error"]["code"]
    assert "title" not in plain["items"][0]
    assert [(i["item"], i["title"], i["tags"]) for i in titled["items"]] == [
        ("m1", "Alien", ["sci-fi", "horror"]),
        ("m2", "Heat", ["crime"]),
        ("m3", "m3", []),
    ]
    assert titled["items"][0]["because_title"] == "Heat"
    assert (bad.status, bad_code) == (400, "bad_fields")
