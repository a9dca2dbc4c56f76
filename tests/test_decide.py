"""Decide: the methods table, the conservative requirements, the recommendation, break-even and the guide,
on synthetic methods.json reports."""

from __future__ import annotations

import copy
import json
import math

import pandas as pd
import pytest

from labkit import decide


def interval(value, low, high):
    """One measured quantity as benchmarks/methods.py writes it."""
    return {"value": value, "ci_low": low, "ci_high": high}


def method(name, toxic, utility, kl, training, serving, n=1, labels=True, reward_model=True):
    """One method entry of a methods.json report."""
    return {
        "method": name,
        "label": f"{name} (synthetic)",
        "toxic_share": interval(*toxic),
        "gold_utility": interval(*utility),
        "kl": None if kl is None else interval(*kl),
        "training_seconds": training,
        "needs_labels": labels,
        "needs_reward_model": reward_model,
        "serving_ms_per_reply": serving,
        "generations_per_reply": n,
    }


UNALIGNED = {"labels": False, "reward_model": False}


@pytest.fixture
def report():
    """A synthetic report: PPO least toxic, best-of-4 cheap to train and dear to serve, DPO in between."""
    return {
        "command": "benchmarks/methods.py",
        "date": "2026-01-01",
        "versions": {},
        "preset": "tiny",
        "heldout": {"prompts": 64, "samples_per_prompt": 4},
        "labels": {"items": 240, "labelers": 5, "rankings": 1200, "pairs": 3000, "seconds": 12.0},
        "traffic_note": "synthetic",
        "methods": [
            method("base", (0.25, 0.21, 0.29), (0.03, -0.01, 0.07), (0.0, 0.0, 0.0), 0.0, 3.0, **UNALIGNED),
            method("prompting", (0.24, 0.20, 0.28), (0.04, 0.00, 0.08), None, 0.0, 3.5, **UNALIGNED),
            method("bestof4", (0.12, 0.09, 0.15), (0.10, 0.06, 0.14), (0.8, 0.7, 0.9), 20.0, 12.5, n=4),
            method("ppo", (0.0612, 0.04, 0.08), (0.15, 0.11, 0.19), (2.5, 2.1, 2.9), 120.0, 2.5),
            method("dpo", (0.10, 0.07, 0.13), (0.12, 0.08, 0.16), (1.2, 1.0, 1.4), 60.0, 2.5, reward_model=False),
        ],
    }


@pytest.fixture
def table(report):
    """The report as decide's table."""
    return decide.table_from(report)


def entry(report, name):
    """The report's entry for method `name`."""
    return next(m for m in report["methods"] if m["method"] == name)


# -- the table ------------------------------------------------------------------------------------


def test_table_from_has_flat_columns_and_nan_for_null_kl(table):
    """One row per method with the documented columns; a null KL becomes NaN in all three columns."""
    assert decide.COLUMNS == list(table.columns)
    assert ["base", "prompting", "bestof4", "ppo", "dpo"] == table["method"].tolist()
    prompting = table.set_index("method").loc["prompting"]
    assert [True, True, True] == [math.isnan(prompting[c]) for c in ("kl", "kl_low", "kl_high")]
    ppo = table.set_index("method").loc["ppo"]
    assert (0.0612, 0.04, 0.08) == (ppo["toxic_share"], ppo["toxic_share_low"], ppo["toxic_share_high"])
    assert [False, False, True, True, True] == table["needs_labels"].tolist()
    assert [1, 1, 4, 1, 1] == table["generations_per_reply"].tolist()


def test_read_loads_the_json_the_benchmark_writes(report, tmp_path):
    """read(path) gives the same table as table_from on the loaded dict, labels kept in attrs."""
    path = tmp_path / "methods.json"
    path.write_text(json.dumps(report))
    loaded = decide.read(path)
    pd.testing.assert_frame_equal(decide.table_from(report), loaded)
    assert report["labels"] == loaded.attrs["labels"]


def test_read_missing_file_names_the_benchmark_command(tmp_path):
    """A missing results file raises FileNotFoundError naming the command that writes it."""
    with pytest.raises(FileNotFoundError, match=r"\.venv/bin/python benchmarks/methods\.py"):
        decide.read(tmp_path / "methods.json")


