"""CVAT XML / CSV -> decisions: vocabulary checks, per-image errors, hostile inputs."""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd
import pytest

from byu.errors import InputError, InputErrors
from byu.review.decisions import (
    DECISION_COLUMNS,
    combine_results,
    decisions_from_round,
    import_decisions_csv,
    load_cases,
    parse_cvat_xml,
    read_decisions,
    write_decisions,
)
from tests.cvat_support import make_cases, make_round


def cvat_xml(images: dict[str, list[str]], *, assignee: str = "", owner: str = "operator",
             meta_kind: str = "task") -> str:
    """A "CVAT for images 1.1" document in the server's layout (meta first, every frame listed)."""
    def user(role: str, name: str) -> str:
        return f"<{role}><username>{name}</username><email>{name}@x.org</email></{role}>" if name else f"<{role}></{role}>"

    frames = []
    for i, (name, tags) in enumerate(images.items()):
        inner = "".join(f'<tag label="{t}" source="manual"></tag>' for t in tags)
        frames.append(f'<image id="{i}" name="{name}" width="40" height="24">{inner}</image>')
    return (
        '<?xml version="1.0" encoding="utf-8"?>\n<annotations><version>1.1</version><meta>'
        f"<{meta_kind}><id>7</id><name>r1-001</name><size>{len(images)}</size><mode>annotation</mode>"
        f"{user('owner', owner)}{user('assignee', assignee)}"
        "<labels><label><name>0</name><type>tag</type><attributes></attributes></label></labels>"
        f"</{meta_kind}><dumped>2025-01-01</dumped></meta>" + "".join(frames) + "</annotations>"
    )


@pytest.fixture
def cases() -> pd.DataFrame:
    # FN-0001 shows k=0..3, FP-0002 shows k=1..2, FN-0003 shows only k=0
    return make_cases([3, 2, 0], kinds=["FN", "FP", "FN"])


def img(cases: pd.DataFrame, i: int) -> str:
    return str(cases["image"].iloc[i])


def write(tmp_path: Path, text: str | bytes, name: str = "r1-001.xml") -> Path:
    p = tmp_path / name
    p.write_bytes(text.encode() if isinstance(text, str) else text)
    return p


def test_valid_export_gives_sorted_tags_reviewer_and_source(tmp_path, cases):
    xml = write(tmp_path, cvat_xml({img(cases, 0): ["3", "1"], img(cases, 1): ["0"], img(cases, 2): []},
                                   assignee="alice"))
    result = parse_cvat_xml(xml, cases, sent_images=list(cases["image"]))
    assert result.errors == []
    d = result.decisions
    assert list(d.columns) == DECISION_COLUMNS
    assert d.to_dict("records") == [
        {"case_id": "FN-0001", "image": img(cases, 0), "tags": "1;3", "reviewer": "alice", "source": "cvat:r1-001.xml", "job_state": ""},
        {"case_id": "FP-0002", "image": img(cases, 1), "tags": "0", "reviewer": "alice", "source": "cvat:r1-001.xml", "job_state": ""},
    ]  # the untagged FN-0003 is "not reviewed" and absent


def test_tag_order_is_numeric_then_none_then_unsure(tmp_path):
    cases = make_cases([12], kinds=["FN"])
    xml = write(tmp_path, cvat_xml({img(cases, 0): ["unsure", "10", "2", "none", "2"]}))
    result = parse_cvat_xml(xml, cases)
    assert result.errors == []
    assert result.decisions["tags"].tolist() == ["2;10;none;unsure"]


@pytest.mark.parametrize(("assignee", "fallback", "owner", "expected"), [
    ("alice", "bob", "op", "alice"),  # the export's assignee wins
    ("", "bob", "op", "bob"),  # then the job assignee the caller read from the API
    ("", None, "op", "op"),  # then the task owner
    ("", None, "", ""),
])
def test_reviewer_precedence(tmp_path, cases, assignee, fallback, owner, expected):
    xml = write(tmp_path, cvat_xml({img(cases, 0): ["1"]}, assignee=assignee, owner=owner))
    result = parse_cvat_xml(xml, cases, fallback_reviewer=fallback)
    assert result.decisions["reviewer"].tolist() == [expected]


