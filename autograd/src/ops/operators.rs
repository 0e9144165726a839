//! Operator sugar for `Var`s: `&x * &w`, `&y + 1.0`, `-&x`, recorded on the
//! tape as the methods are.
//!
//! As for tensors (`kiln_tensor`'s operators), an operator cannot return an
//! error, so it panics on what would be one (a shape mismatch, a stale
//! tape), with the method's message, at the line that used it
//! (`#[track_caller]`).

use crate::{Result, Var};

#[track_caller]
fn or_panic(r: Result<Var>) -> Var {
    match r {
        Ok(v) => v,
        Err(e) => panic!("{e}"),
    }
}

macro_rules! operator {
    ($Trait:ident, $method:ident, $var_op:ident, $sym:literal, |$x:ident, $c:ident| $scalar:expr) => {
        #[doc = concat!("`&a ", $sym, " &b`: [`Var::", stringify!($var_op), "`]; panics where that errs.")]
        impl std::ops::$Trait<&Var> for &Var {
            type Output = Var;
            #[track_caller]
            fn $method(self, rhs: &Var) -> Var {
                or_panic(Var::$var_op(self, rhs))
            }
        }

        #[doc = concat!("`&a ", $sym, " c` with a constant `c`; panics where the method errs.")]
        impl std::ops::$Trait<f64> for &Var {
            type Output = Var;
            #[track_caller]
            fn $method(self, $c: f64) -> Var {
                let $x = self;
                or_panic($scalar)
            }
        }
    };
}

operator!(Add, add, add, "+", |x, c| x.add_scalar(c));
operator!(Sub, sub, sub, "-", |x, c| x.add_scalar(-c));
operator!(Mul, mul, mul, "*", |x, c| x.mul_scalar(c));
operator!(Div, div, div, "/", |x, c| x.div_scalar(c));

/// `-&a`: [`Var::neg`]; panics where that errs.
impl std::ops::Neg for &Var {
    type Output = Var;
    #[track_caller]
    fn neg(self) -> Var {
        or_panic(Var::neg(self))
    }
}

#[cfg(test)]
mod tests {
    use kiln_tensor::Tensor;

    use crate::Var;

    #[test]
    fn operators_record_gradients_as_the_methods_do() {
        let w = Var::parameter(Tensor::from_vec(vec![2f64, -1.0], &[2]).unwrap());
        let x = Var::constant(Tensor::from_vec(vec![3f64, 4.0], &[2]).unwrap());
        // y = Σ (-(w·x) + 1) / 2 - 0.5 → dy/dw = -x/2
        let y = &(&(&(-&(&w * &x)) + 1.0) / 2.0) - 0.5;
        y.sum_all().unwrap().backward().unwrap();
        assert_eq!(w.grad().unwrap().to_vec::<f64>().unwrap(), vec![-1.5, -2.0]);
    }
}
