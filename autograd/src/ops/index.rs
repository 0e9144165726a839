//! Indexing and masking.

use kiln_tensor::{Dim, Tensor};

use crate::tape::record;
use crate::{Result, Var};

impl Var {
    /// Picks entries `indices` (i64, 1-D) along `dim` (`torch.index_select`);
    /// on a `[V, C]` weight with `dim = 0` this is an embedding lookup.
    ///
    /// # Errors
    /// The tensor error for a bad index or dtype.
    pub fn index_select(&self, dim: impl Dim, indices: &Tensor) -> Result<Var> {
        let x = self.value();
        let d = dim.resolve("index_select", x.shape())?;
        let out = x.index_select(d, indices)?;
        let (shape, dtype, idx) = (x.shape().to_vec(), x.dtype(), indices.clone());
        // y = x[idx]: dx = zeros.index_add(idx, g) — repeated ids accumulate
        record(
            "index_select",
            "dx = zeros.index_add(idx, g)",
            &[self],
            out,
            Box::new(move |g| {
                Ok(vec![Some(
                    Tensor::zeros(&shape, dtype).index_add(d, &idx, g)?,
                )])
            }),
        )
    }

    /// Gathers along `dim` by an i64 index of the same rank (`torch.gather`).
    ///
    /// # Errors
    /// The tensor error for a bad index or shape.
    pub fn gather(&self, dim: impl Dim, index: &Tensor) -> Result<Var> {
        let x = self.value();
        let d = dim.resolve("gather", x.shape())?;
        let out = x.gather(d, index)?;
        let (shape, dtype, idx) = (x.shape().to_vec(), x.dtype(), index.clone());
        // y = gather(x, idx): dx = zeros.scatter_add(idx, g)
        record(
            "gather",
            "dx = zeros.scatter_add(idx, g)",
            &[self],
            out,
            Box::new(move |g| {
                Ok(vec![Some(
                    Tensor::zeros(&shape, dtype).scatter_add(d, &idx, g)?,
                )])
            }),
        )
    }

    /// Replaces entries where the bool `mask` (broadcast to `self`) is true
    /// by `value` (`masked_fill`).
    ///
    /// # Errors
    /// The tensor error for a non-bool or non-broadcastable mask.
    pub fn masked_fill(&self, mask: &Tensor, value: f64) -> Result<Var> {
        let out = self.value().masked_fill(mask, value)?;
        let mask = mask.clone();
        // y = x where !mask else c: dx = g where !mask else 0
        record(
            "masked_fill",
            "dx = g·[¬mask]",
            &[self],
            out,
            Box::new(move |g| Ok(vec![Some(g.masked_fill(&mask, 0.0)?)])),
        )
    }

    /// Picks `on_true` where `cond` is true, else `on_false` (`torch.where`),
    /// all broadcasting together.
    ///
    /// # Errors
    /// The tensor error for dtype or shape problems.
    pub fn where_(cond: &Tensor, on_true: &Var, on_false: &Var) -> Result<Var> {
        let out = Tensor::where_(cond, &on_true.value(), &on_false.value())?;
        let c = cond.clone();
        // y = c ? a : b: da = g·[c], db = g·[¬c]
        record(
            "where",
            "da = g·[c], db = g·[¬c]",
            &[on_true, on_false],
            out,
            Box::new(move |g| {
                let z = Tensor::zeros(&[], g.dtype());
                Ok(vec![
                    Some(Tensor::where_(&c, g, &z)?),
                    Some(Tensor::where_(&c, &z, g)?),
                ])
            }),
        )
    }
}
