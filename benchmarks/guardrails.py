"""Benchmark: a toxicity guardrail built on each judge: what it catches, what it wrongly blocks, what it costs.

A `guardrails.Guardrail` blocks a reply when its judge's P(toxic) is at or above a threshold. For each
judge, on two labelled sets:
    assistant register   data/eval/toxicity_labelled.jsonl, short assistant replies. The MiniLM judge's
                         head is FITTED on this set, so its scores here are 5-fold cross-validated
                         (`judge.cross_validated_probs`: each item scored by a head that never saw it);
                         the SVM never saw the set and is scored as it is.
    rtp register         data/rtp_judge/labelled.jsonl, web-text continuations written for labkit and
                         never used to fit a judge head or a reward: held out for both judges.
it reports
    tradeoff             catch rate, false-block rate, block rate and their counts at thresholds
                         0.05, 0.10, ..., 0.95 (`guardrails.GRID`)
    at_0.5               the rates at the judges' own verdict, each with a 95% bootstrap interval over items
    chosen_threshold     the lowest threshold that blocks at most --max-false-block of the clean replies
                         (`guardrails.threshold_for`, on the exact curve), and at_chosen: the rates there
    at_other_threshold   the rates at the threshold chosen on the OTHER set: does a threshold tuned on
                         one register keep its promise on the other?
and, per judge, the latency the guardrail adds per reply (`guardrails.measure_latency`: median of
--repeats checks of a batch of --batch assistant replies, and of single replies, after one warm-up).

    .venv/bin/python benchmarks/guardrails.py
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

import numpy as np  # noqa: E402
import torch  # noqa: E402

from labkit import artifacts, guardrails, judge  # noqa: E402
from labkit.presets import DATA_DIR  # noqa: E402

RESULTS = Path(__file__).resolve().parent / "results" / "guardrails.json"
SETS = {
    "assistant_register": judge.LABELLED_PATH,
    "rtp_register": judge.RTP_LABELLED_PATH,
}


def held_out_scores(scorer, path: Path, texts: list[str]) -> tuple[np.ndarray, str]:
    """The judge's P(toxic) of each text, and how they were made: cross-validated on the set a MiniLM head
    is fitted on (its own scores there would be training-set scores), the judge as it is elsewhere."""
    if isinstance(scorer, judge.MiniLMJudge) and Path(scorer.labelled_path).resolve() == path.resolve():
        return judge.cross_validated_probs(path, C=scorer.C), "5-fold cross-validated (the head is fitted on this set)"
    return np.asarray(scorer.prob(texts), dtype=float), "the judge as deployed (it never saw this set)"


def measure_set(p: np.ndarray, labels: np.ndarray, max_false_block: float, n_boot: int) -> dict:
    """Tradeoff table, rates at 0.5 and at the threshold that meets the false-block budget."""
    out = {
        "tradeoff": [
            {key: value.item() if isinstance(value, np.generic) else value for key, value in row.items()}
            for row in guardrails.tradeoff(p, labels, thresholds=guardrails.GRID).to_dict(orient="records")
        ],
        "at_0.5": guardrails.rates_at(p, labels, threshold=0.5, n_boot=n_boot),
    }
    try:
        chosen = guardrails.threshold_for(p, labels, max_false_block=max_false_block)
    except ValueError as err:  # a judge that cannot meet the budget is a result, not a crash
        out["chosen_threshold"], out["chosen_error"] = None, str(err)
        return out
    out["chosen_threshold"] = chosen
    out["at_chosen"] = guardrails.rates_at(p, labels, threshold=chosen, n_boot=n_boot)
    return out


def cell(rate: dict) -> str:
    return f"{rate['value']:.3f} [{rate['ci_low']:.3f}, {rate['ci_high']:.3f}]"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--judges", nargs="+", default=["minilm", "svm"])
    parser.add_argument(
        "--max-false-block", type=float, default=0.05, help="false-block budget for the chosen threshold"
    )
    parser.add_argument("--n-boot", type=int, default=1000, help="bootstrap resamples per interval")
    parser.add_argument("--batch", type=int, default=64, help="replies per batch in the latency measurement")
    parser.add_argument("--repeats", type=int, default=5, help="timed checks per latency median")
    parser.add_argument("--out", default=str(RESULTS))
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)

    data = {where: judge.load_labelled(path) for where, path in SETS.items()}
    results: dict[str, dict] = {}
    for scorer in judge.load_judges(tuple(args.judges)):
        by_set, scores = {}, {}
        # 1. rates on each labelled set, from scores the judge was not fitted on
        for where, (texts, labels) in data.items():
            scores[where], how = held_out_scores(scorer, SETS[where], texts)
            by_set[where] = {"scores": how, **measure_set(scores[where], labels, args.max_false_block, args.n_boot)}
        # 2. each set's rates at the threshold chosen on the other set
        for where, other in zip(SETS, reversed(list(SETS))):
            threshold = by_set[other]["chosen_threshold"]
            if threshold is not None:
                rates = guardrails.rates_at(scores[where], data[where][1], threshold=threshold, n_boot=args.n_boot)
                by_set[where]["at_other_threshold"] = {"chosen_on": other, "threshold": threshold, **rates}
        # 3. latency per reply of the guardrail itself (scoring + deciding), on assistant replies
        texts = data["assistant_register"][0]
        guard = guardrails.Guardrail(scorer, threshold=0.5)
        latency = guardrails.measure_latency(
            guard, [""] * len(texts), texts, batch_size=args.batch, repeats=args.repeats
        )
        results[scorer.name] = {**by_set, "latency": latency}

    print(
        f"{'judge':8s} {'register':10s} {'catch@0.5':>22s} {'false-block@0.5':>22s} {'chosen':>7s} "
        f"{'catch@chosen':>22s} {'false-block@chosen':>22s}"
    )
    for name, by_set in results.items():
        for where in SETS:
            r = by_set[where]
            chosen = r["chosen_threshold"]
            at = r.get("at_chosen")
            print(
                f"{name:8s} {where.split('_')[0]:10s} {cell(r['at_0.5']['catch_rate']):>22s} "
                f"{cell(r['at_0.5']['false_block_rate']):>22s} {'-' if chosen is None else f'{chosen:.3f}':>7s} "
                f"{cell(at['catch_rate']) if at else '-':>22s} {cell(at['false_block_rate']) if at else '-':>22s}"
            )
    for name, by_set in results.items():
        lat = by_set["latency"]
        print(
            f"{name:8s} latency per reply: {1000 * lat['batch_seconds_per_reply']:.2f} ms in a batch of "
            f"{lat['batch_size']}, {1000 * lat['single_seconds_per_reply']:.2f} ms one at a time"
        )
    report = {
        **artifacts.provenance("benchmarks/guardrails.py", argv),
        "sets": {
            where: {
                "path": f"data/{path.relative_to(DATA_DIR).as_posix()}",
                "n": len(labels),
                "toxic": int(labels.sum()),
            }
            for (where, path), (_, labels) in zip(SETS.items(), data.values())
        },
        "rule": "block at P(toxic) >= threshold",
        "max_false_block": args.max_false_block,
        "n_boot": args.n_boot,
        "judges": results,
    }
    artifacts.write_json(args.out, report)
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
