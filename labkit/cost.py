"""Cost: what a run and its labels cost, in hours and money, from measured throughput.

Stage: planning (chapter 08). Inputs: a `CostInputs` (how many prompts, labelers and seconds per
ranking; the PPO run's size; the machine's throughput and price). Output: a `CostPlan` (labelling
hours and cost, preference pairs obtained, compute hours and cost, total) and `cost_widget`, the
same arithmetic behind sliders.

The arithmetic, all of it:
    labelling hours  prompts x labelers_per_item x seconds_per_ranking / 3600
    pairs            prompts x k(k-1)/2 x labelers_per_item   (a ranking of k replies orders every pair)
    sampling         prompts x completions_per_prompt x max_new_tokens / tokens_per_second (replies to rank)
    PPO step         batch_size x max_new_tokens / tokens_per_second  (sampling the batch)
                     + train_seconds_per_step, or update_factor x that sampling time when not measured
    compute hours    (sampling + ppo_steps x PPO step) / 3600
Machine numbers come from measurements: `throughput_from_benchmarks` reads what benchmarks/smol.py and
benchmarks/ppo_targets.py wrote, and `defaults_for` fills a `CostInputs` from them. `GPU_ASSUMPTION` is
the one number here not measured, and says so.
"""

from __future__ import annotations

import dataclasses
import html
import json
import statistics
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

__all__ = [
    "CostInputs",
    "CostPlan",
    "GPU_ASSUMPTION",
    "MODEL_PARAMS",
    "RESULTS_DIR",
    "assume_gpu",
    "cost_widget",
    "defaults_for",
    "plan",
    "throughput_from_benchmarks",
]

ROOT = Path(__file__).resolve().parent.parent
RESULTS_DIR = ROOT / "benchmarks" / "results"
"""Where the benchmarks write their measurements."""

MODEL_PARAMS: dict[str, int] = {"tiny": 2_164_416, "smol": 135_000_000}
"""Policy sizes: tiny's count from data/tiny-model/model_card.json; smol's from its name, SmolLM2-135M."""

GPU_ASSUMPTION: dict[str, Any] = {
    "status": "ASSUMPTION, not a measurement: replace it by running benchmarks/smol.py on the GPU",
    "machine": "one GPU, SmolLM2-135M (the smol preset) sampling a batch of 32-64 replies",
    "tokens_per_second": 2000.0,
    "update_factor": 2.0,
    "compute_hourly_rate": 1.0,
    "why": "sampling a 135M model token by token on a GPU is bound by the fixed cost of each decoding step "
    "(launching a few hundred small kernels, some tens of milliseconds), nearly flat in the batch size, so a "
    "batch of 32-64 replies gives of the order of 10^3 tokens/s: ten times or more the CPU figure in "
    "benchmarks/results/smol.json. The update factor is the CPU-like default, for want of a measurement; the "
    "hourly rate is the order of a rented single-GPU machine, in the same currency units as hourly_rate.",
}
"""An assumed single-GPU machine, for planning before you have one; `assume_gpu` applies it."""


@dataclass
class CostInputs:
    """What a run and its labels are made of. Times in seconds, money in currency units of your choice."""

    prompts: int = 480
    """Prompts to label; each is one item whose completions a labeler ranks (the shipped rankings: 480)."""
    completions_per_prompt: int = 4
    """Completions k sampled per prompt and ranked together: one ranking gives k(k-1)/2 pairs."""
    labelers_per_item: int = 5
    """Labelers who rank each item (the shipped rankings: 5 simulated labelers)."""
    seconds_per_ranking: float = 60.0
    """Seconds a labeler takes to read a prompt and rank its completions: an assumption, time yours."""
    hourly_rate: float = 20.0
    """Labelling cost per labeler-hour: an assumption, in your currency units."""
    model_params: int | None = None
    """Parameters of the policy the throughput belongs to (a throughput does not carry to another size)."""
    ppo_steps: int = 100
    """PPO steps in the run (the tiny preset runs 60, smol 100)."""
    batch_size: int = 32
    """Replies sampled and trained on per PPO step."""
    max_new_tokens: int = 48
    """Tokens per sampled reply; the sampled batch costs batch_size x max_new_tokens tokens."""
    tokens_per_second: float | None = None
    """Sampling throughput of the machine (measured: `defaults_for`); None until you give one."""
    compute_hourly_rate: float = 0.0
    """Machine cost per hour; 0 for a laptop you own."""
    train_seconds_per_step: float | None = None
    """Measured seconds of a PPO step besides sampling (scoring, reference log-probs, the PPO epochs);
    None: estimated as update_factor x the step's sampling time."""
    update_factor: float = 2.0
    """ASSUMPTION used only when train_seconds_per_step is None: the rest of a step costs this many times
    its sampling. The lab's CPU measurements (benchmarks/results, tiny and smol) put it at about 2 to 3."""

    def __post_init__(self) -> None:
        positive = ("prompts", "labelers_per_item", "seconds_per_ranking", "batch_size", "max_new_tokens")
        at_least_zero = ("hourly_rate", "ppo_steps", "compute_hourly_rate", "update_factor")
        optional_positive = ("model_params", "tokens_per_second", "train_seconds_per_step")
        for name in positive:
            if not getattr(self, name) > 0:
                raise ValueError(f"CostInputs.{name} must be > 0 (got {getattr(self, name)!r})")
        for name in at_least_zero:
            if not getattr(self, name) >= 0:
                raise ValueError(f"CostInputs.{name} must be >= 0 (got {getattr(self, name)!r})")
        for name in optional_positive:
            value = getattr(self, name)
            if value is not None and not value > 0:
                raise ValueError(f"CostInputs.{name} must be > 0, or None when unknown (got {value!r})")
        if self.completions_per_prompt < 2:
            raise ValueError(
                f"CostInputs.completions_per_prompt must be at least 2: a ranking compares replies "
                f"(got {self.completions_per_prompt!r})"
            )


