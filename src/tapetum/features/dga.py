"""DGA features: which label of a DNS name to score, its character features, and the model.

The scored string is the registered-domain label: the label left of the public suffix
("x7fk2q.example.co.uk" -> "example"); that is the part a DGA must generate, because it is what
gets registered. Everything here is pure numpy at run time (no scikit-learn, no pickle): names are
encoded into a fixed-width matrix of character ids, hashed character n-grams (1-4, with boundary
markers) and a few handcrafted statistics feed a small MLP shipped as npz + JSON in
`tapetum/models/dga/` (trained by `scripts/train_dga.py`).
"""

from __future__ import annotations

import hashlib
import json
import math
from dataclasses import dataclass, field
from functools import lru_cache
from importlib import resources
from typing import Any

import numpy as np

from tapetum.errors import ModelError
from tapetum.features import columns
from tapetum.features.domain import normalize, psl, registered_domain

#: Characters the model knows (DNS host names: LDH, plus "_" seen in service names).
ALPHABET = "abcdefghijklmnopqrstuvwxyz0123456789-_"
PAD, START, END = 0, 1, 2
#: Character ids: 0 padding, 1 "^" (start), 2 "$" (end), 3.. the alphabet, then "other".
OTHER = 3 + len(ALPHABET)
BASE = OTHER + 1
MAX_LABEL = 63  # RFC 1035 label limit
MAX_NAME = 253
WIDTH = MAX_LABEL + 2
NGRAM_ORDERS = (1, 2, 3, 4)
HASH_BITS = 18
_HASH_MUL = 0x9E3779B97F4A7C15  # Fibonacci hashing: multiply, keep the top bits
VOWELS = "aeiou"
DENSE_FEATURES = (
    "length_chars",
    "entropy_bits",
    "vowel_ratio",
    "digit_ratio",
    "hyphen_count",
    "longest_consonant_run_chars",
    "longest_digit_run_chars",
    "letter_digit_switch_ratio",
    "unique_char_ratio",
    "bigram_loglik_mean",
    "bigram_loglik_min",
)

#: Describes the featuriser; its hash is stored with the weights so a model trained on other
#: features is refused instead of silently scoring garbage.
FEATURE_SCHEMA: dict[str, Any] = {
    "name": "tapetum-dga-features",
    "version": 1,
    "alphabet": ALPHABET,
    "boundary": ["^", "$"],
    "ngram_orders": list(NGRAM_ORDERS),
    "hash_bits": HASH_BITS,
    "hash_mul": _HASH_MUL,
    "ngram_value": "1/sqrt(ngrams in label)",
    "dense": list(DENSE_FEATURES),
    "label": "registered-domain label, IDN decoded to Unicode is not scored",
}


def schema_hash() -> str:
    return hashlib.sha256(json.dumps(FEATURE_SCHEMA, sort_keys=True).encode()).hexdigest()[:16]


_LUT = np.full(256, OTHER, dtype=np.uint8)
for _i, _c in enumerate(ALPHABET):
    _LUT[ord(_c)] = 3 + _i
_LUT[0] = PAD
_LUT[ord("^")] = START
_LUT[ord("$")] = END
_LDH = frozenset(ALPHABET + ".")
_IS_VOWEL = np.zeros(BASE, dtype=bool)
_IS_VOWEL[[3 + ALPHABET.index(v) for v in VOWELS]] = True
_IS_LETTER = np.zeros(BASE, dtype=bool)
_IS_LETTER[3 : 3 + 26] = True
_IS_DIGIT = np.zeros(BASE, dtype=bool)
_IS_DIGIT[3 + 26 : 3 + 36] = True
_IS_CONSONANT = _IS_LETTER & ~_IS_VOWEL
_IS_HYPHEN = np.zeros(BASE, dtype=bool)
_IS_HYPHEN[3 + ALPHABET.index("-")] = True


# -- which label to score ----------------------------------------------------------------------

