//! Row kernels (softmax, log-softmax, layer norm, their gradients) and the
//! reductions that feed them.

use super::*;

multiversion! {
    /// One row of softmax's backward: `out = y·(dy − Σ y·dy)/div`, the dot
    /// product summed in `LANES` fixed lanes (by FMA) and folded in f64.
    pub(crate) fn softmax_grad_row(y: &[f32], dy: &[f32], div: f32, out: &mut [f32]) {
        let mut s = [0f32; LANES];
        let ((yc, yt), (gc, gt)) = (y.as_chunks::<LANES>(), dy.as_chunks::<LANES>());
        for (a, b) in yc.iter().zip(gc) {
            for i in 0..LANES {
                s[i] = a[i].mul_add(b[i], s[i]);
            }
        }
        for (i, (&a, &b)) in yt.iter().zip(gt).enumerate() {
            s[i] = a.mul_add(b, s[i]);
        }
        let dot = fold_sum(s.map(f64::from)) as f32;
        for ((o, &a), &b) in out.iter_mut().zip(y).zip(dy) {
            *o = a * (b - dot) / div;
        }
    }
}

multiversion! {
    /// `acc[i] += src[i]`, each `src[i]` widened to f64 (exactly), for
    /// column sums that accumulate f32 rows in f64.
    pub(crate) fn widen_add(acc: &mut [f64], src: &[f32]) {
        for (a, &v) in acc.iter_mut().zip(src) {
            *a += f64::from(v);
        }
    }
}

multiversion! {
    /// The two numbers a log-sum-exp needs from a non-empty row:
    /// `stats = [m, Σ exp(x − m)]` with `m` the row max (0 for a row of all
    /// `-inf`; NaN, and so the sum, if the row holds NaN), the sum
    /// accumulated in 64 lanes as in the softmax kernels: the f32 twin of
    /// `ops::reduce::max_exp_sum`. Cross-entropy's forward uses it.
    pub fn max_exp_sum(x: &[f32], stats: &mut [f32; 2]) {
        let m = softmax_shift(x);
        let s = exp_shifted_sum(x, m, None);
        // `row_max` skips NaN, but a NaN in the row makes `s` NaN; only
        // then (rarely) look for one, so that the max obeys the rule too.
        let m = if s.is_nan() && x.iter().any(|v| v.is_nan()) {
            f32::NAN
        } else {
            m
        };
        *stats = [m, s];
    }
}

multiversion! {
    /// `out[j] = scale · exp(x[j] − shift)` (same length; `out` may be
    /// uninitialised, every element is written): softmax from a saved
    /// log-sum-exp, as cross-entropy's backward rebuilds it.
    pub fn scaled_exp(x: &[f32], shift: f32, scale: f32, out: &mut [MaybeUninit<f32>]) {
        for (o, &v) in out.iter_mut().zip(x) {
            o.write(scale * exp_f32(v - shift));
        }
    }
}

multiversion! {
    avx512 = avx512::softmax_rows;
    /// Softmax of each row of `n` elements: `x` and `out` are `[rows, n]`,
    /// `n > 0`. Three passes over a row that stays in L1: max; `exp(x − max)`
    /// stored and summed; scaled by `1/Σ`.
    pub(crate) fn softmax_rows(x: &[f32], out: &mut [MaybeUninit<f32>], n: usize) {
        for (xr, or) in x.chunks_exact(n).zip(out.chunks_exact_mut(n)) {
            let m = softmax_shift(xr);
            let inv = 1.0 / exp_shifted_sum(xr, m, Some(&mut *or));
            // SAFETY: `exp_shifted_sum` wrote every element of the row.
            for o in unsafe { assume_init_mut(or) } {
                *o *= inv;
            }
        }
    }
}

multiversion! {
    avx512 = avx512::log_softmax_rows;
    /// Log-softmax of each row of `n` elements (`n > 0`):
    /// `(x − max) − log Σ exp(x − max)`. Subtracting the max first keeps the
    /// result exact to a few ulp of itself even when `|x|` is large.
    pub(crate) fn log_softmax_rows(x: &[f32], out: &mut [MaybeUninit<f32>], n: usize) {
        for (xr, or) in x.chunks_exact(n).zip(out.chunks_exact_mut(n)) {
            let m = softmax_shift(xr);
            let log_sum = exp_shifted_sum(xr, m, None).ln();
            for (o, &v) in or.iter_mut().zip(xr) {
                o.write((v - m) - log_sum);
            }
        }
    }
}

