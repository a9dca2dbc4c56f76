"""Decide: when RLHF (PPO) is worth it, and when prompting, best-of-N or DPO is enough, from measured numbers.

Stage: deciding (chapter 08). Input: benchmarks/results/methods.json, written by
`.venv/bin/python benchmarks/methods.py`: per method, toxic share and gold utility on held-out prompts
(each with a 95% interval), KL to the base model, the training compute it took on this machine and the
serving latency per reply. Outputs: `read` / `table_from` (one row per method), `recommend` (the cheapest
method that meets a `Requirements`, and why every other one fails), `break_even_requests` (the traffic
after which a trained method's cheaper serving has paid back its training) and `guide` (markdown bullets
for the chapter, every number read from the table).

The arithmetic, all of it:
    total compute   training_seconds + requests x serving_ms_per_reply / 1000
    break-even      (train_a - train_b) / (serve_b - serve_a) requests, serving in seconds per reply:
                    beyond it a (more training, cheaper serving) has cost less in total than b
    meets           conservative: the whole 95% interval must meet a limit, not only the point value
                    (toxic share: upper end <= max; gold utility: lower end >= min; KL: upper end <= max)
A KL left null by the benchmark (not measured: prompting changes no weights, its policy IS the base model)
meets any KL limit; the `notes` column of `recommend`'s table says so wherever that happened.
Labelling time is not compute and is not counted: every method that needs labels (`needs_labels`) uses the
same ones, and `labkit.cost` prices them.

`guide` reads "moved beyond the intervals" as "the two 95% intervals do not overlap": a strict test (two
intervals can overlap a little while the difference is still significant), so the guide errs towards
"no difference" and towards the cheaper method.
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any

import pandas as pd

__all__ = [
    "COLUMNS",
    "COMMAND",
    "RESULTS_PATH",
    "Recommendation",
    "Requirements",
    "break_even_requests",
    "guide",
    "read",
    "recommend",
    "table_from",
    "total_compute_seconds",
]

RESULTS_PATH = Path(__file__).resolve().parents[1] / "benchmarks" / "results" / "methods.json"
"""Where benchmarks/methods.py writes its measurements."""

COMMAND = ".venv/bin/python benchmarks/methods.py"
"""The command that measures the methods and writes RESULTS_PATH."""

COLUMNS = [
    "method",
    "label",
    "toxic_share",
    "toxic_share_low",
    "toxic_share_high",
    "gold_utility",
    "gold_utility_low",
    "gold_utility_high",
    "kl",
    "kl_low",
    "kl_high",
    "training_seconds",
    "serving_ms_per_reply",
    "generations_per_reply",
    "needs_labels",
    "needs_reward_model",
]
"""The columns of `read`'s table, in order; an interval's ends are <name>_low and <name>_high."""

_INTERVALS = ("toxic_share", "gold_utility", "kl")
_REQUIRED_KEYS = (
    "method",
    "label",
    *_INTERVALS,
    "training_seconds",
    "serving_ms_per_reply",
    "generations_per_reply",
    "needs_labels",
    "needs_reward_model",
)


# -- the table ------------------------------------------------------------------------------------


def _interval(method: str, key: str, value: Any) -> dict[str, float]:
    if value is None:
        if key != "kl":
            raise ValueError(f"method {method!r}: {key} is null; only kl may be null (not measured): rerun `{COMMAND}`")
        return {key: math.nan, f"{key}_low": math.nan, f"{key}_high": math.nan}
    if not isinstance(value, Mapping):
        raise ValueError(f"method {method!r}: {key} must be {{'value', 'ci_low', 'ci_high'}} (got {value!r})")
    for part in ("value", "ci_low", "ci_high"):
        if part not in value:
            raise ValueError(f"method {method!r} has no key {key}.{part}: rerun `{COMMAND}`")
    low, high = float(value["ci_low"]), float(value["ci_high"])
    if low > high:
        raise ValueError(f"method {method!r}: {key} interval is upside down ({low} > {high}): rerun `{COMMAND}`")
    return {key: float(value["value"]), f"{key}_low": low, f"{key}_high": high}


def table_from(report: Mapping[str, Any]) -> pd.DataFrame:
    """One row per method of a loaded methods.json report, with `COLUMNS` (KL NaN where null).

    The report's preset, held-out size, labels and traffic note, where present, go to `table.attrs`
    (`guide` reads the labels from there).
    """
    methods = report.get("methods") if isinstance(report, Mapping) else None
    if not isinstance(methods, list) or not methods:
        raise ValueError(f"the report holds no list under 'methods': pass what `{COMMAND}` writes")
    rows = []
    for i, entry in enumerate(methods):
        if not isinstance(entry, Mapping):
            raise ValueError(f"methods[{i}] is not a dict (got {entry!r}): rerun `{COMMAND}`")
        name = str(entry.get("method", f"methods[{i}]"))
        for key in _REQUIRED_KEYS:
            if key not in entry:
                raise ValueError(f"method {name!r} has no key {key!r}: rerun `{COMMAND}`, or add it to that method")
        for key in ("needs_labels", "needs_reward_model"):
            if not isinstance(entry[key], bool):
                raise ValueError(f"method {name!r}: {key} must be true or false (got {entry[key]!r})")
        row: dict[str, Any] = {"method": name, "label": str(entry["label"])}
        for key in _INTERVALS:
            row.update(_interval(name, key, entry[key]))
        row["training_seconds"] = float(entry["training_seconds"])
        row["serving_ms_per_reply"] = float(entry["serving_ms_per_reply"])
        row["generations_per_reply"] = int(entry["generations_per_reply"])
        row["needs_labels"] = entry["needs_labels"]
        row["needs_reward_model"] = entry["needs_reward_model"]
        rows.append(row)
    table = pd.DataFrame(rows, columns=COLUMNS)
    repeated = sorted(table.loc[table["method"].duplicated(), "method"])
    if repeated:
        raise ValueError(f"method(s) {repeated} appear more than once: each method must have one row")
    table.attrs.update({k: report[k] for k in ("preset", "heldout", "labels", "traffic_note") if k in report})
    return table


def read(path: str | Path | None = None) -> pd.DataFrame:
    """`table_from` the JSON at `path` (default: RESULTS_PATH). Plain JSON, never pickle."""
    path = Path(path) if path is not None else RESULTS_PATH
    if not path.exists():
        raise FileNotFoundError(f"{path} does not exist: run `{COMMAND}` to measure the methods and write it")
    try:
        report = json.loads(path.read_text())
    except json.JSONDecodeError as err:
        raise ValueError(f"{path} is not valid JSON ({err}): rerun `{COMMAND}`") from err
    try:
        return table_from(report)
    except ValueError as err:
        raise ValueError(f"{path}: {err}") from err


def _check_table(table: pd.DataFrame) -> None:
    missing = [c for c in COLUMNS if c not in table.columns]
    if missing:
        raise ValueError(f"the table lacks column(s) {missing}: pass what decide.read or decide.table_from returns")
    if table.empty:
        raise ValueError("the table holds no method: pass what decide.read or decide.table_from returns")


# -- requirements and the recommendation ----------------------------------------------------------


@dataclass(frozen=True)
class Requirements:
    """What the deployment needs. None: no requirement. Interval limits are met by the whole 95% interval."""

    max_toxic_share: float | None = None
    """Highest acceptable toxic share; met only when the interval's upper end is at or under it."""
    min_gold_utility: float | None = None
    """Lowest acceptable gold utility; met only when the interval's lower end is at or above it."""
    max_kl: float | None = None
    """Highest acceptable KL to the base model (upper end of its interval); a KL not measured meets it."""
    max_serving_ms: float | None = None
    """Highest acceptable latency per served reply, in ms, as measured on this machine."""
    max_training_seconds: float | None = None
    """Most compute, in seconds on this machine, you will spend building the method."""
    requests: int = 100_000
    """Replies served over the deployment's life: the traffic over which serving compute is counted."""

    def __post_init__(self) -> None:
        if self.requests < 0:
            raise ValueError(f"Requirements.requests must be >= 0 served replies (got {self.requests!r})")
        if self.max_toxic_share is not None and not 0 <= self.max_toxic_share <= 1:
            raise ValueError(
                f"Requirements.max_toxic_share is a share: give it in [0, 1] (got {self.max_toxic_share!r})"
            )
        for name in ("max_kl", "max_serving_ms", "max_training_seconds"):
            value = getattr(self, name)
            if value is not None and not value >= 0:
                raise ValueError(f"Requirements.{name} must be >= 0, or None for no limit (got {value!r})")


