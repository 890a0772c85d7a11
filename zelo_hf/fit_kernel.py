"""Compiled per-query kernel of the Thurstone / Bradley-Terry fit (numba, issue #12).

One call fits a range of whole queries, query after query, with the GIL released, so the fit's threads run side
by side on shared arrays (the NumPy solver before it held the GIL between its many small calls: 1.1x on two
threads). Pairs come grouped by query with indices local to their query (the grouped preference set's layout), and
the kernel checks each pair itself (indices, self-pairs, probabilities) before it fits the query: a bad query is
reported, never fitted. Per query, everything stays in cache: a least-squares warm start, Newton steps solved by
Jacobi-preconditioned conjugate gradients on the sparse Hessian, a backtracking line search, and at the optimum the
exact standard errors ``sqrt(diag(H^-1))``: an independent set of the comparison graph is eliminated first (its
block of H is diagonal), and the Schur complement left is factored densely, ``S = L L^T``, with ``diag(S^-1)_j`` the
squared norm of column j of ``L^-1``. The objective and the public API are in :mod:`zelo_hf.thurstone`.

The per-pair terms (for a pair at difference d with label p, l(d) = p log F(d) + (1 - p) log F(-d): ``l'(d)``, the
curvature weight ``-l''(d)`` and ``l(d)``) are the hot loop, about three quarters of a Newton step. A call to libm's
``exp``, ``log`` or ``erfc`` keeps a loop scalar (numba has no vector libm), so :func:`edge_terms` computes a
query's pairs in one loop of arithmetic and selects only, which LLVM compiles to 8-wide AVX-512 (4-wide AVX2):
``exp(-v)`` by the binary digits of v (constants ``exp(-2^k)``) and a Taylor polynomial, ``log`` by 2 atanh after
scaling by powers of 2, ``erfc`` by Cephes' rational approximations (ndtr.c), written ``erfc(u) = exp(-u^2) R(u)``
above 1 so that the tail's inverse Mills ratio and log never divide by, or take the log of, a small number.

Functions are compiled on first use and cached on disk (numba ``cache=True``), so a later process loads them.
The per-pair terms live in this file, not a module of their own, because numba's cache of a function is keyed to
its own file: a kernel in one file that inlines terms from another keeps running the old terms after they change.
"""

from __future__ import annotations

import math

import numpy as np
from numba import njit

# Inexact Newton: each CG solve stops at |r| <= max(min(_ETA0, _ETA1 |g|) |g|, _FLOOR tol): loose far from the
# optimum, tight near it (superlinear convergence), never tighter than the stopping rule needs. This forcing term
# is tight enough that nearly every query meets tol after 3 Newton steps from the warm start.
_ETA0, _ETA1, _FLOOR = 0.003, 0.3, 0.3

_JIT = dict(cache=True, nogil=True)
# Sums over documents may be reassociated (vectorised): CG's reductions were ~1/3 of its time as serial add chains.
# Only the order of additions changes; the per-pair terms are compiled without fast-math.
_JIT_SUMS = dict(cache=True, nogil=True, fastmath={"reassoc", "contract"})
# Warm start: F^-1(p) of the label clipped to [0.03, 0.97], where Acklam's central rational approximation of the
# normal quantile holds (relative error < 1.2e-9, plenty for a starting point; scipy's ndtri cannot be called from
# compiled code, and a NumPy pass over every pair before the kernel cost ~9 us per query).
_P_CLIP = 0.03
_ACKLAM_A = (-3.969683028665376e01, 2.209460984245205e02, -2.759285104469687e02, 1.383577518672690e02,
             -3.066479806614716e01, 2.506628277459239e00)  # fmt: skip
_ACKLAM_B = (-5.447609879822406e01, 1.615858368580409e02, -1.556989798598866e02, 6.680131188771972e01,
             -1.328068155288572e01)  # fmt: skip


# ------------------------------------------------------------------------------------------ per-pair terms
# error_model="numpy": a division by zero gives inf rather than a raise, which would keep the loops scalar
_JIT_VEC = dict(cache=True, nogil=True, error_model="numpy")
_JIT_INLINE = dict(_JIT_VEC, inline="always")

