"""Cost: the plan's arithmetic by hand, measured throughput read from benchmark files, and the widget."""

from __future__ import annotations

import dataclasses
import json
import subprocess
import sys

import ipywidgets
import pytest

from labkit import cost


def hand_inputs(**overrides) -> cost.CostInputs:
    """100 prompts x 4 completions, 3 labelers at 30 s and 20/h; PPO 240 steps of 10 x 50 tokens at 100 tokens/s."""
    values = dict(
        prompts=100,
        completions_per_prompt=4,
        labelers_per_item=3,
        seconds_per_ranking=30.0,
        hourly_rate=20.0,
        ppo_steps=240,
        batch_size=10,
        max_new_tokens=50,
        tokens_per_second=100.0,
        compute_hourly_rate=2.0,
    )
    return cost.CostInputs(**(values | overrides))


def write_results(folder):
    """Two hand-written benchmark files in the shape the benchmarks write."""
    (folder / "smol.json").write_text(
        json.dumps(
            {
                "date": "2026-01-02T03:04:05Z",
                "device": "cpu",
                "cpus": 2,
                "generate": {"tokens_per_second": 100.0},
                "ppo": {"seconds_per_step": 10.0, "batch_size": 8, "max_new_tokens": 25},
            }
        )
    )
    runs = [{"time_generate": g, "wall_seconds": w, "steps": 10} for g, w in [(0.4, 12.0), (0.5, 15.0), (0.9, 30.0)]]
    (folder / "ppo_targets.json").write_text(
        json.dumps(
            {
                "date": "2026-01-03T00:00:00Z",
                "cpus": 2,
                "ppo_config": {"batch_size": 20, "max_new_tokens": 10},
                "runs": runs,
            }
        )
    )


def test_labelling_by_hand():
    """100 prompts x 3 labelers x 30 s = 2.5 h, at 20/h = 50; 100 x C(4,2)=6 x 3 = 1800 pairs."""
    p = cost.plan(hand_inputs())
    assert (2.5, 50.0, 1800) == (p.labelling_hours, p.labelling_cost, p.pairs_obtained)


def test_compute_from_tokens_per_second():
    """A step samples 10 x 50 tokens at 100/s = 5 s, plus 2 x 5 s update: 15 s; 240 steps = 1 h. Sampling
    400 completions x 50 tokens for ranking = 200 s. At 2/h the machine costs 2 x (1 + 200/3600)."""
    p = cost.plan(hand_inputs())
    assert pytest.approx(15.0) == p.seconds_per_step
    assert pytest.approx(1.0) == p.ppo_hours
    assert pytest.approx(200 / 3600) == p.sampling_hours
    assert pytest.approx(1 + 200 / 3600) == p.compute_hours
    assert pytest.approx(2 * (1 + 200 / 3600)) == p.compute_cost
    assert pytest.approx(50 + 2 * (1 + 200 / 3600)) == p.total_cost
    assert any("assumption" in note for note in p.notes)
    measured = cost.plan(hand_inputs(train_seconds_per_step=1.0))
    assert pytest.approx(6.0) == measured.seconds_per_step
    assert () == measured.notes


def test_breakdown_and_table():
    """breakdown() carries every number; str() is a short table that names the totals."""
    p = cost.plan(hand_inputs())
    assert 50.0 == p.breakdown()["labelling_cost"]
    assert {"labelling_hours", "pairs_obtained", "compute_hours", "total_cost"} <= set(p.breakdown())
    text = str(p)
    assert "1,800 pairs = 100 prompts x 6 x 3 labelers" in text
    assert "240 PPO steps x 15.0 s" in text
    assert f"{p.total_cost:10.2f}" in text.splitlines()[3]


@pytest.mark.parametrize(
    ("field", "value", "message"),
    [
        ("prompts", 0, "CostInputs.prompts must be > 0"),
        ("seconds_per_ranking", -3.0, "CostInputs.seconds_per_ranking must be > 0"),
        ("hourly_rate", -1.0, "CostInputs.hourly_rate must be >= 0"),
        ("tokens_per_second", 0.0, "CostInputs.tokens_per_second must be > 0"),
        ("train_seconds_per_step", -1.0, "CostInputs.train_seconds_per_step must be > 0"),
        ("completions_per_prompt", 1, "CostInputs.completions_per_prompt must be at least 2"),
        ("ppo_steps", -1, "CostInputs.ppo_steps must be >= 0"),
    ],
)
def test_errors_name_the_field(field, value, message):
    """A value that makes no sense raises a ValueError naming its field."""
    with pytest.raises(ValueError) as err:
        hand_inputs(**{field: value})
    assert message in str(err.value)


