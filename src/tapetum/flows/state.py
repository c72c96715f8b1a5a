"""Zeek's conn_state for whole flow batches, compiled.

Per-endpoint TCP states are derived from the meter's state bits like Zeek's TCP analyzer does,
then combined exactly as Zeek's `conn_state()` in base/protocols/conn/main.zeek.
"""

from __future__ import annotations

import numpy as np
from numba import njit

from tapetum.flows import table as T

CONN_STATES = ("S0", "S1", "SF", "REJ", "S2", "S3", "RSTO", "RSTR", "RSTOS0", "RSTRH", "SH",
               "SHR", "OTH")  # fmt: skip
_S0, _S1, _SF, _REJ, _S2, _S3, _RSTO, _RSTR, _RSTOS0, _RSTRH, _SH, _SHR, _OTH = range(13)
_INACTIVE, _SYN_SENT, _SYN_ACK_SENT, _PARTIAL, _ESTABLISHED, _CLOSED, _RESET = range(7)
_NAMES = np.array(CONN_STATES, dtype=object)


@njit(cache=True, inline="always")
def _endpoint(syn: bool, synack: bool, fin: bool, rst: bool, pkts: int, established: bool) -> int:
    if rst:
        return _RESET
    if fin:
        return _CLOSED
    if established:
        return _ESTABLISHED
    if syn:
        return _SYN_SENT
    if synack:
        return _SYN_ACK_SENT
    return _PARTIAL if pkts > 0 else _INACTIVE


@njit(cache=True)
def _rstos0(hist: np.ndarray, k: int, n: int) -> bool:
    """Zeek's /^\\^?S[^HAFGIQ]*R.*/ on the first n letters of hist[k]."""
    i = 0
    if i < n and hist[k, i] == 94:  # "^"
        i += 1
    if i >= n or hist[k, i] != 83:  # "S"
        return False
    i += 1
    while i < n:
        c = hist[k, i]
        if c == 82:  # "R"
            return True
        if c == 72 or c == 65 or c == 70 or c == 71 or c == 73 or c == 81:  # HAFGIQ
            return False
        i += 1
    return False


@njit(cache=True)
def conn_state_codes(
    proto: np.ndarray,
    st: np.ndarray,
    pkts_orig: np.ndarray,
    pkts_resp: np.ndarray,
    payload_orig: np.ndarray,
    payload_resp: np.ndarray,
    hist: np.ndarray,
    hist_len: np.ndarray,
) -> np.ndarray:
    n = proto.shape[0]
    out = np.empty(n, dtype=np.int64)
    for k in range(n):
        p = proto[k]
        if p == 17:
            out[k] = _SF if pkts_resp[k] > 0 else _S0
            continue
        if p != 6:
            out[k] = _OTH
            continue
        s = st[k]
        est = (
            (s & T.ST_ORIG_SYN) != 0
            and (s & T.ST_RESP_SYNACK) != 0
            and (s & T.ST_ORIG_ACK_AFTER_SYNACK) != 0
        )
        os_ = _endpoint(
            (s & T.ST_ORIG_SYN) != 0, (s & T.ST_ORIG_SYNACK) != 0, (s & T.ST_ORIG_FIN) != 0,
            (s & T.ST_ORIG_RST) != 0, pkts_orig[k], est,
        )  # fmt: skip
        rs = _endpoint(
            (s & T.ST_RESP_SYN) != 0, (s & T.ST_RESP_SYNACK) != 0, (s & T.ST_RESP_FIN) != 0,
            (s & T.ST_RESP_RST) != 0, pkts_resp[k], est,
        )  # fmt: skip
        o_inactive = os_ == _INACTIVE or os_ == _PARTIAL
        r_inactive = rs == _INACTIVE or rs == _PARTIAL
        if rs == _RESET:
            if (
                os_ == _SYN_SENT
                or os_ == _SYN_ACK_SENT
                or (os_ == _RESET and payload_orig[k] == 0 and payload_resp[k] == 0)
            ):
                out[k] = _REJ
            elif o_inactive:
                out[k] = _RSTRH
            else:
                out[k] = _RSTR
        elif os_ == _RESET:
            if r_inactive:
                out[k] = _RSTOS0 if _rstos0(hist, k, hist_len[k]) else _OTH
            else:
                out[k] = _RSTO
        elif rs == _CLOSED and os_ == _CLOSED:
            out[k] = _SF
        elif os_ == _CLOSED:
            out[k] = _SH if r_inactive else _S2
        elif rs == _CLOSED:
            out[k] = _SHR if o_inactive else _S3
        elif os_ == _SYN_SENT and rs == _INACTIVE:
            out[k] = _S0
        elif os_ == _ESTABLISHED and rs == _ESTABLISHED:
            out[k] = _S1
        else:
            out[k] = _OTH
    return out


def conn_state_names(codes: np.ndarray) -> list[str]:
    return list(_NAMES[codes])
