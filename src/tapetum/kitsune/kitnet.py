"""Our KitNET: an ensemble of small autoencoders plus an output autoencoder, batched in numpy.

The design is KitNET's (Mirsky et al., NDSS 2018; the published per-sample version is in
`reference.py`): a feature mapper groups correlated features (agglomerative clustering by
correlation distance, single linkage, dendrogram cut until every group has at most `m`
features); each group gets an autoencoder with one sigmoid hidden layer of ceil(0.75 k) units
and tied weights; an output autoencoder reconstructs the vector of the ensemble's RMSEs, and its
RMSE is the anomaly score. What differs from the published code:

- training is offline on a learning set, in shuffled mini-batches over several epochs (SGD with
  momentum, the same tied-weight gradient as the original), instead of one per-sample pass;
- 0-1 normalisation uses the learning set's minimum and maximum (not a running min/max that
  moves while training); a feature constant in the learning set is scaled by max(|value|, 1)
  instead of 1e-16, so that any change of it is not an infinite anomaly;
- features are first compressed by sign(x) * log1p(|x|) (`log_scale`, on by default): damped
  weights and covariances span many orders of magnitude, and min-max scaling alone squeezes
  normal traffic into a sliver of [0, 1] (ROC-AUC 0.991 -> 0.998 on the lab capture);
- the whole ensemble is one masked dense layer (block-structured weights), so scoring is a
  few BLAS matrix products over all rows at once;
- the alert threshold is calibrated, not picked: the (1 - false_alarm_rate) quantile of the
  scores of the last `calibration_frac` of the learning rows, held out of training.

Non-finite inputs are never learnt; when scored, NaN counts as the feature's learnt minimum and
+/-inf as far outside the learnt range (normalised values are clipped to +/-1e3).
"""

from __future__ import annotations

import io
import json
import math
import os
import zipfile
from dataclasses import asdict, dataclass

import numpy as np
from numba import njit

from tapetum.errors import ModelError
from tapetum.kitsune.stats import FEATURE_NAMES, schema_hash

MODEL_KIND = "tapetum.kitsune.kitnet"
MODEL_VERSION = 1
_CLIP = 1e3


@dataclass(frozen=True, slots=True)
class KitNETConfig:
    #: Largest number of features per ensemble autoencoder (the paper's m).
    max_ae_size: int = 10
    #: Hidden units per visible unit (0.75: a quarter fewer hidden units than inputs).
    hidden_ratio: float = 0.75
    #: Rows of the learning set used by the feature mapper (the paper's FM grace period).
    fm_rows: int = 5_000
    #: SGD step size and momentum, mini-batch size and passes over the learning set; small
    #: learning sets get more passes, up to at least `min_steps` mini-batch updates.
    learning_rate: float = 0.1
    momentum: float = 0.9
    batch_size: int = 32
    epochs: int = 4
    min_steps: int = 3_000
    #: Compress features by sign(x) * log1p(|x|) before the 0-1 scaling.
    log_scale: bool = True
    #: Last fraction of the learning rows held out of training, used only for the threshold
    #: (scores of rows the autoencoders were fitted on are optimistic).
    calibration_frac: float = 0.2
    #: Target false-alarm rate on the learning rows for the threshold.
    false_alarm_rate: float = 1e-3
    #: Seed of weight initialisation and batch shuffling.
    seed: int = 0


def _sigmoid(a: np.ndarray) -> np.ndarray:
    np.clip(a, -500.0, 500.0, out=a)
    np.negative(a, out=a)
    np.exp(a, out=a)
    a += 1.0
    np.reciprocal(a, out=a)
    return a


def corr_distance(x: np.ndarray) -> np.ndarray:
    """1 - Pearson correlation between the columns of x, constant columns at distance 1."""
    xc = x - x.mean(axis=0)
    ss = np.sqrt((xc * xc).sum(axis=0))
    den = np.outer(ss, ss)
    den[den == 0] = np.inf  # constant feature: correlation 0
    d = 1.0 - (xc.T @ xc) / den
    np.fill_diagonal(d, 0.0)
    d[d < 0] = 0.0  # rounding
    return np.asarray((d + d.T) / 2.0)