def test_job_export_meta_is_read_too(tmp_path, cases):
    xml = write(tmp_path, cvat_xml({img(cases, 0): ["1"]}, assignee="carol", meta_kind="job"))
    assert parse_cvat_xml(xml, cases).decisions["reviewer"].tolist() == ["carol"]


def test_every_problem_is_listed_per_image(tmp_path, cases):
    sent = [img(cases, 0), img(cases, 1), img(cases, 2)]
    doc = cvat_xml({
        img(cases, 0): ["foo", "1"],  # unknown label
        img(cases, 1): ["0", "none"],  # contradictory
        img(cases, 2): ["1"],  # FN-0003 showed no candidate 1
        "FN-99-tomo_x-1x1x1-spacing1.jpg": ["1"],  # never sent
    })
    # image 2 appears twice: append a duplicate frame by hand
    doc = doc.replace("</annotations>", f'<image id="9" name="{img(cases, 0)}" width="1" height="1"/></annotations>')
    result = parse_cvat_xml(write(tmp_path, doc), cases, sent_images=sent + ["FN-0004-missing.jpg"])
    text = "\n".join(result.errors)
    assert "unknown tag 'foo'" in text and "FN-0001" in text
    assert "contradictory" in text and "FP-0002" in text
    assert "candidate 1 was not shown" in text and "FN-0003" in text
    assert "never sent" in text and "FN-99-tomo_x" in text
    assert "listed twice" in text
    assert "'FN-0004-missing.jpg' was sent but is missing from the export" in text
    assert len(result.errors) == 6
    assert result.decisions.empty  # no image here is valid


def test_candidate_seven_when_three_were_shown(tmp_path, cases):
    xml = write(tmp_path, cvat_xml({img(cases, 0): ["7"], img(cases, 1): ["2"]}))
    result = parse_cvat_xml(xml, cases)
    assert len(result.errors) == 1
    assert "candidate 7 was not shown (candidates shown: 1..3)" in result.errors[0]
    assert img(cases, 0) in result.errors[0]
    assert result.decisions["case_id"].tolist() == ["FP-0002"]  # the valid one is kept


@pytest.mark.parametrize("label", ["07", "-1", "1.0", "²", " ", "NONE", "1;2"])
def test_non_canonical_labels_are_unknown(tmp_path, cases, label):
    xml = write(tmp_path, cvat_xml({img(cases, 0): [label]}))
    result = parse_cvat_xml(xml, cases)
    assert len(result.errors) == 1 and "unknown tag" in result.errors[0]


# ----------------------------------------------------------------------------------------------
# Hostile XML


def test_xxe_is_rejected_and_nothing_is_read(tmp_path, cases):
    secret = tmp_path / "secret.txt"
    secret.write_text("TOP-SECRET-VALUE")
    for doc in (
        f'<?xml version="1.0"?><!DOCTYPE a [<!ENTITY x SYSTEM "file://{secret}">]>'
        f'<annotations><image name="{img(cases, 0)}"><tag label="&x;"/></image></annotations>',
        f'<?xml version="1.0"?><!DOCTYPE a [<!ENTITY x SYSTEM "file://{secret}">]>'
        f'<annotations><meta><task><assignee><username>&x;</username></assignee></task></meta></annotations>',
        '<?xml version="1.0"?><!DOCTYPE a [<!ENTITY % p SYSTEM "http://127.0.0.1:9/p.dtd"> %p;]><annotations/>',
        '<?xml version="1.0"?><!DOCTYPE annotations SYSTEM "http://127.0.0.1:9/x.dtd"><annotations/>',
    ):
        with pytest.raises(InputError) as info:
            parse_cvat_xml(write(tmp_path, doc), cases)
        assert "TOP-SECRET-VALUE" not in str(info.value)


