"""A key/value cache that reserves room for the tokens still to come, for the study's greedy loop.

transformers' ``DynamicCache`` grows by concatenation: every decode step copies every layer's whole
cache to append one token, which was 28 % of the CPU time of a 32-row batch of the local teacher
(torch.profiler, benchmarks/README.md). ``ReservedLayer`` keeps each layer's keys and values in a
buffer with room for the reply and writes each new token in place; the attention reads the filled
part, a view. Dropping finished rows (``batch_select_indices``) moves the kept rows up in place,
copying only their filled positions. Same keys and values, same attention, so the same replies (tested).
"""

from __future__ import annotations

import torch
from transformers.cache_utils import DynamicCache, DynamicLayer


class ReservedLayer(DynamicLayer):
    """A ``DynamicLayer`` whose keys and values sit in buffers with ``room`` more positions reserved."""

    def __init__(self, room: int):
        super().__init__()
        self.room = room
        self.length = 0
        self.key_buffer: torch.Tensor | None = None
        self.value_buffer: torch.Tensor | None = None

    def _allocate(self, keys: torch.Tensor, values: torch.Tensor, capacity: int) -> None:
        batch, heads, length, _ = keys.shape
        self.key_buffer = keys.new_empty((batch, heads, capacity, keys.shape[-1]))
        self.value_buffer = values.new_empty((batch, heads, capacity, values.shape[-1]))
        self.key_buffer[:, :, :length] = keys
        self.value_buffer[:, :, :length] = values
        self.length = length
        self._expose()

    def _expose(self) -> None:
        self.keys = self.key_buffer[:, :, : self.length]
        self.values = self.value_buffer[:, :, : self.length]

    def update(self, key_states: torch.Tensor, value_states: torch.Tensor, *args, **kwargs):
        if not self.is_initialized:
            self.dtype, self.device, self.is_initialized = key_states.dtype, key_states.device, True
            self._allocate(key_states, value_states, key_states.shape[-2] + self.room)
            return self.keys, self.values
        start, end = self.length, self.length + key_states.shape[-2]
        if end > self.key_buffer.shape[-2]:  # past the reserve: grow, reserving as much again
            self._allocate(self.keys, self.values, end + self.room)
        self.key_buffer[:, :, start:end] = key_states
        self.value_buffer[:, :, start:end] = value_states
        self.length = end
        self._expose()
        return self.keys, self.values

    def get_seq_length(self) -> int:
        return self.length if self.is_initialized else 0

    def batch_select_indices(self, indices: torch.Tensor) -> None:
        """Keep the rows ``indices`` (ascending, as the greedy loop gives them) in place: each kept row
        moves up to its new place in the same buffer, copying only its filled positions; the rows before
        the first dropped one do not move. Copying every row's whole buffer (reserve included) to a new
        tensor made the reserved cache slower than concatenation in bf16 (benchmarks/README.md)."""
        if not self.is_initialized:
            return
        keep = indices.tolist()
        if any(b <= a for a, b in zip(keep, keep[1:])):  # not ascending: moving in place could overwrite a row
            self.key_buffer, self.value_buffer = self.key_buffer[indices], self.value_buffer[indices]
            self._expose()
            return
        moved = [(to, frm) for to, frm in enumerate(keep) if to != frm]
        if moved:
            to = torch.tensor([t for t, _ in moved], device=self.key_buffer.device)
            frm = torch.tensor([f for _, f in moved], device=self.key_buffer.device)
            for buffer in (self.key_buffer, self.value_buffer):
                buffer[to, :, : self.length] = buffer[frm, :, : self.length]
        self.key_buffer, self.value_buffer = self.key_buffer[: len(keep)], self.value_buffer[: len(keep)]
        self._expose()


def reserved_cache(cache: DynamicCache | None, layers: int, room: int) -> DynamicCache:
    """``cache``'s keys and values (or none yet) in ``layers`` reserved layers with ``room`` positions to spare."""
    out = DynamicCache()
    out.layers = [ReservedLayer(room) for _ in range(layers)]
    if cache is not None:
        for layer, old in zip(out.layers, cache.layers):
            layer.update(old.keys, old.values)
    return out


def supports_reserved_cache(config) -> bool:
    """Only where every layer attends to all earlier tokens: a sliding-window layer keeps a window, not a reserve."""
    types = getattr(config, "layer_types", None)
    return (not getattr(config, "sliding_window", None) or getattr(config, "use_sliding_window", True) is False) and (
        types is None or all(t == "full_attention" for t in types))
