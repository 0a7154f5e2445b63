"""Coding tables kept as buffers, rebuilt automatically when they go stale."""

from __future__ import annotations

import hashlib
import struct

import numpy as np
import torch
from torch import nn

from .coder import CodingTables


class TableModule(nn.Module):
    """Base for entropy models that code with integer tables.

    The tables are ordinary (persistent) buffers, so a saved checkpoint carries
    the exact integers its files were coded with: decoding on another machine
    does not recompute them with that machine's floating point.  Each table set
    is stamped with a fingerprint of what it was built from — the *stored*
    values (parameters as saved, configuration constants), never a float that
    is recomputed at load time — and of the integer tables themselves.  When
    the parameters change (training, a new checkpoint without tables) or the
    integers are altered, the stamp no longer matches and :meth:`coding_tables`
    rebuilds them.  A loaded checkpoint whose tables are current is therefore
    coded with its own integers on every PyTorch and NumPy version.  There is
    no ``update()`` to remember.
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
    def _table_sources(self) -> list:
        """What the tables are a function of: stored tensors (parameters, hashed
        as their bytes) and Python constants (ints, floats, strings)."""
        raise NotImplementedError

    def _build_tables(self) -> CodingTables:
        raise NotImplementedError

    # ---------------------------------------------------------------------
    def _fingerprint(self, freqs: torch.Tensor, lengths: torch.Tensor, offsets: torch.Tensor) -> int:
        """Stamp of a table set: the sources it was built from and its integers."""
        h = hashlib.blake2b(digest_size=8)
        h.update(type(self).__name__.encode())
        for src in self._table_sources():
            if isinstance(src, torch.Tensor):
                a = src.detach().to("cpu").contiguous()
                h.update(f"{a.dtype}{tuple(a.shape)}".encode())
                h.update(a.numpy().tobytes())
            elif isinstance(src, float):
                h.update(b"f" + struct.pack("<d", src))
            elif isinstance(src, (int, str)):
                h.update(f"{type(src).__name__}:{src}".encode())
            else:
                raise TypeError(f"table source of type {type(src).__name__}")
        for t in (freqs, lengths, offsets):
            h.update(t.detach().to("cpu", torch.int32).contiguous().numpy().astype("<i4").tobytes())
        return int.from_bytes(h.digest(), "little", signed=True) or 1

    def _stored_fingerprint(self) -> int:
        return self._fingerprint(self._table_freqs, self._table_lengths, self._table_offsets)

    def tables_are_stale(self) -> bool:
        """Whether the stored tables are missing or no longer match their sources."""
        return self._table_freqs.numel() == 0 or int(self._table_stamp.item()) != self._stored_fingerprint()

    @torch.no_grad()
    def coding_tables(self) -> tuple[CodingTables, list]:
        """The integer tables and their ``constriction`` models, rebuilt if stale."""
        if self.tables_are_stale():
            t = self._build_tables()
            dev = self._table_stamp.device
            self._table_freqs = torch.from_numpy(t.packed_freqs()).to(dev)
            self._table_lengths = torch.from_numpy(t.lengths).to(dev)
            self._table_offsets = torch.from_numpy(t.offsets).to(dev)
            self._table_stamp.fill_(self._stored_fingerprint())
            self._models_cache = None
        stamp = int(self._table_stamp.item())
        if self._models_cache is None or self._models_cache[0] != stamp:
            tables = CodingTables.from_packed(
                self._table_freqs.cpu().numpy().astype(np.int32),
                self._table_lengths.cpu().numpy().astype(np.int32),
                self._table_offsets.cpu().numpy().astype(np.int32),
            )
            self._models_cache = (stamp, tables, tables.models())
        return self._models_cache[1], self._models_cache[2]

    @torch.no_grad()
    def restamp(self) -> bool:
        """Re-stamp stored tables that a fresh build reproduces exactly (a stamp
        format change); returns whether the stamp changed.

        Raises:
            ValueError: a fresh build gives other integers than the stored ones.
        """
        if self._table_freqs.numel() == 0:
            raise ValueError("no stored tables to re-stamp")
        t = self._build_tables()
        same = (np.array_equal(t.packed_freqs(), self._table_freqs.cpu().numpy())
                and np.array_equal(t.lengths, self._table_lengths.cpu().numpy())
                and np.array_equal(t.offsets, self._table_offsets.cpu().numpy()))
        if not same:
            raise ValueError(f"{type(self).__name__}: a fresh build differs from the stored tables")
        stamp = self._stored_fingerprint()
        changed = int(self._table_stamp.item()) != stamp
        self._table_stamp.fill_(stamp)
        self._models_cache = None
        return changed

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
