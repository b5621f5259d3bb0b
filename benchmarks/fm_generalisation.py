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
from refusal_eval.search.interactions import fit_fm_ensemble, fit_probe, split
from refusal_eval.search.pipeline import PromptSets
from refusal_eval.search.plan import AblationPlan
from refusal_eval.search.stage3 import scale_by_training_max

#: one change at a time against the shipped settings (None: the config's value)
VARIANTS: list[tuple[str, dict[str, float]]] = [
    ("config defaults (rank 20, lr 1e-3, 20 epochs, the plan's init)", {}),
    ("init_std 0.1", {"init_std": 0.1}),
    ("init_std 0.01", {"init_std": 0.01}),
    ("init_std 0.01, epochs 60", {"init_std": 0.01, "epochs": 60}),
    ("init_std 0.001", {"init_std": 0.001}),
    ("L2 0.01 on w and V", {"l2_linear": 0.01, "l2_factors": 0.01}),
    ("L2 0.1 on w and V", {"l2_linear": 0.1, "l2_factors": 0.1}),
    ("rank 4", {"rank": 4}),
    ("epochs 60", {"epochs": 60}),
    ("init_std 0.1, 5 FMs averaged", {"init_std": 0.1, "ensemble": 5}),
    ("init_std 0.01, 5 FMs averaged", {"init_std": 0.01, "ensemble": 5}),
]


def _fit(
    xs: torch.Tensor, y: torch.Tensor, train: torch.Tensor, test: torch.Tensor, seed: int, **kw: float
) -> tuple[float, float]:
    """Train and held-out accuracy of one FM, or of ``ensemble`` FMs' averaged logits (stage 3's
    own :func:`fit_fm_ensemble`, members seeded ``seed * 100 + i``)."""
    n = int(kw.pop("ensemble", 1))
    fit = fit_fm_ensemble(xs, y, train, test, members=n, seed=seed * 100, **kw)
    return fit.train_accuracy, fit.test_accuracy


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--model", default="default", help="a registered model: its shipped plan")
    ap.add_argument("--plan", default=None, help="a plan file (default: the model's shipped plan)")
    ap.add_argument("--dtype", default="float32")
    ap.add_argument("--json", default=None)
    ap.add_argument("--seeds", type=int, default=3, help="FM seeds per variant")
    ap.add_argument("--splits", type=int, default=1, help="train/test splits (seed, seed+1, ...)")
    ap.add_argument("--old-scaling", action="store_true", help="also fit with the pre-fix scaling")
    ap.add_argument("--threads", type=int, default=2, help="torch threads (1 when the cores are shared)")
    ap.add_argument("--only", nargs="*", default=None, help="variants whose name contains one of these")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    plan = AblationPlan.load(args.plan or default_plan(args.model))
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
    scalings = [("old scaling (floor 1e-6)", before), ("fixed scaling (unseen -> 0)", x)][
        args.old_scaling is False :
    ]
    # more splits than the plan's one: on 16-18 held-out prompts one prompt is 0.06
    splits = [split(len(y), cfg.test_frac, cfg.seed + k, y) for k in range(args.splits)]
    report["splits"] = args.splits  # type: ignore[index]
    probes = [fit_probe(x, y, tr_, te_, c=cfg.probe_l2).test_accuracy for tr_, te_ in splits]
    report["probe_per_split"] = probes  # type: ignore[index]
    print(f"probe held-out accuracy over {args.splits} splits: {sum(probes) / len(probes):.3f} ({probes})")
    chosen = [v for v in VARIANTS if not args.only or any(o in v[0] for o in args.only)]
    for (name, change), (scaling, xs) in [(v, s) for s in scalings for v in chosen]:
        name = f"{scaling}: {name}"
        kw = {"rank": cfg.fm_rank, "lr": cfg.fm_lr, "epochs": cfg.fm_epochs,
              "batch_size": cfg.fm_batch_size, "init_std": cfg.fm_init_std, **change}  # fmt: skip
        fits = [
            _fit(xs, y, tr_, te_, seed=cfg.seed + s, **kw) for tr_, te_ in splits for s in range(args.seeds)
        ]
        tr = sum(f[0] for f in fits) / len(fits)
        te = [f[1] for f in fits]
        print(
            f"| {name} | {tr:.3f} | {sum(te) / len(te):.3f} | {', '.join(f'{v:.3f}' for v in te)} |",
            flush=True,
        )
        report["variants"].append({"name": name, "change": change, "train": tr, "test": te})  # type: ignore[attr-defined]
    if args.json:
        Path(args.json).write_text(json.dumps(report, indent=1) + "\n")


if __name__ == "__main__":
    main()
