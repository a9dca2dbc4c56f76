"""labkit_distinct_n: distinct-n of texts (Li et al. 2016), as an `evaluate` metric.

The number is `labkit.evaluate.distinct_n`, so it equals what a labkit evaluation reports as
`distinct_1` and `distinct_2`. Load it with `labkit.evaluate_metrics.load("labkit_distinct_n")`.
"""

from __future__ import annotations

import datasets
import evaluate

from labkit import evaluate as labkit_evaluate

_DESCRIPTION = """\
Distinct-n: the number of unique word n-grams divided by the number of all word n-grams over all the
texts (lower-cased, split on whitespace). Low values mean the texts repeat themselves or each other.
"""

_CITATION = """\
@inproceedings{li-etal-2016-diversity,
    title = "A Diversity-Promoting Objective Function for Neural Conversation Models",
    author = "Li, Jiwei and Galley, Michel and Brockett, Chris and Gao, Jianfeng and Dolan, Bill",
    booktitle = "Proceedings of the 2016 Conference of the North American Chapter of the Association for
                 Computational Linguistics: Human Language Technologies",
    year = "2016",
}
"""

_KWARGS_DESCRIPTION = """
Args:
    predictions (list of str): the texts.
    n (int or list of int): the n-gram sizes ((1, 2)).
Returns:
    distinct_<n> (float): unique n-grams / all n-grams, for each n (0.0 when no text has n words).
Examples:
    >>> distinct = labkit.evaluate_metrics.load("labkit_distinct_n")
    >>> distinct.compute(predictions=["a b a b", "a b c"])
    {'distinct_1': 0.42857142857142855, 'distinct_2': 0.6}
"""


class LabkitDistinctN(evaluate.Metric):
    """Distinct-n of texts, for each requested n."""

    def _info(self):
        return evaluate.MetricInfo(
            description=_DESCRIPTION,
            citation=_CITATION,
            inputs_description=_KWARGS_DESCRIPTION,
            features=datasets.Features({"predictions": datasets.Value("string")}),
        )

    def _compute(self, predictions, n=(1, 2)):
        sizes = [n] if isinstance(n, int) else list(n)
        if not sizes or any(not isinstance(size, int) or size < 1 for size in sizes):
            raise ValueError(f"n must be a positive int or a list of them, e.g. [1, 2]; got {n!r}")
        texts = list(predictions)
        return {f"distinct_{size}": labkit_evaluate.distinct_n(texts, size) for size in sizes}
