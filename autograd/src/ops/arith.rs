//! Arithmetic with broadcasting. Rules return output-shaped gradients; the
//! engine sums them back to each input's shape.

use crate::tape::record;
use crate::{Result, Var};

impl Var {
    /// `self + rhs`, broadcasting (`torch.add`).
    ///
    /// # Errors
    /// The tensor op's error for incompatible shapes or dtypes.
    pub fn add(&self, rhs: &Var) -> Result<Var> {
        let out = self.value().add(&rhs.value())?;
        // y = a + b: da = g, db = g
        record(
            "add",
            "da = g, db = g",
            &[self, rhs],
            out,
            Box::new(|g| Ok(vec![Some(g.clone()), Some(g.clone())])),
        )
    }

    /// `self − rhs`, broadcasting (`torch.sub`).
    ///
    /// # Errors
    /// As [`Var::add`].
    pub fn sub(&self, rhs: &Var) -> Result<Var> {
        let out = self.value().sub(&rhs.value())?;
        let need_b = rhs.requires_grad();
        // y = a − b: da = g, db = −g
        record(
            "sub",
            "da = g, db = −g",
            &[self, rhs],
            out,
            Box::new(move |g| {
                Ok(vec![
                    Some(g.clone()),
                    if need_b { Some(g.neg()?) } else { None },
                ])
            }),
        )
    }

    /// `self ⊙ rhs`, broadcasting (`torch.mul`).
    ///
    /// # Errors
    /// As [`Var::add`].
    pub fn mul(&self, rhs: &Var) -> Result<Var> {
        let (a, b) = (self.value(), rhs.value());
        let out = a.mul(&b)?;
        let (need_a, need_b) = (self.requires_grad(), rhs.requires_grad());
        // y = a·b: da = g·b, db = g·a
        record(
            "mul",
            "da = g·b, db = g·a",
            &[self, rhs],
            out,
            Box::new(move |g| {
                Ok(vec![
                    if need_a { Some(g.mul(&b)?) } else { None },
                    if need_b { Some(g.mul(&a)?) } else { None },
                ])
            }),
        )
    }

    /// `self / rhs`, broadcasting (`torch.div`).
    ///
    /// # Errors
    /// As [`Var::add`].
    pub fn div(&self, rhs: &Var) -> Result<Var> {
        let (a, b) = (self.value(), rhs.value());
        let out = a.div(&b)?;
        let (need_a, need_b) = (self.requires_grad(), rhs.requires_grad());
        let y = out.clone();
        // y = a/b: da = g/b, db = −g·a/b² = −g·y/b
        record(
            "div",
            "da = g/b, db = −g·y/b",
            &[self, rhs],
            out,
            Box::new(move |g| {
                Ok(vec![
                    if need_a { Some(g.div(&b)?) } else { None },
                    if need_b {
                        Some(g.mul(&y)?.div(&b)?.neg()?)
                    } else {
                        None
                    },
                ])
            }),
        )
    }

    /// `−self` (`torch.neg`).
    ///
    /// # Errors
    /// A dtype error for non-float values.
    pub fn neg(&self) -> Result<Var> {
        let out = self.value().neg()?;
        // y = −x: dx = −g
        record(
            "neg",
            "dx = −g",
            &[self],
            out,
            Box::new(|g| Ok(vec![Some(g.neg()?)])),
        )
    }

    /// `self + c`.
    ///
    /// # Errors
    /// A dtype error for non-float values.
    pub fn add_scalar(&self, c: f64) -> Result<Var> {
        let out = self.value().add_scalar(c)?;
        // y = x + c: dx = g
        record(
            "add_scalar",
            "dx = g",
            &[self],
            out,
            Box::new(|g| Ok(vec![Some(g.clone())])),
        )
    }

    /// `self · c`.
    ///
    /// # Errors
    /// A dtype error for non-float values.
    pub fn mul_scalar(&self, c: f64) -> Result<Var> {
        let out = self.value().mul_scalar(c)?;
        // y = c·x: dx = c·g
        record(
            "mul_scalar",
            "dx = c·g",
            &[self],
            out,
            Box::new(move |g| Ok(vec![Some(g.mul_scalar(c)?)])),
        )
    }

    /// `self / c`.
    ///
    /// # Errors
    /// A dtype error for non-float values.
    pub fn div_scalar(&self, c: f64) -> Result<Var> {
        let out = self.value().div_scalar(c)?;
        // y = x/c: dx = g/c
        record(
            "div_scalar",
            "dx = g/c",
            &[self],
            out,
            Box::new(move |g| Ok(vec![Some(g.div_scalar(c)?)])),
        )
    }

    /// `selfᵖ` for a scalar exponent (`torch.pow(x, p)`).
    ///
    /// # Errors
    /// A dtype error for non-float values.
    pub fn powf(&self, p: f64) -> Result<Var> {
        let x = self.value();
        let out = x.powf(p)?;
        // y = xᵖ: dx = g·p·xᵖ⁻¹
        record(
            "powf",
            "dx = g·p·x^(p−1)",
            &[self],
            out,
            Box::new(move |g| Ok(vec![Some(g.mul(&x.powf(p - 1.0)?.mul_scalar(p)?)?)])),
        )
    }
}
