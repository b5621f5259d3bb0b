"""SAEs held one whole layer at a time: what a search over many wide SAEs keeps in memory.

A search reads each SAE whole only to rank candidates (decoder cosines) and to encode activations
(stage 3, the hydra test); everything it ablates (stage 2's candidates, the minimal sets, the
conditions' sets) needs just those latents' rows. :class:`StreamedSAEs` is a mapping whose
``saes[layer]`` loads that layer whole and drops the one held before, and whose :meth:`rows`
gives the rows of named latents of every layer. Peak memory: the model, one whole SAE and the
rows of the ablated latents, whatever the number of layers (JumpReLU and standard SAEs; a TopK
SAE's rows cannot be split from its encoder, so its layers are held whole where rows are asked).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import torch

from ..coders import SparseCoder
from ..hooks import HookPoint
from ._load import SAEBundle, load_saes

#: ``load(layer, latents)``: that layer's SAE holding ``latents`` (SAE ids), or whole for None
Loader = Callable[[int, Sequence[int] | None], SparseCoder]


@dataclass(frozen=True)
class SaeHeader:
    """What a search records of a layer's SAE without holding its weights."""

    d_sae: int
    hook: HookPoint
    architecture: str
    source: str
    sha256: str
    separable: bool


def header_of(coder: SparseCoder) -> SaeHeader:
    return SaeHeader(
        coder.d_sae, coder.hook, coder.architecture, coder.source, coder.weights_sha256(), coder.separable
    )


class StreamedSAEs(Mapping[int, SparseCoder]):
    """``saes[layer]`` is that layer's whole SAE, loaded on demand; this mapping holds at most
    one (a TopK layer's "rows" are the whole layer, held by whoever asked for them)."""

    def __init__(
        self,
        load: Loader,
        layers: Sequence[int],
        *,
        source: str = "code",
        ids: Mapping[int, str] | None = None,
    ) -> None:
        self._load, self._layers = load, sorted(set(layers))
        self.source, self.ids = source, dict(ids or {})
        self.headers: dict[int, SaeHeader] = {}
        for layer in self._layers:  # one at a time: a held-nothing coder, or the whole one dropped
            self.headers[layer] = header_of(load(layer, ()))
        self._held: tuple[int, SparseCoder] | None = None
        #: every whole load, in order (what the search cost in reads)
        self.whole_loads: list[int] = []

    def __getitem__(self, layer: int) -> SparseCoder:
        if layer not in self.headers:
            raise KeyError(layer)
        if self._held is None or self._held[0] != layer:
            self._held = None  # let the previous layer go before the next one is read
            self._held = (layer, self._load(layer, None))
            self.whole_loads.append(layer)
        return self._held[1]

    def __contains__(self, layer: object) -> bool:  # Mapping's default would load the layer
        return layer in self.headers

    def __iter__(self) -> Iterator[int]:
        return iter(self._layers)

    def __len__(self) -> int:
        return len(self._layers)

    def release(self) -> None:
        """Drop the whole layer held, if any."""
        self._held = None

    def rows(self, latents: Mapping[int, Sequence[int]]) -> SAEBundle:
        """Every layer holding only ``latents`` (none for a layer not named); TopK layers whole."""
        coders = {
            layer: self._load(layer, sorted(set(latents.get(layer, ()))))
            if self.headers[layer].separable
            else self[layer]
            for layer in self._layers
        }
        return SAEBundle(coders, self.source, self.ids)

    def describe(self) -> dict[str, Any]:
        h = self.headers
        return {
            "source": self.source,
            "ids": {str(k): v for k, v in sorted(self.ids.items())},
            "hooks": {str(k): c.hook.tl_name for k, c in sorted(h.items())},
            "d_sae": {str(k): c.d_sae for k, c in sorted(h.items())},
            "architecture": {str(k): c.architecture for k, c in sorted(h.items())},
            "held": {str(k): "streamed" for k in sorted(h)},
        }


def headers(saes: Mapping[int, SparseCoder]) -> dict[int, SaeHeader]:
    """Width, hook, architecture and fingerprint per layer, without loading a streamed SAE."""
    if isinstance(saes, StreamedSAEs):
        return dict(saes.headers)
    return {layer: header_of(c) for layer, c in sorted(saes.items())}


def widths(saes: Mapping[int, SparseCoder]) -> dict[int, int]:
    """``d_sae`` per layer (nothing loaded or hashed)."""
    if isinstance(saes, StreamedSAEs):
        return {layer: h.d_sae for layer, h in saes.headers.items()}
    return {layer: c.d_sae for layer, c in sorted(saes.items())}


def rows_of(saes: Mapping[int, SparseCoder], latents: Sequence[tuple[int, int]]) -> Mapping[int, SparseCoder]:
    """SAEs that can ablate any subset of ``latents``: their rows from streamed SAEs, else ``saes``."""
    if not isinstance(saes, StreamedSAEs):
        return saes
    per_layer: dict[int, list[int]] = {}
    for layer, i in latents:
        per_layer.setdefault(layer, []).append(i)
    return saes.rows(per_layer)


def stream_saes(
    source: str,
    layers: Sequence[int],
    ids: Sequence[str] | str | None = None,
    *,
    model: Any | None = None,
    device: str = "cpu",
    dtype: torch.dtype = torch.float32,
) -> StreamedSAEs:
    """:func:`load_saes` one layer at a time: whole layers on demand, rows from safetensors slices
    (local directories and the shipped releases; a hub release is downloaded once, then read per
    layer from its cache)."""
    layers = sorted(set(layers))
    if isinstance(ids, str):
        ids = [ids.format(layer=layer) for layer in layers]
    per_layer = dict(zip(layers, ids, strict=True)) if ids is not None else {}

    def load(layer: int, latents: Sequence[int] | None) -> SparseCoder:
        one = [per_layer[layer]] if per_layer else None
        held = None if latents is None else {layer: list(latents)}
        bundle = load_saes(source, [layer], one, latents=held, model=model, device=device, dtype=dtype)
        names.setdefault(layer, bundle.ids.get(layer, ""))
        return bundle[layer]

    names: dict[int, str] = {}
    out = StreamedSAEs(load, layers, source=source)
    out.ids = names
    return out
