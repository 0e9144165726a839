//! A small, documented, reproducible random number generator.
//!
//! The generator is **xoshiro256\*\*** (Blackman & Vigna, 2018) seeded by
//! running **SplitMix64** on the 64-bit seed, a standard pairing. Uniform
//! floats in `[0, 1)` take the top 53 bits of a draw (`(x >> 11) · 2⁻⁵³`);
//! normal samples use the Box–Muller transform, consuming two uniforms and
//! producing two values. Given a seed, the same sequence comes out on every
//! platform and at every thread count (generation is sequential).
//!
//! It does not reproduce PyTorch's streams (Mersenne Twister with its own
//! transforms); reference tests pass data explicitly instead.

use crate::{with_float, DType, Result, Tensor};

/// A seeded xoshiro256\*\* generator.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rng {
    s: [u64; 4],
    /// The second Box–Muller value, waiting to be returned.
    spare_normal_bits: Option<u64>,
}

fn splitmix64(state: &mut u64) -> u64 {
    *state = state.wrapping_add(0x9E37_79B9_7F4A_7C15);
    let mut z = *state;
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

impl Rng {
    /// A generator whose whole sequence is determined by `seed`.
    pub fn new(seed: u64) -> Rng {
        let mut sm = seed;
        Rng {
            s: std::array::from_fn(|_| splitmix64(&mut sm)),
            spare_normal_bits: None,
        }
    }

    /// The full internal state, for checkpointing (see [`Rng::from_state`]).
    pub fn state(&self) -> ([u64; 4], Option<u64>) {
        (self.s, self.spare_normal_bits)
    }

    /// Restores a generator saved with [`Rng::state`].
    pub fn from_state(s: [u64; 4], spare: Option<u64>) -> Rng {
        Rng {
            s,
            spare_normal_bits: spare,
        }
    }

    /// The next 64 random bits.
    pub fn next_u64(&mut self) -> u64 {
        let result = self.s[1].wrapping_mul(5).rotate_left(7).wrapping_mul(9);
        let t = self.s[1] << 17;
        self.s[2] ^= self.s[0];
        self.s[3] ^= self.s[1];
        self.s[1] ^= self.s[2];
        self.s[0] ^= self.s[3];
        self.s[2] ^= t;
        self.s[3] = self.s[3].rotate_left(45);
        result
    }

    /// A uniform float in `[0, 1)` with 53 random bits.
    pub fn uniform(&mut self) -> f64 {
        (self.next_u64() >> 11) as f64 * (1.0 / (1u64 << 53) as f64)
    }

    /// A uniform integer in `0..n` (`n > 0`), by rejection so it is unbiased.
    pub fn below(&mut self, n: u64) -> u64 {
        assert!(n > 0, "Rng::below needs n > 0");
        let zone = u64::MAX - (u64::MAX % n);
        loop {
            let x = self.next_u64();
            if x < zone {
                return x % n;
            }
        }
    }

    /// A standard normal sample (mean 0, variance 1), by Box–Muller.
    pub fn normal(&mut self) -> f64 {
        if let Some(bits) = self.spare_normal_bits.take() {
            return f64::from_bits(bits);
        }
        // 1 - u is in (0, 1], so the log is finite.
        let u1 = 1.0 - self.uniform();
        let u2 = self.uniform();
        let r = (-2.0 * u1.ln()).sqrt();
        let theta = 2.0 * std::f64::consts::PI * u2;
        self.spare_normal_bits = Some((r * theta.sin()).to_bits());
        r * theta.cos()
    }
}

impl Tensor {
    /// Samples of `N(mean, std²)` (`torch.normal`), drawn in row-major order.
    ///
    /// # Errors
    /// [`crate::TensorError::DType`] unless `dtype` is f32 or f64.
    pub fn randn(
        shape: &[usize],
        mean: f64,
        std: f64,
        dtype: DType,
        rng: &mut Rng,
    ) -> Result<Tensor> {
        let n = crate::shape::numel(shape);
        with_float!("randn", dtype, |T| {
            let data: Vec<T> = (0..n)
                .map(|_| <T as crate::Element>::from_f64(mean + std * rng.normal()))
                .collect();
            Tensor::from_vec(data, shape)
        })
    }

    /// Samples uniform in `[low, high)` (`torch.empty(..).uniform_`).
    ///
    /// # Errors
    /// [`crate::TensorError::DType`] unless `dtype` is f32 or f64.
    pub fn rand_uniform(
        shape: &[usize],
        low: f64,
        high: f64,
        dtype: DType,
        rng: &mut Rng,
    ) -> Result<Tensor> {
        let n = crate::shape::numel(shape);
        with_float!("rand_uniform", dtype, |T| {
            let data: Vec<T> = (0..n)
                .map(|_| <T as crate::Element>::from_f64(low + (high - low) * rng.uniform()))
                .collect();
            Tensor::from_vec(data, shape)
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn same_seed_same_stream() {
        let mut a = Rng::new(7);
        let mut b = Rng::new(7);
        for _ in 0..100 {
            assert_eq!(a.next_u64(), b.next_u64());
        }
        assert_ne!(Rng::new(7).next_u64(), Rng::new(8).next_u64());
    }

    #[test]
    fn normal_moments() {
        let mut r = Rng::new(1);
        let n = 200_000;
        let xs: Vec<f64> = (0..n).map(|_| r.normal()).collect();
        let mean = xs.iter().sum::<f64>() / n as f64;
        let var = xs.iter().map(|x| (x - mean) * (x - mean)).sum::<f64>() / n as f64;
        // Standard errors: 1/sqrt(n) ≈ 0.0022 for the mean, ≈ 0.003 for the variance.
        assert!(mean.abs() < 0.01, "mean {mean}");
        assert!((var - 1.0).abs() < 0.015, "var {var}");
    }

    #[test]
    fn state_round_trips() {
        let mut a = Rng::new(3);
        a.normal();
        let (s, spare) = a.state();
        let mut b = Rng::from_state(s, spare);
        assert_eq!(a.normal(), b.normal());
        assert_eq!(a.next_u64(), b.next_u64());
    }
}