def test_billion_laughs_is_rejected_fast(tmp_path, cases):
    ents = '<!ENTITY l0 "lol">' + "".join(
        f'<!ENTITY l{i} "{("&l" + str(i - 1) + ";") * 10}">' for i in range(1, 10))
    doc = f'<?xml version="1.0"?><!DOCTYPE annotations [{ents}]><annotations><version>&l9;</version></annotations>'
    with pytest.raises(InputError, match="entit"):  # refused, not expanded (its time: benchmarks/timeouts.py)
        parse_cvat_xml(write(tmp_path, doc), cases)


def test_bare_doctype_without_entities_is_accepted(tmp_path, cases):
    doc = cvat_xml({img(cases, 0): ["1"]}).replace("<annotations>", "<!DOCTYPE annotations><annotations>", 1)
    assert parse_cvat_xml(write(tmp_path, doc), cases).decisions["tags"].tolist() == ["1"]


def test_a_1_gb_file_is_refused_before_parsing(tmp_path, cases):
    big = tmp_path / "huge.xml"
    with open(big, "wb") as fh:  # sparse: claims 1 GiB, uses no disk
        fh.truncate(2**30)
    with pytest.raises(InputError, match="more than the 67108864-byte limit"):  # from its size, before parsing
        parse_cvat_xml(big, cases)
    small = write(tmp_path, cvat_xml({img(cases, 0): ["1"]}))
    with pytest.raises(InputError, match="100-byte limit"):
        parse_cvat_xml(small, cases, max_bytes=100)


def test_not_xml_and_not_cvat_are_file_errors(tmp_path, cases):
    with pytest.raises(InputError, match="not well-formed"):
        parse_cvat_xml(write(tmp_path, "<annotations><image"), cases)
    with pytest.raises(InputError, match="expected <annotations>"):
        parse_cvat_xml(write(tmp_path, "<html/>"), cases)


def test_path_traversal_image_names_are_never_matched(tmp_path, cases):
    names = ["../../etc/passwd", "/etc/passwd", "..\\x.jpg", f"../{img(cases, 0)}", f"sub/{img(cases, 0)}"]
    xml = write(tmp_path, cvat_xml({n: ["1"] for n in names}))
    result = parse_cvat_xml(xml, cases)
    assert len(result.errors) == len(names)
    assert all("never sent" in e for e in result.errors)
    assert result.decisions.empty


def test_cases_with_unsafe_image_names_are_refused(tmp_path):
    df = make_cases([1, 1])
    df.loc[0, "image"] = "../../evil.jpg"
    df.loc[1, "case_id"] = "FP/0002"
    with pytest.raises(InputErrors) as info:
        load_cases(df)
    fields = sorted(e.field for e in info.value.errors)
    assert fields == ["case_id", "image"]


# ----------------------------------------------------------------------------------------------
# CSV import


def test_import_csv_by_case_id_or_image(tmp_path, cases):
    csv = tmp_path / "outside.csv"
    pd.DataFrame([
        {"case_id": "FN-0001", "image": "", "tags": "2; 1", "reviewer": "dana"},
        {"case_id": "", "image": img(cases, 1), "tags": "unsure", "reviewer": ""},
        {"case_id": "FN-0003", "image": "", "tags": "", "reviewer": "dana"},  # not reviewed
    ]).to_csv(csv, index=False)
    result = import_decisions_csv(csv, cases)
    assert result.errors == []
    assert result.decisions.to_dict("records") == [
        {"case_id": "FN-0001", "image": img(cases, 0), "tags": "1;2", "reviewer": "dana", "source": "import:outside.csv", "job_state": ""},
        {"case_id": "FP-0002", "image": img(cases, 1), "tags": "unsure", "reviewer": "", "source": "import:outside.csv", "job_state": ""},
    ]