_SQRT2 = math.sqrt(2.0)
_INV_SQRT_2PI = 1.0 / math.sqrt(2.0 * math.pi)
_LOG_INV_SQRT_2PI = math.log(_INV_SQRT_2PI)
_LN2 = math.log(2.0)
_TAIL = 25.0  # |d| beyond which the Thurstone terms come from the asymptotic series of log Phi (scalar)
_LOGISTIC_MAX = 700.0  # |d| beyond which exp(-|d|) nears underflow: the Bradley-Terry terms go scalar
_EXP_MAX = 708.0  # exp(-v) is computed for 0 <= v <= 708 (above 1e-308)

# exp(-v): v = sum of bits 2^k (k = 9 .. 0) + f, f in [0, 1); exp(-f) = exp(-1/2) exp(1/2 - f), a degree-14
# Taylor polynomial on |1/2 - f| <= 1/2 (truncation below 2.5e-17 relative)
_EXP_BITS = tuple((float(2**k), math.exp(-(2.0**k))) for k in range(9, -1, -1))
_EXP_TAYLOR = tuple(1.0 / math.factorial(k) for k in range(14, -1, -1))
_EXP_HALF = math.exp(-0.5)
# Cephes ndtr.c: erf(u) = u T(u^2) / U(u^2) on [0, 1); erfc(u) = exp(-u^2) P(u) / Q(u) on [1, 8), R(u) / S(u)
# beyond (U, Q, S monic)
_ERF_T = (9.60497373987051638749e0, 9.00260197203842689217e1, 2.23200534594684319226e3,
          7.00332514112805075473e3, 5.55923013010394962768e4)  # fmt: skip
_ERF_U = (1.0, 3.35617141647503099647e1, 5.21357949780152679795e2, 4.59432382970980127987e3,
          2.26290000613890934246e4, 4.92673942608635921086e4)  # fmt: skip
_ERFC_P = (2.46196981473530512524e-10, 5.64189564831068821977e-1, 7.46321056442269912687e0,
           4.86371970985681366614e1, 1.96520832956077098242e2, 5.26445194995477358631e2,
           9.34528527171957607540e2, 1.02755188689515710272e3, 5.57535335369399327526e2)  # fmt: skip
_ERFC_Q = (1.0, 1.32281951154744992508e1, 8.67072140885989742329e1, 3.54937778887819891062e2,
           9.75708501743205489753e2, 1.82390916687909736289e3, 2.24633760818710981792e3,
           1.65666309194161350182e3, 5.57535340817727675546e2)  # fmt: skip
_ERFC_R = (5.64189583547755073984e-1, 1.27536670759978104416e0, 5.01905042251180477414e0,
           6.16021097993053585195e0, 7.40974269950448939160e0, 2.97886665372100240670e0)  # fmt: skip
_ERFC_S = (1.0, 2.26052863220117276590e0, 9.39603524938001434673e0, 1.20489539808096656605e1,
           1.70814450747565897222e1, 9.60896809063285878198e0, 3.36907645100081516050e0)  # fmt: skip


@njit(**_JIT_INLINE)
def _horner(x, c):
    r = c[0]
    for k in range(1, len(c)):
        r = r * x + c[k]
    return r


@njit(**_JIT_INLINE)
def _atanh2(s, terms):
    """2 atanh(s) = 2 s sum_k s^2k / (2k + 1), the first ``terms`` terms: 12 for |s| <= 0.172 (the log of
    [1/sqrt2, sqrt2)), 18 for |s| <= 1/3 (truncation below 1e-17 relative). A loop with a constant count (a tuple
    of 18 coefficients is not unrolled, which keeps the caller's loop scalar)."""
    z = s * s
    r = 1.0 / (2 * terms - 1)
    for k in range(terms - 2, -1, -1):
        r = r * z + 1.0 / (2 * k + 1)
    return 2.0 * s * r


@njit(**_JIT_INLINE)
def _exp_neg(v):
    """exp(-v) for 0 <= v <= 708 (a few ulp)."""
    scale = _EXP_HALF
    for bit, factor in _EXP_BITS:
        take = v >= bit
        v = v - bit if take else v
        scale = scale * factor if take else scale
    return scale * _horner(0.5 - v, _EXP_TAYLOR)


@njit(**_JIT_INLINE)
def _log_unit(x):
    """log x for x in [2^-7 / sqrt2, sqrt2): x scaled by 2^k into [1/sqrt2, sqrt2), then 2 atanh."""
    k = 0.0
    for shift, factor in ((4.0, 16.0), (2.0, 4.0), (1.0, 2.0)):
        take = x * factor < _SQRT2
        x = x * factor if take else x
        k = k + shift if take else k
    s = (x - 1.0) / (x + 1.0)
    return _atanh2(s, 12) - k * _LN2


