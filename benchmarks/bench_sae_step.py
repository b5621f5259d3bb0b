"""One SAE training step (sae-lens' own ``SAETrainer.step``) in fp32 vs bf16 autocast, side by side.

What ``train-sae --autocast`` buys: when one forward feeds eight SAEs (``--layer 6,8,...``), the
SAE steps, not the model, are most of a run. A TopK SAE of the shipped 0.5B shapes (d_in 896,
width 2048, k 64) steps on the same random batch of 2,048 tokens, the two precisions
alternating; the best of the rounds is reported (weights and optimizer stay fp32 either way).

    .venv/bin/python benchmarks/bench_sae_step.py [--width 2048] [--rounds 2]
"""

from __future__ import annotations

import argparse
import time
from typing import Any

import torch


def _trainer(width: int, d_in: int, autocast: bool) -> Any:
    import sae_lens
    from sae_lens.config import LoggingConfig, SAETrainerConfig
    from sae_lens.training.sae_trainer import SAETrainer

    sae = sae_lens.TopKTrainingSAE(sae_lens.TopKTrainingSAEConfig(k=64, d_in=d_in, d_sae=width))
    cfg = SAETrainerConfig(
        n_checkpoints=0, checkpoint_path=None, save_final_checkpoint=False, total_training_samples=10**6,
        device="cpu", autocast=autocast, lr=1e-3, lr_end=1e-4, lr_scheduler_name="constant",
        lr_warm_up_steps=1, adam_beta1=0.9, adam_beta2=0.999, lr_decay_steps=1, n_restart_cycles=1,
        train_batch_size_samples=2048, dead_feature_window=10, feature_sampling_window=50,
        logger=LoggingConfig(log_to_wandb=False),
    )  # fmt: skip
    return SAETrainer(cfg=cfg, sae=sae, data_provider=iter(()), evaluator=None, save_checkpoint_fn=None)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--width", type=int, default=2048)
    ap.add_argument("--d-in", type=int, default=896)
    ap.add_argument("--rounds", type=int, default=2)
    ap.add_argument("--steps", type=int, default=10)
    args = ap.parse_args()
    torch.manual_seed(0)
    x = torch.randn(2048, args.d_in)
    print(f"cpu capability {torch.backends.cpu.get_cpu_capability()}, {torch.get_num_threads()} threads")
    best: dict[bool, float] = {}
    for _ in range(args.rounds):
        for autocast in (False, True):
            trainer = _trainer(args.width, args.d_in, autocast)
            for _ in range(3):  # warm-up
                trainer.step(x)
            t0 = time.perf_counter()
            for _ in range(args.steps):
                trainer.step(x)
            dt = (time.perf_counter() - t0) / args.steps
            best[autocast] = min(best.get(autocast, dt), dt)
    for autocast, dt in best.items():
        name = "bf16 autocast" if autocast else "fp32"
        print(f"{name:14s} {dt * 1000:6.0f} ms per 2,048-token step ({dt / 2048 * 1e3:.3f} ms per token)")
    print(f"fp32 / autocast: {best[False] / best[True]:.2f}x")


if __name__ == "__main__":
    main()
