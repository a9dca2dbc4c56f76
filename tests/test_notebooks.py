"""Every chapter runs headless on the tiny preset, in order, and on smol at reduced sizes from an empty folder
(08 after 06); each is stored without outputs."""

import json
from pathlib import Path

import nbformat
import pytest
from nbclient import NotebookClient

NOTEBOOKS = sorted((Path(__file__).resolve().parent.parent / "notebooks").glob("*.ipynb"))


def test_there_are_chapters():
    """The chapters exist and are numbered in order from 00."""
    names = [p.name for p in NOTEBOOKS]
    assert names and names[0].startswith("00_")
    assert [n[:2] for n in names] == [f"{i:02d}" for i in range(len(names))]


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.stem)
def test_stored_without_outputs(path):
    """Code cells carry no outputs and no execution counts."""
    nb = json.loads(path.read_text())
    dirty = [
        i for i, c in enumerate(nb["cells"]) if c["cell_type"] == "code" and (c["outputs"] or c["execution_count"])
    ]
    assert [] == dirty


def _execute(path: Path, workdir: Path, monkeypatch, preset: str = "tiny", then: str = "") -> nbformat.NotebookNode:
    """Run a chapter headless on `preset` with `workdir` as its LABKIT_WORKDIR, and the code `then` after its
    last cell; the executed notebook."""
    monkeypatch.setenv("LAB_PRESET", preset)
    monkeypatch.setenv("LABKIT_WORKDIR", str(workdir))  # chapters write their artifacts here
    monkeypatch.setenv("MPLBACKEND", "Agg")
    nb = nbformat.read(path, as_version=4)
    if then:
        nb.cells.append(nbformat.v4.new_code_cell(then))
    NotebookClient(nb, timeout=900, kernel_name="python3", resources={"metadata": {"path": str(path.parent)}}).execute()
    return nb


@pytest.fixture(scope="module")
def course_folder(tmp_path_factory):
    """One chapters folder shared by the chapters of `test_notebook_runs`, as a learner's laptop has, holding
    the ranking file a learner left in chapter 01 (`simulated_learner_file`)."""
    folder = tmp_path_factory.mktemp("course")
    (folder / "01").mkdir()
    simulated_learner_file(folder / "01")
    return folder


LEARNER_ITEMS = 12
"""Items the simulated learner ranked (`simulated_learner_file`'s default)."""


def learner_flow(course: Path) -> dict[str, list[str]]:
    """What each chapter prints when the learner's rankings flow downstream, chapter by chapter."""
    return {
        "02_agreement_and_pairs": [f"rankings of {LEARNER_ITEMS} items by learner"],
        "03_reward_models": ["saved the model trained with your rankings", f"'learner_items': {LEARNER_ITEMS}"],
        "04_ppo": [f"loaded from {course / '03' / 'reward_model'}"],
    }


@pytest.mark.slow
@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.stem)
def test_notebook_runs(path, course_folder, monkeypatch):
    """The chapters execute top to bottom in order, in one folder, as in a workshop: each loads what an
    earlier chapter saved, and the rankings the learner made in chapter 01 reach the pairs (02), the reward
    model (03) and the PPO run that loads it (04). The cold chapters (`test_a_chapter_starts_cold`) cover
    a folder with the shipped rankings only."""
    printed = outputs_text(_execute(path, course_folder, monkeypatch))
    for expected in learner_flow(course_folder).get(path.stem, []):
        assert expected in printed, f"{path.stem} did not print {expected!r}: the learner's rankings were lost"
    assert "No rankings of yours" not in printed


SMOL_SMOKE_SETTINGS = (
    "num_eval_prompts=7 max_new_tokens=8 reward.max_steps=8 ppo.total_steps=2 ppo.batch_size=4 ppo.mini_batch_size=4 "
    "dpo.max_steps=4 dpo.test_pairs=16 dpo.probe_pairs=8 bestofn.n=2 bestofn.ns=[1,2]"
)
"""`LAB_SETTINGS` of the smol smoke test: sizes that keep a chapter within about two minutes on a CPU."""

WHAT_RAN = 'print("ran on", cfg.policy, "in the world", w.name)'
"""Code run after a smoke-tested chapter's last cell: which preset and world its cells used."""


def _on_smol(monkeypatch, smol_cache) -> None:
    monkeypatch.setenv("LAB_SETTINGS", SMOL_SMOKE_SETTINGS)
    # the session's dequantised SmolLM2 (the `smol` fixture): no second dequantisation
    monkeypatch.setenv("LABKIT_CACHE", str(smol_cache))


ON_SMOL = [p.stem for p in NOTEBOOKS if p.stem[:2] not in ("06", "08")]
"""The chapters smoke-tested on smol in order, in one folder (`smol_course`); 06 and 08 start cold
(`test_a_chapter_starts_cold`)."""


@pytest.fixture(scope="module")
def smol_course(tmp_path_factory):
    """One chapters folder for the smol smoke test, empty before chapter 00, as on a learner's laptop."""
    return tmp_path_factory.mktemp("smol-course")


@pytest.mark.slow
@pytest.mark.parametrize("stem", ON_SMOL)
def test_a_chapter_runs_on_smol_in_its_own_world(stem, smol_course, monkeypatch, smol, smol_cache):
    """The smoke test at reduced sizes: the chapter runs with LAB_PRESET=smol, on SmolLM2 in the
    RealToxicityPrompts world, after the chapters before it (from smol's shipped rankings: no tiny file),
    and writes only to smol's subfolder."""
    _on_smol(monkeypatch, smol_cache)
    chapter = NOTEBOOKS[0].parent / f"{stem}.ipynb"
    printed = outputs_text(_execute(chapter, smol_course, monkeypatch, "smol", WHAT_RAN))
    assert "ran on smol in the world rtp" in printed
    assert [] == [p.name for p in smol_course.iterdir() if p.name != "smol"]  # nothing in the tiny preset's folders