#: Outcome of `prepare`: only "ok" labels are scored.
OK, EMPTY, MALFORMED, IDN, REVERSE, LOCAL = "ok", "empty", "malformed", "idn", "reverse", "local"


@dataclass(frozen=True, slots=True)
class Prepared:
    name: str  # normalised name
    registered: str  # registered domain ("" if none)
    label: str  # the label scored (IDN: decoded text, for display)
    status: str  # OK, EMPTY, MALFORMED, IDN, REVERSE, LOCAL
    reason: str = ""  # why not OK, in words
    private_suffix: bool = False  # under a PSL private-section suffix (cloudfront.net, github.io …)


def _decode_idn(label: str) -> str | None:
    try:
        return label.encode("ascii").decode("idna")
    except (UnicodeError, ValueError):
        return None


@lru_cache(maxsize=262_144)
def prepare(name: str) -> Prepared:
    """Normalise a DNS name and pick the label to score, or say why it is not scored.

    Malformed: a label over 63 characters, a name over 253, an empty label, characters outside
    letters, digits, "-", "_". Reverse lookups (in-addr.arpa, ip6.arpa) and names without a known
    public suffix (single labels, .local, .lan, .internal, .home.arpa …) are local. Punycode labels
    (xn--) are decoded: a valid IDN is not scored (the model knows ASCII host names only; being
    xn-- is no sign of a DGA), an undecodable one is malformed.
    """
    n = normalize(name)
    if not n:
        return Prepared(n, "", "", EMPTY, "empty name")
    if len(n) > MAX_NAME:
        return Prepared(n[:80], "", "", MALFORMED, f"name of {len(n)} characters (limit 253)")
    if not set(n) <= _LDH:
        bad = sorted(set(n) - _LDH)[:3]
        return Prepared(n, "", "", MALFORMED, f"characters not allowed in host names: {bad!r}")
    labels = n.split(".")
    if any(not lb for lb in labels):
        return Prepared(n, "", "", MALFORMED, "empty label")
    long = [lb for lb in labels if len(lb) > MAX_LABEL]
    if long:
        return Prepared(n, "", "", MALFORMED, f"label of {len(long[0])} characters (limit 63)")
    if n.endswith((".in-addr.arpa", ".ip6.arpa")) or n in ("in-addr.arpa", "ip6.arpa"):
        return Prepared(n, "", "", REVERSE, "reverse lookup")
    suffix = psl().publicsuffix(n, accept_unknown=False)
    if len(labels) < 2 or suffix is None or n.endswith((".arpa", ".local")) or n == "arpa":
        return Prepared(n, registered_domain(n), "", LOCAL, "no public suffix (local name)")
    if suffix == n:
        return Prepared(n, n, "", LOCAL, "a public suffix itself")
    reg = registered_domain(n)
    label = reg.split(".", 1)[0]
    icann = psl(only_icann=True).privatesuffix(n)
    private = icann is not None and icann != reg
    if label.startswith("xn--"):
        decoded = _decode_idn(label)
        if decoded is None:
            return Prepared(n, reg, label, MALFORMED, "invalid punycode label", private)
        if not decoded.isascii():
            return Prepared(n, reg, decoded, IDN, "internationalised name (not scored)", private)
        label = decoded
    return Prepared(n, reg, label, OK, "", private)


# -- character features ------------------------------------------------------------------------


def encode(labels: list[str]) -> tuple[np.ndarray, np.ndarray]:
    """(ids, lengths): one row per label, "^" label "$" then padding; labels cut at 63."""
    n = len(labels)
    if n == 0:
        return np.zeros((0, WIDTH), dtype=np.uint8), np.zeros(0, dtype=np.int64)
    raw = [lb[:MAX_LABEL].encode("ascii", "replace") for lb in labels]
    buf = b"".join([b"^" + r + b"$" + b"\0" * (MAX_LABEL - len(r)) for r in raw])
    ids = _LUT[np.frombuffer(buf, dtype=np.uint8)].reshape(n, WIDTH)
    lengths = np.fromiter((len(r) for r in raw), dtype=np.int64, count=n)
    return ids, lengths


