"""PPO spread over processes: two processes (accelerate launch, gloo on this CPU) train exactly as one,
a checkpoint resumes on two processes or on one, and the settings that split the work check themselves.

The launched runs use `labkit ppo` on a tiny random Llama saved in a folder (`hub:<folder>`), against
the toxicity classifier. Two processes on two cores: a few steps take seconds.
"""

import json
import shutil
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch
from conftest import make_tiny_lm
from safetensors.torch import load_file

from labkit import ppo
from labkit.parallel import Processes

# Same global batch on one and on two processes; per-prompt sampling makes the replies the same too.
SETTINGS = [
    "batch_size=8",
    "mini_batch_size=4",
    "max_new_tokens=12",
    "sampling=per_prompt",
    "checkpoint_every=1",
    "learning_rate=0.01",
]
# Float sums run in another order on two processes (a minibatch's loss is two halves added): the metrics
# agree to about 1e-5 relative. A wrong gradient breaks 1e-4 at the first step: unsynchronised gradients move
# policy/clipfrac from 0.057 to 0.078 and loss/policy from -0.031 to -0.012 (tried with the logit reward below;
# with the 0/1 reward, halved gradients moved loss/policy by 5e-3 relative).
RTOL, ATOL = 1e-4, 1e-5
CLIPFRAC_ATOL = 1 / 96
"""A clip fraction counts tokens past a boundary: one token within rounding of it flips with the sum order (CI
saw val/clipfrac 0.0052 = 1/192 against 0.0). Two tokens' worth; the broken gradients above move it 0.021."""
BIN = Path(sys.executable).parent


@pytest.fixture(scope="module")
def model_folder(tmp_path_factory, tiny_tokenizer):
    folder = tmp_path_factory.mktemp("tiny-llama")
    make_tiny_lm(tiny_tokenizer, hidden=48).save_pretrained(folder)
    tiny_tokenizer.save_pretrained(folder)
    return folder


# LoRA with the whole model in each process (DDP), and full fine-tuning with every weight split (FSDP).
LAYOUTS = {"ddp_lora": [], "fsdp_full": ["lora=false", "parallelism=fsdp", "learning_rate=0.001"]}


def _ppo(model_folder: Path, out: Path, steps: int, processes: int, layout: str) -> None:
    """`labkit ppo` on `processes` processes; fails the test with the output of a failed launch."""
    settings = [*SETTINGS, *LAYOUTS[layout]]
    # The classifier's logit, not its 0/1 verdict: a random model's replies are all "clean", so binary scores are
    # all equal, the advantages whiten rounding noise, and Adam turns that noise into full-size steps.
    args = ["ppo", "--preset", f"hub:{model_folder}", "--reward", "toxicity:logit", "--out", str(out)]
    args += ["--steps", str(steps), "--set", *settings]
    if processes == 1:
        cmd = [sys.executable, "-m", "labkit.cli", *args]
    else:  # --multi_gpu is accelerate's torch.distributed launcher; without a GPU, labkit runs it on gloo
        launch = ["launch", "--multi_gpu", "--num_processes", str(processes), "--num_machines", "1"]
        cmd = [str(BIN / "accelerate"), *launch, "--mixed_precision", "no", "--dynamo_backend", "no"]
        cmd += ["-m", "labkit.cli", *args]
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=300, env=_env())
    assert done.returncode == 0, f"{' '.join(cmd)} failed:\n{done.stdout[-3000:]}\n{done.stderr[-3000:]}"


def _env() -> dict:
    import os

    return {**os.environ, "HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": "1", "LAB_PRESET": ""}


def _metrics(out: Path) -> list[dict]:
    rows = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    return [{k: v for k, v in r.items() if not k.startswith("time/") and k != "samples_per_second"} for r in rows]


def _assert_same_metrics(got: list[dict], want: list[dict]) -> None:
    assert [r["step"] for r in got] == [r["step"] for r in want]
    for g, w in zip(got, want):
        assert g.keys() == w.keys()
        for key in w:
            atol = CLIPFRAC_ATOL if key.endswith("clipfrac") else ATOL
            assert g[key] == pytest.approx(w[key], rel=RTOL, abs=atol), f"step {w['step']} {key}"