def test_plan_needs_a_throughput():
    """Without tokens_per_second the plan says where to get one."""
    with pytest.raises(ValueError) as err:
        cost.plan(hand_inputs(tokens_per_second=None))
    assert "tokens_per_second is not set" in str(err.value) and "defaults_for" in str(err.value)


def test_throughput_from_benchmarks(tmp_path):
    """smol's numbers are read as written; tiny's are medians over runs, tokens/s = 20 x 10 / median 0.5 s."""
    write_results(tmp_path)
    found = cost.throughput_from_benchmarks(tmp_path)
    assert (100.0, 10.0, 8, 25) == tuple(
        found["smol"][k] for k in ("tokens_per_second", "seconds_per_ppo_step", "batch_size", "max_new_tokens")
    )
    assert "smol.json, date 2026-01-02T03:04:05Z" in found["smol"]["source"]
    assert pytest.approx(400.0) == found["tiny"]["tokens_per_second"]
    assert pytest.approx(1.5) == found["tiny"]["seconds_per_ppo_step"]
    assert "ppo_targets.json, date 2026-01-03" in found["tiny"]["source"]
    assert "median of 3 runs" in found["tiny"]["source"]


def test_defaults_for_reproduces_the_measured_step(tmp_path):
    """defaults_for fills the measured numbers; plan() then gives back the measured seconds per step."""
    write_results(tmp_path)
    smol = cost.defaults_for("smol", tmp_path, prompts=50)
    assert (8, 25, 100.0, 50) == (smol.batch_size, smol.max_new_tokens, smol.tokens_per_second, smol.prompts)
    assert pytest.approx(8.0) == smol.train_seconds_per_step  # 10 s step - 8 x 25 / 100 s sampling
    assert pytest.approx(10.0) == cost.plan(smol).seconds_per_step
    assert pytest.approx(1.5) == cost.plan(cost.defaults_for("tiny", tmp_path)).seconds_per_step
    assert cost.MODEL_PARAMS["tiny"] == cost.defaults_for("tiny", tmp_path).model_params


def test_missing_measurements_say_which_benchmark(tmp_path):
    """A preset with no result file names the script that writes it; an unknown preset is refused."""
    with pytest.raises(ValueError) as err:
        cost.defaults_for("smol", tmp_path)
    assert "benchmarks/smol.py" in str(err.value)
    assert {} == cost.throughput_from_benchmarks(tmp_path)
    with pytest.raises(ValueError) as err:
        cost.defaults_for("huge", tmp_path)
    assert "'huge'" in str(err.value)


def test_gpu_assumption_is_labelled_and_applied():
    """GPU_ASSUMPTION says it is an assumption; assume_gpu uses it and drops the CPU-measured update time."""
    assert "ASSUMPTION, not a measurement" in cost.GPU_ASSUMPTION["status"]
    gpu = cost.assume_gpu(hand_inputs(train_seconds_per_step=1.0))
    assert (cost.GPU_ASSUMPTION["tokens_per_second"], None) == (gpu.tokens_per_second, gpu.train_seconds_per_step)
    assert any("assumption" in note for note in cost.plan(gpu).notes)


def test_widget_updates_its_plan():
    """Doubling the labelers slider doubles the labelling hours shown; a bad value shows the error."""
    w = cost.cost_widget(hand_inputs())
    assert isinstance(w, ipywidgets.VBox)
    assert "2.50" in w.plan_html.value and "1,800 pairs" in w.plan_html.value
    w.controls["labelers_per_item"].value = 6
    assert "5.00" in w.plan_html.value and "3,600 pairs" in w.plan_html.value
    assert 6 == w.inputs.labelers_per_item
    assert dataclasses.replace(hand_inputs(), labelers_per_item=6) == w.inputs
    w.controls["tokens_per_second"].value = 0.0
    assert "tokens_per_second is not set" in w.plan_html.value


def test_imports_without_torch():
    """labkit.cost is pure Python: importing it loads neither torch nor ipywidgets."""
    code = "import sys, labkit.cost; print(sorted({'torch', 'ipywidgets'} & set(sys.modules)))"
    assert (
        "[]" == subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.strip()
    )