def map_features(x: np.ndarray, m: int) -> list[list[int]]:
    """Groups of at most m column indices, by single-linkage clustering of correlation distance.

    Single linkage is Kruskal's algorithm over the complete graph of features: merging the two
    clusters joined by the shortest remaining edge builds the dendrogram bottom-up. It is then
    split from the root until every group has at most m members, as KitNET's feature mapper does.
    """
    n = x.shape[1]
    m = max(1, min(m, n))
    if n == 1:
        return [[0]]
    d = corr_distance(x)
    iu, ju = np.triu_indices(n, 1)
    order = np.argsort(d[iu, ju], kind="stable")
    parent = list(range(n))  # union-find over features
    node_of = list(range(n))  # dendrogram node of each union-find root
    children: list[tuple[int, int]] = []  # node n + k merges children[k]
    size = [1] * n

    def find(a: int) -> int:
        while parent[a] != a:
            parent[a] = parent[parent[a]]
            a = parent[a]
        return a

    for e in order:
        a, b = find(int(iu[e])), find(int(ju[e]))
        if a == b:
            continue
        children.append((node_of[a], node_of[b]))
        size.append(size[node_of[a]] + size[node_of[b]])
        parent[b] = a
        node_of[a] = n + len(children) - 1
        if len(children) == n - 1:
            break

    def leaves(node: int) -> list[int]:
        out, stack = [], [node]
        while stack:
            k = stack.pop()
            if k < n:
                out.append(k)
            else:
                stack += [children[k - n][1], children[k - n][0]]
        return out

    groups: list[list[int]] = []
    stack = [n + len(children) - 1]
    while stack:
        k = stack.pop()
        if size[k] <= m:
            groups.append(leaves(k))
        else:
            stack += [children[k - n][1], children[k - n][0]]
    return groups


@njit(cache=True)
def _sig(a: float) -> float:
    if a < -500.0:
        a = -500.0
    return 1.0 / (1.0 + math.exp(-a))


@njit(cache=True)
def _bank_errors(
    u: np.ndarray,
    w: np.ndarray,
    hb: np.ndarray,
    vb: np.ndarray,
    feat: np.ndarray,
    fstart: np.ndarray,
    hstart: np.ndarray,
    err: np.ndarray,
    rmse: np.ndarray,
) -> None:
    """Per-row reconstruction of each group's autoencoder, touching only its own block.

    Group g reads inputs feat[fstart[g]:fstart[g+1]] and owns hidden units
    hstart[g]:hstart[g+1]. Writes the squared error per input (err, [B, n_in]) and the RMSE per
    group (rmse, [B, K]).
    """
    ng = fstart.shape[0] - 1
    y = np.empty(w.shape[1])
    for r in range(u.shape[0]):
        for g in range(ng):
            f0, f1 = fstart[g], fstart[g + 1]
            h0, h1 = hstart[g], hstart[g + 1]
            for h in range(h0, h1):
                a = hb[h]
                for q in range(f0, f1):
                    a += u[r, feat[q]] * w[feat[q], h]
                y[h] = _sig(a)
            tot = 0.0
            for q in range(f0, f1):
                i = feat[q]
                a = vb[i]
                for h in range(h0, h1):
                    a += y[h] * w[i, h]
                e = u[r, i] - _sig(a)
                e *= e
                err[r, i] = e
                tot += e
            rmse[r, g] = math.sqrt(tot / (f1 - f0))


@njit(cache=True)
def _score_rows(
    x: np.ndarray,
    lo: np.ndarray,
    span: np.ndarray,
    w: np.ndarray,
    hb: np.ndarray,
    vb: np.ndarray,
    feat: np.ndarray,
    fstart: np.ndarray,
    hstart: np.ndarray,
    rlo: np.ndarray,
    rspan: np.ndarray,
    ow: np.ndarray,
    ohb: np.ndarray,
    ovb: np.ndarray,
    log_scale: bool,
    out: np.ndarray,
) -> None:
    """Normalise, run the ensemble and the output autoencoder, row by row (no temporaries)."""
    n = x.shape[1]
    ng = fstart.shape[0] - 1
    u = np.empty(n)
    y = np.empty(w.shape[1])
    v = np.empty(ng)
    oy = np.empty(ow.shape[1])
    for r in range(x.shape[0]):
        for i in range(n):
            a = x[r, i]
            if log_scale:
                a = math.copysign(math.log1p(abs(a)), a)
            a = (a - lo[i]) / span[i]
            if a != a:
                a = 0.0  # NaN: the learnt minimum
            elif a > _CLIP:
                a = _CLIP
            elif a < -_CLIP:
                a = -_CLIP
            u[i] = a
        for g in range(ng):
            f0, f1 = fstart[g], fstart[g + 1]
            h0, h1 = hstart[g], hstart[g + 1]
            for h in range(h0, h1):
                a = hb[h]
                for q in range(f0, f1):
                    a += u[feat[q]] * w[feat[q], h]
                y[h] = _sig(a)
            tot = 0.0
            for q in range(f0, f1):
                i = feat[q]
                a = vb[i]
                for h in range(h0, h1):
                    a += y[h] * w[i, h]
                e = u[i] - _sig(a)
                tot += e * e
            a = (math.sqrt(tot / (f1 - f0)) - rlo[g]) / rspan[g]
            v[g] = min(max(a, -_CLIP), _CLIP)
        for h in range(ow.shape[1]):
            a = ohb[h]
            for g in range(ng):
                a += v[g] * ow[g, h]
            oy[h] = _sig(a)
        tot = 0.0
        for g in range(ng):
            a = ovb[g]
            for h in range(ow.shape[1]):
                a += oy[h] * ow[g, h]
            e = v[g] - _sig(a)
            tot += e * e
        out[r] = math.sqrt(tot / ng)


