//! Shape and layout ops. Forward results are views where the tensor layer
//! allows; each backward rule maps the gradient back to the input's layout.

use kiln_tensor::{Dim, Tensor};

use crate::tape::{record, record_slice};
use crate::{Result, Var};

impl Var {
    /// Reshape (`torch.reshape`): a view when strides allow, else a copy.
    ///
    /// # Errors
    /// The tensor error if the element counts differ.
    pub fn reshape(&self, shape: &[usize]) -> Result<Var> {
        let x = self.value();
        let in_shape = x.shape().to_vec();
        let out = x.reshape(shape)?;
        // y = reshape(x): dx = reshape(g, x.shape)
        record(
            "reshape",
            "dx = reshape(g)",
            &[self],
            out,
            Box::new(move |g| Ok(vec![Some(g.reshape(&in_shape)?)])),
        )
    }

    /// Permutes dims (`torch.permute`); a view.
    ///
    /// # Errors
    /// The tensor error unless `dims` is a permutation.
    pub fn permute(&self, dims: &[usize]) -> Result<Var> {
        let out = self.value().permute(dims)?;
        let mut inv = vec![0; dims.len()];
        for (i, &d) in dims.iter().enumerate() {
            inv[d] = i;
        }
        // y = permute(x, p): dx = permute(g, p⁻¹)
        record(
            "permute",
            "dx = permute(g, p⁻¹)",
            &[self],
            out,
            Box::new(move |g| Ok(vec![Some(g.permute(&inv)?)])),
        )
    }

    /// Swaps two dims (`torch.transpose`); a view.
    ///
    /// # Errors
    /// The tensor error for a bad dim.
    pub fn transpose(&self, dim0: impl Dim, dim1: impl Dim) -> Result<Var> {
        let shape = self.shape();
        let (a, b) = (
            dim0.resolve("transpose", &shape)?,
            dim1.resolve("transpose", &shape)?,
        );
        let out = self.value().transpose(a, b)?;
        // y = xᵀ: dx = gᵀ
        record(
            "transpose",
            "dx = transpose(g)",
            &[self],
            out,
            Box::new(move |g| Ok(vec![Some(g.transpose(a, b)?)])),
        )
    }

    /// Transpose of the last two dims; a view.
    ///
    /// # Errors
    /// The tensor error for rank below 2.
    pub fn t(&self) -> Result<Var> {
        self.transpose(-2, -1)
    }

    /// `len` entries of `dim` from `start` (`torch.narrow`); a view.
    ///
    /// # Errors
    /// The tensor error if the range does not fit.
    pub fn narrow(&self, dim: impl Dim, start: usize, len: usize) -> Result<Var> {
        let x = self.value();
        let d = dim.resolve("narrow", x.shape())?;
        let out = x.narrow(d, start, len)?;
        let in_shape = x.shape().to_vec();
        // y = x[start:start+len]: dx = zeros with g placed at [start:start+len]
        record_slice(
            "narrow",
            "dx[start..start+len] += g",
            self,
            out,
            (d, start),
            Box::new(move |g| {
                let zeros = Tensor::zeros(&in_shape, g.dtype());
                Ok(vec![Some(zeros.slice_scatter(g, d, start)?)])
            }),
        )
    }

    /// Removes a size-1 dim; a view.
    ///
    /// # Errors
    /// The tensor error if the dim's size is not 1.
    pub fn squeeze(&self, dim: impl Dim) -> Result<Var> {
        let x = self.value();
        let in_shape = x.shape().to_vec();
        let out = x.squeeze(dim)?;
        record(
            "squeeze",
            "dx = reshape(g)",
            &[self],
            out,
            Box::new(move |g| Ok(vec![Some(g.reshape(&in_shape)?)])),
        )
    }

    /// Inserts a size-1 dim; a view.
    ///
    /// # Errors
    /// The tensor error for a bad dim.
    pub fn unsqueeze(&self, dim: impl Dim) -> Result<Var> {
        let x = self.value();
        let in_shape = x.shape().to_vec();
        let out = x.unsqueeze(dim)?;
        record(
            "unsqueeze",
            "dx = reshape(g)",
            &[self],
            out,
            Box::new(move |g| Ok(vec![Some(g.reshape(&in_shape)?)])),
        )
    }

