"""The chapters' prose: it quotes no result a run produces, reads in about 15 minutes, and links only to
glossary entries that exist (issue 14, points 3 and 6).

A result (a measured accuracy, a share, a KL, a duration) belongs in a code cell's output: the markdown points
at it ("the cell above prints the rude share before and after") instead of typing it, so the two cannot drift
apart. `unsourced_figures` is the rule; its docstring says what it flags and what it lets through.
"""

import json
import re
from pathlib import Path

import pytest

NOTEBOOKS_DIR = Path(__file__).resolve().parent.parent / "notebooks"
CHAPTERS = sorted(NOTEBOOKS_DIR.glob("[0-9][0-9]_*.ipynb"))
GLOSSARY = NOTEBOOKS_DIR / "GLOSSARY.md"
MAX_VISIBLE_WORDS = 1200  # issue 14: a chapter's visible prose reads in about 15 minutes

# -- 1. Result figures -------------------------------------------------------------------------------------------

_NUMBER = r"\d[\d,]*(?:\.\d+)?"
_NUMBER_WORD = r"(?:one|two|three|four|five|six|seven|eight|nine|ten|eleven|twelve|twenty|a hundred|a thousand)"
FIGURE_KINDS = {
    "percentage": rf"{_NUMBER}\s?(?:%|per\s?cent\b)",
    # 0.83, 0.5, 12.75: a leading 0 or two decimals is how measured shares, accuracies and KLs print
    "decimal": r"(?<![\w.])(?:0\.\d+|\d+\.\d{2,})(?!\d|\.\d)",
    "multiple": rf"(?<![\w.]){_NUMBER}[x×](?!\w)"
    rf"|\b(?:{_NUMBER}|{_NUMBER_WORD})\s+times\s+(?:as|too|in|over|more|less|fewer|faster|slower|larger|smaller"
    r"|bigger|longer|shorter|higher|lower)\b",
    "duration": rf"(?<![\w.]){_NUMBER}\s?(?:ms|s|seconds?|min|minutes?|h|hours?)\b"
    rf"|\b(?:{_NUMBER_WORD}|a|an)\s+(?:seconds|minutes?|hours?)\b",
    # "about 2,900 pairs", "around 0.3", "~15": a hedged number is a measurement
    "hedged": rf"(?:\b(?:about|around|roughly|nearly|almost|approximately)\s+|~\s?){_NUMBER}(?:\s?%)?",
    "fraction": r"\b(?:a|one|two|three|four)[\s-](?:thirds?|quarters?|fifths?|tenths?)\b",
}
FIGURE = re.compile("|".join(f"(?P<{kind}>{pattern})" for kind, pattern in FIGURE_KINDS.items()), re.IGNORECASE)
# Inline code, LaTeX, HTML comments and link targets are not prose; blanked out (same length) before matching.
NOT_PROSE = re.compile(r"`[^`]+`|\$[^$\n]+\$|<!--.*?-->|\]\([^)\s]*\)", re.DOTALL)
SETTING_MARKER = re.compile(r"<!--\s*setting:(.*?)-->", re.DOTALL)
ASSIGNED = re.compile(r"[A-Za-z_][\w.]*\s?=\s?$")  # "beta = " just before a figure: it states a setting

