"""Registered offline models: chat models assembled from pinned PyPI part packages."""

from __future__ import annotations

from dataclasses import dataclass

from .._registry import Registry


@dataclass(frozen=True)
class OfflineModel:
    """A GGUF split across PyPI packages ``{module_prefix}{i}`` (``data/part*.bin`` inside each),
    concatenated in order and checked against ``sha256``. ``hub_id`` is the same model on the hub."""

    name: str
    hub_id: str
    module_prefix: str
    n_parts: int
    sha256: str
    pip_requirement: str
    aliases: tuple[str, ...] = ()
    #: Tokens whose probability at the first answer position is the search-time refusal proxy.
    refusal_tokens: tuple[str, ...] = ("I", "Sorry", "As")
    #: The SAE release used when none is named (``pretrained=default`` alone, ``search`` without
    #: ``--saes``): a release shipped with refusal_eval or a sae-lens release name.
    default_saes: str | None = None
    #: The layers of ``default_saes`` used when none are named: those its shipped plan was searched
    #: over, so ``plan=auto`` finds that plan while the release grows (None: every layer it has).
    default_sae_layers: tuple[int, ...] | None = None
    #: The search settings that shipped plan was searched with (config key, value), e.g. the
    #: paper's per-model K (``top_k``). They sit under every setting the user makes and apply only
    #: with ``default_saes``: ``plan=auto`` with the defaults then finds that plan by its key, and
    #: ``refusal-eval search --model NAME`` reproduces it.
    default_search: tuple[tuple[str, int | float | str], ...] = ()

    def part_modules(self) -> list[str]:
        return [f"{self.module_prefix}{i}" for i in range(1, self.n_parts + 1)]


_MODELS: Registry[OfflineModel] = Registry("offline model", fold_case=True)


def register_offline_model(model: OfflineModel) -> OfflineModel:
    """Register under its name and aliases (case-insensitive); a taken name raises."""
    return _MODELS.register(model.name, *model.aliases)(model)


def offline_model(name: str) -> OfflineModel | None:
    return _MODELS.find(name)


def offline_model_names() -> list[str]:
    return sorted({m.name for _, m in _MODELS.items()})