_LIMITS = tuple(f.name for f in fields(Requirements) if f.name != "requests")


def total_compute_seconds(row: Mapping[str, Any], requests: int) -> float:
    """Seconds of compute to build a method and serve `requests` replies with it (a row of the table)."""
    if requests < 0:
        raise ValueError(f"requests must be >= 0 served replies (got {requests!r})")
    return float(row["training_seconds"]) + requests * float(row["serving_ms_per_reply"]) / 1000


def _failures(row: Mapping[str, Any], req: Requirements) -> tuple[list[tuple[str, str]], list[str]]:
    """The (requirement, reason) pairs a row fails, and notes on how it passed the others."""
    failed, notes = [], []
    if req.max_toxic_share is not None and not row["toxic_share_high"] <= req.max_toxic_share:
        failed.append(
            (
                "max_toxic_share",
                f"toxic share upper end {row['toxic_share_high']:.3f} > max {req.max_toxic_share:.3f}",
            )
        )
    if req.min_gold_utility is not None and not row["gold_utility_low"] >= req.min_gold_utility:
        failed.append(
            (
                "min_gold_utility",
                f"gold utility lower end {row['gold_utility_low']:.3f} < min {req.min_gold_utility:.3f}",
            )
        )
    if req.max_kl is not None:
        if math.isnan(row["kl_high"]):
            notes.append(f"KL not measured: counted as meeting max_kl {req.max_kl:.3f}")
        elif not row["kl_high"] <= req.max_kl:
            failed.append(("max_kl", f"KL upper end {row['kl_high']:.3f} > max {req.max_kl:.3f}"))
    if req.max_serving_ms is not None and not row["serving_ms_per_reply"] <= req.max_serving_ms:
        failed.append(
            (
                "max_serving_ms",
                f"serving {row['serving_ms_per_reply']:.1f} ms per reply > max {req.max_serving_ms:.1f}",
            )
        )
    if req.max_training_seconds is not None and not row["training_seconds"] <= req.max_training_seconds:
        failed.append(
            (
                "max_training_seconds",
                f"training {row['training_seconds']:,.0f} s > max {req.max_training_seconds:,.0f} s",
            )
        )
    return failed, notes