# Figures that are not results, each with its reason: a citation, a definition or an example. An entry is the
# phrase around the figure as the chapter words it, so the same figure elsewhere is still checked.
ALLOWED = {
    "00": [
        ("its toxicity is at least 0.5", "the definition of rude (`World.is_rude`), not a measurement"),
        ("P(toxic) is at least 0.5", "the definition of a toxic continuation (`RTPWorld.is_rude`)"),
    ],
    "02": [
        ("InstructGPT reports about 73%", "a citation: InstructGPT's inter-labeler agreement (Ouyang et al. 2022)"),
        ("the 73% InstructGPT measured", "the same citation, compared with the heatmap the chapter prints"),
    ],
    "03": [
        ("right 70% of the time when it says 0.7", "an example that defines calibration"),
        ("1 if P(toxic) < 0.5", "the definition of the binary reward's threshold"),
        ("about 200k human-labelled texts", "a citation: alt-profanity-check's documented training set"),
        ("P(toxic) is below 0.1", "an exercise's threshold, chosen by the exercise"),
    ],
    "06": [
        ("(P(toxic) >= 0.5)", "the definition of a toxic sample (`evaluate`'s threshold)"),
        ("the 0.5 threshold", "the same definition, drawn in the histograms"),
        ("0.5 means no difference", "the definition of a win rate's no-difference point"),
    ],
    "07": [
        ("0.19 nats at n = 2", "the value of the formula log n - (n - 1) / n just above, not a measurement"),
        ("log 2 = 0.693", "a constant: DPO's loss when the policy is the reference"),
    ],
    "08": [
        ('"PEFT saves about 50%"', "the folk claim the chapter tests, quoted"),
        ('"does PEFT save about 50%?"', "the same quoted claim"),
        ("far below 0.5", "the quoted claim's 50%, as a ratio of peaks"),
        ("rise from 5% to 55%", "the drift schedule the chapter sets (`monitoring.EXAMPLE_SCHEDULE`)"),
    ],
}
HOW_TO_FIX = (
    "a number a run produces belongs in a code cell's output: rewrite the sentence to point at it ('the cell above "
    "prints ...'). If it is a setting, write it as `name = value` or add <!-- setting: VALUE --> to the cell (either "
    "way the value must appear in a code cell of the notebook); a citation or a definition goes in ALLOWED in "
    "tests/test_prose.py with its reason."
)


def _phrase_pattern(phrase: str) -> re.Pattern:
    """`phrase` matched across line breaks: the markdown wraps its lines anywhere."""
    return re.compile(r"\s+".join(re.escape(word) for word in phrase.split()))


def unsourced_figures(markdown: str, code: str = "", allowed: tuple[str, ...] = ()) -> list[tuple[str, str]]:
    """The figures in `markdown` that look like results and have no source, as (figure, excerpt) pairs.

    Flagged (FIGURE_KINDS): percentages; decimals with a leading 0 or two or more decimal places; multiples
    ("3x", "ten times faster", "nine times in ten"); durations ("15 s", "a minute"); hedged numbers ("about 2,900",
    "~2"); fractions in words ("two thirds"). Let through: (a) anything inside inline code, LaTeX `$...$`, an
    HTML comment or a link target; (b) a setting: a figure written `name = value`, or listed in a
    `<!-- setting: ... -->` marker of the cell, whose number appears literally in `code` (the notebook's code
    cells); (c) a figure inside one of the `allowed` phrases.
    """
    prose = NOT_PROSE.sub(lambda m: " " * len(m.group()), markdown)
    marked = {value for marker in SETTING_MARKER.findall(markdown) for value in marker.split()}
    allowed_spans = [m.span() for phrase in allowed for m in _phrase_pattern(phrase).finditer(markdown)]
    found = []
    for match in FIGURE.finditer(prose):
        start, end = match.span()
        if any(a <= start and end <= b for a, b in allowed_spans):
            continue
        number = re.search(_NUMBER, match.group())
        if number and (ASSIGNED.search(prose[:start]) or number.group() in marked):
            literal = number.group().replace(",", "")
            if re.search(rf"(?<![\d.]){re.escape(literal)}(?!\d)", code):
                continue
        excerpt = " ".join(markdown[max(0, start - 60) : end + 30].split())
        found.append((match.group(), excerpt))
    return found


def _cells(path: Path) -> list[dict]:
    return json.loads(path.read_text())["cells"]


def _markdown_cells(path: Path) -> list[tuple[int, str]]:
    return [(i, "".join(c["source"])) for i, c in enumerate(_cells(path)) if c["cell_type"] == "markdown"]


