//! Operator sugar: `&a + &b`, `&a * 2.0`, `-&a` for tensors.
//!
//! The methods (`a.add(&b)?`) return errors; the operators cannot, so they
//! panic on what would be an error, with the op and the shapes
//! (`add: shapes [2, 3] and [4] do not broadcast`) reported at the line
//! that used the operator (`#[track_caller]`), not inside Kiln. Use the
//! methods where bad shapes are the input's fault rather than a bug.

use crate::{Result, Tensor};

#[track_caller]
fn or_panic(r: Result<Tensor>) -> Tensor {
    match r {
        Ok(t) => t,
        Err(e) => panic!("{e}"),
    }
}

macro_rules! operator {
    ($Trait:ident, $method:ident, $tensor_op:ident, $scalar_op:ident, $sym:literal) => {
        #[doc = concat!("`&a ", $sym, " &b`: [`Tensor::", stringify!($tensor_op), "`] (broadcasting); panics where that errs.")]
        impl std::ops::$Trait<&Tensor> for &Tensor {
            type Output = Tensor;
            #[track_caller]
            fn $method(self, rhs: &Tensor) -> Tensor {
                or_panic(Tensor::$tensor_op(self, rhs))
            }
        }

        #[doc = concat!("`&a ", $sym, " c`: [`Tensor::", stringify!($scalar_op), "`]; panics where that errs.")]
        impl std::ops::$Trait<f64> for &Tensor {
            type Output = Tensor;
            #[track_caller]
            fn $method(self, rhs: f64) -> Tensor {
                or_panic(Tensor::$scalar_op(self, rhs))
            }
        }
    };
}

operator!(Add, add, add, add_scalar, "+");
operator!(Sub, sub, sub, sub_scalar, "-");
operator!(Mul, mul, mul, mul_scalar, "*");
operator!(Div, div, div, div_scalar, "/");

/// `-&a`: [`Tensor::neg`]; panics where that errs (a non-float tensor).
impl std::ops::Neg for &Tensor {
    type Output = Tensor;
    #[track_caller]
    fn neg(self) -> Tensor {
        or_panic(Tensor::neg(self))
    }
}

#[cfg(test)]
mod tests {
    use crate::Tensor;

    #[test]
    fn operators_are_the_methods() {
        let a = Tensor::from_vec(vec![1f32, 2.0, 3.0, 4.0], &[2, 2]).unwrap();
        let b = Tensor::from_vec(vec![10f32, 20.0], &[2]).unwrap();
        let y = &(&(&a + &b) * 2.0) - &(-&a);
        assert_eq!(y.to_vec::<f32>().unwrap(), vec![23.0, 46.0, 29.0, 52.0]);
        assert_eq!(
            (&a / 2.0).to_vec::<f32>().unwrap(),
            vec![0.5, 1.0, 1.5, 2.0]
        );
    }

    #[test]
    fn a_bad_shape_panics_at_the_callers_line_with_the_shapes() {
        use std::panic::{catch_unwind, AssertUnwindSafe};
        let a = Tensor::ones(&[2, 3], crate::DType::F32);
        let b = Tensor::ones(&[4], crate::DType::F32);
        let seen = std::sync::Arc::new(std::sync::Mutex::new(None));
        let s = seen.clone();
        let prev = std::panic::take_hook();
        // The hook is the process's: keep only this thread's panic.
        let me = std::thread::current().id();
        std::panic::set_hook(Box::new(move |info| {
            if std::thread::current().id() != me {
                return;
            }
            let at = info.location().map(|l| (l.file().to_string(), l.line()));
            *s.lock().unwrap() = Some((at, info.payload_as_str().map(str::to_string)));
        }));
        let (here, _) = (line!(), catch_unwind(AssertUnwindSafe(|| &a + &b)));
        std::panic::set_hook(prev);
        let (at, msg) = seen.lock().unwrap().clone().unwrap();
        let msg = msg.unwrap();
        assert!(
            msg.contains("add") && msg.contains("[2, 3]") && msg.contains("[4]"),
            "{msg}"
        );
        let (file, line) = at.unwrap();
        assert!(
            file.ends_with("operators.rs") && line == here,
            "{file}:{line}"
        );
    }
}
