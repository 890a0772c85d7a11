"""Compiled per-query kernel of the Thurstone / Bradley-Terry fit (numba, issue #12).

One call fits a block of whole queries, query after query, with the GIL released, so the fit's threads run side
by side (the NumPy solver before it held the GIL between its many small calls: 1.1x on two threads). Per query,
everything stays in cache: Newton steps solved by Jacobi-preconditioned conjugate gradients on the sparse Hessian,
a backtracking line search, and at the optimum the exact standard errors ``sqrt(diag(H^-1))`` from a dense Cholesky
factor ``H = L L^T`` and ``L^-1`` (``diag(H^-1)_j`` is the squared norm of column j of ``L^-1``). The objective and the
public API are in :mod:`zelo_hf.thurstone`.

Functions are compiled on first use and cached on disk (numba ``cache=True``), so a later process loads them.
"""

from __future__ import annotations

import math

import numpy as np
from numba import njit

_SQRT2 = math.sqrt(2.0)
_INV_SQRT_2PI = 1.0 / math.sqrt(2.0 * math.pi)
_LOG_INV_SQRT_2PI = math.log(_INV_SQRT_2PI)
_TAIL = 25.0  # |d| beyond which erfc underflows towards 1e-300: the asymptotic series of log Phi takes over there
# Inexact Newton: each CG solve stops at |r| <= max(min(_ETA0, _ETA1 |g|) |g|, _FLOOR tol): loose far from the
# optimum, tight near it (superlinear convergence), never tighter than the stopping rule needs. This forcing term
# is tight enough that nearly every query meets tol after 3 Newton steps from the warm start.
_ETA0, _ETA1, _FLOOR = 0.003, 0.3, 0.3

_JIT = dict(cache=True, nogil=True)


@njit(**_JIT)
def _log_ndtr_far(z: float) -> float:
    """log Phi(-z) for z >= 25 sqrt2 (~35): the asymptotic series, exact to double precision there (the terms
    fall below 1e-17 by the 8th), as scipy's log_ndtr does for large arguments."""
    x2 = 1.0 / (z * z)
    total, term = 1.0, 1.0
    for k in range(1, 9):
        term *= -(2 * k - 1) * x2
        total += term
    return -0.5 * z * z - math.log(z) + _LOG_INV_SQRT_2PI + math.log(total)


@njit(**_JIT)
def edge_terms(d: float, p: float, thurstone: bool):
    """Per edge: dl = d/dd l(d), the curvature weight w = -l''(d) > 0 and l(d) itself, with
    l(d) = p log F(d) + (1 - p) log F(-d). Thurstone: F(d) = Phi(sqrt2 d), written for u = |d| with one erfc."""
    if not thurstone:
        if d >= 0:
            e = math.exp(-d)
            sig = 1.0 / (1.0 + e)
            log_sig = -math.log1p(e)
        else:
            e = math.exp(d)
            sig = e / (1.0 + e)
            log_sig = d - math.log1p(e)
        return p - sig, sig * (1.0 - sig), log_sig - (1.0 - p) * d
    u = abs(d)
    p_w = 1.0 - p if d < 0 else p  # the label's mass on the side that d favours
    q_w = 1.0 - p_w
    z = _SQRT2 * u
    tail = 0.5 * math.erfc(u)
    big = 1.0 - tail  # in [0.5, 1]: log(big) is accurate to ~1e-17 absolute
    phi = math.exp(-u * u) * _INV_SQRT_2PI
    lam_big = phi / big  # inverse Mills ratios at +z and -z
    if u > _TAIL:
        log_tail = _log_ndtr_far(z)
        lam_tail = math.exp(-u * u + _LOG_INV_SQRT_2PI - log_tail)
        curv_tail = min(max(lam_tail * (lam_tail - z), 0.0), 1.0)
    else:
        log_tail = math.log(tail)
        lam_tail = phi / tail
        curv_tail = lam_tail * (lam_tail - z)
    sign = -_SQRT2 if d < 0 else _SQRT2
    dl = sign * (p_w * lam_big - q_w * lam_tail)
    # -(d^2/dz^2) log Phi(z) = lam(z) (z + lam(z)); the chain rule through z = sqrt2 d gives the 2.
    w = 2.0 * (p_w * lam_big * (lam_big + z) + q_w * curv_tail)
    ll = p_w * math.log(big) + q_w * log_tail  # log_tail is finite: the series takes over before erfc underflows
    return dl, w, ll


@njit(**_JIT)
def edge_log_likelihoods(d: np.ndarray, p: np.ndarray, thurstone: bool) -> np.ndarray:
    out = np.empty(len(d))
    for e in range(len(d)):
        out[e] = edge_terms(d[e], p[e], thurstone)[2]
    return out