def _code(path: Path) -> str:
    return "\n".join("".join(c["source"]) for c in _cells(path) if c["cell_type"] == "code")


@pytest.mark.parametrize("path", CHAPTERS, ids=lambda p: p.stem)
def test_markdown_types_no_result(path):
    """No markdown cell of a chapter types a figure a run produces."""
    code, allowed = _code(path), tuple(phrase for phrase, _ in ALLOWED.get(path.name[:2], ()))
    problems = [
        f"{path.name}, cell {index}: {figure!r} in '...{excerpt}...'"
        for index, text in _markdown_cells(path)
        for figure, excerpt in unsourced_figures(text, code, allowed)
    ]
    assert [] == problems, "\n".join([*problems, f"How to fix: {HOW_TO_FIX}"])


def test_glossary_types_no_result():
    """The glossary defines; every number in it is in code formatting (a formula or a setting) or a citation."""
    problems = [
        f"GLOSSARY.md: {figure!r} in '...{excerpt}...'" for figure, excerpt in unsourced_figures(GLOSSARY.read_text())
    ]
    assert [] == problems, "\n".join([*problems, "How to fix: put a formula's constants in `code`; state no result."])


def test_allowed_entries_are_still_used():
    """Every ALLOWED phrase still occurs in its chapter, so the list cannot outlive the prose it excuses."""
    texts = {path.name[:2]: "\n".join(text for _, text in _markdown_cells(path)) for path in CHAPTERS}
    stale = [
        (chapter, phrase)
        for chapter, entries in ALLOWED.items()
        for phrase, _ in entries
        if not _phrase_pattern(phrase).search(texts.get(chapter, ""))
    ]
    assert [] == stale, f"ALLOWED entries whose phrase is gone from the chapter: remove them. {stale}"


def test_the_rule_catches_a_planted_result():
    """The checker flags a typed result and lets a setting, code, a marker and an allowed phrase through."""
    code = "cfg = PPOConfig(kl_coef=0.1)\nrun(steps=40)"
    assert ["24%"] == [f for f, _ in unsourced_figures("PPO cut the rude share to 24%.", code)]
    assert ["24 percent"] == [f for f, _ in unsourced_figures("It fell to 24 percent.", code)]
    assert ["0.83", "about 15", "two thirds"] == [
        f for f, _ in unsourced_figures("Accuracy 0.83, about 15 s a step; the share fell by two thirds.", code)
    ]
    assert [] == unsourced_figures("We train with beta = 0.1 in `PPOConfig`.", code)
    assert [] == unsourced_figures("The cell above prints the rude share (`rude_share`, e.g. `0.24`).", code)
    assert [] == unsourced_figures("starting from 0.1 <!-- setting: 0.1 -->", code)
    assert [] == unsourced_figures("InstructGPT reports about 73%.", code, allowed=("reports about 73%",))
    # a setting must be in the code: a result dressed as one is still caught
    assert ["0.3"] == [f for f, _ in unsourced_figures("kappa = 0.3 <!-- setting: 0.3 -->", code)]


# -- 2. Reading load ----------------------------------------------------------------------------------------------

DETAILS = re.compile(r"<details>\s*(?:<summary>(.*?)</summary>)?.*?</details>", re.DOTALL | re.IGNORECASE)
FENCED_CODE = re.compile(r"```.*?```", re.DOTALL)
HTML_COMMENT = re.compile(r"<!--.*?-->", re.DOTALL)


def visible_words(markdown: str) -> int:
    """Words a reader sees before opening anything: markdown without its collapsed `<details>` blocks (their
    summary line stays), HTML comments and fenced code; words are whitespace-separated."""
    text = FENCED_CODE.sub(" ", HTML_COMMENT.sub(" ", markdown))
    text = DETAILS.sub(lambda m: f" {m.group(1) or ''} ", text)
    return len(text.split())