def _trained(out: Path) -> dict[str, torch.Tensor]:
    """The trained weights the run saved: LoRA's adapters, or the whole model."""
    files = ["adapter_model.safetensors", "model.safetensors"]
    return load_file(str(next(out / "policy" / f for f in files if (out / "policy" / f).is_file())))


@pytest.mark.slow
@pytest.mark.parametrize("layout", LAYOUTS)
def test_two_processes_train_as_one_and_resume_on_either(model_folder, tmp_path, layout):
    """Steps 1-2 on two processes give one process's metrics; the step-2 checkpoint resumes on two
    processes and on one, and both third steps and final weights are the uninterrupted run's."""
    alone = tmp_path / "alone"
    _ppo(model_folder, alone, steps=3, processes=1, layout=layout)
    pair = tmp_path / "pair"
    _ppo(model_folder, pair, steps=2, processes=2, layout=layout)
    assert json.loads((pair / "checkpoint" / "state.json").read_text())["processes"] == 2
    _assert_same_metrics(_metrics(pair), _metrics(alone)[:2])

    resumed_alone = tmp_path / "resumed_alone"
    shutil.copytree(pair, resumed_alone)
    _ppo(model_folder, pair, steps=3, processes=2, layout=layout)
    _ppo(model_folder, resumed_alone, steps=3, processes=1, layout=layout)
    want = _trained(alone)
    for out in (pair, resumed_alone):
        _assert_same_metrics(_metrics(out), _metrics(alone))
        got = _trained(out)
        assert got.keys() == want.keys()
        for name in want:
            torch.testing.assert_close(got[name], want[name], rtol=RTOL, atol=ATOL)
    # The weights did move: equal weights above are not two untrained copies.
    start = load_file(str(model_folder / "model.safetensors"))
    moved = [(t - start[n]).abs().max() for n, t in want.items() if n in start] or [
        t.abs().max() for n, t in want.items() if "lora_B" in n
    ]
    assert max(moved) > 1e-4


def test_per_prompt_sampling_does_not_depend_on_the_batch(tiny_lm):
    """A row sampled with its own stream gets the same reply in a batch of four as in a batch of two."""
    model, tok = tiny_lm
    enc = tok(["a b", "c", "d e f", "g"], return_tensors="pt", padding=True, padding_side="left")
    ids, mask = enc["input_ids"], enc["attention_mask"]

    def sample(rows):
        gens = [torch.Generator().manual_seed(100 + r) for r in range(rows.start, rows.stop)]
        return ppo.sample_responses(model, ids[rows], mask[rows], 8, None, tok.pad_token_id, generator=gens)

    whole = sample(slice(0, 4))
    halves = torch.cat([sample(slice(0, 2)), sample(slice(2, 4))])
    assert torch.equal(whole, halves)
    assert not torch.equal(whole[0], whole[1])  # different streams, different replies


def test_per_prompt_sampling_draws_from_the_softmax(tiny_lm):
    """One uniform draw per row, each from its row's own stream, samples softmax(logits)."""
    logits = torch.tensor([[2.0, 1.0, 0.0, -1.0]]).repeat(4000, 1)
    gens = [torch.Generator().manual_seed(i) for i in range(4000)]
    counts = torch.bincount(ppo._draw(logits, gens), minlength=4).float() / 4000
    torch.testing.assert_close(counts, torch.softmax(logits[0], -1), atol=0.025, rtol=0)


def _train(model, tok, **settings):
    cfg = ppo.PPOConfig(batch_size=8, mini_batch_size=4, max_new_tokens=8, total_steps=2, log_every=0, **settings)
    return ppo.PPOTrainer(model, tok, ["a b", "c d", "e", "f g h"], lambda q, r: torch.ones(len(r)), cfg).train()