def test_import_csv_errors_name_the_row(tmp_path, cases):
    csv = tmp_path / "bad.csv"
    pd.DataFrame({"case_id": ["FN-0001", "FN-9999", "FP-0002", "FN-0001", "FN-0003"],
                  "tags": ["0;none", "1", "7", "1", "bogus"]}).to_csv(csv, index=False)
    result = import_decisions_csv(csv, cases)
    assert result.decisions.empty
    text = "\n".join(result.errors)
    assert "line 2 (case FN-0001): contradictory" in text
    assert "line 3: case_id 'FN-9999' is not a case of this round" in text
    assert "line 4 (case FP-0002): tag '7'" in text
    assert "line 5 (case FN-0001): case already decided on line 2" in text
    assert "line 6 (case FN-0003): unknown tag 'bogus'" in text


def test_import_csv_needs_tags_and_a_key(tmp_path, cases):
    csv = write(tmp_path, "case_id,reviewer\nFN-0001,x\n", "a.csv")
    with pytest.raises(InputError, match="missing column 'tags'"):
        import_decisions_csv(csv, cases)
    csv = write(tmp_path, "reviewer,tags\nx,1\n", "b.csv")
    with pytest.raises(InputError, match="'case_id' or an 'image'"):
        import_decisions_csv(csv, cases)


# ----------------------------------------------------------------------------------------------
# Combining, writing, whole rounds


def test_combine_later_decision_wins_and_write_round_trips(tmp_path, cases):
    first = parse_cvat_xml(write(tmp_path, cvat_xml({img(cases, 0): ["unsure"], img(cases, 1): ["1"]}), "a.xml"), cases)
    second = parse_cvat_xml(write(tmp_path, cvat_xml({img(cases, 0): ["2"]}, assignee="eve"), "b.xml"), cases)
    merged = combine_results([first, second], cases)
    assert merged.decisions[["case_id", "tags", "source"]].values.tolist() == [
        ["FN-0001", "2", "cvat:b.xml"], ["FP-0002", "1", "cvat:a.xml"]]
    out = write_decisions(merged, tmp_path / "decisions.csv")
    assert read_decisions(out).to_dict("records") == merged.decisions.to_dict("records")


def test_write_refuses_a_result_with_errors(tmp_path, cases):
    bad = parse_cvat_xml(write(tmp_path, cvat_xml({img(cases, 0): ["9"]})), cases)
    target = tmp_path / "decisions.csv"
    with pytest.raises(InputErrors, match="candidate 9"):
        write_decisions(bad, target)
    assert not target.exists()
    write_decisions(bad, target, allow_errors=True)
    assert read_decisions(target).empty


def test_decisions_from_round_reads_every_task_second_review_last(tmp_path):
    rd = make_round(tmp_path / "review", "r1", [2, 1, 0], kinds=["FN", "FP", "FN"])
    cases = pd.read_csv(rd / "cases.csv", dtype=str, keep_default_na=False)
    a, b, c = cases["image"].tolist()
    (rd / "cvat").mkdir()
    (rd / "cvat" / "tasks.json").write_text(json.dumps({"tasks": [
        {"name": "r1-review2-001", "kind": "review2", "batch": 1, "images": [a]},
        {"name": "r1-001", "kind": "review", "batch": 1, "images": [a, b], "job_assignee": "frank"},
        {"name": "r1-002", "kind": "review", "batch": 2, "images": [c]},
    ]}))
    (rd / "cvat" / "r1-001.xml").write_text(cvat_xml({a: ["unsure"], b: ["1"]}))
    (rd / "cvat" / "r1-review2-001.xml").write_text(cvat_xml({a: ["0", "2"]}, assignee="gina"))
    result = decisions_from_round(rd)
    assert result.errors == ["task r1-002: no export yet (run pull)"]
    assert result.decisions[["case_id", "tags", "reviewer", "source"]].values.tolist() == [
        ["FN-0001", "0;2", "gina", "cvat:r1-review2-001.xml"],
        ["FP-0002", "1", "frank", "cvat:r1-001.xml"],
    ]