@njit(**_JIT_INLINE)
def _log1p(t):
    """log(1 + t) for -1/2 <= t <= 1: 2 atanh(t / (2 + t)), accurate for small t too."""
    return _atanh2(t / (2.0 + t), 18)


@njit(**_JIT_VEC)
def _thurstone_terms(d, p, dl, w, ll) -> None:
    """The Thurstone terms for |d| <= _TAIL, written for u = |d| (the label's mass on the side d favours is p_w)."""
    for e in range(len(d)):
        u = abs(d[e])
        neg = d[e] < 0
        p_w = 1.0 - p[e] if neg else p[e]
        q_w = 1.0 - p_w
        z = _SQRT2 * u
        uu = u * u
        gauss = _exp_neg(min(uu, _EXP_MAX))  # exp(-u^2)
        phi = gauss * _INV_SQRT_2PI
        near = u < 1.0
        # tail = Phi(-z) = erfc(u) / 2: directly below 1; above, tail = exp(-u^2) r with r = R(u) / 2
        erf = u * _horner(uu, _ERF_T) / _horner(uu, _ERF_U)
        mid = u < 8.0
        num = _horner(u, _ERFC_P) if mid else _horner(u, _ERFC_R)
        den = _horner(u, _ERFC_Q) if mid else _horner(u, _ERFC_S)
        r = 0.5 - 0.5 * erf if near else 0.5 * num / den
        tail = r if near else r * gauss
        lam_tail = (phi if near else _INV_SQRT_2PI) / r  # inverse Mills ratios at -z and +z
        log_tail = _log_unit(r) - (0.0 if near else uu)
        big = 1.0 - tail
        lam_big = phi / big
        sign = -_SQRT2 if neg else _SQRT2
        dl[e] = sign * (p_w * lam_big - q_w * lam_tail)
        # -(d^2/dz^2) log Phi(z) = lam(z) (z + lam(z)); the chain rule through z = sqrt2 d gives the 2
        w[e] = 2.0 * (p_w * lam_big * (lam_big + z) + q_w * lam_tail * (lam_tail - z))
        ll[e] = p_w * _log1p(-tail) + q_w * log_tail


@njit(**_JIT_VEC)
def _logistic_terms(d, p, dl, w, ll) -> None:
    """The Bradley-Terry terms for |d| <= _LOGISTIC_MAX, from t = exp(-|d|): sigma(|d|) = 1 / (1 + t) and
    sigma(-|d|) = t / (1 + t), so that neither 1 - sigma nor sigma (1 - sigma) cancels."""
    for e in range(len(d)):
        x = d[e]
        pos = x >= 0
        t = _exp_neg(min(abs(x), _EXP_MAX))
        hi = 1.0 / (1.0 + t)
        lo = t * hi
        sig, sig_neg = (hi, lo) if pos else (lo, hi)
        dl[e] = p[e] * sig_neg - (1.0 - p[e]) * sig
        w[e] = hi * lo
        ll[e] = -_log1p(t) + ((p[e] - 1.0) * x if pos else p[e] * x)  # log sigma(d) - (1 - p) d


@njit(**_JIT_VEC)
def _mills_series(z: float) -> float:
    """S = T - 1 for z >= 25 sqrt2 (~35), where Phi(-z) = phi(z) T / z and T = sum_k (-1)^k (2k - 1)!! / z^2k, the
    asymptotic series (its terms fall below 1e-17 by the 8th there), as scipy's log_ndtr uses for large arguments.
    S itself (not 1 - T) keeps the tail's curvature lam (lam - z) = -z^2 S / T^2 free of cancellation."""
    x2 = 1.0 / (z * z)
    total, term = 0.0, 1.0
    for k in range(1, 9):
        term *= -(2 * k - 1) * x2
        total += term
    return total


