//! Elementwise functions of one tensor.

use num_traits::Zero;

use crate::dtype::{Element, FloatElement};
use crate::kernels::fastmath::{self, Isa, Unary};
use crate::strided::{Walk, PAR_CHUNK, PAR_UNIT};
use crate::uninit::build_par;
use crate::{with_float, DType, Result, Tensor, TensorError};

/// Applies `f` to every element of a float tensor of type `T`, producing a
/// contiguous tensor of the same shape.
pub(crate) fn map<T: FloatElement>(
    x: &Tensor,
    op: &'static str,
    f: impl Fn(T) -> T + Sync,
) -> Result<Tensor> {
    let src = x.typed::<T>(op)?;
    let out = if x.is_contiguous() {
        let o = x.layout().offset();
        let src = &src[o..o + x.numel()];
        // SAFETY: each chunk is written element by element.
        unsafe {
            build_par(src.len(), PAR_UNIT, PAR_CHUNK / PAR_UNIT, |start, dst| {
                for (d, &v) in dst.iter_mut().zip(&src[start..]) {
                    d.write(f(v));
                }
            })
        }
    } else {
        // SAFETY: each run is written element by element.
        unsafe {
            Walk::new([x.layout()]).collect(|dst, [o], [s]| {
                for (i, d) in dst.iter_mut().enumerate() {
                    d.write(f(src[o + i * s]));
                }
            })
        }
    };
    Tensor::from_vec(out, x.shape())
}

/// An op with a fast f32 kernel (`kernels::fastmath`): f32 runs that kernel
/// (a strided input is made contiguous first), f64 maps `f64_fn` (std math).
fn map_fast(x: &Tensor, op: &'static str, fast: Unary, f64_fn: fn(f64) -> f64) -> Result<Tensor> {
    match x.dtype() {
        DType::F32 => {
            let x = x.contiguous();
            let src = x.as_slice::<f32>()?;
            let isa = Isa::detect();
            // SAFETY: `fastmath::unary` writes every element of `dst`.
            let out = unsafe {
                build_par(src.len(), PAR_UNIT, PAR_CHUNK / PAR_UNIT, |start, dst| {
                    fastmath::unary(isa, fast, &src[start..start + dst.len()], dst)
                })
            };
            Tensor::from_vec(out, x.shape())
        }
        DType::F64 => map::<f64>(x, op, f64_fn),
        other => Err(TensorError::DType {
            op,
            got: other,
            expected: "f32 or f64".to_string(),
        }),
    }
}

/// √(2/π), the constant in GPT-2's tanh-approximated GELU.
const SQRT_2_OVER_PI: f64 = 0.797_884_560_802_865_4;
/// The cubic coefficient in the GELU approximation.
const GELU_COEF: f64 = 0.044_715;

/// GELU, tanh approximation (GPT-2's `gelu_new`, `F.gelu(x, approximate="tanh")`):
/// `0.5·x·(1 + tanh(√(2/π)·(x + 0.044715·x³)))`.
pub fn gelu_scalar<T: FloatElement>(x: T) -> T {
    let c = T::from_f64(SQRT_2_OVER_PI);
    let k = T::from_f64(GELU_COEF);
    let half = T::from_f64(0.5);
    half * x * (T::one() + (c * (x + k * x * x * x)).tanh())
}

/// Derivative of [`gelu_scalar`] with respect to `x`:
/// with `u = √(2/π)(x + 0.044715x³)`, `t = tanh u`,
/// `d/dx = 0.5(1 + t) + 0.5·x·(1 − t²)·√(2/π)(1 + 3·0.044715·x²)`.
pub fn gelu_grad_scalar<T: FloatElement>(x: T) -> T {
    let c = T::from_f64(SQRT_2_OVER_PI);
    let k = T::from_f64(GELU_COEF);
    let half = T::from_f64(0.5);
    let t = (c * (x + k * x * x * x)).tanh();
    half * (T::one() + t)
        + half * x * (T::one() - t * t) * c * (T::one() + T::from_f64(3.0) * k * x * x)
}

