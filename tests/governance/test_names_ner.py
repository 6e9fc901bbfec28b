"""Person names through a spaCy pipeline run by Presidio's NLP engine, configured the way a user configures
it (``ner_model`` in a policy file, ``govern --ner-model``); without one, the audit says names stayed; and the
policy digest ``govern`` prints is the same on every run of the same policy."""

from __future__ import annotations

import json
import secrets
from pathlib import Path

import pytest

from ximgctx.cli import govern as govern_cli
from ximgctx.data.io import load_posts, write_posts
from ximgctx.data.record import Post, Reply
from ximgctx.errors import ConfigError
from ximgctx.governance import GovernancePolicy, govern, pii
from ximgctx.governance import keys as governance_keys

KEY = b"n" * 32
REPO = Path(__file__).resolve().parents[2]


def _pipeline(folder: Path, labels: tuple[str, ...] = ("PERSON",)) -> Path:
    """A tiny spaCy pipeline saved the way a user saves one (nlp.to_disk): an entity ruler whose patterns
    name three people (one written lower-case) and one organisation."""
    import spacy

    nlp = spacy.blank("en")
    nlp.meta["name"] = "tiny_people"
    nlp.meta["version"] = "0.1.0"
    ruler = nlp.add_pipe("entity_ruler")
    patterns = [{"label": "ORG", "pattern": "Acme Robotics"}]
    for label in labels:
        patterns += [
            {"label": label, "pattern": [{"LOWER": "maria"}, {"LOWER": "kowalski"}]},
            {"label": label, "pattern": [{"LOWER": "jan"}, {"LOWER": "de"}, {"LOWER": "vries"}]},
            {"label": label, "pattern": [{"TEXT": "Nguyễn"}, {"TEXT": "Thị"}, {"TEXT": "Lan"}]},
        ]
    ruler.add_patterns(patterns)
    nlp.to_disk(folder)
    return folder


ALT = "jan de vries, smiling"  # alt text in meta: redacted like the post's text


def _posts() -> list[Post]:
    public = {"visibility": "public", "author": "poster1"}
    return [
        # no digit, no @, no dot: the prefilter must not skip it once NER is on
        Post(id="a", text="Maria Kowalski took this photo", meta={**public, "alt_text": ALT}),
        Post(
            id="b",
            text="reach Nguyễn Thị Lan at 415-555-0132!",
            replies=[Reply("thanks Maria Kowalski.", "fan2"), Reply("Acme Robotics rocks", None)],
            meta={**public, "caption": {"people": ["Jan de Vries"]}},
        ),
        Post(id="c", text="no names here, just the sea", meta=public),
    ]