def ngram_buckets(ids: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Hashed n-gram buckets (rows x slots, -1 = none) and each row's n-gram value."""
    n, w = ids.shape
    cols: list[np.ndarray] = []
    x = ids.astype(np.uint64)
    for order in NGRAM_ORDERS:
        if w < order:
            continue
        code = np.zeros((n, w - order + 1), dtype=np.uint64)
        valid = np.ones((n, w - order + 1), dtype=bool)
        for k in range(order):
            part = x[:, k : w - order + 1 + k]
            code = code * np.uint64(BASE) + part
            valid &= part != PAD
        if order == 1:
            valid &= (x[:, :w] != START) & (x[:, :w] != END)  # lone markers carry nothing
        code += np.uint64(order) << np.uint64(40)
        h = (code * np.uint64(_HASH_MUL)) >> np.uint64(64 - HASH_BITS)
        cols.append(np.where(valid, h.astype(np.int64), -1))
    buckets = np.concatenate(cols, axis=1)
    count = (buckets >= 0).sum(axis=1)
    value = 1.0 / np.sqrt(np.maximum(count, 1))
    return buckets, value


def dense_features(ids: np.ndarray, lengths: np.ndarray, bigram_logp: np.ndarray) -> np.ndarray:
    """Handcrafted statistics (DENSE_FEATURES order), one row per label."""
    n = ids.shape[0]
    if n == 0:
        return np.zeros((0, len(DENSE_FEATURES)))
    body = ids[:, 1:-1]  # drop "^"; the label occupies the first `length` slots
    pos = np.arange(body.shape[1])[None, :]
    inside = pos < lengths[:, None]
    length = np.maximum(lengths, 1).astype(np.float64)
    letter = _IS_LETTER[body] & inside
    digit = _IS_DIGIT[body] & inside
    vowel = _IS_VOWEL[body] & inside
    cons = _IS_CONSONANT[body] & inside
    letters = letter.sum(1)
    counts = np.zeros((n, BASE), dtype=np.float64)
    rows = np.repeat(np.arange(n), body.shape[1])
    np.add.at(counts, (rows[inside.ravel()], body.ravel()[inside.ravel()]), 1.0)
    p = counts / length[:, None]
    with np.errstate(divide="ignore", invalid="ignore"):
        ent = -np.where(p > 0, p * np.log2(p), 0.0).sum(1)
    sw = (letter[:, 1:] & digit[:, :-1]) | (digit[:, 1:] & letter[:, :-1])
    # Bigram log-likelihood under the benign model, over "^label$".
    a = ids[:, :-1].astype(np.int64)
    b = ids[:, 1:].astype(np.int64)
    valid = (a != PAD) & (b != PAD)
    lp = np.where(valid, bigram_logp[a, b], 0.0)
    nb = np.maximum(valid.sum(1), 1)
    lp_min = np.where(valid, lp, np.inf).min(1)
    return np.column_stack(
        [
            lengths.astype(np.float64),
            np.maximum(ent, 0.0),
            vowel.sum(1) / np.maximum(letters, 1),
            digit.sum(1) / length,
            (_IS_HYPHEN[body] & inside).sum(1).astype(np.float64),
            _longest_run(cons).astype(np.float64),
            _longest_run(digit).astype(np.float64),
            sw.sum(1) / length,
            (counts > 0).sum(1) / length,
            lp.sum(1) / nb,
            np.where(np.isfinite(lp_min), lp_min, 0.0),
        ]
    )


def _longest_run(mask: np.ndarray) -> np.ndarray:
    if mask.shape[1] == 0:
        return np.zeros(mask.shape[0], dtype=np.int64)
    cs = np.cumsum(mask, axis=1)
    reset = np.maximum.accumulate(np.where(mask, 0, cs), axis=1)
    return np.asarray((cs - reset).max(axis=1))


def bigram_model(labels: list[str], alpha: float = 0.5) -> np.ndarray:
    """log P(next char | char) over "^label$", add-alpha smoothed (trained on benign labels)."""
    ids, _ = encode(labels)
    a = ids[:, :-1].ravel().astype(np.int64)
    b = ids[:, 1:].ravel().astype(np.int64)
    m = (a != PAD) & (b != PAD)
    counts = np.zeros((BASE, BASE), dtype=np.float64)
    np.add.at(counts, (a[m], b[m]), 1.0)
    counts += alpha
    return np.asarray(np.log(counts / counts.sum(1, keepdims=True)))


# -- the model ---------------------------------------------------------------------------------


@dataclass
class DgaModel:
    """A small MLP: hashed n-gram embeddings (summed, fastText-like) and standardised dense
    features -> one ReLU layer -> P(DGA)."""

    embedding: np.ndarray  # (2**HASH_BITS, k): one vector per n-gram bucket
    w1: np.ndarray  # (k + len(DENSE_FEATURES), hidden)
    b1: np.ndarray  # (hidden,)
    w2: np.ndarray  # (hidden,)
    b2: float
    dense_mean: np.ndarray
    dense_std: np.ndarray
    bigram_logp: np.ndarray  # (BASE, BASE)
    threshold: float
    meta: dict[str, Any]
    #: Platt scaling fitted on calibration labels: P(DGA) = sigmoid(scale * logit + shift).
    scale: float = 1.0
    shift: float = 0.0
    _table: np.ndarray | None = field(default=None, init=False, repr=False, compare=False)

    #: Rows scored at once: bounds the (rows x n-grams x k) gather to a few tens of MB.
    CHUNK = 2048

    def logits(self, labels: list[str]) -> np.ndarray:
        if not labels:
            return np.zeros(0)
        parts = [
            self._logits(labels[s : s + self.CHUNK]) for s in range(0, len(labels), self.CHUNK)
        ]
        return np.concatenate(parts)

    def _logits(self, labels: list[str]) -> np.ndarray:
        ids, lengths = encode(labels)
        buckets, value = ngram_buckets(ids)
        table = self._padded()
        emb = table[np.where(buckets >= 0, buckets, table.shape[0] - 1)].sum(1) * value[:, None]
        d = (dense_features(ids, lengths, self.bigram_logp) - self.dense_mean) / self.dense_std
        h = np.maximum(np.concatenate([emb, d], axis=1) @ self.w1 + self.b1, 0.0)
        return np.asarray(h @ self.w2 + self.b2, dtype=np.float64)

    def _padded(self) -> np.ndarray:
        # One extra zero row: padding slots index it, so the gather needs no mask.
        t = self._table
        if t is None:
            t = np.vstack([self.embedding, np.zeros((1, self.embedding.shape[1]))])
            self._table = t
        return t

    def score_labels(self, labels: list[str]) -> np.ndarray:
        """P(DGA) per label (0..1)."""
        z = self.logits(labels) * self.scale + self.shift
        return np.asarray(1.0 / (1.0 + np.exp(-np.clip(z, -50, 50))))

    def to_arrays(self) -> dict[str, np.ndarray]:
        return {
            # float16 halves the shipped file; the scores move by < 1e-3.
            "embedding": self.embedding.astype(np.float16),
            "w1": self.w1,
            "b1": self.b1,
            "w2": self.w2,
            "b2": np.array([self.b2]),
            "dense_mean": self.dense_mean,
            "dense_std": self.dense_std,
            "bigram_logp": self.bigram_logp,
        }

    @staticmethod
    def from_arrays(arrays: Any, meta: dict[str, Any]) -> DgaModel:
        if meta.get("feature_schema_hash") != schema_hash():
            raise ModelError(
                f"DGA model was trained on features {meta.get('feature_schema_hash')}, this "
                f"Tapetum computes {schema_hash()}; retrain with scripts/train_dga.py"
            )
        try:
            f = {k: np.asarray(arrays[k], dtype=np.float64) for k in DgaModel.ARRAYS}
            model = DgaModel(
                embedding=f["embedding"], w1=f["w1"], b1=f["b1"], w2=f["w2"],
                b2=float(f["b2"].ravel()[0]), dense_mean=f["dense_mean"],
                dense_std=f["dense_std"], bigram_logp=f["bigram_logp"],
                threshold=float(meta["threshold"]), meta=meta,
                scale=float(meta.get("platt", [1.0, 0.0])[0]),
                shift=float(meta.get("platt", [1.0, 0.0])[1]),
            )  # fmt: skip
        except KeyError as exc:
            raise ModelError(f"DGA model file lacks {exc}") from None
        k = model.embedding.shape[1] if model.embedding.ndim == 2 else -1
        hidden = model.b1.shape[0]
        if (
            model.embedding.shape[0] != 1 << HASH_BITS
            or model.w1.shape != (k + len(DENSE_FEATURES), hidden)
            or model.w2.shape != (hidden,)
            or model.bigram_logp.shape != (BASE, BASE)
        ):
            raise ModelError("DGA model arrays have the wrong shapes for these features")
        return model

    ARRAYS = ("embedding", "w1", "b1", "w2", "b2", "dense_mean", "dense_std", "bigram_logp")


MODEL_FILES = ("dga.npz", "dga.json")


@lru_cache(maxsize=1)
def load_model() -> DgaModel:
    """The model shipped in the package (cached: loaded once per process)."""
    base = resources.files("tapetum") / "models" / "dga"
    try:
        meta = json.loads((base / "dga.json").read_text(encoding="utf-8"))
        with (base / "dga.npz").open("rb") as fh, np.load(fh, allow_pickle=False) as z:
            arrays = {k: z[k] for k in z.files}
    except (OSError, ValueError) as exc:
        raise ModelError(f"cannot load the bundled DGA model: {exc}") from None
    return DgaModel.from_arrays(arrays, meta)


class NameScorer:
    """Scores DNS names with a bounded memo (names repeat a lot in DNS traffic)."""

    def __init__(self, model: DgaModel | None = None, cache_size: int = 100_000) -> None:
        self.model = model or load_model()
        self.cache_size = cache_size
        self._cache: dict[str, float] = {}

    def scores(self, labels: list[str]) -> list[float]:
        todo = sorted({lb for lb in labels if lb not in self._cache})
        if todo:
            if len(self._cache) + len(todo) > self.cache_size:
                self._cache.clear()  # simple bound; a refill costs one batch of scoring
            for lb, s in zip(todo, self.model.score_labels(todo).tolist(), strict=True):
                self._cache[lb] = s
        return [self._cache[lb] for lb in labels]


def score_names(names: list[str], model: DgaModel | None = None) -> list[tuple[Prepared, float]]:
    """Prepare and score names; names that are not scored get NaN."""
    m = model or load_model()
    prepared = [prepare(nm) for nm in names]
    ok = [k for k, p in enumerate(prepared) if p.status == OK]
    out = [math.nan] * len(names)
    if ok:
        s = m.score_labels([prepared[k].label for k in ok])
        for k, v in zip(ok, s.tolist(), strict=True):
            out[k] = v
    return list(zip(prepared, out, strict=True))


# -- per-host DNS aggregates (the detector's rows) ---------------------------------------------

#: mDNS and LLMNR: link-local name resolution, never DGA traffic.
LINK_LOCAL_DNS_PORTS = frozenset({5353, 5355})


@dataclass(frozen=True, slots=True)
class NameFilter:
    """Which queries count at all, and which names may be scored."""

    local_zones: tuple[str, ...] = ()
    skip_private_suffixes: bool = True

    def classify(self, name: str) -> Prepared | None:
        """None: the query does not count (local, reverse); else its prepared name."""
        p = prepare(name)
        if p.status in (REVERSE, LOCAL, EMPTY):
            return None
        for zone in self.local_zones:
            if p.name == zone or p.name.endswith("." + zone):
                return None
        return p

    def scorable(self, p: Prepared) -> bool:
        return p.status == OK and not (self.skip_private_suffixes and p.private_suffix)


@dataclass(slots=True)
class HostWindow:
    """One host's DNS activity in one window, bounded in the names it keeps."""

    first_ns: int
    last_ns: int
    queries: int = 0
    responses: int = 0
    nx_responses: int = 0
    malformed: int = 0
    dropped_names: int = 0
    #: registered domain -> [example name, score (NaN: not scored), got NXDOMAIN]
    domains: dict[str, list[Any]] = field(default_factory=dict)

    def add(
        self, ts_ns: int, p: Prepared, score: float, answered: bool, nx: bool, max_names: int
    ) -> None:
        self.first_ns = min(self.first_ns, ts_ns)
        self.last_ns = max(self.last_ns, ts_ns)
        self.queries += 1
        self.responses += answered
        self.nx_responses += nx
        self.malformed += p.status == MALFORMED
        key = p.registered or p.name
        d = self.domains.get(key)
        if d is None:
            if len(self.domains) >= max_names:
                self.dropped_names += 1  # counts become lower bounds; still bounded memory
                return
            self.domains[key] = [p.name, score, nx]
        elif nx and not d[2]:
            d[2] = True


@dataclass(slots=True)
class DgaRows:
    """One row per host and window: the DGA detector's feature table."""

    host: list[str]
    first_ns: np.ndarray
    last_ns: np.ndarray
    queries: np.ndarray
    responses: np.ndarray
    nx_responses: np.ndarray
    distinct_domains: np.ndarray
    dga_domains: np.ndarray  # distinct registered domains scored at or above the name threshold
    dga_nx_domains: np.ndarray  # of those, how many got NXDOMAIN
    nx_domains: np.ndarray  # distinct registered domains answered NXDOMAIN
    malformed: np.ndarray
    dropped_names: np.ndarray
    #: Up to 5 examples per row, highest score first: (name, score, got NXDOMAIN).
    examples: list[list[tuple[str, float, bool]]]

    def __len__(self) -> int:
        return len(self.host)

    @property
    def nx_ratio(self) -> np.ndarray:
        return np.asarray(self.nx_responses / np.maximum(self.responses, 1))

    def take(self, idx: np.ndarray) -> DgaRows:
        """Rows by index array or boolean mask."""
        return columns.take(self, idx)


_NUMERIC = (
    "first_ns", "last_ns", "queries", "responses", "nx_responses", "distinct_domains",
    "dga_domains", "dga_nx_domains", "nx_domains", "malformed", "dropped_names",
)  # fmt: skip


def rows_from(windows: dict[str, HostWindow], threshold: float) -> DgaRows:
    """Rows of accumulated host windows, hosts in sorted order (deterministic)."""
    hosts = sorted(windows)
    cols: dict[str, list[int]] = {f: [] for f in _NUMERIC}
    examples: list[list[tuple[str, float, bool]]] = []
    for h in hosts:
        w = windows[h]
        dga = [(d[0], float(d[1]), bool(d[2])) for d in w.domains.values() if d[1] >= threshold]
        dga.sort(key=lambda x: (-x[1], x[0]))
        vals = (
            w.first_ns, w.last_ns, w.queries, w.responses, w.nx_responses, len(w.domains),
            len(dga), sum(1 for x in dga if x[2]), sum(1 for d in w.domains.values() if d[2]),
            w.malformed, w.dropped_names,
        )  # fmt: skip
        for f, v in zip(_NUMERIC, vals, strict=True):
            cols[f].append(int(v))
        examples.append(dga[:5])
    return DgaRows(
        host=hosts,
        examples=examples,
        **{f: np.asarray(v, dtype=np.int64) for f, v in cols.items()},
    )
