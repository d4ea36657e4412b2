"""Chat templates, sampling and the text pipeline (detokenizer, stop strings, <think>)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from onnxg.runtime import template
from onnxg.runtime.errors import InvalidRequest, ModelLoadError
from onnxg.runtime.options import GenerationOptions
from onnxg.runtime.sampling import Sampler, log_softmax, top_logprobs
from onnxg.runtime.textstream import Detokenizer, ReasoningSplitter, StopMatcher

MESSAGES = [
    {"role": "system", "content": "Be brief."},
    {"role": "user", "content": "Hi <b>&'</b>"},
    {"role": "assistant", "content": "Hello."},
    {"role": "user", "content": "日本語で答えて 🎉"},
]


# -- templates ------------------------------------------------------------------------


def test_model_template_renders_like_transformers(tiny_chat_model: Path) -> None:
    from transformers import AutoTokenizer

    hf = AutoTokenizer.from_pretrained(str(tiny_chat_model))
    loaded = template.load_template(tiny_chat_model)
    for add in (True, False):
        ours = loaded.render(MESSAGES, add_generation_prompt=add)
        assert ours == hf.apply_chat_template(MESSAGES, tokenize=False, add_generation_prompt=add)
    assert ours.endswith("🎉<|im_end|>\n")


def test_helpers_match_transformers(tiny_chat_model: Path) -> None:
    from transformers import AutoTokenizer

    hf = AutoTokenizer.from_pretrained(str(tiny_chat_model))
    source = (
        "{{ bos_token }}{% for m in messages %}{% if m.role == 'bad' %}{{ raise_exception('no bad') }}{% endif %}"
        "{{ m | tojson }}{% if loop.index == 2 %}{% break %}{% endif %}\n{% endfor %}"
        "{% generation %}{{ eos_token }}{% endgeneration %}{{ strftime_now('%Y') }}"
        "{% if add_generation_prompt %}GO{% endif %}"
    )
    ours = template.render(source, MESSAGES, bos_token=hf.bos_token, eos_token=hf.eos_token)
    theirs = hf.apply_chat_template(MESSAGES, chat_template=source, tokenize=False, add_generation_prompt=True)
    assert ours == theirs
    assert '"Hi <b>&\'</b>"' in ours  # tojson does not HTML-escape
    with pytest.raises(InvalidRequest, match="no bad") as info:
        template.render(source, [{"role": "bad", "content": ""}], bos_token="", eos_token="")
    assert info.value.param == "messages"


def test_template_sources(tmp_path: Path) -> None:
    folder = tmp_path / "m"
    folder.mkdir()
    (folder / "tokenizer_config.json").write_text(json.dumps({
        "bos_token": {"content": "<s>", "special": True}, "eos_token": "</s>",
        "chat_template": [{"name": "tool_use", "template": "TOOLS"}, {"name": "default", "template": "{{ bos_token }}D{{ eos_token }}"}],
    }))
    loaded = template.load_template(folder)
    assert loaded.render(MESSAGES) == "<s>D</s>"
    (folder / "chat_template.jinja").write_text("J{{ messages | length }}")
    assert template.load_template(folder).render(MESSAGES) == "J4"
    override = tmp_path / "t.jinja"
    override.write_text("O{{ messages[-1].content }}")
    assert template.load_template(folder, str(override)).render(MESSAGES) == "O日本語で答えて 🎉"
    assert template.load_template(folder, "T{{ messages[0].role }}").render(MESSAGES) == "Tsystem"
    with pytest.raises(InvalidRequest, match="not found"):
        template.load_template(folder, str(tmp_path / "missing.jinja"))
    with pytest.raises(InvalidRequest, match="does not parse"):
        template.load_template(folder, "{% for %}")
    bare = tmp_path / "bare"
    bare.mkdir()
    (bare / "tokenizer_config.json").write_text("{}")
    with pytest.raises(ModelLoadError, match="no chat template") as info:
        template.load_template(bare)
    assert "--chat-template" in (info.value.hint or "")


# -- sampling -------------------------------------------------------------------------


def _logits(seed: int = 0, vocab: int = 1000) -> np.ndarray:
    return np.random.default_rng(seed).normal(size=vocab).astype(np.float32) * 3


def test_greedy_and_top_k_one() -> None:
    logits = _logits()
    best = int(np.argmax(logits))
    assert Sampler(GenerationOptions(temperature=0.0)).choose(logits) == best
    assert Sampler(GenerationOptions(temperature=1.5, top_k=1, seed=3)).choose(logits) == best
    assert Sampler(GenerationOptions(temperature=1.0, top_p=0.0, seed=3)).choose(logits) == best


def test_top_k_and_top_p_restrict_the_choices() -> None:
    logits = _logits()
    allowed_k = set(np.argsort(-logits)[:5].tolist())
    sampler = Sampler(GenerationOptions(temperature=1.0, top_k=5, seed=1))
    picks = {sampler.choose(logits) for _ in range(300)}
    assert picks <= allowed_k and len(picks) > 1
    probs = np.exp(log_softmax(logits))
    order = np.argsort(-probs)
    nucleus = set(order[: int(np.searchsorted(np.cumsum(probs[order]), 0.5)) + 1].tolist())
    sampler = Sampler(GenerationOptions(temperature=1.0, top_p=0.5, seed=1))
    picks = {sampler.choose(logits) for _ in range(300)}
    assert picks <= nucleus and len(picks) > 1
    wide = Sampler(GenerationOptions(temperature=1.0, seed=1))
    assert len({wide.choose(logits) for _ in range(300)}) > len(nucleus)


def test_seeded_sampling_repeats() -> None:
    logits = _logits()
    a = Sampler(GenerationOptions(temperature=1.0, seed=42))
    b = Sampler(GenerationOptions(temperature=1.0, seed=42))
    c = Sampler(GenerationOptions(temperature=1.0, seed=43))
    seq_a = [a.choose(logits) for _ in range(50)]
    assert seq_a == [b.choose(logits) for _ in range(50)]
    assert seq_a != [c.choose(logits) for _ in range(50)]


def test_penalties_follow_openai_and_transformers() -> None:
    logits = np.array([2.0, -1.0, 0.5, 3.0], dtype=np.float32)
    s = Sampler(GenerationOptions(temperature=0.0, presence_penalty=0.5, frequency_penalty=0.25))
    for token in (3, 3, 1):
        s.remember(token)
    out = s._penalised(logits)
    assert out[3] == pytest.approx(3.0 - 2 * 0.25 - 0.5)
    assert out[1] == pytest.approx(-1.0 - 0.25 - 0.5)
    assert out[0] == 2.0 and out[2] == 0.5
    r = Sampler(GenerationOptions(temperature=0.0, repetition_penalty=2.0))
    r.remember_prompt([0, 1])
    out = r._penalised(logits)
    assert out[0] == pytest.approx(1.0) and out[1] == pytest.approx(-2.0) and out[3] == 3.0
    assert Sampler(GenerationOptions(temperature=0.0, presence_penalty=2.0)).choose(logits) == 3
    p = Sampler(GenerationOptions(temperature=0.0, presence_penalty=2.0))
    p.remember(3)
    assert p.choose(logits) == 0


def test_top_logprobs_sorted() -> None:
    lp = log_softmax(_logits())
    top = top_logprobs(lp, 5)
    assert [t for t, _ in top] == np.argsort(-lp)[:5].tolist()
    assert np.exp(lp).sum() == pytest.approx(1.0)


# -- text pipeline --------------------------------------------------------------------


def test_detokenizer_never_splits_characters(tiny_chat_model: Path) -> None:
    from tokenizers import Tokenizer

    tok = Tokenizer.from_file(str(tiny_chat_model / "tokenizer.json"))
    text = "日本語のテキストです。絵文字 🎉👍🏽 and ümlauts, 中文 also."
    ids = tok.encode(text, add_special_tokens=False).ids
    assert len(ids) > len(text) / 2  # multi-byte characters really span several tokens
    detok = Detokenizer(lambda xs: tok.decode(list(xs), skip_special_tokens=False))
    pieces = [detok.add(i) for i in ids]
    pieces.append(detok.flush())
    assert "".join(pieces) == text
    assert not any("\ufffd" in p for p in pieces)
    assert any(p == "" for p in pieces)  # some tokens were held until their character completed


def test_stop_matcher_across_pieces() -> None:
    m = StopMatcher(["END", "xyz"])
    pieces = ["Hello E", "N", "D and more"]
    emitted = "".join(m.add(p) for p in pieces)
    assert emitted == "Hello " and m.stopped
    m = StopMatcher(["END"])
    assert m.add("abcE") == "abc"
    assert m.add("Nx") == "ENx" and not m.stopped
    m = StopMatcher(["<|x|>"])
    got = m.add("a<|") + m.add("y") + m.flush()
    assert got == "a<|y" and not m.stopped


def test_reasoning_splitter() -> None:
    s = ReasoningSplitter()
    parts = [s.add(p) for p in ["<th", "ink>\nplan A", "</th", "ink>\n\nThe answer"]]
    parts.append(s.flush())
    reasoning = "".join(r for r, _ in parts)
    answer = "".join(a for _, a in parts)
    assert reasoning == "\nplan A" and answer == "The answer"
    s = ReasoningSplitter(in_reasoning=True)
    r, a = s.add("thinking</think>done")
    assert (r, a) == ("thinking", "done")
    s = ReasoningSplitter()
    r, a = s.add("No <think> here")
    assert (r, a) == ("", "No <think> here")
