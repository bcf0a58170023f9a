"""A fixed-capacity ring of numpy columns: the storage behind every count-based window.

Pushing a batch of ``k`` rows is O(k) numpy work (at most two slice copies per column), never a
Python loop per row, and returns what the batch overwrote so that a caller keeping incremental
aggregates (bin counts) can subtract the evicted rows. Slots that were never written hold the
column's ``fill`` value, so "evicted" rows of a window that is not full yet are recognisable.

>>> ring = RingBuffer(3, {"x": (np.int8, -1)})
>>> ring.push(x=np.array([1, 2], dtype=np.int8))["x"].tolist()
[-1, -1]
>>> ring.push(x=np.array([3, 4], dtype=np.int8))["x"].tolist()
[-1, 1]
>>> ring.ordered("x").tolist(), len(ring)
([2, 3, 4], 3)
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np

__all__ = ["RingBuffer"]


class RingBuffer:
    """``capacity`` rows of named columns, oldest overwritten first.

    ``columns`` maps a name to ``(dtype, fill)`` or ``(dtype, fill, width)``; a width makes the
    column 2-D (``(capacity, width)``, e.g. one probability per class).
    """

    def __init__(self, capacity: int, columns: Mapping[str, tuple[Any, ...]]) -> None:
        if capacity < 1:
            raise ValueError(f"capacity must be at least 1, not {capacity}")
        self.capacity = capacity
        self._data: dict[str, np.ndarray] = {}
        self._fill: dict[str, Any] = {}
        for name, (dtype, fill, *width) in columns.items():
            self._data[name] = np.full((capacity, *width), fill, dtype=dtype)
            self._fill[name] = fill
        self._pos = 0  # next slot to write
        self._size = 0  # slots written so far, at most capacity

    def __len__(self) -> int:
        return self._size

    @property
    def full(self) -> bool:
        return self._size == self.capacity

    def push(self, **columns: np.ndarray) -> dict[str, np.ndarray]:
        """Append equal-length arrays (one per column) and return the rows they overwrote.

        Only the last ``capacity`` rows of a batch longer than the ring are kept; the returned
        arrays then hold the whole previous content plus the dropped head of the batch, so that
        "counts after = counts before + pushed - returned" holds in every case.
        """
        lengths = {len(v) for v in columns.values()}
        if len(lengths) != 1 or set(columns) != set(self._data):
            raise ValueError("push needs one array of equal length per column")
        k = lengths.pop()
        cap = self.capacity
        if k >= cap:
            out = {}
            for name, buf in self._data.items():
                out[name] = np.concatenate([buf, columns[name][: k - cap]])
                buf[...] = columns[name][k - cap :]
            self._pos, self._size = 0, cap
            return out
        first = min(k, cap - self._pos)
        rest = k - first
        out = {}
        for name, buf in self._data.items():
            values = columns[name]
            head = buf[self._pos : self._pos + first].copy()
            buf[self._pos : self._pos + first] = values[:first]
            if rest:
                out[name] = np.concatenate([head, buf[:rest]])
                buf[:rest] = values[first:]
            else:
                out[name] = head
        self._pos = (self._pos + k) % cap
        self._size = min(cap, self._size + k)
        return out

    def view(self, name: str) -> np.ndarray:
        """The written rows of a column in slot order, not time order: for order-free reductions."""
        return self._data[name][: self._size]

    def ordered(self, name: str) -> np.ndarray:
        """The written rows of a column, oldest first (a copy)."""
        buf = self._data[name]
        if self._size < self.capacity:
            return buf[: self._size].copy()
        return np.concatenate([buf[self._pos :], buf[: self._pos]])

    def clear(self) -> None:
        """Forget every row: each slot holds its column's ``fill`` again."""
        for name, buf in self._data.items():
            buf[...] = self._fill[name]
        self._pos = 0
        self._size = 0

    def state(self) -> dict[str, Any]:
        """Plain data for a checkpoint: ``{"pos", "size", "columns": {name: ordered rows}}``."""
        return {
            "pos": self._pos,
            "size": self._size,
            "columns": {name: self.ordered(name) for name in self._data},
        }

    def load(self, state: Mapping[str, Any]) -> None:
        """Restore what ``state`` returned (the slot layout may differ; the contents do not)."""
        self.clear()
        columns = {n: np.asarray(v, dtype=self._data[n].dtype) for n, v in state["columns"].items()}
        if columns and len(next(iter(columns.values()))):
            self.push(**columns)