@dataclass(frozen=True, eq=False)
class Recommendation:
    """What `recommend` decided, and the table it decided from."""

    choice: str | None
    """The method to use: the least total compute among those meeting every requirement; None if none does."""
    table: pd.DataFrame
    """Every method, with meets (bool), reasons (why it fails; "" if it meets), notes (how it passed, e.g.
    a KL not measured) and total_compute_seconds over the requirements' traffic."""
    why: str
    """One or two sentences: the choice and the numbers that decided it, or what every method failed."""


def recommend(table: pd.DataFrame, req: Requirements | None = None) -> Recommendation:
    """The cheapest method in total compute that meets `req` (exact ties: the earlier row of the table).

    When none meets, `why` names each requirement that every method fails and the closest method: the one
    failing the fewest requirements, then the cheapest of those.
    """
    _check_table(table)
    req = req if req is not None else Requirements()
    out = table.reset_index(drop=True).copy()
    records = out.to_dict("records")
    checks = [_failures(r, req) for r in records]
    out["total_compute_seconds"] = [total_compute_seconds(r, req.requests) for r in records]
    out["meets"] = [not failed for failed, _ in checks]
    out["reasons"] = ["; ".join(text for _, text in failed) for failed, _ in checks]
    out["notes"] = ["; ".join(notes) for _, notes in checks]
    total = out["total_compute_seconds"].tolist()
    meeting = [i for i in range(len(out)) if out.at[i, "meets"]]
    if meeting:
        best = min(meeting, key=lambda i: total[i])  # min keeps the first of equal totals: row order
        row = out.loc[best]
        note = f"; {row['notes']}" if row["notes"] else ""
        why = (
            f"{row['method']} is the cheapest method that meets every requirement: {total[best]:,.0f} s of compute "
            f"over {req.requests:,} requests ({row['training_seconds']:,.0f} s training + "
            f"{row['serving_ms_per_reply']:.1f} ms per reply{note})."
        )
        cheaper = [i for i in range(len(out)) if not out.at[i, "meets"] and total[i] < total[best]]
        if cheaper:
            failing = "; ".join(f"{out.at[i, 'method']}, {out.at[i, 'reasons']}" for i in cheaper)
            why += f" Cheaper but failing: {failing}."
        return Recommendation(choice=str(row["method"]), table=out, why=why)
    failed_by = [{name for name, _ in failed} for failed, _ in checks]
    everyone = [name for name in _LIMITS if all(name in f for f in failed_by)]
    closest = min(range(len(out)), key=lambda i: (len(failed_by[i]), total[i]))
    if everyone:
        limits = ", ".join(f"{name}={getattr(req, name):g}" for name in everyone)
        why = f"No method meets every requirement: every one fails {limits}."
    else:
        why = "No method meets every requirement, though no single requirement fails them all: each fails one or more."
    why += f" Closest: {out.at[closest, 'method']} ({out.at[closest, 'reasons']})."
    return Recommendation(choice=None, table=out, why=why)