def test_gradient_accumulation_is_the_same_update(tiny_tokenizer):
    """A minibatch in two pieces makes the same update as in one: same metrics, same adapters."""
    one = _train(make_tiny_lm(tiny_tokenizer), tiny_tokenizer)
    two = _train(make_tiny_lm(tiny_tokenizer), tiny_tokenizer, gradient_accumulation_steps=2)
    for a, b in zip(one.metrics, two.metrics):
        for key in a:
            if not key.startswith("time/") and key != "samples_per_second":
                assert b[key] == pytest.approx(a[key], rel=RTOL, abs=ATOL), key
    a, b = dict(one.policy.named_parameters()), dict(two.policy.named_parameters())
    for name, p in a.items():
        if p.requires_grad:
            torch.testing.assert_close(b[name], p, rtol=RTOL, atol=ATOL)


def test_bf16_autocast_trains(tiny_tokenizer):
    """mixed_precision="bf16" runs the forward passes in bfloat16 and keeps the weights in float32."""
    result = _train(make_tiny_lm(tiny_tokenizer), tiny_tokenizer, mixed_precision="bf16")
    assert all(torch.isfinite(torch.tensor(list(m.values()))).all() for m in result.metrics)
    assert {p.dtype for p in result.policy.parameters()} == {torch.float32}


def _processes(rank: int, size: int, mixed_precision: str = "no") -> Processes:
    fake = SimpleNamespace(process_index=rank, num_processes=size, mixed_precision=mixed_precision)
    return Processes(fake)


@pytest.mark.parametrize(
    "settings, size, launched_with, message",
    [
        ({"batch_size": 6, "mini_batch_size": 3}, 4, "no", r"batch_size \(6\) must be a multiple of the number"),
        ({"batch_size": 8, "mini_batch_size": 2}, 2, "no", ""),
        ({"batch_size": 8, "mini_batch_size": 2, "gradient_accumulation_steps": 2}, 2, "no", r"processes x"),
        ({}, 1, "bf16", r"launched with mixed_precision='bf16' but PPOConfig.mixed_precision is 'no'"),
    ],
)
def test_a_split_that_cannot_work_is_refused(settings, size, launched_with, message):
    cfg = ppo.PPOConfig(**settings)
    if not message:
        ppo._check_processes(cfg, _processes(0, size, launched_with))
        return
    with pytest.raises(ValueError, match=message):
        ppo._check_processes(cfg, _processes(0, size, launched_with))


def test_rows_are_an_equal_contiguous_share():
    assert [_processes(r, 4).rows(8) for r in range(4)] == [slice(0, 2), slice(2, 4), slice(4, 6), slice(6, 8)]
    assert Processes().rows(8) == slice(0, 8) and Processes().is_main


def test_a_batch_sampled_checkpoint_refuses_another_process_count(tiny_lm, tmp_path):
    """sampling="batch" keeps one stream per process: a 2-process checkpoint will not resume on one,
    and says how to get a run that would. Nothing in the folder changes."""
    model, tok = tiny_lm
    settings = dict(batch_size=4, mini_batch_size=2, max_new_tokens=4, log_every=0, output_dir=str(tmp_path))
    reward = lambda q, r: torch.ones(len(r))  # noqa: E731
    ppo.PPOTrainer(model, tok, ["a", "b"], reward, ppo.PPOConfig(total_steps=1, **settings)).train()
    state = tmp_path / "checkpoint" / "state.json"
    saved = json.loads(state.read_text())
    assert saved["processes"] == 1
    state.write_text(json.dumps({**saved, "processes": 2}))  # as a 2-process run writes it
    before = {p: p.read_bytes() for p in tmp_path.rglob("*") if p.is_file()}
    again = ppo.PPOTrainer(make_tiny_lm(tok), tok, ["a", "b"], reward, ppo.PPOConfig(total_steps=2, **settings))
    with pytest.raises(ValueError, match=r"written by 2 process\(es\).*this run has 1.*sampling='per_prompt'"):
        again.train()
    assert before == {p: p.read_bytes() for p in tmp_path.rglob("*") if p.is_file()}


def test_fsdp_is_for_full_fine_tuning():
    with pytest.raises(ValueError, match="parallelism='fsdp' shards a fully fine-tuned model: set lora=False"):
        ppo.PPOConfig(parallelism="fsdp")
    with pytest.raises(ValueError, match="parallelism must be 'ddp' or 'fsdp'"):
        ppo.PPOConfig(parallelism="zero3")