    /// Broadcasts to `shape` (`expand`); a stride-0 view.
    ///
    /// # Errors
    /// The tensor error for incompatible shapes.
    pub fn broadcast_to(&self, shape: &[usize]) -> Result<Var> {
        let out = self.value().broadcast_to(shape)?;
        // y = expand(x): dx = g summed over the broadcast dims (done by the engine)
        record(
            "broadcast_to",
            "dx = Σ_broadcast g",
            &[self],
            out,
            Box::new(|g| Ok(vec![Some(g.clone())])),
        )
    }

    /// A contiguous copy (or `self` when already contiguous).
    ///
    /// # Errors
    /// Never in practice; `Result` for uniformity.
    pub fn contiguous(&self) -> Result<Var> {
        let x = self.value();
        if x.is_contiguous() {
            return Ok(self.clone());
        }
        record(
            "contiguous",
            "dx = g",
            &[self],
            x.contiguous(),
            Box::new(|g| Ok(vec![Some(g.clone())])),
        )
    }

    /// The values converted to `dtype` (`tensor.to(dtype)`): a bf16 weight
    /// looked up as f32 activations, say. The gradient flows back converted
    /// to the input's dtype.
    ///
    /// # Errors
    /// Never in practice; `Result` for uniformity.
    pub fn to_dtype(&self, dtype: kiln_tensor::DType) -> Result<Var> {
        let x = self.value();
        let from = x.dtype();
        if from == dtype {
            return Ok(self.clone());
        }
        record(
            "to_dtype",
            "dx = g (in x's dtype)",
            &[self],
            x.to_dtype(dtype),
            Box::new(move |g| Ok(vec![Some(g.to_dtype(from))])),
        )
    }

    /// Concatenates along `dim` (`torch.cat`).
    ///
    /// # Errors
    /// The tensor error for incompatible shapes or an empty list.
    pub fn cat(vars: &[&Var], dim: impl Dim) -> Result<Var> {
        let values: Vec<Tensor> = vars.iter().map(|v| v.value()).collect();
        let refs: Vec<&Tensor> = values.iter().collect();
        let out = Tensor::cat(&refs, dim)?;
        let d = dim.resolve("cat", values[0].shape())?;
        let sizes: Vec<usize> = values.iter().map(|v| v.shape()[d]).collect();
        // y = cat(x₁…xₙ): dxᵢ = the i-th slice of g
        record(
            "cat",
            "dxᵢ = split(g)ᵢ",
            vars,
            out,
            Box::new(move |g| Ok(g.split_sizes(&sizes, d)?.into_iter().map(Some).collect())),
        )
    }

    /// Splits into pieces of `sizes[i]` along `dim` (`torch.split`); views.
    ///
    /// # Errors
    /// The tensor error if the sizes do not add up.
    pub fn split_sizes(&self, sizes: &[usize], dim: impl Dim) -> Result<Vec<Var>> {
        let shape = self.shape();
        let d = dim.resolve("split", &shape)?;
        if sizes.iter().sum::<usize>() != shape[d] {
            // Let the tensor op produce its error message.
            self.value().split_sizes(sizes, d)?;
        }
        let mut start = 0;
        sizes
            .iter()
            .map(|&s| {
                let v = self.narrow(d, start, s);
                start += s;
                v
            })
            .collect()
    }

    /// Splits into `chunks` nearly equal pieces along `dim` (`torch.chunk`).
    ///
    /// # Errors
    /// The tensor error if `chunks` is 0.
    pub fn chunk(&self, chunks: usize, dim: impl Dim) -> Result<Vec<Var>> {
        let shape = self.shape();
        let d = dim.resolve("chunk", &shape)?;
        let sizes: Vec<usize> = self
            .value()
            .chunk(chunks, d)?
            .iter()
            .map(|t| t.shape()[d])
            .collect();
        self.split_sizes(&sizes, d)
    }
}
