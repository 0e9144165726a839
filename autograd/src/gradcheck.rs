//! Finite-difference gradient checking, public so users can check their own
//! composite functions the way Kiln checks every op.
//!
//! For a function `f` of some tensors, the checker draws fixed random weights
//! `R` shaped like `f`'s output and compares, for every input element, the
//! analytic derivative of `L = Σ f(x) ⊙ R` (one backward pass seeded with
//! `R`) with the central difference `(L(x + ε) − L(x − ε)) / 2ε`.
//!
//! Everything runs in **f64**: inputs are converted before the check. In f64
//! the central difference has truncation error O(ε²) ≈ 1e-12 and rounding
//! error ≈ 1e-16/ε ≈ 1e-10 at ε = 1e-6, so a correct rule agrees to ~1e-8
//! and the default tolerances (atol 1e-6, rtol 1e-5) leave wide margin while
//! any real mistake in a rule (a missing term, a wrong sign) is far outside.

use std::fmt;

use kiln_tensor::{DType, Rng, Tensor};

use crate::{no_grad, Result, Var};

/// Tolerances and step of a gradient check.
#[derive(Debug, Clone)]
pub struct GradcheckOptions {
    /// Finite-difference step ε.
    pub eps: f64,
    /// Absolute tolerance.
    pub atol: f64,
    /// Relative tolerance (times |numeric|).
    pub rtol: f64,
    /// Seed of the projection weights `R`.
    pub seed: u64,
}

impl Default for GradcheckOptions {
    fn default() -> Self {
        GradcheckOptions {
            eps: 1e-6,
            atol: 1e-6,
            rtol: 1e-5,
            seed: 0,
        }
    }
}

/// One element whose analytic and numeric derivatives disagree.
#[derive(Debug, Clone, PartialEq)]
pub struct GradMismatch {
    /// Which input.
    pub input: usize,
    /// Flat (row-major) index in that input.
    pub index: usize,
    /// From backward.
    pub analytic: f64,
    /// From finite differences.
    pub numeric: f64,
}

/// The outcome of [`gradcheck`].
#[derive(Debug, Clone)]
pub struct GradcheckReport {
    /// Elements compared.
    pub checked: usize,
    /// Largest |analytic − numeric|.
    pub max_abs_err: f64,
    /// Largest |analytic − numeric| / |numeric| (over nonzero numeric).
    pub max_rel_err: f64,
    /// Elements outside tolerance.
    pub failures: Vec<GradMismatch>,
}

impl GradcheckReport {
    /// Whether every element agreed within tolerance.
    pub fn passed(&self) -> bool {
        self.failures.is_empty()
    }
}

impl fmt::Display for GradcheckReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(
            f,
            "gradcheck: {} elements, max abs err {:.3e}, max rel err {:.3e}, {} mismatches",
            self.checked,
            self.max_abs_err,
            self.max_rel_err,
            self.failures.len()
        )?;
        for m in self.failures.iter().take(8) {
            writeln!(
                f,
                "  input {} [{}]: analytic {:.9e} vs numeric {:.9e}",
                m.input, m.index, m.analytic, m.numeric
            )?;
        }
        Ok(())
    }
}

fn projected(f: &impl Fn(&[Var]) -> Result<Var>, inputs: &[Tensor], r: &Tensor) -> Result<f64> {
    no_grad(|| {
        let vars: Vec<Var> = inputs.iter().cloned().map(Var::constant).collect();
        let out = f(&vars)?.value();
        Ok(out.mul(r)?.sum_all()?.item::<f64>()?)
    })
}

/// Checks the gradients of `f` at `inputs` against central finite
/// differences (see the module docs). Inputs must be float tensors; they are
/// converted to f64. Integer arguments (indices) should be captured by `f`.
///
/// # Errors
/// Whatever `f` returns, or a tensor error for non-float inputs. A failed
/// comparison is not an error: inspect [`GradcheckReport::passed`].
///
/// ```
/// use kiln_autograd::{gradcheck, GradcheckOptions, Var};
/// use kiln_tensor::{DType, Rng, Tensor};
/// let mut rng = Rng::new(0);
/// let x = Tensor::randn(&[3, 4], 0.0, 1.0, DType::F64, &mut rng)?;
/// // A user's composite: softplus(x) = log(1 + eˣ)
/// let report = gradcheck(|v| v[0].exp()?.add_scalar(1.0)?.log(), &[x], &GradcheckOptions::default())?;
/// assert!(report.passed(), "{report}");
/// # Ok::<(), kiln_autograd::AutogradError>(())
/// ```
pub fn gradcheck(
    f: impl Fn(&[Var]) -> Result<Var>,
    inputs: &[Tensor],
    opts: &GradcheckOptions,
) -> Result<GradcheckReport> {
    let inputs: Vec<Tensor> = inputs
        .iter()
        .map(|t| t.to_dtype(DType::F64).contiguous())
        .collect();
    // Analytic: one backward pass seeded with R.
    let leaves: Vec<Var> = inputs.iter().cloned().map(Var::parameter).collect();
    let out = f(&leaves)?;
    let mut rng = Rng::new(opts.seed);
    let r = Tensor::randn(&out.shape(), 0.0, 1.0, DType::F64, &mut rng)?;
    if out.requires_grad() {
        out.backward_with(r.clone())?;
    }
    let mut report = GradcheckReport {
        checked: 0,
        max_abs_err: 0.0,
        max_rel_err: 0.0,
        failures: Vec::new(),
    };
    for (i, (x, leaf)) in inputs.iter().zip(&leaves).enumerate() {
        let analytic = match leaf.grad() {
            Some(g) => g.to_vec::<f64>()?,
            None => vec![0.0; x.numel()],
        };
        let base = x.to_vec::<f64>()?;
        for j in 0..base.len() {
            let at = |delta: f64| -> Result<f64> {
                let mut v = base.clone();
                v[j] += delta;
                let mut args = inputs.clone();
                args[i] = Tensor::from_vec(v, x.shape())?;
                projected(&f, &args, &r)
            };
            let numeric = (at(opts.eps)? - at(-opts.eps)?) / (2.0 * opts.eps);
            let a = analytic[j];
            let abs = (a - numeric).abs();
            report.checked += 1;
            report.max_abs_err = report.max_abs_err.max(abs);
            if numeric != 0.0 {
                report.max_rel_err = report.max_rel_err.max(abs / numeric.abs());
            }
            let within = abs <= opts.atol + opts.rtol * numeric.abs();
            if !within || abs.is_nan() {
                report.failures.push(GradMismatch {
                    input: i,
                    index: j,
                    analytic: a,
                    numeric,
                });
            }
        }
    }
    Ok(report)
}
