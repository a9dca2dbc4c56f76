"""labkit's metrics as local Hugging Face `evaluate` modules that load offline.

What: three `evaluate.Metric` modules, one folder each (`<name>/<name>.py`, the layout
`evaluate.load` expects of a local path):
    labkit_toxicity                mean P(toxic) and toxic share of texts, by a labkit judge
    labkit_expected_max_toxicity   expected maximum toxicity and toxicity probability of k samples
                                   per prompt (RealToxicityPrompts, Gehman et al. 2020)
    labkit_distinct_n              distinct-n of texts (Li et al. 2016)
Their `_compute` calls `labkit.judge` and `labkit.evaluate`, the one home of the maths, so they give
the numbers a labkit evaluation reports.

Why: a learner who knows `evaluate` gets labkit's metrics through the API they know (`compute`,
`add_batch` per prompt, `evaluate.combine`), on a machine with no Hub access.

How it stays offline (evaluate 0.4.6): `evaluate.load` sends the path of an existing `.py` file
straight to its LocalEvaluationModuleFactory, which never calls the Hub. It checks that the file's
top-level imports are installed, then copies the file into
HF_MODULES_CACHE/evaluate_modules/metrics/<name>/<hash of the code>/ and imports it from there.
Because only that one file is copied, the modules import labkit rather than a sibling file.

    from labkit import evaluate_metrics
    toxicity = evaluate_metrics.load("labkit_toxicity")
    toxicity.compute(predictions=texts, judge="svm")
"""

from __future__ import annotations

from pathlib import Path

import evaluate

from labkit import judge

__all__ = ["JUDGES", "NAMES", "judge_for", "load", "module_path"]

NAMES = ("labkit_distinct_n", "labkit_expected_max_toxicity", "labkit_toxicity")
"""The local modules, each in the folder of its name next to this file."""
JUDGES = ("minilm", "svm")
"""Judge names the toxicity modules take (besides a local classifier folder or a Judge)."""


def module_path(name: str) -> Path:
    """Path of the module file of `name` (one of NAMES)."""
    if name not in NAMES:
        raise ValueError(f"unknown labkit evaluate module {name!r}; choose one of {list(NAMES)}")
    return Path(__file__).resolve().parent / name / f"{name}.py"


def load(name: str, **kwargs) -> evaluate.EvaluationModule:
    """`evaluate.load` of the local module `name`; kwargs go to it (e.g. keep_in_memory=True, cache_dir)."""
    return evaluate.load(str(module_path(name)), module_type="metric", **kwargs)


def judge_for(spec) -> judge.Judge:
    """The toxicity judge a module's `judge=` argument names: "minilm", "svm", a local classifier
    folder, or a Judge object.

    Stricter than `labkit.judge.get_judge`, which reads any other string as a hub id: offline, a
    misspelt name should fail here with the choices, not later as a failed download."""
    if isinstance(spec, judge.Judge) or spec in JUDGES or (isinstance(spec, str) and Path(spec).is_dir()):
        return judge.get_judge(spec)
    raise ValueError(
        f"unknown judge {spec!r}; choose one of {list(JUDGES)}, a local classifier folder or a labkit.judge.Judge"
    )
