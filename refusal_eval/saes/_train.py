"""Train a residual-stream SAE for a model that has none, with the sae-lens trainer.

The training text (:func:`build_corpus`) is chat-formatted: the user turns of the harmful and
harmless *train* prompts, the model's own greedy answers to a sample of them (assistant-turn
activations matter for refusal) and the human-labelled XSTest completions as assistant turns.
Validation and test prompts never enter it. Token sequences are cached (JSON) per model.

The model is wrapped in sae-lens' ``HookedProxyLM``; the activation store stops the forward at
the hooked layer (the deepest one when :func:`train_saes` trains several from one forward). The
output is a plain sae-lens directory (``cfg.json`` + ``sae_weights.safetensors``) per SAE whose
metadata names the hook both ways.
"""

from __future__ import annotations

import hashlib
import json
import logging
import random
import shutil
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch

from .._cache import atomic_write, cache_dir
from ..chat import format_chat, generate
from ..data import XSTEST_COMPLETION_FILES, load_prompts, xstest_completions
from ..errors import RefusalEvalError
from ..hooks import HookPoint
from ._checkpoints import (
    TRAIN_STATE,
    checkpointing_multi_runner,
    checkpointing_runner,
    resume_point,
    write_train_state,
)
from ._config import CorpusConfig, TrainConfig

log = logging.getLogger(__name__)


def _chat_with_answer(tokenizer: Any, prompt: str, answer: str) -> str:
    messages = [{"role": "user", "content": prompt}, {"role": "assistant", "content": answer}]
    return str(tokenizer.apply_chat_template(messages, tokenize=False))


def build_corpus(chat: Any, cfg: CorpusConfig | None = None, *, progress: bool = True) -> list[list[int]]:
    """Token id sequences of the training text (cached per model revision + config)."""
    cfg = cfg or CorpusConfig()
    key = hashlib.sha256(json.dumps([chat.revision or chat.source, cfg.__dict__]).encode()).hexdigest()
    path = cache_dir("corpora") / f"{key[:16]}.json"
    if path.exists():
        try:
            sequences: list[list[int]] = json.loads(path.read_text())["sequences"]
            return sequences
        except (ValueError, KeyError):
            log.warning("discarding corrupt corpus cache %s", path)
    rng = random.Random(cfg.seed)
    harmful = [p.text for p in load_prompts("harmful_train")]
    harmless = [p.text for p in load_prompts("harmless_train")][: cfg.max_harmless]
    texts = format_chat(chat.tokenizer, harmful + harmless)
    half = cfg.n_answered // 2
    to_answer = rng.sample(harmful, min(half, len(harmful))) + rng.sample(harmless, half)
    answers = generate(
        chat.model,
        chat.tokenizer,
        to_answer,
        max_new_tokens=cfg.answer_tokens,
        batch_size=16,
        progress=progress,
    )
    texts += [_chat_with_answer(chat.tokenizer, p, a) for p, a in zip(to_answer, answers, strict=True)]
    for source in XSTEST_COMPLETION_FILES:
        texts += [
            _chat_with_answer(chat.tokenizer, r["prompt"], r["completion"])
            for r in xstest_completions(source)
        ]
    rng.shuffle(texts)
    sequences = [chat.tokenizer(t, add_special_tokens=False)["input_ids"] for t in texts]
    atomic_write(path, json.dumps({"config": cfg.__dict__, "sequences": sequences}))
    return sequences


def pack(sequences: list[list[int]], context_size: int) -> list[list[int]]:
    """Concatenate the sequences into one stream and cut it into ``context_size`` rows (the
    sae-lens store needs fixed-length pretokenized rows; a short tail is dropped)."""
    stream = [t for seq in sequences for t in seq]
    return [stream[i : i + context_size] for i in range(0, len(stream) - context_size + 1, context_size)]


def _sae_config(cfg: TrainConfig, d_in: int) -> Any:
    import sae_lens

    common = {"d_in": d_in, "d_sae": cfg.width}
    if cfg.arch == "topk":
        return sae_lens.TopKTrainingSAEConfig(k=cfg.k, aux_loss_coefficient=cfg.aux_coefficient, **common)
    if cfg.arch == "jumprelu":
        return sae_lens.JumpReLUTrainingSAEConfig(l0_coefficient=cfg.l0_coefficient, **common)
    return sae_lens.StandardTrainingSAEConfig(l1_coefficient=cfg.l1_coefficient, **common)