def test_visible_words_skip_collapsed_blocks():
    """A `<details>` block counts only its summary line; the words around it count."""
    text = "One two three.\n\n<details><summary>More: four</summary>\n\nfive six seven\n\n</details>\n\nEight."
    assert 6 == visible_words(text)


@pytest.mark.parametrize("path", CHAPTERS, ids=lambda p: p.stem)
def test_chapter_reads_in_about_15_minutes(path):
    """A chapter's visible markdown (no code cells, no collapsed `<details>` blocks) is at most 1,200 words."""
    words = sum(visible_words(text) for _, text in _markdown_cells(path))
    assert words <= MAX_VISIBLE_WORDS, (
        f"{path.name} shows {words} words of prose (at most {MAX_VISIBLE_WORDS}): move background into a "
        "'<details><summary>More: ...</summary>' block (a blank line after the summary) or into a GLOSSARY.md entry"
    )


# -- 3. Glossary links ----------------------------------------------------------------------------------------------

GLOSSARY_LINK = re.compile(r"\]\(GLOSSARY\.md(?:#([^)\s]*))?\)")


def github_anchor(heading: str) -> str:
    """The anchor GitHub gives a heading: lowercase, punctuation dropped, each space a hyphen."""
    return re.sub(r"[^\w\- ]", "", heading.strip().lower()).replace(" ", "-")


def glossary_anchors() -> list[str]:
    return [github_anchor(line[3:]) for line in GLOSSARY.read_text().splitlines() if line.startswith("## ")]


def test_github_anchor():
    """Anchors as GitHub makes them: apostrophes and slashes go, hyphens stay."""
    assert "kendalls-tau" == github_anchor("Kendall's tau")
    assert "kl-penalty-and-beta" == github_anchor("KL penalty and beta")
    assert "best-of-n" == github_anchor("Best-of-N")


def test_glossary_headings_are_unique():
    """Each glossary heading has its own anchor (GitHub would suffix a repeat with -1)."""
    anchors = glossary_anchors()
    assert sorted(set(anchors)) == sorted(anchors)


def test_every_glossary_link_resolves():
    """Every `GLOSSARY.md#anchor` link in the chapters and in the glossary itself names a heading of GLOSSARY.md."""
    anchors = set(glossary_anchors())
    sources = [(f"{p.name}, cell {i}", text) for p in CHAPTERS for i, text in _markdown_cells(p)]
    sources.append(("GLOSSARY.md", GLOSSARY.read_text().replace("](#", "](GLOSSARY.md#")))
    broken = [
        f"{where}: #{anchor}"
        for where, text in sources
        for anchor in GLOSSARY_LINK.findall(text)
        if anchor and anchor not in anchors
    ]
    assert [] == broken, f"links to no heading of GLOSSARY.md (add the entry or fix the anchor): {broken}"


def test_the_chapters_link_to_the_glossary():
    """Every chapter links to the glossary at least once, where a term it relies on first appears."""
    unlinked = [p.name for p in CHAPTERS if not any(GLOSSARY_LINK.search(text) for _, text in _markdown_cells(p))]
    assert [] == unlinked


@pytest.mark.parametrize("path", CHAPTERS, ids=lambda p: p.stem)
def test_relative_links_and_images_resolve(path):
    """Every relative link or image in a chapter's markdown (a figure, the glossary, another chapter) exists."""
    nb = json.loads(path.read_text(encoding="utf-8"))
    targets = [
        target.split("#")[0]
        for cell in nb["cells"]
        if cell["cell_type"] == "markdown"
        for target in re.findall(r"\]\(([^)\s]+)\)", "".join(cell["source"]))
        if not re.match(r"[a-z]+:", target) and not target.startswith("#")
    ]
    missing = [t for t in targets if t and not (path.parent / t).exists()]
    assert [] == missing, f"{path.name} links to files that do not exist: {missing}"