@njit(**_JIT_VEC)
def _far_terms(d: float, p: float, thurstone: bool):
    """(dl, w, ll) of one pair beyond the vector range, with libm (rare: |d| > 25 is a near-certain comparison)."""
    if not thurstone:
        t = math.exp(-abs(d))
        hi = 1.0 / (1.0 + t)
        sig, sig_neg = (hi, t * hi) if d >= 0 else (t * hi, hi)
        return p * sig_neg - (1.0 - p) * sig, hi * t * hi, -math.log1p(t) + ((p - 1.0) * d if d >= 0 else p * d)
    u = abs(d)
    p_w = 1.0 - p if d < 0 else p
    q_w = 1.0 - p_w
    z = _SQRT2 * u
    series = _mills_series(z)
    log_tail = -u * u - math.log(z) + _LOG_INV_SQRT_2PI + math.log1p(series)
    lam_tail = z / (1.0 + series)
    curv_tail = -z * z * series / ((1.0 + series) * (1.0 + series))
    lam_big = math.exp(-u * u) * _INV_SQRT_2PI  # Phi(z) = 1 to double precision
    sign = -_SQRT2 if d < 0 else _SQRT2
    dl = sign * (p_w * lam_big - q_w * lam_tail)
    w = 2.0 * (p_w * lam_big * (lam_big + z) + q_w * curv_tail)
    return dl, w, q_w * log_tail - p_w * math.exp(log_tail)  # log Phi(z) = log1p(-tail) = -tail here


@njit(**_JIT_VEC)
def edge_terms(d, p, thurstone: bool, dl, w, ll) -> None:
    """Per pair e: ``dl[e] = l'(d[e])``, ``w[e] = -l''(d[e]) > 0`` and ``ll[e] = l(d[e])`` for labels ``p``.

    Against 40-digit mpmath (``test_pair_terms_match_40_digit_references``), Thurstone on |d| <= 25: dl to 6e-14 of
    the size of its two terms, w to 5e-13 and ll to 6e-14 relative (libm's scalar terms: 6e-14, 6e-11, and ll = 0
    where the label is certain and the tail below 1e-16); Bradley-Terry to 7e-16 everywhere."""
    if thurstone:
        _thurstone_terms(d, p, dl, w, ll)
    else:
        _logistic_terms(d, p, dl, w, ll)
    limit = _TAIL if thurstone else _LOGISTIC_MAX
    e = _next_beyond(d, limit, 0)
    while e < len(d):
        dl[e], w[e], ll[e] = _far_terms(d[e], p[e], thurstone)
        e = _next_beyond(d, limit, e + 1)


@njit(**_JIT_VEC)
def _next_beyond(d, limit, start) -> int:
    """The first e >= start with |d[e]| > limit, else len(d). A search rather than a test inside a loop over all
    pairs: LLVM would if-convert that test and compute the scalar far terms (libm calls) for every pair, 1.7x the
    cost of the vector terms themselves."""
    for e in range(start, len(d)):
        if abs(d[e]) > limit:
            return e
    return len(d)


# ------------------------------------------------------------------------------------------------ the fit
@njit(**_JIT)
def _warm_target(p: float, thurstone: bool):
    """The warm start's target difference d, where F(d) equals the clipped label (F^-1(p) = ndtri(p) / sqrt2, or
    logit(p)), and its least-squares weight: 1 for Thurstone; for Bradley-Terry the Fisher information p (1 - p) at
    the target (4.0 -> 3.3 Newton steps there; for Thurstone the same weighting saved none)."""
    p = min(max(p, _P_CLIP), 1.0 - _P_CLIP)
    if not thurstone:
        return math.log(p / (1.0 - p)), p * (1.0 - p)
    q = p - 0.5
    r = q * q
    a, b = _ACKLAM_A, _ACKLAM_B
    num = (((((a[0] * r + a[1]) * r + a[2]) * r + a[3]) * r + a[4]) * r + a[5]) * q
    den = ((((b[0] * r + b[1]) * r + b[2]) * r + b[3]) * r + b[4]) * r + 1.0
    return num / den / _SQRT2, 1.0


@njit(**_JIT)
def _first_bad_pair(a, b, p, n) -> int:
    """Index of the query's first pair that cannot be fitted (an index outside 0..n-1, a self-pair, or a label that
    is not a number in [0, 1]), -1 if none. The kernel never reads past a query's documents."""
    for e in range(len(a)):
        if not (0 <= a[e] < n and 0 <= b[e] < n and a[e] != b[e] and 0.0 <= p[e] <= 1.0):
            return e
    return -1


@njit(**_JIT)
def edge_log_likelihoods(d: np.ndarray, p: np.ndarray, thurstone: bool) -> np.ndarray:
    dl, w, ll = np.empty(len(d)), np.empty(len(d)), np.empty(len(d))
    edge_terms(d, p, thurstone, dl, w, ll)
    return ll


