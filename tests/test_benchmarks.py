"""The benchmarks: they use labkit's public API only, and the peer benchmark's bookkeeping (no training here)."""

from __future__ import annotations

import ast
import importlib
import importlib.util
import sys
from pathlib import Path

import numpy as np
import pytest

ROOT = Path(__file__).resolve().parents[1]
BENCHMARKS = sorted((ROOT / "benchmarks").glob("*.py"))


# -- public API only -------------------------------------------------------------------------------------------


def _private(name: str) -> bool:
    return name.startswith("_") and not (name.startswith("__") and name.endswith("__"))


def _is_labkit_module(dotted: str) -> bool:
    path = ROOT.joinpath(*dotted.split("."))
    return path.with_suffix(".py").is_file() or (path / "__init__.py").is_file()


def _root(node: ast.AST) -> ast.AST:
    """The name an attribute / subscript chain starts from: `ppo` of `ppo.PPOTrainer.step[0]`."""
    while isinstance(node, (ast.Attribute, ast.Subscript)):
        node = node.value
    return node


class _PublicAPICheck(ast.NodeVisitor):
    """Collects what a script does past labkit's public API (see `public_api_problems`)."""

    def __init__(self, tree: ast.Module):
        self.problems: list[str] = []
        self.labkit: dict[str, bool] = {}  # name bound by importing from labkit -> is it a module?
        self.sys: set[str] = set()
        self.shadowed: list[set[str]] = [set()]  # names a function rebinds locally (a parameter `world`)
        for node in ast.walk(tree):
            if isinstance(node, (ast.Import, ast.ImportFrom)):
                self._bind(node)

    def _bind(self, node: ast.Import | ast.ImportFrom) -> None:
        line = node.lineno
        if isinstance(node, ast.Import):
            for alias in node.names:
                if alias.name == "sys" or alias.name.startswith("sys."):
                    self.sys.add(alias.asname or "sys")
                if alias.name.split(".")[0] == "labkit":
                    if any(_private(part) for part in alias.name.split(".")):
                        self.problems.append(f"line {line}: imports the private {alias.name}")
                    self.labkit[alias.asname or "labkit"] = True
            return
        if node.level or not node.module:
            return
        if node.module == "sys" and any(alias.name == "path" for alias in node.names):
            self.problems.append(f"line {line}: imports sys.path")
        if node.module.split(".")[0] != "labkit":
            return
        for alias in node.names:
            dotted = f"{node.module}.{alias.name}"
            if any(_private(part) for part in dotted.split(".")):
                self.problems.append(f"line {line}: imports the private {dotted}")
            self.labkit[alias.asname or alias.name] = _is_labkit_module(dotted)

    def _labkit_name(self, node: ast.AST) -> str | None:
        """The labkit-bound name `node` is (or starts from), unless the enclosing function rebinds it."""
        root = _root(node)
        if isinstance(root, ast.Name) and root.id in self.labkit and root.id not in self.shadowed[-1]:
            return root.id
        return None

    def _function(self, node: ast.FunctionDef | ast.AsyncFunctionDef | ast.Lambda) -> None:
        args = node.args
        local = {a.arg for a in [*args.posonlyargs, *args.args, *args.kwonlyargs, args.vararg, args.kwarg] if a}
        body = node.body if isinstance(node.body, list) else [node.body]
        for stmt in body:
            for sub in ast.walk(stmt):
                if isinstance(sub, ast.Name) and isinstance(sub.ctx, ast.Store):
                    local.add(sub.id)
                elif isinstance(sub, ast.Global):
                    local.difference_update(sub.names)
        self.shadowed.append(self.shadowed[-1] | local)
        self.generic_visit(node)
        self.shadowed.pop()

    visit_FunctionDef = visit_AsyncFunctionDef = visit_Lambda = _function

    def visit_Attribute(self, node: ast.Attribute) -> None:
        name = self._labkit_name(node)
        if name and _private(node.attr) and isinstance(node.ctx, ast.Load):  # a store: see _assigned
            self.problems.append(f"line {node.lineno}: reads the private {ast.unparse(node)} of labkit")
        if node.attr == "path" and isinstance(node.value, ast.Name) and node.value.id in self.sys:
            self.problems.append(f"line {node.lineno}: touches sys.path")
        self.generic_visit(node)

    def _assigned(self, targets: list[ast.AST], line: int) -> None:
        for target in targets:
            if isinstance(target, (ast.Tuple, ast.List)):
                self._assigned(target.elts, line)
            elif isinstance(target, ast.Starred):
                self._assigned([target.value], line)
            elif isinstance(target, (ast.Attribute, ast.Subscript)) and self._labkit_name(target):
                self.problems.append(f"line {line}: assigns to {ast.unparse(target)} (monkeypatching labkit)")

    def visit_Assign(self, node: ast.Assign) -> None:
        self._assigned(node.targets, node.lineno)
        self.generic_visit(node)

    def visit_AugAssign(self, node: ast.AugAssign | ast.AnnAssign) -> None:
        self._assigned([node.target], node.lineno)
        self.generic_visit(node)

    visit_AnnAssign = visit_AugAssign

    def visit_Delete(self, node: ast.Delete) -> None:
        self._assigned(node.targets, node.lineno)
        self.generic_visit(node)

    def visit_Call(self, node: ast.Call) -> None:
        func = node.func.id if isinstance(node.func, ast.Name) else None
        first = node.args[0] if node.args else None
        if func in ("setattr", "delattr") and first is not None and self._labkit_name(first):
            self.problems.append(f"line {node.lineno}: {func} on {ast.unparse(first)} (monkeypatching labkit)")
        if (
            func == "getattr"
            and len(node.args) > 1
            and self._labkit_name(first)
            and isinstance(node.args[1], ast.Constant)
            and _private(str(node.args[1].value))
        ):
            self.problems.append(f"line {node.lineno}: reads the private {node.args[1].value!r} of labkit")
        for arg in [*node.args, *(k.value for k in node.keywords)]:
            # a module handed to a helper, as `timed(labkit_ppo, "sample_responses", ...)` wrapped one of its functions
            if (
                isinstance(arg, ast.Name)
                and self._labkit_name(arg)
                and self.labkit[arg.id]
                and func not in ("getattr", "setattr", "delattr")
            ):
                self.problems.append(
                    f"line {node.lineno}: hands the module {arg.id} to {ast.unparse(node.func)} (to patch it?)"
                )
        self.generic_visit(node)