@pytest.mark.parametrize(
    "name, drop, named",
    [("dpo", "serving_ms_per_reply", "serving_ms_per_reply"), ("ppo", "toxic_share.ci_high", "toxic_share.ci_high")],
)
def test_missing_key_names_method_and_key(report, tmp_path, name, drop, named):
    """A method without a required key (top-level or inside an interval) raises ValueError naming both."""
    broken = copy.deepcopy(report)
    where, _, key = drop.rpartition(".")
    del (entry(broken, name)[where] if where else entry(broken, name))[key]
    with pytest.raises(ValueError, match=rf"method '{name}' has no key '?{named}'?"):
        decide.table_from(broken)
    path = tmp_path / "methods.json"
    path.write_text(json.dumps(broken))
    with pytest.raises(ValueError, match=rf"{path.name}.*method '{name}'"):
        decide.read(path)


def test_only_kl_may_be_null(report):
    """A null toxic share is an error, not a NaN that would slip past a requirement."""
    entry(report, "ppo")["toxic_share"] = None
    with pytest.raises(ValueError, match="ppo.*toxic_share is null"):
        decide.table_from(report)


# -- requirements and the recommendation ----------------------------------------------------------


def test_total_compute_seconds_is_training_plus_serving(table):
    """PPO over 1,000 requests: 120 s of training + 1,000 x 2.5 ms."""
    ppo = table.set_index("method").loc["ppo"]
    assert 122.5 == decide.total_compute_seconds(ppo, 1_000)


def test_recommend_picks_the_cheapest_method_that_meets(table):
    """With a toxic-share limit only best-of-4, PPO and DPO meet it; DPO costs least over 100,000 requests."""
    rec = decide.recommend(table, decide.Requirements(max_toxic_share=0.16, requests=100_000))
    assert "dpo" == rec.choice
    assert [False, False, True, True, True] == rec.table["meets"].tolist()
    assert [300.0, 350.0, 1270.0, 370.0, 310.0] == rec.table["total_compute_seconds"].tolist()
    assert rec.why.startswith("dpo is the cheapest method that meets every requirement: 310 s")
    assert "Cheaper but failing: base, toxic share upper end 0.290 > max 0.160." in rec.why


def test_recommend_flips_from_best_of_n_to_ppo_at_break_even(report, table):
    """Without DPO, best-of-4 wins below the break-even traffic and PPO above it; the exact tie goes to row order."""
    bo, ppo = entry(report, "bestof4"), entry(report, "ppo")
    even = (ppo["training_seconds"] - bo["training_seconds"]) / (
        (bo["serving_ms_per_reply"] - ppo["serving_ms_per_reply"]) / 1000
    )
    no_dpo = table[table["method"] != "dpo"]

    def choice(requests, frame=no_dpo):
        return decide.recommend(frame, decide.Requirements(max_toxic_share=0.16, requests=requests)).choice

    assert ("bestof4", "ppo") == (choice(math.floor(even) - 1), choice(math.ceil(even) + 1))
    assert "bestof4" == choice(int(even))
    assert "ppo" == choice(int(even), no_dpo.iloc[::-1])


def test_a_value_under_the_limit_fails_when_its_interval_is_not(table):
    """Best-of-4's toxic share 0.12 is under 0.14 but its upper end 0.15 is not, so it fails, saying why."""
    rec = decide.recommend(table, decide.Requirements(max_toxic_share=0.14)).table.set_index("method")
    assert (False, "toxic share upper end 0.150 > max 0.140") == (
        rec.at["bestof4", "meets"],
        rec.at["bestof4", "reasons"],
    )
    assert (True, "") == (rec.at["ppo", "meets"], rec.at["ppo", "reasons"])


def test_min_gold_utility_uses_the_lower_end(table):
    """Best-of-4's gold utility 0.10 is over 0.09 but its lower end 0.06 is not, so it fails."""
    rec = decide.recommend(table, decide.Requirements(min_gold_utility=0.09)).table.set_index("method")
    assert "gold utility lower end 0.060 < min 0.090" == rec.at["bestof4", "reasons"]
    assert [False, False, False, True, False] == rec["meets"].tolist()


def test_unmeasured_kl_meets_a_kl_limit_with_a_note(table):
    """Prompting's null KL meets max_kl with a note; PPO's upper end 2.9 fails it; base is the cheapest."""
    rec = decide.recommend(table, decide.Requirements(max_kl=1.0))
    rows = rec.table.set_index("method")
    assert (True, "", "KL not measured: counted as meeting max_kl 1.000") == tuple(
        rows.loc["prompting", ["meets", "reasons", "notes"]]
    )
    assert "KL upper end 2.900 > max 1.000" == rows.at["ppo", "reasons"]
    assert "base" == rec.choice


