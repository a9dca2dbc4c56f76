"""The peer benchmark's bookkeeping: the reward bar and the side-by-side table (no training here)."""
from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

import numpy as np
import pytest

ROOT = Path(__file__).resolve().parents[1]


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
    row = dict(completions=64, train_s=2.0, generate_s=1.0, rollout_s=1.5, update_s=0.5, optimizer_steps=8,
               train_reward_first=0.1, train_reward_last=0.9, eval_reward=0.8, eval_reward_se=0.1, eval_kl=1.0,
               eval_len=20.0)
    results = {"rows": {
        "base": {"eval_reward": 0.1, "eval_reward_se": 0.1, "eval_kl": 0.0, "eval_len": 20.0},
        "labkit": {**row, "samples_per_s": 32.0,
                   "to_peer_reward": {"target": 0.5, "window": 5, "completions": 32, "seconds": 1.0}},
        "rloo": {**row, "samples_per_s": 16.0,
                 "to_peer_reward": {"target": 0.5, "window": 5, "completions": 64, "seconds": 4.0}},
        "grpo": {**row, "samples_per_s": 64.0, "to_peer_reward": {"target": 0.5, "window": 5, "reached": False}},
    }}
    table = peer.markdown_table(results)
    assert "labkit / rloo samples/s: 2.00x" in table
    assert "labkit / grpo samples/s: 0.50x" in table
    assert "rloo / labkit seconds to that reward: 4.00x" in table
    assert "- grpo: not reached" in table


def test_unknown_method_is_named(peer):
    with pytest.raises(ValueError, match="ppo2"):
        peer.run_benchmark(peer.BenchConfig(methods=("ppo2",)))