def check_train_args(cfg: TrainConfig, n_layers: int, out: Path) -> None:
    if cfg.width < 1:
        raise RefusalEvalError(f"--width must be at least 1, got {cfg.width}", "pass e.g. --width 4096")
    if cfg.aux_coefficient < 0:
        raise RefusalEvalError(
            f"--aux-coef must be >= 0, got {cfg.aux_coefficient}", "pass e.g. --aux-coef 1.0"
        )
    if cfg.n_checkpoints < 0:
        raise RefusalEvalError(
            f"--checkpoints must be >= 0, got {cfg.n_checkpoints}", "pass e.g. --checkpoints 4"
        )
    if cfg.tokens < cfg.batch_tokens:
        raise RefusalEvalError(
            f"--tokens {cfg.tokens} is below one batch ({cfg.batch_tokens})", "train on more tokens"
        )
    if not 0 <= cfg.layer < n_layers:
        raise RefusalEvalError(
            f"layer {cfg.layer} is out of range: the model has {n_layers} layers (0..{n_layers - 1})",
            "pick a layer inside the model",
        )
    try:
        out.mkdir(parents=True, exist_ok=True)
        probe = out / ".write-test"
        probe.write_text("")
        probe.unlink()
    except OSError as exc:
        raise RefusalEvalError(
            f"cannot write to {out}: {exc.strerror}", "choose a writable --out dir"
        ) from None


