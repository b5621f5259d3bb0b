"""Position classes of chat-formatted prompts, and ablations that spare the non-content ones."""

from __future__ import annotations

import pytest
import torch
from conftest import make_coder, tiny_tokenizer

from refusal_eval import PositionFilter, ablate, position_classes, spared_positions
from refusal_eval.chat import encode_chat, format_chat
from refusal_eval.errors import RefusalEvalError
from refusal_eval.positions import TemplateLayout


def _classes(tok, text: str) -> list[tuple[str, str]]:
    ids = tok(text, add_special_tokens=False).input_ids
    return list(zip(tok.convert_ids_to_tokens(ids), position_classes(tok, ids), strict=True))


def test_tiny_template_user_and_given_system():
    tok = tiny_tokenizer()
    layout = TemplateLayout.of(tok)
    assert layout == TemplateLayout("<|user|> ", "<|user|> ", " <|user|> ", " <|assistant|>")
    plain = format_chat(tok, ["w10 w11"])[0]
    assert _classes(tok, plain) == [
        ("<|user|>", "template"),
        ("w10", "user"),
        ("w11", "user"),
        ("<|assistant|>", "template"),
    ]
    system = format_chat(tok, ["w10"], system="w20 w21")[0]
    assert [c for _, c in _classes(tok, system)] == [
        "template",
        "system",
        "system",
        "template",
        "user",
        "template",
    ]


def test_qwen_like_default_system_prompt_is_system():
    """A template that writes a default system turn (Qwen's): its text is ``system``, the role
    headers and end-of-turn tokens are ``template``, the request is ``user``."""
    tok = tiny_tokenizer()
    tok.chat_template = (
        "{% if messages[0]['role'] != 'system' %}<|user|> w30 w31 <|assistant|> {% endif %}"
        "{% for m in messages %}{% if m['role'] == 'system' %}<|user|> {{ m['content'] }} <|assistant|> "
        "{% else %}<|user|> {{ m['content'] }} {% endif %}{% endfor %}"
        "{% if add_generation_prompt %}<|assistant|>{% endif %}"
    )
    got = [c for _, c in _classes(tok, format_chat(tok, ["w10 w11"])[0])]
    assert got == ["template", "system", "system", "template", "template", "user", "user", "template"]
    given = [c for _, c in _classes(tok, format_chat(tok, ["w10"], system="w40")[0])]
    assert given == ["template", "system", "template", "template", "user", "template"]
    with pytest.raises(RefusalEvalError, match="does not follow the chat template"):
        position_classes(tok, tok("w10 w11", add_special_tokens=False).input_ids)


def test_spared_positions_mark_everything_but_the_request(qwen_tiny):
    tok = tiny_tokenizer()
    tok.padding_side = "left"  # as load_model sets it
    enc = encode_chat(tok, ["w10 w11 w12", "w13"])  # row 1 has two pads
    keep = spared_positions(tok, enc["input_ids"], enc["attention_mask"])
    assert keep.tolist() == [
        [True, False, False, False, True],
        [True, True, True, False, True],  # pad, pad, <|user|>, w13, <|assistant|>
    ]


def test_a_spared_prompt_pass_is_untouched_and_decode_steps_are_edited(qwen_tiny):
    tok = tiny_tokenizer()
    coder = make_coder("standard", layer=1, d_sae=256)
    latents = {1: list(range(0, 256, 3))}
    enc = encode_chat(tok, ["w10 w11 w12 w13", "w14 w15"])
    ids, mask = enc["input_ids"], enc["attention_mask"]
    keep = spared_positions(tok, ids, mask)
    seen: dict[str, torch.Tensor] = {}
    layer = qwen_tiny.model.layers[1]

    def grab(name):
        def hook(_m, _a, out):
            seen[name] = (out[0] if isinstance(out, tuple) else out).detach().clone()

        return hook

    with torch.no_grad():
        h = layer.register_forward_hook(grab("base"))
        base = qwen_tiny(ids, attention_mask=mask).logits
        h.remove()
        with ablate(qwen_tiny, latents, {1: coder}):
            h = layer.register_forward_hook(grab("all"))  # registered after the edit: sees it
            ablated = qwen_tiny(ids, attention_mask=mask).logits
            h.remove()
        spare = PositionFilter(torch.ones_like(keep))
        with ablate(qwen_tiny, latents, {1: coder}, spare=spare):
            assert torch.equal(qwen_tiny(ids, attention_mask=mask).logits, base)  # every position spared
            spare.keep = keep
            h = layer.register_forward_hook(grab("content"))
            qwen_tiny(ids, attention_mask=mask)
            h.remove()
            assert keep.shape[1] != 3  # a forward of another length (a decode step) is edited in full
            step = qwen_tiny(ids[:, :3], attention_mask=mask[:, :3]).logits
        with ablate(qwen_tiny, latents, {1: coder}):
            want_step = qwen_tiny(ids[:, :3], attention_mask=mask[:, :3]).logits
    assert not torch.allclose(ablated, base)
    k = keep[..., None]
    assert torch.equal(torch.where(k, seen["base"], seen["all"]), seen["content"])
    assert torch.equal(step, want_step)