def public_api_problems(source: str) -> list[str]:
    """What `source` does past labkit's public API: imports or reads a private name (`_x`, dunders
    allowed) of a labkit module, touches sys.path, or assigns to / patches an attribute of labkit."""
    tree = ast.parse(source)
    check = _PublicAPICheck(tree)
    check.visit(tree)
    return check.problems


def test_benchmarks_are_found():
    """The checks below see the benchmarks (a moved folder would make them pass vacuously)."""
    assert {"peer_ppo.py", "ppo_targets.py"} <= {path.name for path in BENCHMARKS}


@pytest.mark.parametrize("path", BENCHMARKS, ids=lambda path: path.name)
def test_benchmark_uses_only_the_public_api(path):
    """A benchmark reaches labkit through its public API only: no private names, no sys.path, no patching."""
    assert [] == public_api_problems(path.read_text())


@pytest.mark.parametrize("path", BENCHMARKS, ids=lambda path: path.name)
def test_benchmark_records_the_shared_provenance(path):
    """Every benchmark's results JSON carries the one provenance block (command, date, machine, versions)."""
    source = path.read_text()
    assert "artifacts.provenance(" in source and "artifacts.write_json(" in source


def test_provenance_names_the_commit_and_marks_changes(tmp_path):
    """The commit a result was made at, "+changes" when tracked files differ from it, None outside git."""
    import subprocess

    from labkit import artifacts

    def git(*args):
        subprocess.run(["git", "-c", "user.name=t", "-c", "user.email=t@t", *args], cwd=tmp_path, check=True)

    assert artifacts.git_commit(tmp_path) is None
    git("init", "-q")
    (tmp_path / "a.txt").write_text("one\n")
    git("add", "a.txt")
    git("commit", "-qm", "one")
    head = subprocess.run(["git", "rev-parse", "HEAD"], cwd=tmp_path, capture_output=True, text=True).stdout.strip()
    assert artifacts.git_commit(tmp_path) == head
    (tmp_path / "a.txt").write_text("two\n")
    assert artifacts.git_commit(tmp_path) == head + "+changes"
    assert {"command", "date", "commit", "versions"} <= set(artifacts.provenance("benchmarks/x.py", []))


