"""Adapters: each builds a small folder in the dataset's published layout (made-up rows, the real file
and column names), converts it, and checks ids, texts, image paths, replies, labels, problems and errors."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml

from ximgctx.adapters import ADAPTERS, AdapterError, write_manifest
from ximgctx.cli import convert as convert_cli
from ximgctx.data.io import load_posts

REPO = Path(__file__).resolve().parents[2]


def touch(path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(b"\x89PNG fake image bytes")
    return path


def write(path: Path, text: str, encoding: str = "utf-8") -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(text.encode(encoding))
    return path


def by_id(result) -> dict:
    return {p.id: p for p in result.posts}


def problem_at(result, file_name: str, line: int | None, field: str | None = None):
    hits = [
        p
        for p in result.problems
        if Path(p.file).name == file_name and p.line == line and (field is None or p.field == field)
    ]
    assert hits, f"no problem at {file_name}:{line} {field}; problems: {[str(p) for p in result.problems]}"
    return hits[0]


# --- registry and task configs ------------------------------------------------------------------------


@pytest.mark.parametrize("name", sorted(ADAPTERS))
def test_task_yaml_matches_adapter(name: str) -> None:
    mod = ADAPTERS[name]
    cfg = yaml.safe_load((REPO / "configs" / "tasks" / f"{name}.yaml").read_text())
    assert cfg["dataset"] == name == mod.NAME
    assert cfg["tasks"] == [t.to_dict() for t in mod.TASKS]
    for t in cfg["tasks"]:
        assert t["kind"] in ("multiclass", "multilabel") and len(set(t["labels"])) == len(t["labels"]) >= 2


@pytest.mark.parametrize("name", sorted(ADAPTERS))
def test_empty_folder_is_an_error_naming_the_expected_file(name: str, tmp_path: Path) -> None:
    with pytest.raises(AdapterError, match=str(tmp_path)):
        ADAPTERS[name].convert(tmp_path)


def test_unknown_split_is_an_error(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="dev_seen"):
        ADAPTERS["hateful_memes"].convert(tmp_path, split="validation")


# --- Hateful Memes ------------------------------------------------------------------------------------


def _hateful_memes(root: Path) -> Path:
    for i in ("42953", "23058", "13894", "01235"):
        touch(root / "img" / f"{i}.png")
    write(
        root / "train.jsonl",
        "\n".join(
            [
                json.dumps(
                    {
                        "id": 42953,
                        "img": "img/42953.png",
                        "label": 0,
                        "text": "its their character not their color",
                    }
                ),
                json.dumps(
                    {"id": 23058, "img": "img/23058.png", "label": 1, "text": "don't be afraid to love again"}
                ),
                json.dumps({"id": 99999, "img": "img/99999.png", "label": 0, "text": "image is missing"}),
                json.dumps({"id": 13894, "img": "img/13894.png", "label": 2, "text": "bad label"}),
                "{not json",
                json.dumps({"id": 13894, "img": "img/13894.png", "label": 1, "text": ["wrong", "type"]}),
            ]
        )
        + "\n",
    )
    write(
        root / "dev_seen.jsonl",
        json.dumps({"id": 1235, "img": "img/01235.png", "label": 1, "text": "dev"}) + "\n",
    )
    write(
        root / "test_unseen.jsonl",
        json.dumps({"id": 13894, "img": "img/13894.png", "text": "no label"}) + "\n",
    )
    return root


def test_hateful_memes(tmp_path: Path) -> None:
    src = _hateful_memes(tmp_path / "hm")
    res = ADAPTERS["hateful_memes"].convert(src)
    posts = by_id(res)
    assert sorted(posts) == ["1235", "13894", "23058", "42953"]
    p = posts["42953"]
    assert p.text == "its their character not their color"
    assert p.image == str((src / "img" / "42953.png").resolve()) and Path(p.image).is_absolute()
    assert p.labels == {"hateful": "not_hateful"} and posts["23058"].labels == {"hateful": "hateful"}
    assert posts["1235"].image.endswith("01235.png") and posts["1235"].meta["split"] == "dev_seen"
    assert posts["13894"].labels == {} and posts["13894"].meta["split"] == "test_unseen"  # test: unlabeled
    assert p.meta["source"] == "hateful_memes" and p.meta["visibility"] == "public"
    assert p.meta["original"]["img"] == "img/42953.png"
    assert "not found" in problem_at(res, "train.jsonl", 3, "img").reason
    assert "label" in problem_at(res, "train.jsonl", 4, "label").reason
    assert "malformed JSON" in problem_at(res, "train.jsonl", 5).reason
    assert "string" in problem_at(res, "train.jsonl", 6, "text").reason
    assert res.skipped == 4 and res.rows == 8
    with pytest.raises(AdapterError, match=r"dev_unseen\.jsonl not found in .*hm"):
        ADAPTERS["hateful_memes"].convert(src, split="dev_unseen")
    only = ADAPTERS["hateful_memes"].convert(src, split="dev_seen")
    assert [p.id for p in only.posts] == ["1235"]
    kept = ADAPTERS["hateful_memes"].convert(src, missing_image="keep")
    assert by_id(kept)["99999"].image is None and not problem_at(kept, "train.jsonl", 3).skipped


# --- MMHS150K -----------------------------------------------------------------------------------------


def test_mmhs150k(tmp_path: Path) -> None:
    src = tmp_path / "MMHS150K"
    gt = {
        "1114679353714016256": {
            "img_url": "http://pbs.twimg.com/tweet_video_thumb/D4.jpg",
            "labels": [4, 1, 3],
            "tweet_url": "https://twitter.com/jaynoel_/status/1114679353714016256",
            "tweet_text": "@FriskDontMiss Nigga https://t.co/cAsaLWEpue",
            "labels_str": ["Religion", "Racist", "Homophobe"],
        },
        "1063020048816660480": {
            "img_url": "http://pbs.twimg.com/media/Ds.jpg",
            "labels": [0, 0, 2],
            "tweet_url": "https://twitter.com/someone/status/1063020048816660480",
            "tweet_text": "my dog",
            "labels_str": ["NotHate", "NotHate", "Sexist"],
        },
        "1108927368075374593": {
            "img_url": "x",
            "labels": [0, 7, 1],
            "tweet_url": "",
            "tweet_text": "bad vote",
            "labels_str": [],
        },
        "1114558534635618305": {
            "img_url": "x",
            "labels": [0, 0, 0],
            "tweet_url": "",
            "tweet_text": "no image",
            "labels_str": [],
        },
    }
    write(src / "MMHS150K_GT.json", json.dumps(gt))
    for tid in ("1114679353714016256", "1063020048816660480", "1108927368075374593"):
        touch(src / "img_resized" / f"{tid}.jpg")
    write(src / "img_txt" / "1114679353714016256.json", json.dumps({"img_text": "STOP"}))
    write(src / "splits" / "train_ids.txt", "1114679353714016256\n1108927368075374593\n1114558534635618305\n")
    write(src / "splits" / "val_ids.txt", "1063020048816660480\n")
    write(src / "splits" / "test_ids.txt", "")
    res = ADAPTERS["mmhs150k"].convert(src)
    posts = by_id(res)
    assert sorted(posts) == ["1063020048816660480", "1114679353714016256"]
    p = posts["1114679353714016256"]
    assert p.text == "@FriskDontMiss Nigga https://t.co/cAsaLWEpue"
    assert p.image == str((src / "img_resized" / "1114679353714016256.jpg").resolve())
    assert p.labels["hateful"] == "hateful"
    assert p.labels["hate_category"] == pytest.approx(
        {"religion": 1 / 3, "racist": 1 / 3, "homophobe": 1 / 3}
    )
    assert p.meta["votes"] == [
        {"labeler": "annotator_0", "task": "hate_category", "label": "religion"},
        {"labeler": "annotator_1", "task": "hate_category", "label": "racist"},
        {"labeler": "annotator_2", "task": "hate_category", "label": "homophobe"},
    ]
    assert p.meta["author"] == "jaynoel_" and p.meta["ocr_text"] == "STOP" and p.meta["split"] == "train"
    q = posts["1063020048816660480"]
    assert q.labels["hateful"] == "not_hateful" and q.meta["split"] == "val"  # 1 hate vote of 3: not hateful
    assert q.labels["hate_category"] == pytest.approx({"not_hate": 2 / 3, "sexist": 1 / 3})
    assert "0-5" in problem_at(res, "MMHS150K_GT.json", None, "[1108927368075374593].labels").reason
    assert "not found" in problem_at(res, "MMHS150K_GT.json", None, "[1114558534635618305].img").reason
    assert [p.id for p in ADAPTERS["mmhs150k"].convert(src, split="val").posts] == ["1063020048816660480"]
    (src / "splits" / "val_ids.txt").unlink()
    with pytest.raises(AdapterError, match=r"splits/val_ids\.txt not found"):
        ADAPTERS["mmhs150k"].convert(src, split="val")


# --- Memotion 7K --------------------------------------------------------------------------------------


def test_memotion(tmp_path: Path) -> None:
    src = tmp_path / "memotion_dataset_7k"
    for name in ("image_1.jpg", "image_2.jpeg", "image_3.JPG", "image_5.png", "image_1.png"):
        touch(src / "images" / name)
    # The Kaggle copy: an unnamed pandas index column; written with a BOM here, as Excel saves it.
    rows = [
        ",image_name,text_ocr,text_corrected,humour,sarcasm,offensive,motivational,overall_sentiment",
        '0,image_1.jpg,LOOK THERE MY FRIEND,"LOOK THERE MY FRIEND, '
        'LIGHTYEAR",hilarious,general,not_offensive,not_motivational,very_positive',
        "1,image_2.jpeg,ocr only,,not_funny,general,not_offensive,motivational,very_positive",
        "2,image_3.JPG,x,y,very_funny,twisted_meaning,very_offensive,not_motivational,Positive",
        "3,image_4.png,x,y,funny,very_twisted,slight,not_motivational,neutral",
        "4,image_5.png,x,y,funny,unknown_value,slight,not_motivational,neutral",
        "5,image_1.png,another meme,same stem,funny,general,slight,not_motivational,neutral",
    ]
    write(src / "labels.csv", "\ufeff" + "\n".join(rows) + "\n")
    res = ADAPTERS["memotion"].convert(tmp_path)  # the parent of memotion_dataset_7k works too
    posts = by_id(res)
    # ids are the file names with their extension: image_1.jpg and image_1.png are two posts
    assert sorted(posts) == ["image_1.jpg", "image_1.png", "image_2.jpeg", "image_3.JPG"]
    assert posts["image_1.png"].text == "same stem" and res.skipped == 2
    p = posts["image_1.jpg"]
    assert p.text == "LOOK THERE MY FRIEND, LIGHTYEAR"
    assert p.image == str((src / "images" / "image_1.jpg").resolve())
    assert p.labels == {
        "humour": "hilarious",
        "sarcasm": "general",
        "offensive": "not_offensive",
        "motivational": "not_motivational",
        "sentiment": "very_positive",
    }
    assert posts["image_2.jpeg"].text == "ocr only"  # empty text_corrected falls back to the OCR text
    assert posts["image_3.JPG"].labels["sentiment"] == "positive"  # compared case-insensitively
    assert "Unnamed: 0" not in p.meta["original"] and "" not in p.meta["original"]
    assert "not found" in problem_at(res, "labels.csv", 5, "image_name").reason
    assert "unknown_value" in problem_at(res, "labels.csv", 6, "sarcasm").reason
    write(src / "labels.csv", "image_name,text_corrected,sarcasm,offensive,motivational,overall_sentiment\n")
    with pytest.raises(AdapterError, match=r"labels\.csv: required column 'humour' is missing"):
        ADAPTERS["memotion"].convert(src)


# --- MMSD / MMSD2.0 -----------------------------------------------------------------------------------


def test_mmsd2(tmp_path: Path) -> None:
    src = tmp_path / "data"
    for iid in ("915657464401580032", "854678856724340736"):
        touch(src / "dataset_image" / f"{iid}.jpg")
    write(
        src / "text_json_final" / "train.json",
        json.dumps(
            [
                {"image_id": 915657464401580032, "text": "whew ... that extra <num> miles today", "label": 1},
                {"image_id": 854678856724340736, "text": '" oh , good . "', "label": 0},
                {"image_id": 111, "text": "no image", "label": 0},
                {"image_id": 915657464401580032, "text": "bad label", "label": "yes"},
            ]
        ),
    )
    write(src / "text_json_final" / "valid.json", json.dumps([]))
    res = ADAPTERS["mmsd"].convert(tmp_path)
    posts = by_id(res)
    assert sorted(posts) == ["854678856724340736", "915657464401580032"]
    p = posts["915657464401580032"]
    assert p.text == "whew ... that extra <num> miles today" and p.labels == {"sarcasm": "sarcastic"}
    assert posts["854678856724340736"].labels == {"sarcasm": "not_sarcastic"}
    assert p.image == str((src / "dataset_image" / "915657464401580032.jpg").resolve())
    assert p.meta["version"] == "mmsd2.0" and p.meta["split"] == "train"
    assert "not found" in problem_at(res, "train.json", None, "[2].image_id").reason
    assert "label" in problem_at(res, "train.json", None, "[3].label").reason
    with pytest.raises(AdapterError, match=r"test\.json not found in .*text_json_final"):
        ADAPTERS["mmsd"].convert(tmp_path, split="test")


# --- MultiOFF -----------------------------------------------------------------------------------------


def test_multioff(tmp_path: Path) -> None:
    src = tmp_path / "MultiOFF_Dataset"
    for name in ("10-Things-Hillary.png", "3lb2hb.jpg", "3lb2hb.png"):
        touch(src / "Labelled Images" / name)
    write(
        src / "Split Dataset" / "Training_meme_dataset.csv",
        "image_name,sentence,label\n"
        '10-Things-Hillary.png,"10 things hillary, explained",offensive\n'
        "3lb2hb.jpg,when you vote,Non-offensiv\n"
        "missing.png,gone,offensive\n"
        "3lb2hb.jpg,dup with other label,maybe\n"
        "3lb2hb.png,same stem,offensive\n",
        encoding="cp1252",
    )
    write(src / "Split Dataset" / "Testing_meme_dataset.csv", "image_name,sentence,label\n")
    res = ADAPTERS["multioff"].convert(src)
    posts = by_id(res)
    assert sorted(posts) == ["10-Things-Hillary.png", "3lb2hb.jpg", "3lb2hb.png"]  # file names: no collision
    assert posts["10-Things-Hillary.png"].text == "10 things hillary, explained"
    assert posts["10-Things-Hillary.png"].labels == {"offensive": "offensive"}
    assert posts["3lb2hb.jpg"].labels == {"offensive": "not_offensive"}
    assert posts["3lb2hb.png"].labels == {"offensive": "offensive"} and res.skipped == 2
    assert posts["3lb2hb.jpg"].image == str((src / "Labelled Images" / "3lb2hb.jpg").resolve())
    assert "not found" in problem_at(res, "Training_meme_dataset.csv", 4, "image_name").reason
    assert "maybe" in problem_at(res, "Training_meme_dataset.csv", 5, "label").reason
    with pytest.raises(AdapterError, match=r"Validation_meme_dataset\.csv not found"):
        ADAPTERS["multioff"].convert(src, split="val")
    write(src / "Split Dataset" / "Training_meme_dataset.csv", "image_name,text,label\nx.png,a,offensive\n")
    with pytest.raises(AdapterError, match="required column 'sentence' is missing"):
        ADAPTERS["multioff"].convert(src, split="train")


# --- Fakeddit -----------------------------------------------------------------------------------------

_FAKEDDIT_COLS = [
    "",
    "author",
    "clean_title",
    "created_utc",
    "domain",
    "hasImage",
    "id",
    "image_url",
    "linked_submission_id",
    "num_comments",
    "score",
    "subreddit",
    "title",
    "upvote_ratio",
    "2_way_label",
    "3_way_label",
    "6_way_label",
]


def _fakeddit_row(i: int, author: str, cid: str, title: str, has_image: str, labels: tuple) -> str:
    values = [
        str(i),
        author,
        title.lower(),
        "1.5e9",
        "i.imgur.com",
        has_image,
        cid,
        "https://i.imgur.com/x.jpg",
        "",
        "2",
        "10",
        "pics",
        title,
        "0.9",
        *map(str, labels),
    ]
    return "\t".join(values)


def test_fakeddit(tmp_path: Path) -> None:
    src = tmp_path / "fakeddit"
    touch(src / "public_image_set" / "c8x0aa.jpg")
    touch(src / "public_image_set" / "awxhir.jpg")
    write(
        src / "multimodal_train.tsv",
        "\n".join(
            [
                "\t".join(_FAKEDDIT_COLS),
                _fakeddit_row(0, "Alexithymia", "c8x0aa", "My Walgreens offbrand Mucinex", "True", (1, 0, 0)),
                _fakeddit_row(1, "[deleted]", "awxhir", "This concerned sink", "True", (0, 2, 4)),
                _fakeddit_row(2, "someone", "noimg1", "image file missing", "True", (1, 0, 0)),
                _fakeddit_row(3, "someone", "bad666", "six way out of range", "True", (0, 2, 6)),
            ]
        )
        + "\n",
    )
    write(
        src / "multimodal_test_public.tsv",
        "\n".join(
            [
                "\t".join(_FAKEDDIT_COLS),
                _fakeddit_row(0, "textonly", "txt001", "A text only post", "False", (0, 1, 1)),
            ]
        )
        + "\n",
    )
    write(
        src / "all_comments.tsv",
        "\n".join(
            [
                "\tid\tauthor\tbody\tisTopLevel\tparent_id\tsubmission_id\tups",
                "0\te1\tuser_a\tthat's fake lol\tTrue\tt3_c8x0aa\tc8x0aa\t5",
                "1\te2\t[deleted]\t[deleted]\tTrue\tt3_c8x0aa\tc8x0aa\t1",
                "2\te3\t[deleted]\tstill here\tFalse\tt1_e1\tc8x0aa\t2",
                "3\te4\tuser_b\tnice sink\tTrue\tt3_awxhir\tawxhir\t3",
                "4\te5\tuser_c\tnot converted\tTrue\tt3_zzz\tzzzzzz\t3",
            ]
        )
        + "\n",
    )
    res = ADAPTERS["fakeddit"].convert(src)
    posts = by_id(res)
    assert sorted(posts) == ["awxhir", "c8x0aa", "txt001"]
    p = posts["c8x0aa"]
    assert p.text == "my walgreens offbrand mucinex"  # clean_title, as the authors recommend
    assert p.image == str((src / "public_image_set" / "c8x0aa.jpg").resolve())
    assert p.labels == {"fake_2way": "true", "fake_3way": "true", "fake_6way": "true"}
    assert p.meta["author"] == "Alexithymia" and p.meta["original"]["subreddit"] == "pics"
    assert [(r.text, r.author) for r in p.replies] == [("that's fake lol", "user_a"), ("still here", None)]
    q = posts["awxhir"]
    assert q.labels == {
        "fake_2way": "fake",
        "fake_3way": "fake_with_false_text",
        "fake_6way": "manipulated_content",
    }
    assert "author" not in q.meta and [r.author for r in q.replies] == ["user_b"]
    assert posts["txt001"].image is None and posts["txt001"].meta["split"] == "test_public"
    assert "not found" in problem_at(res, "multimodal_train.tsv", 4, "id").reason
    assert "0-5" in problem_at(res, "multimodal_train.tsv", 5, "6_way_label").reason
    assert res.skipped == 2
    assert res.counts == {  # every comment dropped or altered is counted, and shown in the summary
        "empty, deleted or removed comment bodies, skipped": 1,
        "comments by a deleted account, kept without an author": 1,
        "comments on submissions outside the converted splits, skipped": 1,
        "posts by a deleted account, kept without an author": 1,
    }
    assert "1 empty, deleted or removed comment bodies, skipped" in res.summary()
    comments = 5
    assert len(p.replies) + len(q.replies) + 2 == comments  # two comments not kept, both counted
    (src / "all_comments.tsv").unlink()
    res2 = ADAPTERS["fakeddit"].convert(src, split="train")
    assert all(not p.replies for p in res2.posts)
    assert any("comments file not found" in p.reason and not p.skipped for p in res2.problems)
    write(src / "multimodal_validate.tsv", "id\tclean_title\t2_way_label\t3_way_label\n")
    with pytest.raises(AdapterError, match=r"multimodal_validate\.tsv: required column '6_way_label'"):
        ADAPTERS["fakeddit"].convert(src, split="validate")


# --- CrisisMMD v2 -------------------------------------------------------------------------------------

_CRISIS_COLS = (
    "event_name\ttweet_id\timage_id\ttweet_text\timage\tlabel\tlabel_text\tlabel_image\tlabel_text_image"
)


def test_crisismmd(tmp_path: Path) -> None:
    src = tmp_path / "CrisisMMD_v2.0"
    img_a = "data_image/california_wildfires/10_10_2017/917791044158185473_0.jpg"
    img_b = "data_image/hurricane_harvey/1_9_2017/903638440196390912_0.jpg"
    touch(src / img_a)
    touch(src / img_b)
    splits = src / "crisismmd_datasplit_all"
    write(
        splits / "task_informative_text_img_train.tsv",
        "\n".join(
            [
                _CRISIS_COLS,
                'california_wildfires\t917791044158185473\t917791044158185473_0\tRT "Fire" in '
                f"Sonoma\t{img_a}\tinformative\tinformative\tinformative\tPositive",
                "hurricane_harvey\t903638440196390912\t903638440196390912_0\tFlooded "
                f"street\t{img_b}\tnot_informative\tinformative\tnot_informative\tNegative",
                "hurricane_harvey\t1\t1_0\tno "
                "image\tdata_image/nope.jpg\tinformative\tinformative\tinformative\tPositive",
                f"hurricane_harvey\t2\t2_0\tbad label\t{img_b}\tvery_informative\tx\tx\tx",
                "truncated\trow",
            ]
        )
        + "\n",
    )
    write(
        splits / "task_humanitarian_text_img_train.tsv",
        "\n".join(
            [
                _CRISIS_COLS,
                'california_wildfires\t917791044158185473\t917791044158185473_0\tRT "Fire" in '
                f"Sonoma\t{img_a}\tinfrastructure_and_utility_damage\tx\tx\tx",
            ]
        )
        + "\n",
    )
    write(
        splits / "task_damage_text_img_train.tsv",
        "\n".join(
            [
                "event_name\ttweet_id\timage_id\ttweet_text\timage\tlabel",
                'california_wildfires\t917791044158185473\t917791044158185473_0\tRT "Fire" in '
                f"Sonoma\t{img_a}\tsevere_damage",
            ]
        )
        + "\n",
    )
    res = ADAPTERS["crisismmd"].convert(src, split="train")
    posts = by_id(res)
    assert sorted(posts) == ["903638440196390912_0", "917791044158185473_0"]
    p = posts["917791044158185473_0"]
    assert p.text == 'RT "Fire" in Sonoma'  # no quote handling: the quote is part of the tweet
    assert p.image == str((src / img_a).resolve())
    assert p.labels == {
        "informative": "informative",
        "humanitarian": "infrastructure_and_utility_damage",
        "damage": "severe_damage",
    }
    assert set(p.meta["original"]) == {"informative", "humanitarian", "damage"}
    assert p.meta["tweet_id"] == "917791044158185473" and p.meta["event"] == "california_wildfires"
    assert posts["903638440196390912_0"].labels == {"informative": "not_informative"}
    assert "not found" in problem_at(res, "task_informative_text_img_train.tsv", 4, "image").reason
    assert "very_informative" in problem_at(res, "task_informative_text_img_train.tsv", 5, "label").reason
    assert "fields" in problem_at(res, "task_informative_text_img_train.tsv", 6).reason
    write(splits / "task_damage_text_img_dev.tsv", "event_name\ttweet_id\timage_id\ttweet_text\tlabel\n")
    with pytest.raises(AdapterError, match=r"task_damage_text_img_dev\.tsv: required column 'image'"):
        ADAPTERS["crisismmd"].convert(src, split="dev")


# --- round trip and command line ----------------------------------------------------------------------


@pytest.mark.parametrize("suffix", [".jsonl", ".parquet"])
def test_manifest_round_trip(tmp_path: Path, suffix: str) -> None:
    res = ADAPTERS["hateful_memes"].convert(_hateful_memes(tmp_path / "hm"))
    out = tmp_path / f"out{suffix}"
    assert write_manifest(res.posts, out) == len(res.posts)
    back = load_posts(out)
    assert [p.to_dict() for p in back] == [p.to_dict() for p in res.posts]


def test_cli_list_and_convert(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert convert_cli.main(["--list"]) == 0
    listed = capsys.readouterr().out
    assert all(name in listed for name in ADAPTERS)
    src = _hateful_memes(tmp_path / "hm")
    out = tmp_path / "hm.jsonl"
    assert convert_cli.main(["--format", "hateful_memes", "--dataset-dir", str(src), "--out", str(out)]) == 0
    printed = capsys.readouterr().out
    assert "4 posts" in printed and f"{src / 'train.jsonl'}:4: label:" in printed
    assert len(load_posts(out)) == 4
    (tmp_path / "nothing").mkdir()
    assert (
        convert_cli.main(["--format", "mmsd", "--dataset-dir", str(tmp_path / "nothing"), "--out", str(out)])
        == 2
    )
    assert "no MMSD split file" in capsys.readouterr().err