@njit(**_JIT)
def _evaluate(s, a, b, p, c, thurstone, prec, w, g):
    """Curvature weights into w, the gradient into g; returns the objective and its data term."""
    penalty = 0.0
    for i in range(len(s)):
        g[i] = -prec * s[i]
        penalty += s[i] * s[i]
    ll = 0.0
    for e in range(len(a)):
        de, we, le = edge_terms(s[a[e]] - s[b[e]] + c[e], p[e], thurstone)
        w[e] = we
        ll += le
        g[a[e]] += de
        g[b[e]] -= de
    return ll - 0.5 * prec * penalty, ll


@njit(**_JIT)
def _pcg(a, b, w, prec, rhs, target, max_cg, x, r, z, d, hd, diag):
    """Solve H x = rhs (H = B^T diag(w) B + prec I) by Jacobi-preconditioned CG to |r| <= target."""
    n = len(rhs)
    for i in range(n):
        diag[i] = prec
    for e in range(len(a)):
        diag[a[e]] += w[e]
        diag[b[e]] += w[e]
    rr, rz = 0.0, 0.0
    for i in range(n):
        x[i] = 0.0
        r[i] = rhs[i]
        z[i] = r[i] / diag[i]
        d[i] = z[i]
        rr += r[i] * r[i]
        rz += r[i] * z[i]
    target2 = target * target
    if rr <= target2:
        return
    for _ in range(max_cg):
        for i in range(n):
            hd[i] = diag[i] * d[i]
        for e in range(len(a)):
            hd[a[e]] -= w[e] * d[b[e]]
            hd[b[e]] -= w[e] * d[a[e]]
        dhd = 0.0
        for i in range(n):
            dhd += d[i] * hd[i]
        if dhd <= 0:
            return
        alpha = rz / dhd
        rr = 0.0
        for i in range(n):
            x[i] += alpha * d[i]
            r[i] -= alpha * hd[i]
            rr += r[i] * r[i]
        if rr <= target2:
            return
        rz_new = 0.0
        for i in range(n):
            z[i] = r[i] / diag[i]
            rz_new += r[i] * z[i]
        beta = rz_new / rz if rz > 0 else 0.0
        for i in range(n):
            d[i] = z[i] + beta * d[i]
        rz = rz_new


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


@njit(cache=True, nogil=True, fastmath=True)
def _cholesky_inverse_diagonal(h, x, out) -> None:
    """``diag(h^-1)`` of one SPD matrix into ``out``, exact: ``h = L L^T`` in place (lower triangle, row-wise dot
    products, four rows at a time), then ``X = L^-1`` row by row (axpy form, two rows of X at a time) with the
    column sums of ``X**2`` accumulated as it goes. ``x`` is an n x n scratch. Only h's lower triangle is read.
    (The blocking shares loads between rows: 1.3x over the plain loops at n = 100.)"""
    n = h.shape[0]
    for j in range(n):
        s = h[j, j]
        for k in range(j):
            s -= h[j, k] * h[j, k]
        piv = math.sqrt(s)
        h[j, j] = piv
        inv = 1.0 / piv
        i = j + 1
        while i + 3 < n:
            t0, t1, t2, t3 = h[i, j], h[i + 1, j], h[i + 2, j], h[i + 3, j]
            for k in range(j):
                r = h[j, k]
                t0 -= h[i, k] * r
                t1 -= h[i + 1, k] * r
                t2 -= h[i + 2, k] * r
                t3 -= h[i + 3, k] * r
            h[i, j], h[i + 1, j], h[i + 2, j], h[i + 3, j] = t0 * inv, t1 * inv, t2 * inv, t3 * inv
            i += 4
        while i < n:
            t = h[i, j]
            for k in range(j):
                t -= h[i, k] * h[j, k]
            h[i, j] = t * inv
            i += 1
    for j in range(n):
        out[j] = 0.0
    for i in range(n):
        row = x[i]
        for j in range(i + 1):
            row[j] = 0.0
        k = 0
        while k + 1 < i:
            c0, c1 = h[i, k], h[i, k + 1]
            x0, x1 = x[k], x[k + 1]
            for j in range(k + 1):
                row[j] -= c0 * x0[j] + c1 * x1[j]
            row[k + 1] -= c1 * x1[k + 1]
            k += 2
        if k < i:
            coef, above = h[i, k], x[k]
            for j in range(k + 1):
                row[j] -= coef * above[j]
        inv = 1.0 / h[i, i]
        for j in range(i):
            row[j] *= inv
        row[i] = inv
        for j in range(i + 1):
            out[j] += row[j] * row[j]


@njit(**_JIT)
def inverse_diagonals(hess: np.ndarray) -> np.ndarray:
    """``diag(H^-1)`` for a stack ``(B, n, n)`` of SPD matrices (exact; the input is not changed)."""
    count, n = hess.shape[0], hess.shape[1]
    out = np.empty((count, n))
    h, x = np.empty((n, n)), np.empty((n, n))
    for q in range(count):
        h[:, :] = hess[q]
        _cholesky_inverse_diagonal(h, x, out[q])
    return out


