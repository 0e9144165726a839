//! Packed copies of bf16 weights that inference keeps reusing.
//!
//! The bf16 matrix kernel packs its right-hand side into the tile layout on
//! every product ([`kiln_tensor::Tensor::prepack_rhs`] explains the
//! layout). For a weight that an evaluation or a server multiplies by long
//! inputs again and again, that is the same work each time: about a
//! seventh of a 512-token bf16 forward of GPT-2 124M. So a bf16 weight
//! that has been in **two** inference products of [`PREPACK_MIN_ROWS`] to
//! [`PREPACK_MAX_ROWS`] rows gets a packed copy, kept with the parameter
//! ([`Var::derived`]) until its value changes, and later products read it:
//! the same bits, without the packing.
//!
//! The second use, not the first, pays: a single prompt (`kiln generate`)
//! is prefilled once, so packing ahead would only add a second copy of
//! every matrix (170 MB for GPT-2 124M) and the page faults of allocating
//! it. Decode steps (one row) never pack. [`set_weight_prepacking`] turns
//! it off for a process that would rather keep the memory.

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use kiln_autograd::Var;
use kiln_tensor::{DType, PackedRhs};

use crate::Result;

/// Rows of input (all dims but the last, multiplied) from which an
/// inference product counts as a long one: a prefill or an evaluation
/// window, not a decode step or a short prompt.
pub const PREPACK_MIN_ROWS: usize = 64;

/// Rows past which a product gains too little from a packed weight to keep
/// one: packing costs `k·n` against the product's `m·k·n`, so its share
/// falls with `m` (a seventh of a 512-row GPT-2 prefill's matrix time,
/// about 2 % at 4,096 rows: an evaluation batch of 8 × 512, where keeping
/// the copy measured slower than packing per call).
pub const PREPACK_MAX_ROWS: usize = 2048;

/// Long inference products a weight must have been in before it is packed
/// ahead.
const USES_BEFORE_PACKING: usize = 1;

/// Whether bf16 weights get packed copies ([`set_weight_prepacking`]).
static PREPACK: AtomicBool = AtomicBool::new(true);

/// Turns packed copies of reused bf16 weights on (the default) or off for
/// the whole process. Off, every product packs its weight afresh and a bf16
/// model holds only its own matrices; repeated long forwards are slower
/// (0.13 against 0.11 s per 512-token prefill of GPT-2 124M on an AMX
/// Xeon). While it is off, uses are not counted; copies already kept stay
/// until their weight changes.
/// `kiln eval --no-prepack` and `kiln generate --no-prepack` turn it off.
pub fn set_weight_prepacking(on: bool) {
    PREPACK.store(on, Ordering::Relaxed);
}

/// Whether bf16 weights get packed copies (see [`set_weight_prepacking`]).
pub fn weight_prepacking() -> bool {
    PREPACK.load(Ordering::Relaxed)
}

/// What a bf16 weight keeps with it ([`Var::derived`]): how many long
/// inference products it has been in, and its packed copy once it has.
#[derive(Default)]
struct Reuse {
    long_uses: AtomicUsize,
    packed: Mutex<Option<Arc<PackedRhs>>>,
}

/// The [`Reuse`] kept with `weight` (a fresh one the first time).
fn reuse(weight: &Var) -> Result<Arc<Reuse>> {
    weight.derived(|_| Ok(Reuse::default()))
}

/// The weight's packed copy for the product `x · weight`, if this product
/// should use one: a bf16 `[in, out]` weight, f32 activations of
/// [`PREPACK_MIN_ROWS`] to [`PREPACK_MAX_ROWS`] rows, no gradient to
/// record, prepacking on, and the weight already seen in an earlier such
/// product. Packs it on the first call that needs it.
///
/// # Errors
/// Whatever packing reports (a weight that is not a 2-D bf16 matrix).
pub(crate) fn packed_weight(weight: &Var, x: &Var) -> Result<Option<Arc<PackedRhs>>> {
    let shape = x.shape();
    let rows = shape[..shape.len().saturating_sub(1)]
        .iter()
        .product::<usize>();
    if !weight_prepacking()
        || weight.dtype() != DType::BF16
        || x.dtype() != DType::F32
        || kiln_autograd::records(&[x, weight])
        || !(PREPACK_MIN_ROWS..=PREPACK_MAX_ROWS).contains(&rows)
    {
        return Ok(None);
    }
    let reuse = reuse(weight)?;
    if reuse.long_uses.fetch_add(1, Ordering::Relaxed) < USES_BEFORE_PACKING {
        return Ok(None);
    }
    let mut slot = reuse.packed.lock().unwrap_or_else(|e| e.into_inner());
    if slot.is_none() {
        *slot = Some(Arc::new(weight.value().prepack_rhs()?));
    }
    Ok(slot.clone())
}