# -- break-even -----------------------------------------------------------------------------------


def _row(table: pd.DataFrame, method: str) -> dict[str, Any]:
    _check_table(table)
    found = table[table["method"] == method]
    if found.empty:
        raise ValueError(f"no method {method!r} in the table: known methods are {table['method'].tolist()}")
    return found.iloc[0].to_dict()


def break_even_requests(table: pd.DataFrame, trained: str, serving_heavy: str) -> float:
    """Served requests beyond which `trained` (more training, cheaper serving, e.g. "ppo") has cost less total
    compute than `serving_heavy` (less training, dearer serving, e.g. "bestof4"); at it they cost the same.

    0.0 if `trained` trains no dearer and serves no dearer; math.inf if it serves no cheaper (its training
    never pays back).
    """
    a, b = _row(table, trained), _row(table, serving_heavy)
    extra_training = a["training_seconds"] - b["training_seconds"]
    saved_per_request = (b["serving_ms_per_reply"] - a["serving_ms_per_reply"]) / 1000
    if extra_training <= 0 and saved_per_request >= 0:
        return 0.0
    if saved_per_request <= 0:
        return math.inf
    return extra_training / saved_per_request


# -- the guide ------------------------------------------------------------------------------------


def _first(table: pd.DataFrame, match: Callable[[str], bool]) -> dict[str, Any] | None:
    for row in table.to_dict("records"):
        if match(str(row["method"]).lower()):
            return row
    return None


def _shown(row: Mapping[str, Any], key: str) -> str:
    if math.isnan(row[key]):
        return "not measured"
    return f"{row[key]:.3f} [{row[f'{key}_low']:.3f}, {row[f'{key}_high']:.3f}]"


