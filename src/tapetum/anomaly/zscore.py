"""The simplest robust baseline: how far, in robust units, are the most deviant columns?

Score = mean of the `top` largest |z| of a row after robust scaling. No learned state beyond
the scaler's medians and spreads, so it is the reference the other models must beat, and its
z-scores are what every explanation quotes.
"""

from __future__ import annotations

from typing import Any

import numpy as np


class RobustZ:
    name = "robust-z"
    version = 1

    def __init__(self, *, top: int = 3) -> None:
        self.top = top

    def fit(self, z: np.ndarray) -> RobustZ:
        if z.shape[0] == 0:
            raise ValueError("cannot fit on no rows")
        return self

    def score(self, z: np.ndarray) -> np.ndarray:
        if z.shape[0] == 0 or z.shape[1] == 0:
            return np.zeros(z.shape[0])
        k = min(self.top, z.shape[1])
        a = np.abs(z)
        return np.asarray(np.partition(a, a.shape[1] - k, axis=1)[:, -k:].mean(axis=1))

    def params(self) -> dict[str, Any]:
        return {"top": self.top}

    def arrays(self) -> dict[str, np.ndarray]:
        return {}

    @classmethod
    def restore(cls, params: dict[str, Any], arrays: dict[str, np.ndarray]) -> RobustZ:
        return cls(top=int(params["top"]))