@njit(**_JIT)
def _evaluate(s, a, b, p, c, thurstone, prec, w, g, dv, dl, ll):
    """Curvature weights into w, the gradient into g; returns the objective and its data term. ``dv``, ``dl``,
    ``ll``: scratch per pair (the differences, and the per-pair terms computed in one vector pass)."""
    for e in range(len(a)):
        dv[e] = s[a[e]] - s[b[e]] + c[e]
    edge_terms(dv, p, thurstone, dl, w, ll)
    for i in range(len(s)):
        g[i] = -prec * s[i]
    for e in range(len(a)):
        g[a[e]] += dl[e]
        g[b[e]] -= dl[e]
    total = _sum(ll)
    return total - 0.5 * prec * _dot(s, s), total


@njit(**_JIT_SUMS)
def _pcg(a, b, w, prec, rhs, target, max_cg, x, r, z, d, hd, dinv):
    """Solve H x = rhs (H = B^T diag(w) B + prec I) by Jacobi-preconditioned CG to |r| <= target."""
    n = len(rhs)
    for i in range(n):
        dinv[i] = prec
    for e in range(len(a)):
        dinv[a[e]] += w[e]
        dinv[b[e]] += w[e]
    rr, rz = 0.0, 0.0
    for i in range(n):
        dinv[i] = 1.0 / dinv[i]
        x[i] = 0.0
        r[i] = rhs[i]
        z[i] = r[i] * dinv[i]
        d[i] = z[i]
        rr += r[i] * r[i]
        rz += r[i] * z[i]
    target2 = target * target
    if rr <= target2:
        return
    for _ in range(max_cg):
        for i in range(n):
            hd[i] = prec * d[i]
        for e in range(len(a)):
            t = w[e] * (d[a[e]] - d[b[e]])
            hd[a[e]] += t
            hd[b[e]] -= t
        dhd = _dot(d, hd)
        if dhd <= 0:
            return
        alpha = rz / dhd
        rr, rz_new = 0.0, 0.0
        for i in range(n):
            x[i] += alpha * d[i]
            r[i] -= alpha * hd[i]
            z[i] = r[i] * dinv[i]
            rr += r[i] * r[i]
            rz_new += r[i] * z[i]
        if rr <= target2:
            return
        beta = rz_new / rz if rz > 0 else 0.0
        for i in range(n):
            d[i] = z[i] + beta * d[i]
        rz = rz_new


@njit(**_JIT_SUMS)
def _dot(x, y) -> float:
    total = 0.0
    for i in range(len(x)):
        total += x[i] * y[i]
    return total


@njit(**_JIT_SUMS)
def _sum(x) -> float:
    total = 0.0
    for i in range(len(x)):
        total += x[i]
    return total


@njit(**_JIT_SUMS)
def _max_abs(x) -> float:
    top = 0.0
    for i in range(len(x)):
        top = max(top, abs(x[i]))
    return top


@njit(**_JIT_SUMS)
def _axpy_into(out, x, t, y) -> None:
    """out = x + t * y."""
    for i in range(len(out)):
        out[i] = x[i] + t * y[i]


@njit(**_JIT)
def _connected(a, b, n, parent) -> bool:
    """Does the graph connect all n documents? (Union-find with path halving.)"""
    for i in range(n):
        parent[i] = i
    components = n
    for e in range(len(a)):
        x, y = a[e], b[e]
        while parent[x] != x:
            parent[x] = parent[parent[x]]
            x = parent[x]
        while parent[y] != y:
            parent[y] = parent[parent[y]]
            y = parent[y]
        if x != y:
            parent[x] = y
            components -= 1
    return components == 1


_JIT_DENSE = dict(cache=True, nogil=True, fastmath=True)


@njit(**_JIT_DENSE)
def _cholesky(h, n) -> None:
    """``h[:n, :n] = L L^T`` in place (lower triangle; the upper one is never read). Row-wise dot products, four
    rows at a time so they share the loads of row j; rows are taken as slices from column 0 (a loop over ``k`` in
    ``j .. i`` indexing ``h[i, k]`` compiles to gathers, 4x slower)."""
    for j in range(n):
        rj = h[j, :j]
        s = h[j, j]
        for k in range(j):
            s -= rj[k] * rj[k]
        piv = math.sqrt(s)
        h[j, j] = piv
        inv = 1.0 / piv
        i = j + 1
        while i + 3 < n:
            r0, r1, r2, r3 = h[i, :j], h[i + 1, :j], h[i + 2, :j], h[i + 3, :j]
            t0, t1, t2, t3 = h[i, j], h[i + 1, j], h[i + 2, j], h[i + 3, j]
            for k in range(j):
                r = rj[k]
                t0 -= r0[k] * r
                t1 -= r1[k] * r
                t2 -= r2[k] * r
                t3 -= r3[k] * r
            h[i, j], h[i + 1, j], h[i + 2, j], h[i + 3, j] = t0 * inv, t1 * inv, t2 * inv, t3 * inv
            i += 4
        while i < n:
            ri = h[i, :j]
            t = h[i, j]
            for k in range(j):
                t -= ri[k] * rj[k]
            h[i, j] = t * inv
            i += 1