def _runner_args(chat: Any, cfg: TrainConfig, out: Path, start: Path | None) -> dict[str, Any]:
    """What the single- and the multi-SAE runner configs share (the same names in both)."""
    return {
        "model_name": chat.spec,
        "model_class_name": "AutoModelForCausalLM",
        "dataset_path": "local",
        "streaming": False,
        "context_size": cfg.context_size,
        "prepend_bos": False,
        "seqpos_slice": (1, None),  # position 0 of a window is an attention sink with a huge norm
        "training_tokens": cfg.tokens,
        "train_batch_size_tokens": cfg.batch_tokens,
        "store_batch_size_prompts": 16,
        # the mixing buffer holds n_batches_in_buffer x context tokens: keep >= 4 train batches
        "n_batches_in_buffer": max(16, -(-4 * cfg.batch_tokens // (cfg.context_size - 1))),
        "lr": cfg.lr,
        "dead_feature_window": cfg.dead_feature_window,
        "feature_sampling_window": max(cfg.dead_feature_window, 50),
        "lr_warm_up_steps": max(1, cfg.tokens // cfg.batch_tokens // 20),
        "lr_decay_steps": max(1, cfg.tokens // cfg.batch_tokens // 5),
        "device": str(chat.device),
        "dtype": "float32",
        "autocast": cfg.autocast,
        "seed": cfg.seed,
        "n_checkpoints": cfg.n_checkpoints,
        "resume_from_checkpoint": None if start is None else str(start),
        "checkpoint_path": str(out / "checkpoints"),
        "output_path": str(out),
        "n_eval_batches": 2,
    }


def _start(out: Path, cfgs: Sequence[TrainConfig], revision: str | None, resume: bool) -> Path | None:
    torch.manual_seed(cfgs[0].seed)
    start = resume_point(out, cfgs, revision) if resume else None
    if start is None:
        shutil.rmtree(out / "checkpoints", ignore_errors=True)  # a fresh run: drop a stale one
    write_train_state(out, cfgs, revision)
    return start


def _finish(out: Path) -> None:
    shutil.rmtree(out / "checkpoints", ignore_errors=True)
    (out / TRAIN_STATE).unlink(missing_ok=True)


def train_sae(
    chat: Any, sequences: list[list[int]], cfg: TrainConfig, out: Path, *, resume: bool = False
) -> Path:
    """Train with sae-lens and write a sae-lens directory to ``out``; returns ``out``.

    A full checkpoint is kept under ``out/checkpoints`` (``cfg.n_checkpoints`` times per run and on
    Ctrl-C); ``resume=True`` continues the newest one of an unfinished run with the same config."""
    import datasets
    from sae_lens import LanguageModelSAERunnerConfig, LanguageModelSAETrainingRunner, LoggingConfig
    from sae_lens.load_model import HookedProxyLM

    check_train_args(cfg, chat.n_layers, out)
    hook = HookPoint(cfg.layer)
    start = _start(out, [cfg], chat.revision, resume)
    runner_cfg = LanguageModelSAERunnerConfig(
        sae=_sae_config(cfg, chat.d_model),
        hook_name=hook.hf_name,
        is_dataset_tokenized=True,
        logger=LoggingConfig(log_to_wandb=False),
        verbose=True,
        **_runner_args(chat, cfg, out, start),
    )
    dataset = datasets.Dataset.from_dict({"input_ids": pack(sequences, cfg.context_size)})
    proxy = HookedProxyLM(chat.model, chat.tokenizer, hook_names=[hook.hf_name])
    runner = checkpointing_runner(LanguageModelSAETrainingRunner)(
        runner_cfg, override_dataset=dataset, override_model=proxy
    )
    runner.run()
    _write_metadata(out, hook, chat, cfg, n_sequences=len(sequences))
    _finish(out)
    return out


def layer_dir(layer: int) -> str:
    """The folder of one layer's SAE in a multi-layer run, as in a shipped release."""
    return f"layer_{layer}"


def check_same_run(cfgs: Sequence[TrainConfig]) -> None:
    """SAEs trained together share everything but their layer (one forward feeds them all)."""
    layers = [c.layer for c in cfgs]
    if len(set(layers)) != len(layers):
        raise RefusalEvalError(f"layer listed twice in {layers}", "list each layer once, e.g. --layer 4,8,12")
    first = {k: v for k, v in cfgs[0].__dict__.items() if k != "layer"}
    for c in cfgs[1:]:
        if {k: v for k, v in c.__dict__.items() if k != "layer"} != first:
            raise RefusalEvalError(
                "SAEs trained in one run must share every setting but the layer",
                "train differing SAEs in separate runs",
            )


def train_saes(
    chat: Any, sequences: list[list[int]], cfgs: Sequence[TrainConfig], out: Path, *, resume: bool = False
) -> dict[int, Path]:
    """Train one SAE per config from one shared forward pass (sae-lens' multi-SAE runner): the
    model runs once per batch up to the deepest layer and every SAE steps on its own layer's
    activations, each with its own optimizer, schedule and dead-latent tracking, exactly as a
    single-layer run. Writes ``out/layer_L/`` per layer (a release's layout); returns those paths.
    Checkpoints and ``resume`` work as in :func:`train_sae`."""
    import datasets
    from sae_lens import LoggingConfig
    from sae_lens.load_model import HookedProxyLM
    from sae_lens.multi_sae_training_runner import MultiSAETrainingRunnerConfig

    check_same_run(cfgs)
    for c in cfgs:
        check_train_args(c, chat.n_layers, out)
    hooks = {layer_dir(c.layer): HookPoint(c.layer) for c in cfgs}
    start = _start(out, cfgs, chat.revision, resume)
    runner_cfg = MultiSAETrainingRunnerConfig(
        saes={layer_dir(c.layer): _sae_config(c, chat.d_model) for c in cfgs},
        hook_names={name: h.hf_name for name, h in hooks.items()},
        logger=LoggingConfig(log_to_wandb=False),
        **_runner_args(chat, cfgs[0], out, start),
    )
    dataset = datasets.Dataset.from_dict({"input_ids": pack(sequences, cfgs[0].context_size)})
    proxy = HookedProxyLM(chat.model, chat.tokenizer, hook_names=[h.hf_name for h in hooks.values()])
    runner = checkpointing_multi_runner()(runner_cfg, override_dataset=dataset, override_model=proxy)
    runner.run()
    for c in cfgs:
        _write_metadata(out / layer_dir(c.layer), HookPoint(c.layer), chat, c, n_sequences=len(sequences))
    _finish(out)
    return {c.layer: out / layer_dir(c.layer) for c in cfgs}


def sae_model_metadata(info: dict[str, Any], spec: str, revision: str | None) -> dict[str, Any]:
    """sae-lens' ``model_name`` / ``model_revision`` as sae-lens users expect them: the model's HF
    id (a registered offline model trains on a dequantized GGUF of it: said under
    ``refusal_eval_model``) and an HF revision only when there is one (a GGUF's sha256 is not)."""
    hub_id = info.get("hub_id")
    if not hub_id:
        return {"model_name": info.get("name", spec), "model_revision": revision}
    return {
        "model_name": hub_id,
        "model_revision": None,
        "refusal_eval_model": {
            "name": info.get("name", spec),
            "trained_on": f"a Q4 GGUF of {hub_id}, dequantized to bf16 (refusal_eval's offline model)",
            "gguf_sha256": revision,
        },
    }


def _write_metadata(out: Path, hook: HookPoint, chat: Any, cfg: TrainConfig, n_sequences: int) -> None:
    cfg_file = out / "cfg.json"
    body = json.loads(cfg_file.read_text())
    meta = body.setdefault("metadata", {})
    meta.update(sae_model_metadata(chat.info, chat.spec, chat.revision))
    meta.update(
        {
            "hook_name": hook.tl_name,
            "hf_hook_name": hook.hf_name,
            "refusal_eval_training": {**cfg.__dict__, "corpus_sequences": n_sequences},
        }
    )
    cfg_file.write_text(json.dumps(body, indent=2))
