"""SAEs on the residual stream: load them (a shipped release, a local sae-lens directory or a
sae-lens release), train one with the sae-lens trainer (resumable), and measure its quality.

Shipped releases live in ``refusal_eval/data/saes/<release>/<layer>/``.
"""

from ._checkpoints import checkpoints, resume_point
from ._config import Arch, CorpusConfig, TrainConfig
from ._firing import RARE, Firing, firing_counts, firing_summary, heldout_prompts
from ._load import (
    RELEASE_ID_TEMPLATES,
    SAEBundle,
    check_saes,
    from_sae_lens,
    hook_of,
    id_layer,
    is_local_source,
    load_saes,
    release_ids,
    resolve_release_ids,
    shipped_releases,
    to_sae_lens,
)
from ._report import SAEQuality, heldout_texts, sae_qualities, sae_quality
from ._stream import SaeHeader, StreamedSAEs, headers, rows_of, stream_saes
from ._train import build_corpus, check_same_run, check_train_args, layer_dir, pack, train_sae, train_saes

__all__ = [
    "RARE",
    "RELEASE_ID_TEMPLATES",
    "Arch",
    "CorpusConfig",
    "Firing",
    "SAEBundle",
    "SAEQuality",
    "SaeHeader",
    "StreamedSAEs",
    "TrainConfig",
    "build_corpus",
    "check_saes",
    "check_same_run",
    "check_train_args",
    "checkpoints",
    "firing_counts",
    "firing_summary",
    "from_sae_lens",
    "headers",
    "heldout_prompts",
    "heldout_texts",
    "hook_of",
    "id_layer",
    "is_local_source",
    "layer_dir",
    "load_saes",
    "pack",
    "release_ids",
    "resolve_release_ids",
    "resume_point",
    "rows_of",
    "sae_qualities",
    "sae_quality",
    "shipped_releases",
    "stream_saes",
    "to_sae_lens",
    "train_sae",
    "train_saes",
]