@njit(**_JIT_DENSE)
def _inverse_columns(h, x, n, out) -> None:
    """The columns of ``L^-1`` for the Cholesky factor in ``h[:n, :n]``: ``x[c, i]`` is entry (i, c) (zero for
    i < c) and ``out[c]`` its squared norm, so ``out = diag(H^-1)`` (``H^-1 = L^-T L^-1``). Forward substitution,
    four columns at a time (they share the loads of each row of L), as dot products over slices from column c."""
    p0 = 0
    while p0 < n:
        r = min(4, n - p0)
        for t in range(r):
            row = x[p0 + t, :p0]
            for i in range(p0):
                row[i] = 0.0
        y0, y1 = x[p0, p0:n], x[min(p0 + 1, n - 1), p0:n]
        y2, y3 = x[min(p0 + 2, n - 1), p0:n], x[min(p0 + 3, n - 1), p0:n]
        o0 = o1 = o2 = o3 = 0.0
        for i in range(p0, n):
            li = h[i, p0:i]
            m = i - p0
            s0 = s1 = s2 = s3 = 0.0
            for k in range(m):
                v = li[k]
                s0 += v * y0[k]
                s1 += v * y1[k]
                s2 += v * y2[k]
                s3 += v * y3[k]
            inv = 1.0 / h[i, i]
            # column p0 + t: zero above its diagonal, 1 / L_cc on it, the substitution below
            v0 = inv if m == 0 else -s0 * inv
            y0[m] = v0
            o0 += v0 * v0
            if r > 1:
                v1 = 0.0 if m < 1 else (inv if m == 1 else -s1 * inv)
                y1[m] = v1
                o1 += v1 * v1
            if r > 2:
                v2 = 0.0 if m < 2 else (inv if m == 2 else -s2 * inv)
                y2[m] = v2
                o2 += v2 * v2
            if r > 3:
                v3 = 0.0 if m < 3 else (inv if m == 3 else -s3 * inv)
                y3[m] = v3
                o3 += v3 * v3
        out[p0] = o0
        if r > 1:
            out[p0 + 1] = o1
        if r > 2:
            out[p0 + 2] = o2
        if r > 3:
            out[p0 + 3] = o3
        p0 += 4


@njit(**_JIT)
def inverse_diagonals(hess: np.ndarray) -> np.ndarray:
    """``diag(H^-1)`` for a stack ``(B, n, n)`` of SPD matrices (exact; the input is not changed)."""
    count, n = hess.shape[0], hess.shape[1]
    out = np.empty((count, n))
    h, x = np.empty((n, n)), np.empty((n, n))
    for q in range(count):
        h[:, :] = hess[q]
        _cholesky(h, n)
        _inverse_columns(h, x, n, out[q])
    return out


@njit(**_JIT)
def _adjacency(a, b, w, prec, n, start, nbr, nw, d) -> None:
    """The query's comparison graph as CSR (``nbr[start[i]:start[i+1]]``: the documents i was compared with, ``nw``
    the pairs' weights; a repeated pair appears once per judgment) and ``d = diag(H)``."""
    for i in range(n + 1):
        start[i] = 0
    for i in range(n):
        d[i] = prec
    for e in range(len(a)):
        start[a[e] + 1] += 1
        start[b[e] + 1] += 1
        d[a[e]] += w[e]
        d[b[e]] += w[e]
    for i in range(n):
        start[i + 1] += start[i]
    for e in range(len(a)):  # fill each list from its end: start[i + 1] steps back to where list i begins
        for i, j in ((a[e], b[e]), (b[e], a[e])):
            start[i + 1] -= 1
            nbr[start[i + 1]], nw[start[i + 1]] = j, w[e]
    for i in range(n):
        start[i] = start[i + 1]
    start[n] = 2 * len(a)