def _apart(a: Mapping[str, Any], b: Mapping[str, Any], key: str) -> int:
    """-1 if a's interval lies wholly below b's, 1 if wholly above, 0 if they overlap."""
    if a[f"{key}_high"] < b[f"{key}_low"]:
        return -1
    if a[f"{key}_low"] > b[f"{key}_high"]:
        return 1
    return 0


def _versus_ppo(other: Mapping[str, Any], ppo: Mapping[str, Any]) -> str:
    """How other compares with PPO beyond the intervals, in words."""
    findings = []
    toxic, utility = _apart(other, ppo, "toxic_share"), _apart(other, ppo, "gold_utility")
    if toxic:
        findings.append(f"{'less' if toxic < 0 else 'more'} toxic")
    if utility:
        findings.append(f"{'more' if utility > 0 else 'less'} useful")
    if not findings:
        return "its intervals overlap PPO's on both, so here it is as good"
    return f"beyond the intervals it is {' and '.join(findings)} than PPO"


def guide(table: pd.DataFrame) -> str:
    """A markdown decision guide (one bullet per comparison), every number read from `table`.

    Recognises the methods "base", "prompting", the first whose name starts with "bestof", "ppo" and
    "dpo"; a bullet whose rows are missing is left out.
    """
    _check_table(table)
    base = _first(table, lambda m: m == "base")
    prompting = _first(table, lambda m: m == "prompting")
    bestof = _first(table, lambda m: m.startswith("bestof"))
    ppo = _first(table, lambda m: m == "ppo")
    dpo = _first(table, lambda m: m == "dpo")
    bullets = []

    # 1. the reference everything is compared to
    if base is not None:
        heldout = table.attrs.get("heldout") or {}
        where = ""
        if "prompts" in heldout and "samples_per_prompt" in heldout:
            where = f" over {heldout['prompts']:,} held-out prompts x {heldout['samples_per_prompt']} samples"
        bullets.append(
            f"**Reference**: the base model's toxic share is {_shown(base, 'toxic_share')} and its gold utility "
            f"{_shown(base, 'gold_utility')}{where} (95% intervals)."
        )

    # 2. prompting: free, if the model follows instructions
    if base is not None and prompting is not None:
        moved = _apart(prompting, base, "toxic_share")
        p, b = _shown(prompting, "toxic_share"), _shown(base, "toxic_share")
        if moved == 0:
            bullets.append(
                f"**Prompting** did not move this model: toxic share {p} against the base model's {b} (the "
                "intervals overlap); it is enough only for a model that follows instructions, so measure it first."
            )
        elif moved < 0:
            bullets.append(
                f"**Prompting** lowered toxic share from {b} to {p} with no training and no labels: if that "
                "meets your bar, stop there."
            )
        else:
            bullets.append(f"**Prompting** raised toxic share from {b} to {p}: this instruction does not help.")

    # 3. best-of-N against PPO: quality, then what it costs to serve
    if bestof is not None and ppo is not None:
        n = bestof["generations_per_reply"]
        trains = "its reward model" if bestof["needs_reward_model"] else "its setup"
        bullets.append(
            f"**Best-of-N** (`{bestof['method']}`, {n} generations per reply): toxic share "
            f"{_shown(bestof, 'toxic_share')}, gold utility {_shown(bestof, 'gold_utility')}, KL "
            f"{_shown(bestof, 'kl')}, against PPO's {_shown(ppo, 'toxic_share')}, {_shown(ppo, 'gold_utility')}, "
            f"KL {_shown(ppo, 'kl')}; it trains only {trains} ({bestof['training_seconds']:,.0f} s), never the "
            f"policy: {_versus_ppo(bestof, ppo)}."
        )
        serving = (
            f"**Serving**: best-of-N costs {bestof['serving_ms_per_reply']:.1f} ms per reply against PPO's "
            f"{ppo['serving_ms_per_reply']:.1f} ms"
        )
        if ppo["serving_ms_per_reply"] > 0:
            ratio = bestof["serving_ms_per_reply"] / ppo["serving_ms_per_reply"]
            serving += f" ({ratio:.1f}x, for {n} generations per reply)"
        even = break_even_requests(table, str(ppo["method"]), str(bestof["method"]))
        if even == 0:
            serving += "; PPO is no dearer to train or to serve, so it costs less from the first request."
        elif math.isinf(even):
            serving += "; PPO serves no cheaper, so its training never pays back in compute."
        else:
            extra = ppo["training_seconds"] - bestof["training_seconds"]
            serving += f"; PPO's {extra:,.0f} s more training pays back after {even:,.0f} requests."
        bullets.append(serving)

    # 4. DPO against PPO: the same labels, no reward model, no sampling while training
    if dpo is not None and ppo is not None:
        reward_model = "needs a reward model" if dpo["needs_reward_model"] else "needs no reward model"
        bullets.append(
            f"**DPO**: toxic share {_shown(dpo, 'toxic_share')} and gold utility {_shown(dpo, 'gold_utility')} "
            f"at KL {_shown(dpo, 'kl')} in {dpo['training_seconds']:,.0f} s of training, against PPO's "
            f"{_shown(ppo, 'toxic_share')} and {_shown(ppo, 'gold_utility')} at KL {_shown(ppo, 'kl')} in "
            f"{ppo['training_seconds']:,.0f} s; it {reward_model} and samples nothing while training: "
            f"{_versus_ppo(dpo, ppo)}."
        )

    # 5. labels: what every method but the unaligned ones needs
    needs_labels = table["needs_labels"].astype(bool)
    labelled = [str(m) for m in table.loc[needs_labels, "method"]]
    unlabelled = [str(m) for m in table.loc[~needs_labels, "method"]]
    if labelled:
        labels = table.attrs.get("labels") or {}
        size = ""
        if all(isinstance(labels.get(k), int | float) for k in ("rankings", "labelers", "pairs")):
            size = (
                f" (here {labels['rankings']:,} rankings from {labels['labelers']} labelers, {labels['pairs']:,} pairs)"
            )
        free = f"; {', '.join(unlabelled)} need none" if unlabelled else ""
        bullets.append(f"**Labels**: {', '.join(labelled)} need preference labels{size}{free}.")

    # 6. the rule
    if ppo is not None and (bestof is not None or dpo is not None):
        alternatives = [r for r in (prompting, bestof, dpo) if r is not None]
        rule = "**When RLHF (PPO) is worth it**: sustained traffic"
        if bestof is not None:
            even = break_even_requests(table, str(ppo["method"]), str(bestof["method"]))
            if math.isinf(even):
                rule += " (though against best-of-N its training never pays back in compute)"
            elif even > 0:
                rule += f" beyond {even:,.0f} requests (the break-even against best-of-N)"
        rule += ", and a quality the alternatives did not reach."
        # an alternative PPO beats on neither toxic share nor gold utility, beyond the intervals, is enough
        matched = [
            str(r["method"])
            for r in alternatives
            if _apart(ppo, r, "toxic_share") >= 0 and _apart(ppo, r, "gold_utility") <= 0
        ]
        if matched:
            rule += (
                f" Here PPO is not better beyond the intervals than {', '.join(matched)} on toxic share or gold "
                "utility, so that quality does not need it."
            )
        else:
            names = ", ".join(str(r["method"]) for r in alternatives)
            rule += (
                f" Here it did: beyond the intervals PPO beats each of {names} on toxic share "
                f"{_shown(ppo, 'toxic_share')} or gold utility {_shown(ppo, 'gold_utility')}."
            )
        bullets.append(rule)

    if not bullets:
        return "- The table holds none of base, prompting, bestof*, ppo, dpo: nothing to compare."
    return "\n".join(f"- {b}" for b in bullets)
