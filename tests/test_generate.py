"""Generation: N completions per prompt, seeded, EOS handling, JSONL and Dataset round trips."""

import pytest

from labkit import generate


def test_n_completions_per_prompt(tiny_lm):
    """Each prompt gets n completions with ids 0..n-1 and its own prompt id."""
    model, tok = tiny_lm
    samples = generate.generate(
        model,
        tok,
        ["How do I sleep?", "Why?"],
        n=3,
        prompt_ids=["a", "b"],
        max_new_tokens=6,
        batch_size=4,
        progress=False,
    )
    assert [("a", 0), ("a", 1), ("a", 2), ("b", 0), ("b", 1), ("b", 2)] == [
        (s.prompt_id, s.completion_id) for s in samples
    ]
    assert all(1 <= s.num_tokens <= 6 for s in samples)


def test_same_seed_same_samples(tiny_lm):
    """The same seed reproduces the samples; another seed changes them."""
    model, tok = tiny_lm

    def run(seed):
        return [s.text for s in generate.generate(model, tok, ["Hi"], n=4, max_new_tokens=8, seed=seed, progress=False)]

    assert run(1) == run(1)
    assert run(1) != run(2)


def test_stops_at_eos(tiny_lm):
    """A model that always emits EOS produces empty texts of one token."""
    model, tok = tiny_lm
    with __import__("torch").no_grad():
        model.lm_head.weight.zero_()  # tied: also zeroes the embeddings, fine for this test
        model.model.norm.weight.zero_()
        model.lm_head.bias = None
    bias = __import__("torch").full((len(tok),), -100.0)
    bias[tok.eos_token_id] = 100.0
    model.lm_head.register_forward_hook(lambda m, i, o: o + bias)
    samples = generate.generate(model, tok, ["Hi"], n=2, max_new_tokens=5, progress=False)
    assert [("", 1), ("", 1)] == [(s.text, s.num_tokens) for s in samples]


def test_jsonl_and_dataset_roundtrip(tmp_path):
    """Samples survive a JSONL round trip and convert to a datasets.Dataset."""
    samples = [generate.Sample("p1", "Q?", 0, "A <b>ünïcode</b>", 4), generate.Sample("p1", "Q?", 1, "B", 2)]
    path = generate.save_jsonl(samples, tmp_path / "s.jsonl")
    assert samples == generate.load_jsonl(path)
    ds = generate.to_dataset(samples)
    assert ["prompt_id", "prompt", "completion_id", "text", "num_tokens"] == ds.column_names
    assert 2 == len(ds)


def test_bad_jsonl_names_the_line(tmp_path):
    """A malformed line raises a ValueError naming the file and line."""
    path = tmp_path / "s.jsonl"
    path.write_text(
        '{"prompt_id": "p", "prompt": "q", "completion_id": 0, "text": "t", "num_tokens": 1}\n{"oops": 1}\n'
    )
    with pytest.raises(ValueError, match="line 2"):
        generate.load_jsonl(path)


def test_bad_arguments(tiny_lm):
    """n < 1 and mismatched prompt ids are refused."""
    model, tok = tiny_lm
    with pytest.raises(ValueError, match="n must be at least 1"):
        generate.generate(model, tok, ["a"], n=0, progress=False)
    with pytest.raises(ValueError, match="prompt_ids has 2 entries for 1 prompts"):
        generate.generate(model, tok, ["a"], prompt_ids=["x", "y"], progress=False)


def test_plain_prompting_continues_the_text_and_keeps_the_leading_space(tiny_lm):
    """prompting="plain": the prompt is not put in a chat turn, and a continuation that starts with a
    space keeps it (re-tokenizing prompt + text must give the sampled tokens); chat replies are stripped."""
    model, tok = tiny_lm
    kwargs = dict(n=8, max_new_tokens=6, batch_size=16, seed=3, progress=False)
    plain = generate.generate(model, tok, ["You are", "The basil"], prompting="plain", **kwargs)
    chat = generate.generate(model, tok, ["You are", "The basil"], prompting="chat", **kwargs)
    assert any(s.text.startswith(" ") for s in plain)
    assert not any(s.text != s.text.strip() for s in chat)
    assert all(s.text == s.text.rstrip() for s in plain)
    with pytest.raises(ValueError, match="prompting must be one of"):
        generate.generate(model, tok, ["x"], prompting="shout", **kwargs)