@njit(**_JIT)
def _schur_complement(a, b, w, n, start, nbr, nw, d, pos, h) -> int:
    """Eliminate a greedy independent set A (``pos[i] = -1``; the other documents get their index in the rest R)
    and write the lower triangle of ``S = H_RR - H_RA D_A^-1 H_AR`` into ``h``; returns the order of S."""
    pos[:n] = 0
    for i in range(n):
        if pos[i] == 0:
            pos[i] = -1
            for k in range(start[i], start[i + 1]):
                pos[nbr[k]] = 1
    order = 0
    for i in range(n):
        if pos[i] >= 0:
            pos[i] = order
            order += 1
    for i in range(order):
        h[i, : i + 1] = 0.0
    for i in range(n):
        if pos[i] >= 0:
            h[pos[i], pos[i]] = d[i]
    for e in range(len(a)):
        pa, pb = pos[a[e]], pos[b[e]]
        if pa >= 0 and pb >= 0:
            h[max(pa, pb), min(pa, pb)] -= w[e]
    for i in range(n):
        if pos[i] < 0:  # S -= u u^T / d_i, u: i's pairs into R
            k0, k1 = start[i], start[i + 1]
            for k in range(k0, k1):
                pk, wk = pos[nbr[k]], nw[k] / d[i]
                for k2 in range(k0, k + 1):
                    pl, t = pos[nbr[k2]], wk * nw[k2]
                    if pk != pl:
                        h[max(pk, pl), min(pk, pl)] -= t
                    else:  # two of i's pairs reach the same document: the cross term counts twice
                        h[pk, pk] -= t if k == k2 else 2.0 * t
    return order


@njit(**_JIT_DENSE)
def _standard_errors(a, b, w, prec, n, ib, fb, h, x, out) -> None:
    """``out = sqrt(diag(H^-1))`` for ``H = B^T diag(w) B + prec I`` (B: the pairs' incidence; repeated pairs add
    up), exact, by block elimination. A greedy independent set A of the comparison graph has a diagonal block
    ``H_AA = D``, so with the rest R, the Schur complement ``S = H_RR - H_RA D^-1 H_AR`` (3/4 of H's order on a
    degree-8 graph, 0.44 of its factoring work) is factored densely, and ``diag(H^-1)`` is ``diag(S^-1)`` on R and
    ``1/d_a + |L^-1 H_Ra|^2 / d_a^2`` on A (H_Ra: a's pairs, sparse). 1.25x over factoring all of H at n = 100.
    ``ib``, ``fb``, ``h``, ``x``: the scratch of :func:`_se_workspace`."""
    m = len(a)
    start, pos, nbr = ib[: n + 1], ib[n + 1 : 2 * n + 1], ib[2 * n + 1 : 2 * n + 1 + 2 * m]
    d, diag_s, v, nw = fb[:n], fb[n : 2 * n], fb[2 * n : 3 * n], fb[3 * n : 3 * n + 2 * m]
    _adjacency(a, b, w, prec, n, start, nbr, nw, d)
    order = _schur_complement(a, b, w, n, start, nbr, nw, d, pos, h)
    _cholesky(h, order)
    _inverse_columns(h, x, order, diag_s)
    for i in range(n):
        if pos[i] >= 0:
            out[i] = math.sqrt(diag_s[pos[i]])
            continue
        u = v[:order]  # L^-1 H_Ri: a sum of columns of L^-1
        u[:] = 0.0
        for k in range(start[i], start[i + 1]):
            u += nw[k] * x[pos[nbr[k]], :order]
        out[i] = math.sqrt((1.0 + _dot(u, u) / d[i]) / d[i])


@njit(**_JIT)
def _se_workspace(n_max: int, m_max: int):
    """Scratch of :func:`_standard_errors` for queries of up to n_max documents and m_max pairs, allocated once per
    block: the dense factor and ``L^-1`` (n x n each), int (CSR, positions) and float (diagonals, weights)."""
    return (np.empty(n_max * n_max), np.empty(n_max * n_max), np.empty(2 * n_max + 1 + 2 * m_max, dtype=np.int64),
            np.empty(3 * n_max + 2 * m_max))  # fmt: skip