macro_rules! unary_op {
    ($(#[$doc:meta])* $name:ident, |$x:ident| $body:expr) => {
        $(#[$doc])*
        ///
        /// # Errors
        /// [`crate::TensorError::DType`] unless the tensor is f32 or f64.
        pub fn $name(&self) -> Result<Tensor> {
            with_float!(stringify!($name), self.dtype(), |T| map::<T>(self, stringify!($name), |$x: T| $body))
        }
    };
}

impl Tensor {
    /// Applies `f` to every element of a `T` tensor (`T` = `f32` or
    /// `f64`, the tensor's dtype), in parallel, in the tensor's own dtype:
    /// a new contiguous tensor of the same shape. The building block of a
    /// custom elementwise op's forward and backward
    /// (`kiln_autograd::custom_op`).
    /// PyTorch: `x.apply_(f)` on a copy, or `torch.func` over elements.
    ///
    /// ```
    /// use kiln_tensor::Tensor;
    /// let x = Tensor::from_vec(vec![0f32, 1.0, 2.0], &[3])?;
    /// let y = x.map(|v: f32| v * v + 1.0)?;
    /// assert_eq!(y.to_vec::<f32>()?, vec![1.0, 2.0, 5.0]);
    /// # Ok::<(), kiln_tensor::TensorError>(())
    /// ```
    ///
    /// # Errors
    /// [`TensorError::DType`] when the tensor does not hold `T`.
    pub fn map<T: FloatElement>(&self, f: impl Fn(T) -> T + Sync) -> Result<Tensor> {
        map(self, "map", f)
    }

    unary_op!(
        /// `-x` (`torch.neg`).
        neg, |x| -x);

    unary_op!(
        /// Natural log (`torch.log`); `log(0) = -inf`, negative → NaN.
        log, |x| x.ln());
    unary_op!(
        /// Square root (`torch.sqrt`).
        sqrt, |x| x.sqrt());
    unary_op!(
        /// `1/√x` (`torch.rsqrt`).
        rsqrt, |x| x.sqrt().recip());

    unary_op!(
        /// `max(x, 0)` (`torch.relu`); NaN stays NaN, as in PyTorch.
        relu, |x| if x < T::zero() { T::zero() } else { x });

    unary_op!(
        /// `|x|` (`torch.abs`).
        abs, |x| x.abs());
    unary_op!(
        /// `x²` (`torch.square`).
        square, |x| x * x);
    unary_op!(
        /// `1/x` (`torch.reciprocal`).
        recip, |x| x.recip());

    /// `eˣ` (`torch.exp`). f32 uses [`fastmath::exp_f32`] (under 1 ulp of
    /// error, vectorised); f64 uses `std`.
    ///
    /// # Errors
    /// [`crate::TensorError::DType`] unless the tensor is f32 or f64.
    pub fn exp(&self) -> Result<Tensor> {
        map_fast(self, "exp", Unary::Exp, f64::exp)
    }

    /// Hyperbolic tangent (`torch.tanh`). f32 uses [`fastmath::tanh_f32`]
    /// (under 1.5 ulp); f64 uses `std`.
    ///
    /// # Errors
    /// [`crate::TensorError::DType`] unless the tensor is f32 or f64.
    pub fn tanh(&self) -> Result<Tensor> {
        map_fast(self, "tanh", Unary::Tanh, f64::tanh)
    }

    /// Logistic sigmoid `1/(1+e⁻ˣ)` (`torch.sigmoid`). f32 uses
    /// [`fastmath::sigmoid_f32`].
    ///
    /// # Errors
    /// [`crate::TensorError::DType`] unless the tensor is f32 or f64.
    pub fn sigmoid(&self) -> Result<Tensor> {
        map_fast(self, "sigmoid", Unary::Sigmoid, |x| {
            1.0 / (1.0 + (-x).exp())
        })
    }

    /// GELU with the tanh approximation, GPT-2's `gelu_new`
    /// (`F.gelu(x, approximate="tanh")`). See [`gelu_scalar`]; f32 uses
    /// [`fastmath::gelu_f32`], the same function computed as `x·sigmoid(2u)`.
    ///
    /// # Errors
    /// [`crate::TensorError::DType`] unless the tensor is f32 or f64.
    pub fn gelu(&self) -> Result<Tensor> {
        map_fast(self, "gelu", Unary::Gelu, gelu_scalar::<f64>)
    }

    /// `xᵖ` for a scalar exponent (`torch.pow(x, p)`).
    ///
    /// # Errors
    /// [`crate::TensorError::DType`] unless the tensor is f32 or f64.
    pub fn powf(&self, p: f64) -> Result<Tensor> {
        with_float!("powf", self.dtype(), |T| {
            let e = T::from_f64(p);
            if p == 2.0 {
                map::<T>(self, "powf", |x: T| x * x)
            } else {
                map::<T>(self, "powf", |x: T| x.powf(e))
            }
        })
    }

    /// `x + c` (`torch.add(x, c)`).
    ///
    /// # Errors
    /// [`crate::TensorError::DType`] unless the tensor is f32 or f64.
    pub fn add_scalar(&self, c: f64) -> Result<Tensor> {
        with_float!("add_scalar", self.dtype(), |T| {
            let c = T::from_f64(c);
            map::<T>(self, "add_scalar", |x: T| x + c)
        })
    }

    /// `x − c`.
    ///
    /// # Errors
    /// [`crate::TensorError::DType`] unless the tensor is f32 or f64.
    pub fn sub_scalar(&self, c: f64) -> Result<Tensor> {
        self.add_scalar(-c)
    }

    /// `x · c` (`torch.mul(x, c)`).
    ///
    /// # Errors
    /// [`crate::TensorError::DType`] unless the tensor is f32 or f64.
    pub fn mul_scalar(&self, c: f64) -> Result<Tensor> {
        with_float!("mul_scalar", self.dtype(), |T| {
            let c = T::from_f64(c);
            map::<T>(self, "mul_scalar", |x: T| x * c)
        })
    }

    /// `x / c` (`torch.div(x, c)`); computed as a true division, not `x·(1/c)`,
    /// so results match PyTorch bit for bit.
    ///
    /// # Errors
    /// [`crate::TensorError::DType`] unless the tensor is f32 or f64.
    pub fn div_scalar(&self, c: f64) -> Result<Tensor> {
        with_float!("div_scalar", self.dtype(), |T| {
            let c = T::from_f64(c);
            map::<T>(self, "div_scalar", |x: T| x / c)
        })
    }

    /// `x · mul + add` in one pass.
    ///
    /// # Errors
    /// [`crate::TensorError::DType`] unless the tensor is f32 or f64.
    pub fn affine(&self, mul: f64, add: f64) -> Result<Tensor> {
        with_float!("affine", self.dtype(), |T| {
            let (m, a) = (T::from_f64(mul), T::from_f64(add));
            map::<T>(self, "affine", |x: T| x * m + a)
        })
    }

    /// Clamps into `[min, max]` (`torch.clamp`).
    ///
    /// # Errors
    /// [`crate::TensorError::DType`] unless the tensor is f32 or f64.
    pub fn clamp(&self, min: f64, max: f64) -> Result<Tensor> {
        with_float!("clamp", self.dtype(), |T| {
            let (lo, hi) = (T::from_f64(min), T::from_f64(max));
            map::<T>(self, "clamp", |x: T| {
                if x < lo {
                    lo
                } else if x > hi {
                    hi
                } else {
                    x
                }
            })
        })
    }
}

impl Tensor {
    /// Backward of [`Tensor::gelu`]: `dx = dy · gelu'(x)`, elementwise, for
    /// `x` and `dy` of the same shape (see [`gelu_grad_scalar`]; f32 uses
    /// [`fastmath::gelu_grad_f32`], vectorised).
    ///
    /// # Errors
    /// [`crate::TensorError::ShapeMismatch`] if the shapes differ,
    /// [`crate::TensorError::DType`] unless both are the same f32/f64 dtype.
    pub fn gelu_backward(&self, dy: &Tensor) -> Result<Tensor> {
        if self.shape() != dy.shape() {
            return Err(crate::TensorError::ShapeMismatch {
                op: "gelu_backward",
                expected: self.shape().to_vec(),
                got: dy.shape().to_vec(),
            });
        }
        crate::ops::binary::same_dtype("gelu_backward", self, dy)?;
        if self.dtype() == DType::F32 {
            let (x, dy) = (self.contiguous(), dy.contiguous());
            let (xs, gs) = (x.as_slice::<f32>()?, dy.as_slice::<f32>()?);
            let isa = Isa::detect();
            // SAFETY: `fastmath::gelu_backward` writes every element of `dst`.
            let out = unsafe {
                build_par(xs.len(), PAR_UNIT, PAR_CHUNK / PAR_UNIT, |start, dst| {
                    let r = start..start + dst.len();
                    fastmath::gelu_backward(isa, &xs[r.clone()], &gs[r], dst)
                })
            };
            return Tensor::from_vec(out, self.shape());
        }
        with_float!("gelu_backward", self.dtype(), |T| {
            crate::ops::binary::zip_map::<T, T, T>("gelu_backward", self, dy, |x: T, g: T| {
                g * gelu_grad_scalar(x)
            })
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::DType;

    #[test]
    fn gelu_matches_formula_and_derivative() {
        for &x in &[-3.0f64, -0.5, 0.0, 0.7, 2.5] {
            let h = 1e-6;
            let fd = (gelu_scalar(x + h) - gelu_scalar(x - h)) / (2.0 * h);
            assert!((fd - gelu_grad_scalar(x)).abs() < 1e-8, "x={x}");
        }
    }

    #[test]
    fn strided_input_is_read_through_strides() {
        let t = Tensor::from_vec(vec![1.0f32, 2.0, 3.0, 4.0, 5.0, 6.0], &[2, 3]).unwrap();
        let e = t.t().unwrap().neg().unwrap();
        assert_eq!(e.shape(), &[3, 2]);
        assert_eq!(
            e.to_vec::<f32>().unwrap(),
            vec![-1.0, -4.0, -2.0, -5.0, -3.0, -6.0]
        );
    }

    #[test]
    fn relu_propagates_nan() {
        // Regression: `if x > 0 { x } else { 0 }` mapped NaN to 0, hiding a
        // diverged activation; torch.relu(nan) is nan.
        let t = Tensor::from_vec(vec![f32::NAN, -1.0, 2.0], &[3]).unwrap();
        let r = t.relu().unwrap().to_vec::<f32>().unwrap();
        assert!(r[0].is_nan());
        assert_eq!(&r[1..], &[0.0, 2.0]);
    }

    #[test]
    fn integer_input_is_a_dtype_error() {
        let t = Tensor::zeros(&[2], DType::I64);
        let e = t.exp().unwrap_err();
        assert!(e.to_string().contains("exp: dtype i64"), "{e}");
    }
}