@pytest.mark.parametrize("path", BENCHMARKS, ids=lambda path: path.name)
def test_benchmark_names_exist_in_labkit(path):
    """Every `module.name` a benchmark reads from a labkit module is in that module's `__all__`: a renamed or
    removed function fails here, not minutes into a benchmark run (the tests never run the benchmarks)."""
    tree = ast.parse(path.read_text())
    modules = {
        alias.asname or alias.name: importlib.import_module(f"labkit.{alias.name}")
        for node in ast.walk(tree)
        if isinstance(node, ast.ImportFrom) and node.module == "labkit"
        for alias in node.names
    }
    used = {
        (node.value.id, node.attr)
        for node in ast.walk(tree)
        if isinstance(node, ast.Attribute) and isinstance(node.value, ast.Name) and node.value.id in modules
    }
    assert [] == sorted(f"{name}.{attr}" for name, attr in used if attr not in modules[name].__all__)


def test_the_check_catches_each_way_past_the_public_api():
    """Each forbidden pattern is reported once; a parameter that shadows a labkit module is not labkit."""
    bad = """
import sys
from labkit import ppo, models
from labkit import ppo as labkit_ppo
from labkit.run import _sample_eval
from labkit.models import load_policy
sys.path.insert(0, "..")
ppo.sample_responses = lambda *a: None
labkit_ppo.PPOTrainer.step = None
setattr(models, "chat_prompts", None)
x = models._finish
load_policy._cache = {}
timed(ppo, "sample_responses")
"""
    problems = public_api_problems(bad)
    expected = [
        "_sample_eval",
        "sys.path",
        "ppo.sample_responses",
        "labkit_ppo.PPOTrainer.step",
        "setattr",
        "models._finish",
        "load_policy._cache",
        "hands the module ppo",
    ]
    assert len(expected) == len(problems), problems
    for what, problem in zip(expected, problems):
        assert what in problem
    fine = """
from labkit import artifacts, world
def f(world, models):
    world._cache = None
    return world.gold(world._x), models._private
artifacts.write_json("x.json", {**artifacts.provenance("benchmarks/x.py", None), "__version__": world.__name__})
"""
    assert [] == public_api_problems(fine)


# -- the peer benchmark's bookkeeping --------------------------------------------------------------------------