def test_nothing_meets_names_the_requirement_and_the_closest(table):
    """A toxic-share limit no method reaches: no choice, and `why` names the requirement and the closest method."""
    rec = decide.recommend(table, decide.Requirements(max_toxic_share=0.01))
    assert None is rec.choice
    assert rec.why.startswith("No method meets every requirement: every one fails max_toxic_share=0.01.")
    assert "Closest: base (toxic share upper end 0.290 > max 0.010)." in rec.why
    mixed = decide.recommend(table, decide.Requirements(max_toxic_share=0.1, max_training_seconds=10))
    assert (None, False) == (mixed.choice, "every one fails" in mixed.why)
    assert "Closest: base" in mixed.why


def test_requirements_reject_impossible_values():
    """Negative traffic and a share limit above 1 are refused with the field named."""
    with pytest.raises(ValueError, match="requests"):
        decide.Requirements(requests=-1)
    with pytest.raises(ValueError, match="max_toxic_share"):
        decide.Requirements(max_toxic_share=1.5)


# -- break-even -----------------------------------------------------------------------------------


def test_break_even_requests_value_inf_and_zero(report, table):
    """PPO against best-of-4 pays back at (train gap) / (serving gap); never if it serves no cheaper; at once
    if it costs no more on both."""
    bo, ppo = entry(report, "bestof4"), entry(report, "ppo")
    even = (ppo["training_seconds"] - bo["training_seconds"]) / (
        (bo["serving_ms_per_reply"] - ppo["serving_ms_per_reply"]) / 1000
    )
    assert pytest.approx(even) == decide.break_even_requests(table, "ppo", "bestof4")
    assert math.inf == decide.break_even_requests(table, "bestof4", "ppo")
    assert math.inf == decide.break_even_requests(table, "ppo", "dpo")  # same serving cost, more training
    assert 0.0 == decide.break_even_requests(table, "dpo", "ppo")


def test_break_even_unknown_method_lists_the_known_ones(table):
    """An unknown method name raises ValueError listing the table's methods."""
    with pytest.raises(ValueError, match=r"no method 'rlhf'.*\['base', 'prompting', 'bestof4', 'ppo', 'dpo'\]"):
        decide.break_even_requests(table, "rlhf", "bestof4")


# -- the guide ------------------------------------------------------------------------------------


def test_guide_reads_its_numbers_from_the_table(table):
    """The guide quotes PPO's toxic share, the serving ratio and the break-even as the table gives them."""
    text = decide.guide(table)
    lines = text.splitlines()
    assert (True, True) == (5 <= len(lines) <= 8, all(line.startswith("- ") for line in lines))
    assert "0.061 [0.040, 0.080]" in text
    assert "(5.0x, for 4 generations per reply)" in text
    assert "pays back after 10,000 requests" in text
    assert "**Prompting** did not move this model" in text
    assert "(here 1,200 rankings from 5 labelers, 3,000 pairs" in text
    assert "PPO is not better beyond the intervals than dpo on toxic share or gold utility" in text


def test_guide_follows_the_numbers(report):
    """Other measurements give other words and numbers: prompting that works, a PPO that beats every alternative."""
    entry(report, "prompting")["toxic_share"] = interval(0.05, 0.03, 0.07)
    entry(report, "ppo")["toxic_share"] = interval(0.0437, 0.03, 0.06)
    text = decide.guide(decide.table_from(report))
    assert "**Prompting** lowered toxic share" in text
    assert ("0.044 [0.030, 0.060]" in text, "0.061" in text) == (True, False)
    assert "Here it did: beyond the intervals PPO beats each of prompting, bestof4, dpo" in text


def test_guide_skips_bullets_whose_rows_are_missing(report, table):
    """Without prompting and DPO their bullets go and the rest stay, label counts left null drop out, and a
    base-only table gives one bullet."""
    text = decide.guide(table[~table["method"].isin(["prompting", "dpo"])])
    assert ("**Prompting**" in text, "**DPO**" in text, "**Serving**" in text) == (False, False, True)
    no_counts = decide.table_from({**report, "labels": {"rankings": None, "labelers": None, "pairs": None}})
    assert "**Labels**: bestof4, ppo, dpo need preference labels; base, prompting need none." in decide.guide(no_counts)
    only_base = decide.guide(table[table["method"] == "base"])
    assert ["- **Reference**"] == [line[: len("- **Reference**")] for line in only_base.splitlines()]