@dataclass(frozen=True)
class CostPlan:
    """What `plan` worked out; hours are wall-clock hours of the people or the machine."""

    inputs: CostInputs
    labelling_hours: float
    """Labeler-hours: every labeler ranks every prompt."""
    labelling_cost: float
    pairs_obtained: int
    """Preference pairs: each ranking of k completions orders k(k-1)/2 pairs, per labeler."""
    sampling_hours: float
    """Machine hours to sample the completions that get ranked."""
    seconds_per_step: float
    """One PPO step: sampling the batch plus the rest (measured, or update_factor x sampling)."""
    ppo_hours: float
    compute_hours: float
    """sampling_hours + ppo_hours."""
    compute_cost: float
    total_cost: float
    notes: tuple[str, ...] = field(default=())
    """Which numbers are assumptions rather than measurements."""

    def breakdown(self) -> dict[str, float]:
        """The plan's numbers as a flat dict (for tables and tests)."""
        return {
            "labelling_hours": self.labelling_hours,
            "labelling_cost": self.labelling_cost,
            "pairs_obtained": self.pairs_obtained,
            "sampling_hours": self.sampling_hours,
            "seconds_per_step": self.seconds_per_step,
            "ppo_hours": self.ppo_hours,
            "compute_hours": self.compute_hours,
            "compute_cost": self.compute_cost,
            "total_cost": self.total_cost,
        }

    def __str__(self) -> str:
        i = self.inputs
        pairs = i.completions_per_prompt * (i.completions_per_prompt - 1) // 2
        lines = [
            f"{'':10} {'hours':>9} {'cost':>10}",
            f"{'labelling':10} {self.labelling_hours:9.2f} {self.labelling_cost:10.2f}   "
            f"{self.pairs_obtained:,} pairs = {i.prompts} prompts x {pairs} x {i.labelers_per_item} labelers",
            f"{'compute':10} {self.compute_hours:9.2f} {self.compute_cost:10.2f}   "
            f"sampling {self.sampling_hours:.2f} h + {i.ppo_steps} PPO steps x {self.seconds_per_step:.1f} s",
            f"{'total':10} {'':9} {self.total_cost:10.2f}",
        ]
        return "\n".join(lines + [f"note: {n}" for n in self.notes])


