"""Coding tables kept as buffers, rebuilt automatically when they go stale."""

from __future__ import annotations

import hashlib

import numpy as np
import torch
from torch import nn

from .coder import CodingTables


class TableModule(nn.Module):
    """Base for entropy models that code with integer tables.

    The tables are ordinary (persistent) buffers, so a saved checkpoint carries
    the exact integers its files were coded with: decoding on another machine
    does not recompute them with that machine's floating point.  Each table set
    is stamped with a fingerprint of the values it was built from; when the
    parameters change (training, a new checkpoint without tables) the stamp no
    longer matches and :meth:`coding_tables` rebuilds them.  There is no
    ``update()`` to remember.
    """

    def __init__(self) -> None:
        super().__init__()
        # All tables back to back (each: its regular entries, then the escape).
        self.register_buffer("_table_freqs", torch.zeros(0, dtype=torch.int32))
        self.register_buffer("_table_lengths", torch.zeros(0, dtype=torch.int32))
        self.register_buffer("_table_offsets", torch.zeros(0, dtype=torch.int32))
        self.register_buffer("_table_stamp", torch.zeros(1, dtype=torch.int64))
        self._models_cache: tuple[int, list] | None = None

    # -- to be provided by subclasses -------------------------------------
    def _table_sources(self) -> list[torch.Tensor]:
        """Tensors (and constants) the tables are a function of."""
        raise NotImplementedError

    def _build_tables(self) -> CodingTables:
        raise NotImplementedError

    # ---------------------------------------------------------------------
    def _fingerprint(self) -> int:
        h = hashlib.blake2b(digest_size=8)
        h.update(type(self).__name__.encode())
        for t in self._table_sources():
            a = t.detach().to("cpu", torch.float64).contiguous().numpy()
            h.update(str(a.shape).encode())
            h.update(a.tobytes())
        return int.from_bytes(h.digest(), "little", signed=True) or 1

    def tables_are_stale(self) -> bool:
        return int(self._table_stamp.item()) != self._fingerprint() or self._table_freqs.numel() == 0

    @torch.no_grad()
    def coding_tables(self) -> tuple[CodingTables, list]:
        """The integer tables and their ``constriction`` models, rebuilt if stale."""
        stamp = self._fingerprint()
        if int(self._table_stamp.item()) != stamp or self._table_freqs.numel() == 0:
            t = self._build_tables()
            dev = self._table_stamp.device
            self._table_freqs = torch.from_numpy(t.packed_freqs()).to(dev)
            self._table_lengths = torch.from_numpy(t.lengths).to(dev)
            self._table_offsets = torch.from_numpy(t.offsets).to(dev)
            self._table_stamp.fill_(stamp)
            self._models_cache = None
        if self._models_cache is None or self._models_cache[0] != stamp:
            tables = CodingTables.from_packed(
                self._table_freqs.cpu().numpy().astype(np.int32),
                self._table_lengths.cpu().numpy().astype(np.int32),
                self._table_offsets.cpu().numpy().astype(np.int32),
            )
            self._models_cache = (stamp, tables, tables.models())
        return self._models_cache[1], self._models_cache[2]

    def __getstate__(self):
        # constriction models cannot be pickled; they are rebuilt on demand.
        state = self.__dict__.copy()
        state["_models_cache"] = None
        return state

    def _load_from_state_dict(self, state_dict, prefix, *args, **kwargs):
        # Tables change shape with the parameters: adopt the checkpoint's shape.
        for name in ("_table_freqs", "_table_lengths", "_table_offsets"):
            key = prefix + name
            if key in state_dict:
                setattr(self, name, torch.empty_like(state_dict[key]))
        self._models_cache = None
        super()._load_from_state_dict(state_dict, prefix, *args, **kwargs)