@njit(**_JIT)
def fit_block(
    a, b, p, c, doc_starts, edge_starts, q0, q1, thurstone, prec, tol, max_iter, max_cg, compute_se,
    scores, se, iterations, grad_norm, log_likelihood, connected, bad_pair,
):  # fmt: skip
    """Fit queries ``q0 .. q1 - 1``. Query q owns documents ``doc_starts[q] ..`` and pairs ``edge_starts[q] ..``;
    ``a`` / ``b``: pair indices local to their query; ``c``: the known offset of each pair (empty for none). Results
    go into the output arrays (per document / per query); ``bad_pair[q]`` is the local index of the query's first
    pair that cannot be fitted (that query is left unfitted), else -1."""
    sizes = doc_starts[q0 + 1 : q1 + 1] - doc_starts[q0:q1]
    counts = edge_starts[q0 + 1 : q1 + 1] - edge_starts[q0:q1]
    n_max = int(np.max(sizes)) if q1 > q0 else 0
    m_max = int(np.max(counts)) if q1 > q0 else 0
    vec = np.empty((12, n_max))
    w, w_new, no_offset = np.empty(m_max), np.empty(m_max), np.zeros(m_max)
    dv_buf, dl_buf, ll_buf = np.empty(m_max), np.empty(m_max), np.empty(m_max)
    parent = np.empty(n_max, dtype=np.int64)
    h_buf, x_buf, ib, fb = _se_workspace(n_max if compute_se else 0, m_max if compute_se else 0)
    for q in range(q0, q1):
        d0, n = doc_starts[q], doc_starts[q + 1] - doc_starts[q]
        e0, e1 = edge_starts[q], edge_starts[q + 1]
        m = e1 - e0
        qa, qb, qp = a[e0:e1], b[e0:e1], p[e0:e1]
        bad_pair[q] = _first_bad_pair(qa, qb, qp, n)
        if bad_pair[q] >= 0:
            continue
        qc = c[e0:e1] if len(c) else no_offset[:m]
        qw, qw_new = w[:m], w_new[:m]
        dv, dl, ll_e = dv_buf[:m], dl_buf[:m], ll_buf[:m]
        s, g, step, s_new, g_new, rhs = vec[0, :n], vec[1, :n], vec[2, :n], vec[3, :n], vec[4, :n], vec[5, :n]
        r, z, dd, hd, diag = vec[6, :n], vec[7, :n], vec[8, :n], vec[9, :n], vec[10, :n]
        # warm start: weighted least squares for the linearised model, solved loosely
        rhs[:] = 0.0
        for e in range(m):
            t, qw[e] = _warm_target(qp[e], thurstone)
            t = qw[e] * (t - qc[e])
            rhs[qa[e]] += t
            rhs[qb[e]] -= t
        norm = math.sqrt(_dot(rhs, rhs))
        _pcg(qa, qb, qw, prec, rhs, 1e-2 * norm, max_cg, s, r, z, dd, hd, diag)
        f, ll = _evaluate(s, qa, qb, qp, qc, thurstone, prec, qw, g, dv, dl, ll_e)
        its = 0
        gmax = 0.0
        for it in range(max_iter + 1):
            gmax = _max_abs(g)
            if gmax <= tol or it >= max_iter:
                break
            its += 1
            gnorm = math.sqrt(_dot(g, g))
            target = max(min(_ETA0, _ETA1 * gnorm) * gnorm, _FLOOR * tol)
            _pcg(qa, qb, qw, prec, g, target, max_cg, step, r, z, dd, hd, diag)
            slope = _dot(g, step)
            # backtracking (Armijo): the objective never decreases
            t, accepted = 1.0, False
            for _ in range(40):
                _axpy_into(s_new, s, t, step)
                f_new, ll_new = _evaluate(s_new, qa, qb, qp, qc, thurstone, prec, qw_new, g_new, dv, dl, ll_e)
                # near the optimum the predicted gain is below rounding of f: accept the Newton step there
                if f_new >= f + 1e-4 * t * slope or t * slope <= 1e-13 * (1.0 + abs(f)):
                    accepted = True
                    break
                t *= 0.5
            if accepted:
                s[:], g[:], qw[:] = s_new, g_new, qw_new
                f, ll = f_new, ll_new
        scores[d0 : d0 + n] = s
        iterations[q], grad_norm[q], log_likelihood[q] = its, gmax, ll
        connected[q] = _connected(qa, qb, n, parent)
        if compute_se:
            h, x = h_buf[: n * n].reshape(n, n), x_buf[: n * n].reshape(n, n)
            _standard_errors(qa, qb, qw, prec, n, ib, fb, h, x, se[d0 : d0 + n])