/// Bytes of the packed copy kept for `weight` (0 if none): what
/// prepacking adds to a model's memory.
pub fn prepacked_bytes(weight: &Var) -> usize {
    reuse(weight).map_or(0, |r| {
        r.packed
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .as_ref()
            .map_or(0, |p| p.packed_bytes())
    })
}

#[cfg(test)]
mod tests {
    use kiln_autograd::no_grad;
    use kiln_tensor::{Rng, Tensor};

    use super::*;
    use crate::{Conv1D, Forward};

    fn bf16_conv(rng: &mut Rng) -> Conv1D {
        let mut c = Conv1D::new(96, 80, 0.5, DType::F32, rng).unwrap();
        c.weight = Var::parameter(c.weight.value().to_dtype(DType::BF16));
        c.bias = Var::parameter(Tensor::randn(&[80], 0.0, 1.0, DType::F32, rng).unwrap());
        c
    }

    /// Inference forwards of a bf16 Conv1D over enough rows: the first
    /// packs per call and keeps nothing, the second keeps a packed copy,
    /// every one gives the bits of the unpacked product (a forward that
    /// records gradients), and a new weight value drops the copy.
    #[test]
    fn a_reused_bf16_weight_is_packed_once_and_follows_its_value() {
        let mut rng = Rng::new(1);
        let conv = bf16_conv(&mut rng);
        let x = Var::constant(
            Tensor::randn(
                &[2, PREPACK_MIN_ROWS / 2 + 3, 96],
                0.0,
                1.0,
                DType::F32,
                &mut rng,
            )
            .unwrap(),
        );
        let plain = conv.forward(&x).unwrap().value().to_vec::<f32>().unwrap();
        assert_eq!(
            prepacked_bytes(&conv.weight),
            0,
            "a recording forward packed"
        );
        let first = no_grad(|| conv.forward(&x)).unwrap().value();
        assert_eq!(prepacked_bytes(&conv.weight), 0, "the first use packed");
        let second = no_grad(|| conv.forward(&x)).unwrap().value();
        let kept = prepacked_bytes(&conv.weight);
        let kernel = kiln_tensor::kernels::isa::Isa::detect();
        assert_eq!(kept > 0, kernel.has_amx() || kernel.has_bf16_dot());
        let third = no_grad(|| conv.forward(&x)).unwrap().value();
        for y in [first, second, third] {
            assert_eq!(y.to_vec::<f32>().unwrap(), plain);
        }
        // A new value drops the copy; the reuse count starts again.
        let w2 = Tensor::randn(&[96, 80], 0.0, 1.0, DType::F32, &mut rng)
            .unwrap()
            .to_dtype(DType::BF16);
        conv.weight.set_value(w2.clone()).unwrap();
        assert_eq!(prepacked_bytes(&conv.weight), 0);
        let want = x
            .value()
            .matmul(&w2)
            .unwrap()
            .add(&conv.bias.value())
            .unwrap();
        for _ in 0..2 {
            let after = no_grad(|| conv.forward(&x)).unwrap().value();
            assert_eq!(
                after.to_vec::<f32>().unwrap(),
                want.to_vec::<f32>().unwrap()
            );
        }
        assert_eq!(prepacked_bytes(&conv.weight), kept);
    }

    /// Short inputs (decode steps), very long ones and f32 weights are
    /// never packed.
    #[test]
    fn short_and_very_long_inputs_and_f32_weights_are_not_packed() {
        let mut rng = Rng::new(2);
        let conv = bf16_conv(&mut rng);
        let f32_conv = Conv1D::new(96, 80, 0.5, DType::F32, &mut rng).unwrap();
        let rows = |r: usize| Var::constant(Tensor::zeros(&[1, r, 96], DType::F32));
        let (short, long, very_long) = (
            rows(PREPACK_MIN_ROWS - 1),
            rows(PREPACK_MIN_ROWS),
            rows(PREPACK_MAX_ROWS + 1),
        );
        for _ in 0..3 {
            no_grad(|| conv.forward(&short)).unwrap();
            no_grad(|| conv.forward(&very_long)).unwrap();
            no_grad(|| f32_conv.forward(&long)).unwrap();
        }
        assert_eq!(prepacked_bytes(&conv.weight), 0);
        assert_eq!(prepacked_bytes(&f32_conv.weight), 0);
    }
}