def test_planted_refusal_latents_fire_from_the_trigger_onwards():
    """The planted model copies the refusal signal to every position after the trigger word: its
    necessary latents are silent on the first template token and fire on the request, the
    generation prompt and the answer."""
    from planted import TRIGGERS, PlantedChat, planted_saes

    from refusal_eval.report.positions import firing_by_position, positions_table

    chat = PlantedChat()
    word = {t: f"w{t - 6}" for t in TRIGGERS}  # token id t is word w{t-6} (6 special tokens first)
    prompts = [f"{word[TRIGGERS[0]]} w31 w32", f"w33 {word[TRIGGERS[1]]} w34"]
    report = firing_by_position(
        chat, planted_saes(), {0: [0, 1, 2]}, prompts, max_new_tokens=3, progress=False
    )
    rows = report["classes"]
    assert rows["system"]["positions"] == 0  # the tiny template writes no system turn
    assert rows["position 0"] == {
        "positions": 2,
        "mean_active": 0.0,
        "mass_share": 0.0,
        "mass_per_position": 0.0,
    }
    assert rows["user"]["positions"] == 6 and rows["generated"]["positions"] == 6
    assert rows["generated"]["mean_active"] == 3.0  # all three refusal latents, at every answer token
    # <|user|> (before any trigger: 0 active) and <|assistant|> (3 active) in each prompt
    assert rows["template"]["positions"] == 4 and rows["template"]["mean_active"] == 1.5
    assert rows["user"]["mean_active"] == 2.5  # prompt 2's first word precedes its trigger
    shares = sum(rows[c]["mass_share"] for c in ("system", "template", "user", "generated"))
    assert shares == pytest.approx(1.0)
    assert "| generated | 6 | 3.00 |" in positions_table(report)


def test_a_template_that_folds_the_system_text_into_the_user_turn():
    """Gemma 3 / Mistral style: a given system text is the user turn's first paragraph, so a
    user paragraph break is ambiguous; told that no system message was given, it stays user."""
    tok = tiny_tokenizer()
    tok.chat_template = (
        "<|user|> {% for m in messages %}{{ m['content'] }}{% if not loop.last %} w50 {% endif %}{% endfor %}"
        "{% if add_generation_prompt %} <|assistant|>{% endif %}"
    )
    layout = TemplateLayout.of(tok)
    assert (layout.before_system, layout.system_to_user) == ("<|user|> ", " w50 ")
    text = format_chat(tok, ["w10 w50 w11"])[0]  # a user prompt with the separator inside it
    ids = tok(text, add_special_tokens=False).input_ids
    assert position_classes(tok, ids, layout, system=False) == [
        "template",
        "user",
        "user",
        "user",
        "template",
    ]
    guessed = position_classes(tok, ids, layout)  # read off the text alone: taken for a system turn
    assert guessed == ["template", "system", "template", "user", "template"]


def test_an_integer_keep_mask_spares_like_a_boolean_one(qwen_tiny):
    tok = tiny_tokenizer()
    coder = make_coder("standard", layer=1, d_sae=256)
    enc = encode_chat(tok, ["w10 w11 w12"])
    keep = spared_positions(tok, enc["input_ids"], enc["attention_mask"])
    with torch.no_grad():
        with ablate(qwen_tiny, {1: list(range(0, 256, 3))}, {1: coder}, spare=PositionFilter(keep)):
            want = qwen_tiny(enc["input_ids"]).logits
        with ablate(qwen_tiny, {1: list(range(0, 256, 3))}, {1: coder}, spare=PositionFilter(keep.long())):
            got = qwen_tiny(enc["input_ids"]).logits
        with (
            ablate(qwen_tiny, {1: [0]}, {1: coder}, spare=PositionFilter(keep)),
            pytest.raises(
                RefusalEvalError, match="spared positions are given for 1 prompts, the forward has 2 rows"
            ),
        ):
            qwen_tiny(enc["input_ids"].repeat(2, 1))
    assert torch.equal(got, want)