def plan(inputs: CostInputs) -> CostPlan:
    """Hours, pairs and money for `inputs` (the module docstring gives every formula)."""
    if inputs.tokens_per_second is None:
        raise ValueError(
            "CostInputs.tokens_per_second is not set: measure it (benchmarks/smol.py) or start from "
            "cost.defaults_for('tiny' or 'smol')"
        )
    k = inputs.completions_per_prompt
    labelling_hours = inputs.prompts * inputs.labelers_per_item * inputs.seconds_per_ranking / 3600
    pairs = inputs.prompts * k * (k - 1) // 2 * inputs.labelers_per_item
    sampling_hours = inputs.prompts * k * inputs.max_new_tokens / inputs.tokens_per_second / 3600
    step_sampling = inputs.batch_size * inputs.max_new_tokens / inputs.tokens_per_second
    notes = []
    if inputs.train_seconds_per_step is None:
        rest = inputs.update_factor * step_sampling
        notes.append(f"PPO update time estimated as {inputs.update_factor:g} x sampling time (an assumption)")
    else:
        rest = inputs.train_seconds_per_step
    seconds_per_step = step_sampling + rest
    ppo_hours = inputs.ppo_steps * seconds_per_step / 3600
    compute_hours = sampling_hours + ppo_hours
    labelling_cost = labelling_hours * inputs.hourly_rate
    compute_cost = compute_hours * inputs.compute_hourly_rate
    return CostPlan(
        inputs=inputs,
        labelling_hours=labelling_hours,
        labelling_cost=labelling_cost,
        pairs_obtained=pairs,
        sampling_hours=sampling_hours,
        seconds_per_step=seconds_per_step,
        ppo_hours=ppo_hours,
        compute_hours=compute_hours,
        compute_cost=compute_cost,
        total_cost=labelling_cost + compute_cost,
        notes=tuple(notes),
    )


# -- measured throughput --------------------------------------------------------------------------


def _read(path: Path, *keys: str) -> Any:
    data = json.loads(path.read_text())
    for key in keys:
        if not isinstance(data, dict) or key not in data:
            raise ValueError(f"{path} has no {'/'.join(keys)}: rerun the benchmark that writes it")
        data = data[key]
    return data


def _source(path: Path, date: str, what: str) -> str:
    path = path.resolve()
    shown = path.relative_to(ROOT) if path.is_relative_to(ROOT) else path
    return f"{shown}, date {date}: {what}"


def throughput_from_benchmarks(results_dir: str | Path | None = None) -> dict[str, dict[str, Any]]:
    """Measured sampling throughput and PPO step time per preset, from the benchmark results.

    smol (benchmarks/smol.py): tokens generated per second by `generate.generate` and seconds per PPO step.
    tiny (benchmarks/ppo_targets.py): the median over its runs of seconds per PPO step (training-loop wall
    time / steps) and of the step's sampling time; tokens_per_second is batch_size x max_new_tokens /
    that sampling time: token SLOTS per second (a batch runs until its longest reply ends, so that is what
    a step pays for). Each entry also gives the batch shape the step was timed at. A preset whose file is
    absent is left out.
    """
    folder = Path(results_dir) if results_dir is not None else RESULTS_DIR
    found: dict[str, dict[str, Any]] = {}
    smol = folder / "smol.json"
    if smol.exists():
        found["smol"] = {
            "tokens_per_second": float(_read(smol, "generate", "tokens_per_second")),
            "seconds_per_ppo_step": float(_read(smol, "ppo", "seconds_per_step")),
            "batch_size": int(_read(smol, "ppo", "batch_size")),
            "max_new_tokens": int(_read(smol, "ppo", "max_new_tokens")),
            "source": _source(smol, _read(smol, "date"), f"{_read(smol, 'device')}, {_read(smol, 'cpus')} cpus"),
        }
    targets = folder / "ppo_targets.json"
    if targets.exists():
        runs = _read(targets, "runs")
        if not runs:
            raise ValueError(f"{targets} holds no runs: rerun benchmarks/ppo_targets.py")
        batch = int(_read(targets, "ppo_config", "batch_size"))
        new_tokens = int(_read(targets, "ppo_config", "max_new_tokens"))
        generate_seconds = statistics.median(float(r["time_generate"]) for r in runs)
        found["tiny"] = {
            "tokens_per_second": batch * new_tokens / generate_seconds,
            "seconds_per_ppo_step": statistics.median(float(r["wall_seconds"]) / int(r["steps"]) for r in runs),
            "batch_size": batch,
            "max_new_tokens": new_tokens,
            "source": _source(
                targets, _read(targets, "date"), f"median of {len(runs)} runs, {_read(targets, 'cpus')} cpus"
            ),
        }
    return found