def test_names_are_redacted_by_a_pipeline_named_in_the_policy_file(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    model = _pipeline(tmp_path / "people-ner")
    policy_file = tmp_path / "policy.yaml"
    default = (REPO / "configs/governance/default.yaml").read_text()
    policy_file.write_text(default.replace("ner_model: null", f"ner_model: {model}"))
    data, out, report = tmp_path / "posts.jsonl", tmp_path / "governed.jsonl", tmp_path / "audit.json"
    write_posts(_posts(), data)
    args = ["--data", str(data), "--out", str(out), "--report", str(report), "--governance", str(policy_file)]
    assert govern_cli.main(args) == 0
    printed = capsys.readouterr().out
    a, b, c = load_posts(out)
    assert a.text == "[NAME] took this photo" and a.meta["alt_text"] == "[NAME], smiling"
    assert b.text == "reach [NAME] at [PHONE]!"
    assert [r.text for r in b.replies] == ["thanks [NAME].", "Acme Robotics rocks"]  # ORG is not a name
    assert b.meta["caption"] == {"people": ["[NAME]"]} and c.text == "no names here, just the sea"
    audit = json.loads(report.read_text())
    names = audit["redaction"]["names"]
    assert names["ner_model"] == str(model) and names["pipeline"] == "en_tiny_people"
    assert names["version"] == "0.1.0" and names["ran"] is True and names["person_labels"] == ["PERSON"]
    assert audit["redactions"]["name"] == 5 and audit["redactions"]["phone"] == 1
    assert f"names: redacted with NER model {model} (en_tiny_people)" in printed
    assert audit["policy"]["ner_model"] == str(model)  # part of the policy and of its digests

    # --ner-model gives the same result from the default policy; a policy without it is another policy
    out2, report2 = tmp_path / "governed2.jsonl", tmp_path / "audit2.json"
    args2 = ["--data", str(data), "--out", str(out2), "--report", str(report2), "--ner-model", str(model)]
    assert govern_cli.main(args2) == 0
    capsys.readouterr()
    assert [p.text for p in load_posts(out2)] == [p.text for p in load_posts(out)]
    plain = GovernancePolicy()
    assert json.loads(report2.read_text())["policy_public_sha256"] != plain.public_sha256()


def test_names_path_keeps_the_fast_path_equal_to_the_unoptimised_one(tmp_path: Path) -> None:
    policy = GovernancePolicy(ner_model=str(_pipeline(tmp_path / "ner")))
    posts = _posts() * 2  # repeated strings: answered from the cache the second time
    fast = govern(posts, policy, key=KEY)
    with pii.unoptimised():
        slow = govern(posts, policy, key=KEY)
    assert [p.to_dict() for p in fast.posts] == [p.to_dict() for p in slow.posts]
    assert fast.audit.redactions == slow.audit.redactions and fast.audit.redactions["name"] == 10
    # the same pipeline under PER (CoNLL-style models) is read as a person too
    per = GovernancePolicy(ner_model=str(_pipeline(tmp_path / "per", labels=("PER",))))
    assert govern(posts[:1], per, key=KEY).posts[0].text == "[NAME] took this photo"


def test_without_a_ner_model_the_audit_and_the_command_say_names_stayed(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    data, out, report = tmp_path / "posts.jsonl", tmp_path / "governed.jsonl", tmp_path / "audit.json"
    write_posts(_posts(), data)
    assert govern_cli.main(["--data", str(data), "--out", str(out), "--report", str(report)]) == 0
    assert "names: NOT redacted (no NER model ran" in capsys.readouterr().out
    names = json.loads(report.read_text())["redaction"]["names"]
    assert names["ner_model"] is None and names["ran"] is False and names["redacted"] is False
    assert "person names were NOT redacted" in names["note"]
    assert load_posts(out)[0].text == "Maria Kowalski took this photo"
    assert govern(_posts(), key=KEY).audit.names["ran"] is False


def test_a_ner_model_that_is_not_there_is_an_error_and_never_a_download(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    import spacy.cli

    def no_download(*args: object, **kwargs: object) -> None:
        raise AssertionError("a model download was attempted")

    monkeypatch.setattr(spacy.cli, "download", no_download)
    for bad in ("en_core_web_sm", str(tmp_path / "missing"), "../x y"):
        with pytest.raises(ConfigError, match="ximgctx downloads no model"):
            GovernancePolicy(ner_model=bad)
    (tmp_path / "empty").mkdir()
    with pytest.raises(ConfigError, match="without config.cfg"):
        GovernancePolicy(ner_model=str(tmp_path / "empty"))
    orgs_only = _pipeline(tmp_path / "orgs", labels=())
    policy = GovernancePolicy(ner_model=str(orgs_only))
    with pytest.raises(ConfigError, match="predicts no person label"):
        govern(_posts(), policy, key=KEY)
    data = tmp_path / "posts.jsonl"
    write_posts(_posts(), data)
    args = ["--data", str(data), "--out", str(tmp_path / "o.jsonl"), "--report", str(tmp_path / "r.json")]
    assert govern_cli.main([*args, "--ner-model", str(tmp_path / "missing")]) == 2
    assert "ximgctx downloads no model" in capsys.readouterr().err
    assert govern_cli.main([*args, "--ner-model", str(orgs_only)]) == 2
    assert "predicts no person label" in capsys.readouterr().err
    assert not (tmp_path / "o.jsonl").exists()


def test_the_printed_policy_digest_is_the_same_on_every_run_of_the_same_policy(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """Issue 26: ``govern`` printed the digest keyed by a key drawn per process when the operator gave none.
    Each run below draws a new process key, as a new process does."""
    data = tmp_path / "posts.jsonl"
    write_posts(_posts(), data)
    policy = tmp_path / "policy.yaml"
    policy.write_text((REPO / "configs/governance/default.yaml").read_text())
    printed, reports = [], []
    for i in range(3):
        monkeypatch.setattr(governance_keys, "_PROCESS_KEY", secrets.token_bytes(32))
        report = tmp_path / f"audit{i}.json"
        args = ["--data", str(data), "--out", str(tmp_path / f"g{i}.jsonl"), "--report", str(report)]
        assert govern_cli.main([*args, *(["--governance", str(policy)] if i else [])]) == 0
        printed.append(capsys.readouterr().out.splitlines()[1])
        reports.append(json.loads(report.read_text()))
    public = GovernancePolicy().public_sha256()
    assert {r["policy_public_sha256"] for r in reports} == {public}
    assert len({line.split("(policy ")[1].split(";")[0] for line in printed}) == 1
    assert all(f"(policy {public[:12]}; keyed digest under a throw-away key" in line for line in printed)
    assert len({r["policy_sha256"] for r in reports}) == 3  # keyed by three throw-away keys
    key_file = tmp_path / "governance.key"
    key_file.write_bytes(KEY)
    keyed = []
    for i in range(2):
        monkeypatch.setattr(governance_keys, "_PROCESS_KEY", secrets.token_bytes(32))
        report = tmp_path / f"keyed{i}.json"
        args = ["--data", str(data), "--out", str(tmp_path / "k.jsonl"), "--report", str(report)]
        assert govern_cli.main([*args, "--key-file", str(key_file)]) == 0
        keyed.append(capsys.readouterr().out.splitlines()[1].split(" (policy ")[1])
        assert json.loads(report.read_text())["policy_sha256"] == GovernancePolicy().digest(KEY)
    assert keyed[0] == keyed[1] and f"keyed digest {GovernancePolicy().digest(KEY)[:12]}" in keyed[0]