@njit(**_JIT)
def _standard_errors(a, b, w, prec, h, x, out) -> None:
    """``sqrt(diag(H^-1))`` from the dense lower triangle of H at the weights w (repeated pairs add up)."""
    n = len(out)
    for i in range(n):
        for j in range(i + 1):
            h[i, j] = 0.0
        h[i, i] = prec
    for e in range(len(a)):
        i, j = max(a[e], b[e]), min(a[e], b[e])
        h[i, j] -= w[e]
        h[i, i] += w[e]
        h[j, j] += w[e]
    _cholesky_inverse_diagonal(h, x, out)
    for i in range(n):
        out[i] = math.sqrt(out[i])


@njit(**_JIT)
def fit_block(
    a, b, p, c, warm, doc_starts, edge_starts, thurstone, prec, tol, max_iter, max_cg, compute_se,
    scores, se, iterations, grad_norm, log_likelihood, connected,
):  # fmt: skip
    """Fit every query of a block. ``a`` / ``b``: pair indices local to the block, grouped by query
    (``edge_starts``); ``c``: the known offset of each pair (zeros for none); ``warm``: the warm start's target
    difference of each pair, F^-1(clipped p). Results go into the output arrays (per document / per query)."""
    n_max = int(np.max(doc_starts[1:] - doc_starts[:-1]))
    m_max = int(np.max(edge_starts[1:] - edge_starts[:-1])) if len(a) else 0
    vec = np.empty((12, n_max))
    w, w_new = np.empty(m_max), np.empty(m_max)
    parent = np.empty(n_max, dtype=np.int64)
    h_buf = np.empty(n_max * n_max if compute_se else 0)
    x_buf = np.empty(n_max * n_max if compute_se else 0)
    for q in range(len(doc_starts) - 1):
        d0, n = doc_starts[q], doc_starts[q + 1] - doc_starts[q]
        e0, e1 = edge_starts[q], edge_starts[q + 1]
        qa, qb = a[e0:e1] - d0, b[e0:e1] - d0
        qp, qc = p[e0:e1], c[e0:e1]
        m = e1 - e0
        s, g, step, s_new, g_new, rhs = vec[0, :n], vec[1, :n], vec[2, :n], vec[3, :n], vec[4, :n], vec[5, :n]
        r, z, dd, hd, diag = vec[6, :n], vec[7, :n], vec[8, :n], vec[9, :n], vec[10, :n]
        # warm start: least squares for the linearised model (unit weights), solved loosely
        rhs[:] = 0.0
        for e in range(m):
            t = warm[e0 + e] - qc[e]
            rhs[qa[e]] += t
            rhs[qb[e]] -= t
            w[e] = 1.0
        norm = math.sqrt(np.sum(rhs * rhs))
        _pcg(qa, qb, w[:m], prec, rhs, 1e-2 * norm, max_cg, s, r, z, dd, hd, diag)
        f, ll = _evaluate(s, qa, qb, qp, qc, thurstone, prec, w[:m], g)
        its = 0
        gmax = 0.0
        for it in range(max_iter + 1):
            gmax = np.max(np.abs(g))
            if gmax <= tol or it >= max_iter:
                break
            its += 1
            gnorm = math.sqrt(np.sum(g * g))
            target = max(min(_ETA0, _ETA1 * gnorm) * gnorm, _FLOOR * tol)
            _pcg(qa, qb, w[:m], prec, g, target, max_cg, step, r, z, dd, hd, diag)
            slope = np.sum(g * step)
            # backtracking (Armijo): the objective never decreases
            t, accepted = 1.0, False
            for _ in range(40):
                s_new[:] = s + t * step
                f_new, ll_new = _evaluate(s_new, qa, qb, qp, qc, thurstone, prec, w_new[:m], g_new)
                # near the optimum the predicted gain is below rounding of f: accept the Newton step there
                if f_new >= f + 1e-4 * t * slope or t * slope <= 1e-13 * (1.0 + abs(f)):
                    accepted = True
                    break
                t *= 0.5
            if accepted:
                s[:], g[:], f, ll = s_new, g_new, f_new, ll_new
                w[:m] = w_new[:m]
        scores[d0 : d0 + n] = s
        iterations[q], grad_norm[q], log_likelihood[q] = its, gmax, ll
        connected[q] = _connected(qa, qb, n, parent)
        if compute_se:
            h, x = h_buf[: n * n].reshape(n, n), x_buf[: n * n].reshape(n, n)
            _standard_errors(qa, qb, w[:m], prec, h, x, se[d0 : d0 + n])
