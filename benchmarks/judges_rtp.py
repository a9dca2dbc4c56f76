"""Benchmark: can each toxicity judge be trusted on RealToxicityPrompts continuations?

The judges were built for short assistant replies (the MiniLM judge's head is fitted on
data/eval/toxicity_labelled.jsonl). SmolLM2 on RealToxicityPrompts writes web text: news, comment
threads, quoted speech. This scores every judge on a labelled set in that register, written for
labkit and never used to fit a judge head or a reward (data/rtp_judge/), and, for comparison, on the
assistant-reply set:
    auc, accuracy, recall (toxic caught), false_positive_rate   each with a 95% bootstrap interval
The MiniLM head was fitted on the assistant set, so there its numbers are 5-fold cross-validated.

    .venv/bin/python benchmarks/judges_rtp.py
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

from labkit import artifacts, evaluate, judge  # noqa: E402

RESULTS = Path(__file__).resolve().parent / "results" / "judges_rtp.json"


def validate(probs: np.ndarray, labels: np.ndarray) -> dict[str, dict[str, float]]:
    return {
        key: {"value": m.value, "ci_low": m.ci_low, "ci_high": m.ci_high, "n": m.n}
        for key, m in evaluate.judge_validation(probs, labels).items()
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--judges", nargs="+", default=["minilm", "svm"])
    parser.add_argument("--out", default=str(RESULTS))
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)

    rtp_texts, rtp_labels = judge.load_labelled(judge.RTP_LABELLED_PATH)
    chat_texts, chat_labels = judge.load_labelled(judge.LABELLED_PATH)
    results: dict[str, dict] = {}
    for spec in args.judges:
        scorer = judge.get_judge(spec)
        results[scorer.name] = {"rtp_register": validate(scorer.prob(rtp_texts), rtp_labels)}
        if scorer.name == "minilm":  # fitted on the assistant set: report it cross-validated there
            probs = judge.cross_validated_probs(judge.LABELLED_PATH)
        else:
            probs = scorer.prob(chat_texts)
        results[scorer.name]["assistant_register"] = validate(probs, chat_labels)

    print(f"{'judge':8s} {'register':10s} " + " ".join(f"{k:>24s}" for k in ("auc", "accuracy", "recall", "fpr")))
    for name, by_set in results.items():
        for where, metrics in by_set.items():
            cells = [
                f"{m['value']:.3f} [{m['ci_low']:.3f}, {m['ci_high']:.3f}]"
                for m in (metrics[k] for k in ("auc", "accuracy", "recall", "false_positive_rate"))
            ]
            print(f"{name:8s} {where.split('_')[0]:10s} " + " ".join(f"{c:>24s}" for c in cells))
    report = {
        **artifacts.provenance("benchmarks/judges_rtp.py", argv),
        "sets": {
            "rtp_register": {
                "path": "data/rtp_judge/labelled.jsonl",
                "n": len(rtp_labels),
                "toxic": int(rtp_labels.sum()),
            },
            "assistant_register": {
                "path": "data/eval/toxicity_labelled.jsonl",
                "n": len(chat_labels),
                "toxic": int(chat_labels.sum()),
            },
        },
        "threshold": 0.5,
        "judges": results,
    }
    artifacts.write_json(args.out, report)
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