@pytest.mark.slow
def test_a_chapter_starts_cold(tmp_path, monkeypatch, smol, smol_cache):
    """A chapter alone in an empty folder, with the shipped rankings only, trains the reward model and the PPO
    policy it needs, and runs (06). Chapter 08 then runs in that folder with no chapter 03, 04, 05 or 07 before
    it: it looks for what it needs in 06 too, and loads it. Both run on smol at the smoke test's sizes (the
    code path is the preset's; on tiny, a cold 06 and 08 took 330 s of CI for the same calls), which makes
    them smol's smoke test of 06 and 08."""
    _on_smol(monkeypatch, smol_cache)
    chapter = NOTEBOOKS[0].parent / "06_toxicity_before_and_after.ipynb"
    printed = outputs_text(_execute(chapter, tmp_path, monkeypatch, "smol", WHAT_RAN))
    assert "trained on the shipped rankings" in printed
    assert "PPO policy trained" in printed
    assert "ran on smol in the world rtp" in printed
    chapter = NOTEBOOKS[0].parent / "08_making_it_practical.ipynb"
    printed = outputs_text(_execute(chapter, tmp_path, monkeypatch, "smol", WHAT_RAN))
    folder = tmp_path / "smol"  # presets.workdir: another preset's chapters keep to its subfolder
    assert f"loaded from {folder / '06' / 'reward_model'}" in printed
    assert f"PPO policy loaded ({folder / '06' / 'ppo'})" in printed
    assert "ran on smol in the world rtp" in printed
    saved_elsewhere = [p for ch in ("03", "04", "05", "07") if (folder / ch).is_dir() for p in (folder / ch).iterdir()]
    assert [] == saved_elsewhere  # looking there creates the folder (presets.workdir), nothing is saved in it
    assert ["smol"] == [p.name for p in tmp_path.iterdir()]


def simulated_learner_file(folder: Path, num_items: int = 12) -> int:
    """A learner's `my_rankings.jsonl` (the careful persona, renamed) on shipped items of train-split prompts."""
    import dataclasses

    from labkit import labelers, labels, learner, shipped

    allowed = learner.train_prompts(shipped.load_rankings(), seed=0)
    items = [it for it in labels.items_from_samples(shipped.load_samples()) if it.prompt in allowed][:num_items]
    persona = dataclasses.replace(labelers.PERSONAS["careful"], name="learner")
    labelers.simulate(items, [persona], labels.RankingStore(folder / learner.LEARNER_FILE), seed=0)
    return len(items)


def outputs_text(nb) -> str:
    """Everything the executed cells printed or displayed as text."""
    parts = []
    for cell in nb.cells:
        for out in cell.get("outputs", []):
            parts.append(
                out.get("text", "") if out.get("output_type") == "stream" else out.get("data", {}).get("text/plain", "")
            )
    return "\n".join(parts)


def _notebook(path: Path, *sources: str) -> None:
    nb = nbformat.v4.new_notebook()
    nb.cells = [nbformat.v4.new_code_cell(src) for src in sources]
    nbformat.write(nb, path)


def test_prepare_runs_the_chapters_in_order_and_times_them(tmp_path, capsys, monkeypatch):
    """`labkit prepare` runs each chapter in the chapters' folder, in order (a later one finds what an earlier
    one saved), leaves the notebooks unchanged, and records the seconds of each in prepare.json."""
    from labkit import cli

    for name in ("LABKIT_WORKDIR", "LAB_PRESET", "MPLBACKEND"):  # prepare sets them: restored after the test
        monkeypatch.setenv(name, "unset")  # records the value before, which teardown puts back
        monkeypatch.delenv(name)

    book, work = tmp_path / "book", tmp_path / "work"
    book.mkdir()
    save = "import os, pathlib\nfolder = pathlib.Path(os.environ['LABKIT_WORKDIR'])\n"
    _notebook(book / "00_first.ipynb", save + "(folder / 'model.txt').write_text('trained')")
    _notebook(
        book / "01_second.ipynb", save + "assert (folder / 'model.txt').read_text() == 'trained'\nprint('loaded')"
    )
    before = {p.name: p.read_bytes() for p in book.iterdir()}
    assert 0 == cli.main(["prepare", "--notebooks", str(book), "--workdir", str(work), "--preset", "tiny"])
    assert before == {p.name: p.read_bytes() for p in book.iterdir()}
    record = json.loads((work / "prepare.json").read_text())
    assert list(record["seconds"]) == ["00_first", "01_second"] and record["preset"] == "tiny"
    assert "labkit prepare" in record["command"]

    _notebook(book / "02_broken.ipynb", "raise RuntimeError('no reward model here')")
    assert 2 == cli.main(["prepare", "--notebooks", str(book), "--workdir", str(work), "--chapters", "02"])
    err = capsys.readouterr().err
    assert "02_broken.ipynb failed" in err and "--chapters 02" in err and "no reward model here" in err
    assert 2 == cli.main(["prepare", "--notebooks", str(book), "--chapters", "09"])
    assert "no chapter 09" in capsys.readouterr().err
    # --preset reaches the kernels as LAB_PRESET: every chapter reads the preset's own world
    smol_book = tmp_path / "smol_book"
    smol_book.mkdir()
    _notebook(smol_book / "00_which.ipynb", save + "(folder / 'preset.txt').write_text(os.environ['LAB_PRESET'])")
    assert 0 == cli.main(
        ["prepare", "--notebooks", str(smol_book), "--workdir", str(tmp_path / "w"), "--preset", "smol"]
    )
    assert "smol" == (tmp_path / "w" / "preset.txt").read_text()
