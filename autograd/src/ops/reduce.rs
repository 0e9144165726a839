//! Reductions. Their gradients broadcast `g` back over the reduced dims.

use kiln_tensor::{Dim, Tensor};

use crate::tape::record;
use crate::{Result, Var};

/// Reinserts reduced dims (size 1) into `g` and broadcasts to `shape`.
fn expand_back(g: &Tensor, shape: &[usize], dims: &[usize], keepdim: bool) -> Result<Tensor> {
    let mut kept = shape.to_vec();
    for &d in dims {
        kept[d] = 1;
    }
    let g = if keepdim {
        g.clone()
    } else {
        g.reshape(&kept)?
    };
    Ok(g.broadcast_to(shape)?)
}

fn resolve(op: &'static str, dims: &[impl Dim], shape: &[usize]) -> Result<Vec<usize>> {
    let mut out = dims
        .iter()
        .map(|d| d.resolve(op, shape))
        .collect::<kiln_tensor::Result<Vec<_>>>()?;
    out.sort_unstable();
    out.dedup();
    Ok(out)
}

impl Var {
    /// Sum over `dims` (`torch.sum(x, dims, keepdim)`).
    ///
    /// # Errors
    /// The tensor error for bad dims.
    pub fn sum<D: Dim>(&self, dims: &[D], keepdim: bool) -> Result<Var> {
        let x = self.value();
        let out = x.sum(dims, keepdim)?;
        let (shape, dims) = (x.shape().to_vec(), resolve("sum", dims, x.shape())?);
        // y = Σ x: dx = broadcast(g)
        record(
            "sum",
            "dx = broadcast(g)",
            &[self],
            out,
            Box::new(move |g| Ok(vec![Some(expand_back(g, &shape, &dims, keepdim)?)])),
        )
    }

    /// Sum of all elements, as a one-element value.
    ///
    /// # Errors
    /// A dtype error for non-float values.
    pub fn sum_all(&self) -> Result<Var> {
        let dims: Vec<usize> = (0..self.shape().len()).collect();
        self.sum(&dims, false)
    }

    /// Mean over `dims` (`torch.mean`).
    ///
    /// # Errors
    /// The tensor error for bad dims.
    pub fn mean<D: Dim>(&self, dims: &[D], keepdim: bool) -> Result<Var> {
        let x = self.value();
        let out = x.mean(dims, keepdim)?;
        let (shape, dims) = (x.shape().to_vec(), resolve("mean", dims, x.shape())?);
        let n: usize = dims.iter().map(|&d| shape[d]).product();
        // y = Σ x / n: dx = broadcast(g) / n
        record(
            "mean",
            "dx = broadcast(g)/n",
            &[self],
            out,
            Box::new(move |g| {
                Ok(vec![Some(expand_back(
                    &g.div_scalar(n as f64)?,
                    &shape,
                    &dims,
                    keepdim,
                )?)])
            }),
        )
    }

    /// Mean of all elements, as a one-element value.
    ///
    /// # Errors
    /// A dtype error for non-float values.
    pub fn mean_all(&self) -> Result<Var> {
        let dims: Vec<usize> = (0..self.shape().len()).collect();
        self.mean(&dims, false)
    }

    /// Maximum over `dims` (`torch.amax`). The gradient is shared equally
    /// among tied maxima, as `torch.amax` does.
    ///
    /// # Errors
    /// The tensor error for bad or empty dims.
    pub fn max<D: Dim>(&self, dims: &[D], keepdim: bool) -> Result<Var> {
        let x = self.value();
        let out = x.max(dims, keepdim)?;
        let (shape, dims) = (x.shape().to_vec(), resolve("max", dims, x.shape())?);
        let m = out.clone();
        // y = max x: dx = g·[x = y] / #ties
        record(
            "max",
            "dx = g·[x = max]/#ties",
            &[self],
            out,
            Box::new(move |g| {
                let mb = expand_back(&m, &shape, &dims, keepdim)?;
                let hit = x.eq(&mb)?;
                let ones = Tensor::ones(&[], x.dtype());
                let zeros = Tensor::zeros(&[], x.dtype());
                let mask = Tensor::where_(&hit, &ones, &zeros)?;
                let count = mask.sum(&dims, true)?;
                let share = expand_back(g, &shape, &dims, keepdim)?
                    .mul(&mask)?
                    .div(&count)?;
                Ok(vec![Some(share)])
            }),
        )
    }
}