def defaults_for(preset: str, results_dir: str | Path | None = None, **overrides: Any) -> CostInputs:
    """CostInputs whose machine numbers are measured for `preset` ("tiny" or "smol"), then `overrides`.

    Sets tokens_per_second and the timed batch shape (batch_size, max_new_tokens) from the benchmark, and
    train_seconds_per_step to the measured step time minus its sampling time, so `plan` reproduces the
    measured seconds per step. Labelling numbers and ppo_steps keep CostInputs' defaults unless overridden.
    """
    if preset not in MODEL_PARAMS:
        raise ValueError(f"no measurements for preset {preset!r}: defaults_for knows {sorted(MODEL_PARAMS)}")
    measured = throughput_from_benchmarks(results_dir)
    if preset not in measured:
        script = "benchmarks/smol.py" if preset == "smol" else "benchmarks/ppo_targets.py"
        folder = results_dir if results_dir is not None else RESULTS_DIR
        raise ValueError(f"no measurement for preset {preset!r} in {folder}: run `python {script}` first")
    m = measured[preset]
    sampling = m["batch_size"] * m["max_new_tokens"] / m["tokens_per_second"]
    rest = m["seconds_per_ppo_step"] - sampling
    if rest <= 0:
        raise ValueError(f"{m['source']}: a PPO step ({m['seconds_per_ppo_step']:.2f} s) is shorter than its sampling")
    values = {
        "model_params": MODEL_PARAMS[preset],
        "batch_size": m["batch_size"],
        "max_new_tokens": m["max_new_tokens"],
        "tokens_per_second": m["tokens_per_second"],
        "train_seconds_per_step": rest,
    }
    return CostInputs(**(values | overrides))


def assume_gpu(inputs: CostInputs) -> CostInputs:
    """`inputs` on the assumed GPU of `GPU_ASSUMPTION`: its throughput, update factor and hourly rate.

    Drops a measured train_seconds_per_step (a CPU measurement does not carry to a GPU); the plan then
    notes that its update time is an estimate.
    """
    return dataclasses.replace(
        inputs,
        tokens_per_second=GPU_ASSUMPTION["tokens_per_second"],
        update_factor=GPU_ASSUMPTION["update_factor"],
        compute_hourly_rate=GPU_ASSUMPTION["compute_hourly_rate"],
        train_seconds_per_step=None,
    )


# -- the widget -----------------------------------------------------------------------------------


def _plan_html(inputs: CostInputs) -> str:
    return f"<pre>{html.escape(str(plan(inputs)))}</pre>"


def cost_widget(defaults: CostInputs):
    """A VBox of inputs and the plan they give, recomputed on every change (returned, not displayed).

    Code and tests drive it through `w.controls[field]` (one control per CostInputs field shown) and read
    `w.plan_html.value`; `w.inputs` is the CostInputs on screen. A train-seconds box at 0 means "not
    measured: use the update factor". An invalid value shows the error and keeps the last plan's inputs.
    """
    import ipywidgets as widgets

    def slider(name: str, low: int, high: int, kind=widgets.IntSlider, **kw):
        value = getattr(defaults, name)
        return kind(value=value, min=min(low, value), max=max(high, value), description=name, **kw)

    style = {"description_width": "170px"}
    controls = {
        "prompts": slider("prompts", 1, 10 * defaults.prompts),
        "completions_per_prompt": slider("completions_per_prompt", 2, 16),
        "labelers_per_item": slider("labelers_per_item", 1, 10),
        "seconds_per_ranking": slider("seconds_per_ranking", 1, 600, widgets.FloatSlider, step=1.0),
        "hourly_rate": widgets.FloatText(value=defaults.hourly_rate, description="hourly_rate"),
        "ppo_steps": slider("ppo_steps", 0, 10 * defaults.ppo_steps),
        "batch_size": slider("batch_size", 1, 256),
        "max_new_tokens": slider("max_new_tokens", 1, 512),
        "tokens_per_second": widgets.FloatText(
            value=defaults.tokens_per_second or 0.0, description="tokens_per_second"
        ),
        "train_seconds_per_step": widgets.FloatText(
            value=defaults.train_seconds_per_step or 0.0, description="train_seconds_per_step"
        ),
        "update_factor": widgets.FloatText(value=defaults.update_factor, description="update_factor"),
        "compute_hourly_rate": widgets.FloatText(value=defaults.compute_hourly_rate, description="compute_hourly_rate"),
    }
    for control in controls.values():
        control.style = style
    plan_html = widgets.HTML()
    box = widgets.VBox([*controls.values(), plan_html])
    box.controls, box.plan_html, box.inputs = controls, plan_html, defaults

    def update(_=None) -> None:
        values = {name: c.value for name, c in controls.items()}
        values["train_seconds_per_step"] = values["train_seconds_per_step"] or None
        values["tokens_per_second"] = values["tokens_per_second"] or None
        try:
            inputs = dataclasses.replace(defaults, **values)
            plan_html.value = _plan_html(inputs)
            box.inputs = inputs
        except ValueError as err:
            plan_html.value = f"<span style='color:#c0392b'>{html.escape(str(err))}</span>"

    for control in controls.values():
        control.observe(update, names="value")
    update()
    return box