class _AEBank:
    """Autoencoders over disjoint groups of the input, as one masked dense layer.

    Each group of k inputs has its own ceil(hidden_ratio * k) sigmoid hidden units and tied
    weights; the weight matrix [n_in, n_hidden] is block-structured (zero outside the groups,
    kept so by masking the updates), so the whole ensemble is two dense matrix products per
    batch, which BLAS does far faster than many small ones.
    """

    def __init__(
        self, n_in: int, groups: list[list[int]], hidden_ratio: float, rng: np.random.Generator
    ) -> None:
        hidden = [max(1, math.ceil(len(g) * hidden_ratio)) for g in groups]
        nh = sum(hidden)
        mask = np.zeros((n_in, nh))
        member = np.zeros((n_in, len(groups)))
        lim = np.zeros((n_in, 1))
        h0 = 0
        for i, (g, h) in enumerate(zip(groups, hidden, strict=True)):
            mask[np.ix_(g, range(h0, h0 + h))] = 1.0
            member[g, i] = 1.0
            lim[g] = 1.0 / len(g)  # uniform in +/- 1/n_visible, as the original dA
            h0 += h
        self.w = rng.uniform(-1.0, 1.0, (n_in, nh)) * lim * mask
        self.hb = np.zeros(nh)
        self.vb = np.zeros(n_in)
        self.mask = mask
        self.member = member
        self._index()

    def _index(self) -> None:
        """Blocks of the weight matrix for the compiled scorer."""
        k = self.member.shape[1]
        feat: list[int] = []
        fstart = [0]
        hstart = [0]
        for g in range(k):
            rows = np.flatnonzero(self.member[:, g])
            feat += [int(i) for i in rows]
            fstart.append(len(feat))
            hidden = np.flatnonzero(self.mask[rows[0]]) if len(rows) else np.zeros(0, np.int64)
            if len(hidden) and not np.array_equal(hidden, np.arange(hstart[-1], hidden[-1] + 1)):
                raise ValueError("hidden units of a group are not contiguous")
            hstart.append(hstart[-1] + len(hidden))
        self._feat = np.array(feat, np.int64)
        self._fstart = np.array(fstart, np.int64)
        self._hstart = np.array(hstart, np.int64)

    @classmethod
    def from_arrays(
        cls, w: np.ndarray, hb: np.ndarray, vb: np.ndarray, mask: np.ndarray, member: np.ndarray
    ) -> _AEBank:
        bank = cls.__new__(cls)
        bank.w, bank.hb, bank.vb, bank.mask, bank.member = w, hb, vb, mask, member
        bank._index()
        return bank

    def arrays(self) -> dict[str, np.ndarray]:
        return {"w": self.w, "hb": self.hb, "vb": self.vb, "mask": self.mask, "member": self.member}

    @property
    def sizes(self) -> np.ndarray:
        return np.asarray(self.member.sum(axis=0))

    def forward(self, x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """x [B, n_in] -> (hidden [B, n_hidden], reconstruction [B, n_in])."""
        y = _sigmoid(x @ self.w + self.hb)
        z = _sigmoid(y @ self.w.T + self.vb)
        return y, z

    def errors(self, x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(squared error per input [B, n_in], RMSE per group [B, K]), compiled per block."""
        x = np.ascontiguousarray(x, np.float64)
        err = np.zeros(x.shape)
        rmse = np.empty((x.shape[0], self.member.shape[1]))
        _bank_errors(x, self.w, self.hb, self.vb, self._feat, self._fstart, self._hstart, err, rmse)
        return err, rmse

    def sq_error(self, x: np.ndarray) -> np.ndarray:
        """Squared reconstruction error per input [B, n_in]."""
        return self.errors(x)[0]

    def rmse(self, x: np.ndarray) -> np.ndarray:
        """RMSE per group and row: [B, K]."""
        return self.errors(x)[1]

    def train(
        self,
        x: np.ndarray,
        lr: float,
        momentum: float,
        batch: int,
        epochs: int,
        min_steps: int,
        rng: np.random.Generator,
    ) -> None:
        """Mini-batch SGD with momentum on x [N, n_in]: the original's gradient, batch-averaged."""
        n = x.shape[0]
        epochs = max(epochs, math.ceil(min_steps / math.ceil(n / batch)))
        vel_w = np.zeros_like(self.w)
        vel_h = np.zeros_like(self.hb)
        vel_v = np.zeros_like(self.vb)
        for _ in range(epochs):
            order = rng.permutation(n)
            for start in range(0, n, batch):
                xb = x[order[start : start + batch]]
                b = xb.shape[0]
                y, z = self.forward(xb)
                lh2 = xb - z
                lh1 = (lh2 @ self.w) * y * (1.0 - y)
                gw = xb.T @ lh1 + lh2.T @ y
                vel_w *= momentum
                vel_w += (lr / b) * gw * self.mask
                vel_h *= momentum
                vel_h += lr * lh1.mean(axis=0)
                vel_v *= momentum
                vel_v += lr * lh2.mean(axis=0)
                self.w += vel_w
                self.hb += vel_h
                self.vb += vel_v


class KitNET:
    """Fit on a learning set of feature rows, then score rows (RMSE; higher = more anomalous)."""

    def __init__(
        self, config: KitNETConfig | None = None, feature_names: tuple[str, ...] = FEATURE_NAMES
    ) -> None:
        self.config = config or KitNETConfig()
        if self.config.max_ae_size < 1 or not (0 < self.config.hidden_ratio <= 1):
            raise ValueError("max_ae_size must be >= 1 and hidden_ratio in (0, 1]")
        if not (0.0 < self.config.false_alarm_rate < 1.0):
            raise ValueError("false_alarm_rate must be in (0, 1)")
        self.feature_names = tuple(feature_names)
        self.groups: list[list[int]] = []
        self.threshold = math.nan
        self.rows_learnt = 0
        self.rows_dropped = 0
        self.rows_calibration = 0
        self._fitted = False

    @property
    def n_features(self) -> int:
        return len(self.feature_names)

    # -- transforms -----------------------------------------------------------------------

    def _rows(self, x: np.ndarray) -> np.ndarray:
        x = np.asarray(x, np.float64)
        if x.ndim != 2 or x.shape[1] != self.n_features:
            raise ValueError(f"expected rows of {self.n_features} features, got {x.shape}")
        return x

    def _prep(self, x: np.ndarray) -> np.ndarray:
        x = self._rows(x)
        if self.config.log_scale:
            with np.errstate(invalid="ignore"):
                x = np.sign(x) * np.log1p(np.abs(x))
        return x

    def _normalise(self, x: np.ndarray) -> np.ndarray:
        with np.errstate(invalid="ignore", over="ignore"):
            u = (x - self._lo) / self._span
        u = np.nan_to_num(u, nan=0.0, posinf=_CLIP, neginf=-_CLIP)
        np.clip(u, -_CLIP, _CLIP, out=u)
        return np.asarray(u, np.float64)

    def _out_input(self, r: np.ndarray) -> np.ndarray:
        with np.errstate(invalid="ignore", over="ignore"):
            v = (r - self._rlo) / self._rspan
        v = np.nan_to_num(v, nan=_CLIP, posinf=_CLIP, neginf=-_CLIP)
        np.clip(v, -_CLIP, _CLIP, out=v)
        return np.asarray(v, np.float64)

    # -- learning -------------------------------------------------------------------------

    def fit(self, x: np.ndarray) -> KitNET:
        """Learn the feature map, the ensemble, the output layer and the threshold from x.

        Rows are taken in time order: the last `calibration_frac` of them only calibrate the
        threshold (when that leaves at least 2 rows on each side).
        """
        cfg = self.config
        raw = self._rows(x)
        ok = np.isfinite(raw).all(axis=1)
        self.rows_dropped = int((~ok).sum())
        raw = raw[ok]
        if raw.shape[0] < 2:
            raise ValueError("KitNET needs at least 2 finite learning rows")
        n_cal = int(raw.shape[0] * cfg.calibration_frac)
        if n_cal < 2 or raw.shape[0] - n_cal < 2:
            n_cal = 0
        cal = raw[raw.shape[0] - n_cal :] if n_cal else raw
        x = self._prep(raw[: raw.shape[0] - n_cal])
        rng = np.random.default_rng(cfg.seed)
        lo = x.min(axis=0)
        hi = x.max(axis=0)
        span = hi - lo
        const = span == 0
        span[const] = np.maximum(np.abs(lo[const]), 1.0)
        self._lo, self._span = lo, span
        u = self._normalise(x)
        self.groups = map_features(u[: cfg.fm_rows], cfg.max_ae_size)
        self._ens = _AEBank(self.n_features, self.groups, cfg.hidden_ratio, rng)
        self._ens.train(
            u, cfg.learning_rate, cfg.momentum, cfg.batch_size, cfg.epochs, cfg.min_steps, rng
        )
        r = self._ens.rmse(u)
        self._rlo = r.min(axis=0)
        rspan = r.max(axis=0) - self._rlo
        rspan[rspan == 0] = 1.0
        self._rspan = rspan
        k = len(self.groups)
        self._out = _AEBank(k, [list(range(k))], cfg.hidden_ratio, rng)
        self._out.train(
            self._out_input(r),
            cfg.learning_rate,
            cfg.momentum,
            cfg.batch_size,
            cfg.epochs,
            cfg.min_steps,
            rng,
        )
        self._fitted = True
        self.rows_learnt = int(x.shape[0])
        self.rows_calibration = int(cal.shape[0])
        scores = self._score_raw(cal)
        self.threshold = float(np.quantile(scores, 1.0 - cfg.false_alarm_rate))
        return self

    # -- scoring --------------------------------------------------------------------------

    def _check(self) -> None:
        if not self._fitted:
            raise ModelError("KitNET model is not trained")

    def _score_raw(self, x: np.ndarray) -> np.ndarray:
        out = np.empty(x.shape[0])
        e, o = self._ens, self._out
        _score_rows(
            np.ascontiguousarray(x, np.float64),
            self._lo,
            self._span,
            e.w,
            e.hb,
            e.vb,
            e._feat,
            e._fstart,
            e._hstart,
            self._rlo,
            self._rspan,
            o.w,
            o.hb,
            o.vb,
            self.config.log_scale,
            out,
        )
        return out

    def score(self, x: np.ndarray) -> np.ndarray:
        """RMSE of the output autoencoder per row (the KitNET anomaly score)."""
        self._check()
        x = self._rows(x)
        if x.shape[0] == 0:
            return np.empty(0)
        return self._score_raw(x)

    def anomaly_score(self, x: np.ndarray) -> np.ndarray:
        """Scores in 0..1, 0.5 at the calibrated threshold: rmse / (rmse + threshold)."""
        r = self.score(x)
        t = self.threshold if self.threshold > 0 else 1e-12
        return np.asarray(r / (r + t))

    def feature_errors(self, x: np.ndarray) -> np.ndarray:
        """Squared reconstruction error per feature [n, n_features] (normalised units)."""
        self._check()
        x = self._prep(x)
        if x.shape[0] == 0:
            return np.zeros((0, self.n_features))
        return self._ens.sq_error(self._normalise(x))

    def explain(self, row: np.ndarray, top: int = 3) -> list[tuple[str, float]]:
        """The features with the largest reconstruction error for one row."""
        err = self.feature_errors(np.asarray(row, np.float64).reshape(1, -1))[0]
        idx = np.argsort(-err)[:top]
        return [(self.feature_names[i], float(err[i])) for i in idx]

    # -- persistence ----------------------------------------------------------------------

    def _meta(self) -> dict[str, object]:
        return {
            "kind": MODEL_KIND,
            "version": MODEL_VERSION,
            "schema_hash": schema_hash(self.feature_names),
            "feature_names": list(self.feature_names),
            "config": asdict(self.config),
            "groups": self.groups,
            "threshold": self.threshold,
            "rows_learnt": self.rows_learnt,
            "rows_dropped": self.rows_dropped,
            "rows_calibration": self.rows_calibration,
        }

    def save(self, path: str | os.PathLike[str]) -> None:
        """One .npz file: the arrays and a JSON header (kind, version, feature-schema hash)."""
        self._check()
        meta = json.dumps(self._meta(), sort_keys=True).encode()
        arrays: dict[str, np.ndarray] = {
            "meta_json": np.frombuffer(meta, np.uint8),
            "lo": self._lo,
            "span": self._span,
            "rlo": self._rlo,
            "rspan": self._rspan,
        }
        for name, bank in (("ens", self._ens), ("out", self._out)):
            for part, a in bank.arrays().items():
                arrays[f"{name}_{part}"] = a
        buf = io.BytesIO()
        np.savez(buf, **arrays)  # type: ignore[arg-type]
        with open(path, "wb") as f:
            f.write(buf.getvalue())

    @classmethod
    def load(
        cls, path: str | os.PathLike[str], feature_names: tuple[str, ...] = FEATURE_NAMES
    ) -> KitNET:
        """Load a model, refusing files that are damaged, of another version or feature schema."""
        p = os.fspath(path)
        try:
            with open(p, "rb") as f, np.load(f, allow_pickle=False) as z:
                arrays = {k: z[k] for k in z.files}
        except (OSError, ValueError, EOFError, zipfile.BadZipFile, KeyError) as exc:
            raise ModelError(f"{p}: not a readable KitNET model ({exc})") from None
        try:
            meta = json.loads(arrays["meta_json"].tobytes().decode())
        except (KeyError, ValueError, UnicodeDecodeError) as exc:
            raise ModelError(f"{p}: model header missing or damaged ({exc})") from None
        if not isinstance(meta, dict) or meta.get("kind") != MODEL_KIND:
            raise ModelError(f"{p}: not a KitNET model")
        if meta.get("version") != MODEL_VERSION:
            raise ModelError(
                f"{p}: KitNET model version {meta.get('version')}, this Tapetum reads "
                f"version {MODEL_VERSION}; retrain the model"
            )
        want = schema_hash(feature_names)
        if meta.get("schema_hash") != want:
            raise ModelError(
                f"{p}: model trained on feature schema {meta.get('schema_hash')}, the extractor "
                f"produces {want}; retrain the model"
            )
        try:
            cfg = KitNETConfig(**meta["config"])
            model = cls(cfg, tuple(meta["feature_names"]))
            model.groups = [[int(i) for i in g] for g in meta["groups"]]
            model.threshold = float(meta["threshold"])
            model.rows_learnt = int(meta["rows_learnt"])
            model.rows_dropped = int(meta["rows_dropped"])
            model.rows_calibration = int(meta["rows_calibration"])
            model._lo = arrays["lo"]
            model._span = arrays["span"]
            model._rlo = arrays["rlo"]
            model._rspan = arrays["rspan"]
            banks = []
            for name in ("ens", "out"):
                banks.append(
                    _AEBank.from_arrays(
                        *(arrays[f"{name}_{part}"] for part in ("w", "hb", "vb", "mask", "member"))
                    )
                )
            model._ens, model._out = banks
            model._check_shapes()
        except (KeyError, TypeError, ValueError, IndexError) as exc:
            raise ModelError(f"{p}: model arrays missing or inconsistent ({exc})") from None
        model._fitted = True
        return model

    def _check_shapes(self) -> None:
        n, k = self.n_features, len(self.groups)
        ens, out = self._ens, self._out
        nh, oh = ens.w.shape[1], out.w.shape[1]
        member = np.zeros((n, k))
        for i, g in enumerate(self.groups):
            member[g, i] = 1.0
        ok = (
            self._lo.shape == (n,)
            and self._span.shape == (n,)
            and self._rlo.shape == (k,)
            and self._rspan.shape == (k,)
            and ens.w.shape == ens.mask.shape == (n, nh)
            and ens.hb.shape == (nh,)
            and ens.vb.shape == (n,)
            and np.array_equal(ens.member, member)
            and out.w.shape == out.mask.shape == (k, oh)
            and out.hb.shape == (oh,)
            and out.vb.shape == (k,)
            and out.member.shape == (k, 1)
        )
        if not ok:
            raise ValueError("array shapes do not match the feature map")
