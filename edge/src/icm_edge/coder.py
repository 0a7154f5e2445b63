"""Integer coding tables and the range coder that uses them.

Every entropy model in :mod:`icm.entropy` reduces to the same thing at coding
time: a small set of discrete distributions ("tables"), each over a contiguous
run of integers plus one *escape* entry, and for every symbol the index of the
table that codes it.  This module owns that representation and the coder:

* :func:`quantize_pmf` turns float probabilities into integer frequencies that
  sum to ``2**PRECISION``.  The integers, not the floats, are what encoder and
  decoder share, so they can be stored beside the weights and reproduced
  bit for bit on any machine.
* :func:`encode` / :func:`decode` run ``constriction``'s range coder over
  symbols grouped by table.  Values outside a table's range are coded as the
  escape entry followed by the value itself (Elias-gamma style, with uniform
  models), so the round trip is exact for *any* integer input.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

PRECISION = 24
"""Bits of the integer frequency tables (the total of every table is 2**PRECISION)."""

_ESCAPE_CHUNK_BITS = 16
_MAX_ESCAPE_BITS = 64


def quantize_pmf(pmf: np.ndarray, tail: float) -> np.ndarray:
    """Integer frequencies for one table: ``len(pmf)`` regular entries, then the escape.

    Args:
        pmf: probabilities of the regular entries, float64, shape ``(n,)``.
        tail: probability mass left for the escape entry (values outside the table).

    Returns:
        int64 array of shape ``(n + 1,)``, every entry >= 1, summing to ``2**PRECISION``.
    """
    total = 1 << PRECISION
    n = pmf.shape[0]
    if n + 1 > total // 2:
        raise ValueError(f"table of {n} entries is too long for {PRECISION}-bit frequencies")
    probs = np.concatenate([np.clip(pmf, 0.0, None), [max(tail, 0.0)]])
    probs = probs / probs.sum()
    # Every entry gets at least 1; the rest is shared in proportion.
    budget = total - (n + 1)
    freqs = np.floor(probs * budget).astype(np.int64) + 1
    # Hand the rounding remainder to the most probable entry (deterministic).
    freqs[int(np.argmax(freqs))] += total - int(freqs.sum())
    return freqs


@dataclass(frozen=True)
class CodingTables:
    """A stack of integer tables, padded to one width.

    Attributes:
        freqs: int32 ``(K, W)``; row ``k`` holds ``lengths[k]`` regular entries,
            then the escape entry, then zero padding.
        lengths: int32 ``(K,)``, regular entries per table.
        offsets: int32 ``(K,)``, the integer value coded by entry 0 of each table.
    """

    freqs: np.ndarray
    lengths: np.ndarray
    offsets: np.ndarray

    @staticmethod
    def from_pmfs(pmfs: list[np.ndarray], offsets: list[int], tails: list[float]) -> "CodingTables":
        rows = [quantize_pmf(p, t) for p, t in zip(pmfs, tails)]
        width = max(len(r) for r in rows)
        freqs = np.zeros((len(rows), width), dtype=np.int32)
        for k, r in enumerate(rows):
            freqs[k, : len(r)] = r
        return CodingTables(
            freqs=freqs,
            lengths=np.array([len(p) for p in pmfs], dtype=np.int32),
            offsets=np.array(offsets, dtype=np.int32),
        )

    def packed_freqs(self) -> np.ndarray:
        """The tables back to back without padding (the form kept in state dicts)."""
        return np.concatenate([self.freqs[k, : int(n) + 1] for k, n in enumerate(self.lengths)]).astype(np.int32)

    @staticmethod
    def from_packed(packed: np.ndarray, lengths: np.ndarray, offsets: np.ndarray) -> "CodingTables":
        """Inverse of :meth:`packed_freqs`.

        Raises:
            ValueError: the packed array does not hold exactly the tables ``lengths`` describe.
        """
        sizes = lengths.astype(np.int64) + 1
        if packed.ndim != 1 or packed.size != int(sizes.sum()):
            raise ValueError(f"packed tables hold {packed.size} entries, lengths describe {int(sizes.sum())}")
        freqs = np.zeros((len(lengths), int(sizes.max()) if len(sizes) else 0), dtype=np.int32)
        start = 0
        for k, n in enumerate(sizes.tolist()):
            freqs[k, :n] = packed[start : start + n]
            start += n
        return CodingTables(freqs=freqs, lengths=lengths.astype(np.int32), offsets=offsets.astype(np.int32))

    def __len__(self) -> int:
        return int(self.freqs.shape[0])

    def models(self) -> list:
        """One ``constriction`` categorical model per table (escape entry last)."""
        import constriction

        out = []
        for k in range(len(self)):
            n = int(self.lengths[k]) + 1
            # freq / 2**PRECISION is exact in float64: the model sees the integers.
            probs = self.freqs[k, :n].astype(np.float64) / float(1 << PRECISION)
            out.append(constriction.stream.model.Categorical(probs, perfect=False))
        return out


def _escape_encode(encoder, values: np.ndarray) -> None:
    import constriction

    if values.size == 0:
        return
    # zig-zag map to non-negative integers (Python ints: no overflow), then bit length + raw bits.
    u = [2 * v if v >= 0 else -2 * v - 1 for v in values.tolist()]
    nbits = [x.bit_length() for x in u]
    encoder.encode(np.array(nbits, dtype=np.int32), constriction.stream.model.Uniform(_MAX_ESCAPE_BITS + 1))
    chunk = constriction.stream.model.Uniform(1 << _ESCAPE_CHUNK_BITS)
    mask = (1 << _ESCAPE_CHUNK_BITS) - 1
    for x, nb in zip(u, nbits):
        for shift in range(0, nb, _ESCAPE_CHUNK_BITS):
            encoder.encode(np.array([(x >> shift) & mask], dtype=np.int32), chunk)


def _escape_decode(decoder, count: int) -> np.ndarray:
    import constriction

    if count == 0:
        return np.zeros(0, dtype=np.int64)
    nbits = decoder.decode(constriction.stream.model.Uniform(_MAX_ESCAPE_BITS + 1), count)
    chunk = constriction.stream.model.Uniform(1 << _ESCAPE_CHUNK_BITS)
    out = []
    for nb in nbits.tolist():
        x = 0
        for shift in range(0, nb, _ESCAPE_CHUNK_BITS):
            x |= int(decoder.decode(chunk, 1)[0]) << shift
        v = (x >> 1) if x % 2 == 0 else -((x + 1) >> 1)
        if not -(1 << 63) <= v < (1 << 63):
            raise ValueError("coded stream decodes to an escaped value outside int64")
        out.append(v)
    return np.array(out, dtype=np.int64)


def _groups(table_index: np.ndarray, num_tables: int):
    """Symbol positions per table, in a fixed order both sides can rebuild."""
    order = np.argsort(table_index, kind="stable")
    counts = np.bincount(table_index, minlength=num_tables)
    starts = np.concatenate([[0], np.cumsum(counts)])
    for k in np.nonzero(counts)[0]:
        yield int(k), order[starts[k] : starts[k + 1]]


def encode(symbols: np.ndarray, table_index: np.ndarray, tables: CodingTables, models=None) -> bytes:
    """Range-code integer ``symbols``; ``table_index[i]`` picks the table of symbol ``i``.

    Args:
        symbols: integer array, any shape (flattened in C order).
        table_index: integer array of the same size, values in ``[0, len(tables))``.
        tables: the coding tables.
        models: optional cached result of ``tables.models()``.

    Returns:
        The coded bytes. Decoding needs the same ``table_index`` and ``tables``.
    """
    import constriction

    symbols = np.ascontiguousarray(symbols, dtype=np.int64).reshape(-1)
    table_index = np.ascontiguousarray(table_index, dtype=np.int64).reshape(-1)
    if symbols.shape != table_index.shape:
        raise ValueError(f"{symbols.size} symbols but {table_index.size} table indices")
    if symbols.size == 0:
        return b""
    models = models if models is not None else tables.models()
    encoder = constriction.stream.queue.RangeEncoder()
    escaped = []
    for k, pos in _groups(table_index, len(tables)):
        n = int(tables.lengths[k])
        v = symbols[pos] - int(tables.offsets[k])
        outside = (v < 0) | (v >= n)
        if outside.any():
            escaped.append(symbols[pos][outside])
            v = np.where(outside, n, v)
        encoder.encode(v.astype(np.int32), models[k])
    _escape_encode(encoder, np.concatenate(escaped) if escaped else np.zeros(0, np.int64))
    return encoder.get_compressed().astype(">u4").tobytes()


def decode(data: bytes, table_index: np.ndarray, tables: CodingTables, models=None) -> np.ndarray:
    """Inverse of :func:`encode`. Returns int64 symbols shaped like ``table_index``.

    Raises:
        ValueError: ``data`` is not a whole number of 32-bit words, or decodes to
            values that cannot be right (the bytes were not made by :func:`encode`
            with these tables).
    """
    table_index = np.asarray(table_index, dtype=np.int64)
    shape = table_index.shape
    table_index = table_index.reshape(-1)
    if table_index.size == 0:
        return np.zeros(shape, dtype=np.int64)
    if len(data) % 4:
        raise ValueError(f"coded stream of {len(data)} bytes is not a whole number of 32-bit words")
    models = models if models is not None else tables.models()
    words = np.frombuffer(data, dtype=">u4").astype(np.uint32)
    try:
        return _decode_words(words, table_index, tables, models).reshape(shape)
    except ValueError:
        raise
    except Exception as e:  # constriction signals an inconsistent stream with assertions
        raise ValueError(f"coded stream is inconsistent with its tables ({type(e).__name__})") from None


def _decode_words(words: np.ndarray, table_index: np.ndarray, tables: CodingTables, models) -> np.ndarray:
    import constriction

    decoder = constriction.stream.queue.RangeDecoder(words)
    out = np.empty(table_index.size, dtype=np.int64)
    escaped_pos = []
    for k, pos in _groups(table_index, len(tables)):
        n = int(tables.lengths[k])
        v = decoder.decode(models[k], pos.size).astype(np.int64)
        outside = v == n
        if (v > n).any():
            raise ValueError("coded stream decodes to symbols outside the coding tables")
        out[pos] = v + int(tables.offsets[k])
        if outside.any():
            escaped_pos.append(pos[outside])
    if escaped_pos:
        where = np.concatenate(escaped_pos)
        out[where] = _escape_decode(decoder, where.size)
    return out