multiversion! {
    /// Layer norm of each row of `c = x.len() / mean.len()` elements (`c > 0`),
    /// writing `out` and the per-row `mean` and `rstd`.
    ///
    /// Pass 1 sums `d = x − m₀` and `d²` in `LANES` f32 lanes, where `m₀` is
    /// the mean of the row's first `LANES` elements. Because `m₀` is close
    /// to the row mean μ, `Σd²/c − (Σd/c)²` does not cancel (the relative
    /// cancellation is about 1/LANES), and `x − m₀` is exact for the values
    /// near the mean; each lane adds only `c/LANES` terms, and the lanes are
    /// folded in f64, so the variance is good to ~c/LANES ulp. Pass 2
    /// writes `((x − μ)·rstd)·w + b`.
    pub(crate) fn layer_norm_rows(
        x: &[f32],
        w: Option<&[f32]>,
        b: Option<&[f32]>,
        eps: f64,
        out: &mut [MaybeUninit<f32>],
        mean: &mut [f32],
        rstd: &mut [f32],
    ) {
        let c = x.len() / mean.len();
        let rows = x.chunks_exact(c).zip(out.chunks_exact_mut(c));
        for ((xr, or), (mu_out, rs_out)) in rows.zip(mean.iter_mut().zip(rstd.iter_mut())) {
            // A tree sum (a sequential one would be a 64-add latency chain).
            let k = c.min(LANES);
            let mut head = [0f32; LANES];
            head[..k].copy_from_slice(&xr[..k]);
            let m0 = fold_sum(head) / k as f32;
            let mut s = [0f32; LANES];
            let mut ss = [0f32; LANES];
            let (xc, xt) = xr.as_chunks::<LANES>();
            for xs in xc {
                for i in 0..LANES {
                    let d = xs[i] - m0;
                    s[i] += d;
                    ss[i] = d.mul_add(d, ss[i]);
                }
            }
            for (i, &v) in xt.iter().enumerate() {
                let d = v - m0;
                s[i] += d;
                ss[i] = d.mul_add(d, ss[i]);
            }
            let n = c as f64;
            let dm = fold_sum(s.map(f64::from)) / n;
            let var = fold_sum(ss.map(f64::from)) / n - dm * dm;
            // Rounding can leave a constant row's variance a hair below 0.
            let var = if var < 0.0 { 0.0 } else { var };
            let mu = (m0 as f64 + dm) as f32;
            let rs = (1.0 / (var + eps).sqrt()) as f32;
            *mu_out = mu;
            *rs_out = rs;
            // Stores whole cache lines after a short unaligned head (buffers
            // are only 16-byte aligned); the split does not change any value.
            let split = or.as_ptr().align_offset(64).min(c);
            for (lo, hi) in [(0, split), (split, c)] {
                normalize(&xr[lo..hi], w.map(|w| &w[lo..hi]), b.map(|b| &b[lo..hi]), mu, rs, &mut or[lo..hi]);
            }
        }
    }
}

multiversion! {
    /// Layer norm's backward over whole rows of `c = dw.len()` floats, given
    /// each row's `mean` and `rstd` from the forward. With `x̂ = (x − μ)·rstd`
    /// and `ĝ = dy·w` (`dy` when there is no weight) it writes
    /// `dx = rstd·(ĝ − mean ĝ − x̂·mean(ĝ·x̂))` and adds `dy·x̂` into `dw` and
    /// `dy` into `db` (f64, one row after another). The two row means are
    /// sums in `LANES` fixed lanes, folded in f64.
    #[allow(clippy::too_many_arguments)]
    pub(crate) fn layer_norm_grad_rows(
        x: &[f32],
        dy: &[f32],
        w: Option<&[f32]>,
        mean: &[f32],
        rstd: &[f32],
        dx: &mut [MaybeUninit<f32>],
        dw: &mut [f64],
        db: &mut [f64],
    ) {
        let c = dw.len();
        let rows = x.chunks_exact(c).zip(dy.chunks_exact(c)).zip(dx.chunks_exact_mut(c));
        for (((xr, gr), dxr), (&mu, &rs)) in rows.zip(mean.iter().zip(rstd)) {
            let mut sg = [0f32; LANES];
            let mut sgx = [0f32; LANES];
            // Lane `i` of the sums takes elements `j ≡ i (mod LANES)`.
            let mut lane = |i: usize, j: usize| {
                let gv = gr[j];
                let xh = (xr[j] - mu) * rs;
                let g = w.map_or(gv, |w| gv * w[j]);
                sg[i] += g;
                sgx[i] = g.mul_add(xh, sgx[i]);
                dw[j] += f64::from(gv * xh);
                db[j] += f64::from(gv);
            };
            let full = c / LANES * LANES;
            for base in (0..full).step_by(LANES) {
                for i in 0..LANES {
                    lane(i, base + i);
                }
            }
            for j in full..c {
                lane(j - full, j);
            }
            let mg = (fold_sum(sg.map(f64::from)) / c as f64) as f32;
            let mgx = (fold_sum(sgx.map(f64::from)) / c as f64) as f32;
            let dx_of = |xv: f32, g: f32| rs * (g - mg - (xv - mu) * rs * mgx);
            // One loop per case, so each vectorises.
            match w {
                Some(w) => {
                    for (((d, &xv), &gv), &wv) in dxr.iter_mut().zip(xr).zip(gr).zip(w) {
                        d.write(dx_of(xv, gv * wv));
                    }
                }
                None => {
                    for ((d, &xv), &gv) in dxr.iter_mut().zip(xr).zip(gr) {
                        d.write(dx_of(xv, gv));
                    }
                }
            }
        }
    }
}

/// `out = ((x − mu)·rs)·w + b`, with `w`/`b` optional.
#[inline(always)]
fn normalize(
    x: &[f32],
    w: Option<&[f32]>,
    b: Option<&[f32]>,
    mu: f32,
    rs: f32,
    out: &mut [MaybeUninit<f32>],
) {
    match (w, b) {
        (Some(w), Some(b)) => {
            for ((o, &v), (&wj, &bj)) in out.iter_mut().zip(x).zip(w.iter().zip(b)) {
                o.write(((v - mu) * rs).mul_add(wj, bj));
            }
        }
        (Some(w), None) => {
            for ((o, &v), &wj) in out.iter_mut().zip(x).zip(w) {
                o.write((v - mu) * rs * wj);
            }
        }
        (None, Some(b)) => {
            for ((o, &v), &bj) in out.iter_mut().zip(x).zip(b) {
                o.write((v - mu) * rs + bj);
            }
        }
        (None, None) => {
            for (o, &v) in out.iter_mut().zip(x) {
                o.write((v - mu) * rs);
            }
        }
    }
}
