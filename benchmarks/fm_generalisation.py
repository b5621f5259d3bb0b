"""Why the stage-3 factorization machine overfits, and what makes it generalise.

Rebuilds stage 3's exact inputs for a registered model's shipped plan (``--model``): the
refused harmful prompts and the size-matched answered harmless ones of its screen, max-pooled
SAE activations on its layers, the same stratified split and max-scaling. Then it fits the FM
under one change at a time and the probe beside it. Activations are computed in ``--dtype``
(fp32 by default: bf16 is emulated on AVX2-only CPUs; the plan was searched in bf16, so the
inputs differ in rounding only).

    HF_HUB_OFFLINE=1 .venv/bin/python benchmarks/fm_generalisation.py [--model NAME] [--json OUT]
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import torch

from refusal_eval.config import SearchConfig
from refusal_eval.models import load_model
from refusal_eval.saes import load_saes
from refusal_eval.search.activations import pooled_activations
from refusal_eval.search.auto import default_plan
from refusal_eval.search.interactions import fit_fm, fit_probe, split
from refusal_eval.search.pipeline import PromptSets
from refusal_eval.search.plan import AblationPlan
from refusal_eval.search.stage3 import scale_by_training_max

#: one change at a time against the shipped settings (None: the config's value)
VARIANTS: list[tuple[str, dict[str, float]]] = [
    ("config defaults (rank 20, lr 1e-3, 20 epochs, init 0.1)", {}),
    ("init_std 0.01", {"init_std": 0.01}),
    ("init_std 0.01, epochs 60", {"init_std": 0.01, "epochs": 60}),
    ("init_std 0.001", {"init_std": 0.001}),
    ("L2 0.01 on w and V", {"l2_linear": 0.01, "l2_factors": 0.01}),
    ("L2 0.1 on w and V", {"l2_linear": 0.1, "l2_factors": 0.1}),
    ("rank 4", {"rank": 4}),
    ("epochs 60", {"epochs": 60}),
]


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--model", default="default", help="a registered model: its shipped plan")
    ap.add_argument("--dtype", default="float32")
    ap.add_argument("--json", default=None)
    ap.add_argument("--seeds", type=int, default=3, help="FM seeds per variant")
    args = ap.parse_args()
    torch.set_num_threads(2)
    plan = AblationPlan.load(default_plan(args.model))
    body = plan.body
    cfg = SearchConfig().replace(**body.config)
    prompts = PromptSets.from_config(cfg)
    described = prompts.describe()
    assert all(described[k]["sha256"] == v.sha256 for k, v in body.data.items()), "prompt sets changed"
    harmful = [prompts.harmful[i] for i in body.screen.refused_harmful]
    answered = [prompts.harmless[i] for i in body.screen.answered_harmless]
    harmless = answered[: len(harmful)] or prompts.harmless
    chat = load_model(args.model, dtype=args.dtype)
    saes = load_saes(body.saes.source, layers=sorted(body.saes.layers), model=chat)
    t0 = time.time()
    pool = {"saes": saes, "pool": cfg.pool, "batch_size": 16}
    act_h = pooled_activations(chat.model, chat.tokenizer, harmful, **pool).dense()
    act_b = pooled_activations(chat.model, chat.tokenizer, harmless, **pool).dense()
    print(f"activations of {len(harmful)} + {len(harmless)} prompts in {time.time() - t0:.0f} s")
    from refusal_eval.search.activations import feature_index

    index = feature_index(saes)
    pos = {f: i for i, f in enumerate(index)}
    active = set(torch.nonzero(act_h.amax(0) > 0).flatten().tolist())
    columns = sorted(active | {pos[u] for u in body.stage2.union})
    x = torch.cat([act_h, act_b])[:, columns]
    y = torch.cat([torch.ones(len(harmful)), torch.zeros(len(harmless))])
    train, test = split(len(y), cfg.test_frac, cfg.seed, y)
    raw = x
    unseen = int((raw[train].amax(0) == 0).sum())
    before = raw / raw[train].amax(0).clamp_min(1e-6)  # the scaling the shipped plan was searched with
    x, _ = scale_by_training_max(raw, train)
    print(f"{unseen} features never active in a training row; under the old scaling their held-out "
          f"values reach {float(before[:, raw[train].amax(0) == 0].max()):.3g}")  # fmt: skip
    probe = fit_probe(x, y, train, test, c=cfg.probe_l2)
    print(f"{x.shape[1]} features, {len(train)} train / {len(test)} test prompts")
    s3 = body.stage3
    print(f"probe: train {probe.train_accuracy:.3f} test {probe.test_accuracy:.3f} "
          f"(shipped plan: FM {s3.fm.test_accuracy:.3f}, probe {s3.probe.test_accuracy:.3f})")  # fmt: skip
    print("| FM variant | train acc | held-out acc (mean over seeds) | per seed |")
    print("| --- | --- | --- | --- |")
    report = {"n_features": x.shape[1], "n_train": len(train), "n_test": len(test), "unseen": unseen,
              "probe": [probe.train_accuracy, probe.test_accuracy], "variants": []}  # fmt: skip
    scalings = [("old scaling (floor 1e-6)", before), ("fixed scaling (unseen -> 0)", x)]
    for (name, change), (scaling, xs) in [(v, s) for s in scalings for v in VARIANTS]:
        name = f"{scaling}: {name}"
        kw = {"rank": cfg.fm_rank, "lr": cfg.fm_lr, "epochs": cfg.fm_epochs,
              "batch_size": cfg.fm_batch_size, "init_std": cfg.fm_init_std, **change}  # fmt: skip
        fits = [fit_fm(xs, y, train, test, seed=cfg.seed + s, **kw) for s in range(args.seeds)]  # type: ignore[arg-type]
        tr = sum(f.train_accuracy for f in fits) / len(fits)
        te = [f.test_accuracy for f in fits]
        print(
            f"| {name} | {tr:.3f} | {sum(te) / len(te):.3f} | {', '.join(f'{v:.3f}' for v in te)} |",
            flush=True,
        )
        report["variants"].append({"name": name, "change": change, "train": tr, "test": te})  # type: ignore[attr-defined]
    if args.json:
        Path(args.json).write_text(json.dumps(report, indent=1) + "\n")


if __name__ == "__main__":
    main()