@pytest.fixture(scope="module")
def peer():
    spec = importlib.util.spec_from_file_location("peer_ppo", ROOT / "benchmarks" / "peer_ppo.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules["peer_ppo"] = module  # dataclasses look their module up while the class is built
    try:
        spec.loader.exec_module(module)
        yield module
    finally:
        sys.modules.pop("peer_ppo", None)


def recorder_with(peer, means, n=4):
    """A RewardRecorder that scored len(means) batches of n texts, batch i scoring means[i] for every text."""
    batch = iter(means)
    recorder = peer.RewardRecorder(lambda texts: np.full(len(texts), next(batch)))
    for _ in means:
        recorder.score(["a reply"] * n)
    return recorder


def test_first_reaching_uses_the_rolling_mean(peer):
    recorder = recorder_with(peer, [0.0, 1.0, 0.0, 1.0, 1.0, 1.0])
    # rolling means over 2 batches: -, 0.5, 0.5, 0.5, 1.0, 1.0
    hit = recorder.first_reaching(0.9, window=2)
    assert hit["batch"] == 5 and hit["completions"] == 20
    assert hit["seconds"] == recorder.times[4]
    assert recorder.first_reaching(0.5, window=2)["batch"] == 2
    assert recorder.first_reaching(1.5, window=2) is None
    assert recorder.completions == 24 and recorder.last_mean(2) == 1.0


def test_trl_signature_reads_conversational_completions(peer):
    recorder = peer.RewardRecorder(lambda texts: np.array([len(t) for t in texts], dtype=float))
    scores = recorder.trl(["p", "p"], [[{"role": "assistant", "content": " abc "}], "de"])
    assert scores == [3.0, 2.0]  # stripped, as labkit's rewards see them


def test_table_reports_the_speed_ratio_and_the_reward_bar(peer):
    row = dict(
        completions=64,
        train_s=2.0,
        generate_s=1.0,
        score_s=0.25,
        rollout_s=1.5,
        update_s=0.5,
        optimizer_steps=8,
        train_reward_first=0.1,
        train_reward_last=0.9,
        eval_reward=0.8,
        eval_reward_se=0.1,
        eval_kl=1.0,
        eval_len=20.0,
    )
    results = {
        "rows": {
            "base": {"eval_reward": 0.1, "eval_reward_se": 0.1, "eval_kl": 0.0, "eval_len": 20.0},
            "labkit": {
                **row,
                "samples_per_s": 32.0,
                "to_peer_reward": {"target": 0.5, "window": 5, "completions": 32, "seconds": 1.0},
            },
            "rloo": {
                **row,
                "samples_per_s": 16.0,
                "to_peer_reward": {"target": 0.5, "window": 5, "completions": 64, "seconds": 4.0},
            },
            "grpo": {**row, "samples_per_s": 64.0, "to_peer_reward": {"target": 0.5, "window": 5, "reached": False}},
        }
    }
    table = peer.markdown_table(results)
    assert "labkit / rloo samples/s: 2.00x" in table
    assert "labkit / grpo samples/s: 0.50x" in table
    assert "rloo / labkit seconds to that reward: 4.00x" in table
    assert "- grpo: not reached" in table
    assert "| labkit | 64 | 32.0 | 2.0 | 1.0 | 0.2 | 0.2 | 0.5 | 8 |" in table  # generate, score, forward, update


def test_set_changes_only_labkits_ppo_settings(peer):
    """--set replaces PPOConfig fields for labkit (a lever to measure); the shared budget stays."""
    cfg = peer.parse_args(["--set", "ppo_epochs=1", "mini_batch_size=8"])
    changed, lab = peer._ppo_config(cfg), peer._ppo_config(peer.parse_args([]))
    assert (changed.ppo_epochs, changed.mini_batch_size) == (1, 8) and (lab.ppo_epochs, lab.mini_batch_size) == (2, 16)
    assert (changed.batch_size, changed.learning_rate) == (lab.batch_size, lab.learning_rate)


def test_unknown_method_is_named(peer):
    with pytest.raises(ValueError, match="ppo2"):
        peer.run_benchmark(peer.BenchConfig(methods=("ppo2",)))


def test_repeats_report_median_timings_and_the_ratio_of_each_round(peer):
    """--repeats N: round 0's rewards, each timing the median over the rounds, the ratios round by round."""
    timings = dict(setup_s=0.1, generate_s=1.0, score_s=0.1, rollout_s=1.5, update_s=0.5)
    rounds = {
        "labkit": [2.0, 8.0, 4.0],  # train_s per round: median 4.0
        "rloo": [10.0, 8.0, 12.0],  # median 10.0: the medians' ratio is 2.5, the rounds' 5, 1 and 3
    }
    runs = {}
    for method, train_s in rounds.items():
        runs[method] = []
        for i, seconds in enumerate(train_s):
            record = dict(timings, train_s=seconds, completions=64, samples_per_s=64 / seconds)
            record.update(train_reward_per_step=[0.1, 0.9], train_reward_last=0.9, eval_reward=0.5 + i)
            runs[method].append((record, None))
    labkit, rloo = (peer._median_of_rounds(runs[m]) for m in ("labkit", "rloo"))
    assert labkit["train_s"] == 4.0 and labkit["samples_per_s"] == 16.0 and labkit["eval_reward"] == 0.5
    assert [r["train_s"] for r in labkit["rounds"]] == [2.0, 8.0, 4.0] and labkit["same_training"]
    runs["rloo"][2][0]["train_reward_per_step"] = [0.1, 0.8]
    assert not peer._median_of_rounds(runs["rloo"])["same_training"]
    row = dict(optimizer_steps=8, train_reward_first=0.1, eval_reward_se=0.1, eval_kl=1.0, eval_len=20.0)
    reach = {"target": 0.5, "window": 5, "completions": 32}
    results = {
        "rows": {
            "labkit": {**row, **labkit, "to_peer_reward": {**reach, "seconds": 2.0, "seconds_per_round": [1, 4, 2]}},
            "rloo": {**row, **rloo, "to_peer_reward": {**reach, "seconds": 5.0, "seconds_per_round": [5, 4, 6]}},
        }
    }
    table = peer.markdown_table(results)
    assert "median of 3 rounds" in table
    assert "labkit / rloo samples/s: 3.00x (5.00, 1.00, 3.00)" in table  # the median of the rounds' ratios
    assert "rloo / labkit seconds to that reward: 3.00x (5.00, 1.00, 3.00)" in table
    with pytest.raises(ValueError, match="--repeats must be at least 1"):
        peer.run_benchmark(peer.BenchConfig(repeats=0))
