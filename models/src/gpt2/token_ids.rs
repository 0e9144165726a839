//! What [`super::Gpt2::forward`] accepts as token ids: the `[B, T]` i64
//! tensor the model works on, or ids as `generate` and the tokenizer
//! produce them (`u32`).

use std::borrow::Cow;

use kiln_tensor::Tensor;

use crate::{ModelError, Result};

/// Token ids for a forward pass, as a `[B, T]` i64 tensor:
/// - a `Tensor` of i64 ids, `[B, T]`, used as it is;
/// - `[u32]` / `Vec<u32>`: one sequence, `B = 1`;
/// - `[Vec<u32>]` / `Vec<Vec<u32>>`: a batch of sequences of one length.
///
/// PyTorch: what `model(input_ids)` takes, `torch.tensor([ids])`.
pub trait TokenIds {
    /// The ids as a `[B, T]` i64 tensor.
    ///
    /// # Errors
    /// [`ModelError::Input`] for a batch of sequences of different lengths
    /// (pad them, or run them one by one).
    fn to_tensor(&self) -> Result<Cow<'_, Tensor>>;
}

impl TokenIds for Tensor {
    fn to_tensor(&self) -> Result<Cow<'_, Tensor>> {
        Ok(Cow::Borrowed(self))
    }
}

impl TokenIds for [u32] {
    fn to_tensor(&self) -> Result<Cow<'_, Tensor>> {
        let ids = self.iter().map(|&i| i as i64).collect();
        Ok(Cow::Owned(Tensor::from_vec(ids, &[1, self.len()])?))
    }
}

impl TokenIds for Vec<u32> {
    fn to_tensor(&self) -> Result<Cow<'_, Tensor>> {
        self.as_slice().to_tensor()
    }
}

impl TokenIds for [Vec<u32>] {
    fn to_tensor(&self) -> Result<Cow<'_, Tensor>> {
        let t = self.first().map_or(0, Vec::len);
        if let Some((row, r)) = self.iter().enumerate().find(|(_, r)| r.len() != t) {
            return Err(ModelError::Input(format!(
                "sequence {row} has {} ids but sequence 0 has {t}; a batch needs one length (pad it, or run the sequences one by one)",
                r.len()
            )));
        }
        let ids = self.iter().flatten().map(|&i| i as i64).collect();
        Ok(Cow::Owned(Tensor::from_vec(ids, &[self.len(), t])?))
    }
}

impl TokenIds for Vec<Vec<u32>> {
    fn to_tensor(&self) -> Result<Cow<'_, Tensor>> {
        self.as_slice().to_tensor()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::gpt2::{ForwardOptions, Gpt2, Gpt2Config};

    #[test]
    fn u32_ids_give_the_logits_of_the_tensor() {
        let mut model = Gpt2::new(Gpt2Config::tiny(), 0).unwrap();
        kiln_nn::Module::eval(&mut model); // no dropout: one forward = another
        let ids: Vec<u32> = vec![15496, 995, 11, 314];
        let t = Tensor::from_vec(ids.iter().map(|&i| i as i64).collect(), &[1, 4]).unwrap();
        let want = model
            .forward(&t, ForwardOptions::default())
            .unwrap()
            .value();
        for got in [
            model.forward(&ids, ForwardOptions::default()).unwrap(),
            model.forward(&ids[..], ForwardOptions::default()).unwrap(),
        ] {
            let same = got.value().to_vec::<f32>().unwrap() == want.to_vec::<f32>().unwrap();
            assert!(same, "u32 ids gave other logits than the i64 tensor");
        }
        let batch = vec![ids.clone(), ids.clone()];
        assert_eq!(
            model
                .forward(&batch, ForwardOptions::default())
                .unwrap()
                .shape(),
            vec![2, 4, model.config.vocab_size]
        );
        let ragged = vec![ids.clone(), ids[..2].to_vec()];
        let err = model
            .forward(&ragged, ForwardOptions::default())
            .unwrap_err()
            .to_string();
        assert!(err.contains("sequence 1 has 2 ids"), "{err}");
    }
}
