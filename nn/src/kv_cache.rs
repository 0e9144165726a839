//! The key/value cache of incremental decoding: what each attention layer
//! has already computed for the positions behind the one being generated.

use kiln_tensor::{DType, Tensor};

use crate::{NnError, Result};

/// Keys and values of the positions already processed, for one layer.
///
/// Generation appends one position per step, so each step attends over the
/// cache instead of recomputing it. The cache keeps `[B, NH, capacity, HS]`
/// buffers and writes new positions in place, growing by doubling, so a
/// step copies only its own keys and values instead of the whole cache (as
/// transformers' `DynamicCache` does with `torch.cat`). [`KvCache::keys`]
/// and [`KvCache::values`] are views of the filled part.
#[derive(Debug, Clone, Default)]
pub struct KvCache {
    k: Option<Tensor>,
    v: Option<Tensor>,
    len: usize,
}

/// The smallest buffer a cache allocates, in positions.
const MIN_CAPACITY: usize = 64;

impl KvCache {
    /// Number of cached positions `P`.
    pub fn len(&self) -> usize {
        self.len
    }

    /// Whether nothing is cached yet.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Positions the buffers hold before they must grow.
    pub fn capacity(&self) -> usize {
        self.k.as_ref().map_or(0, |k| k.shape()[2])
    }

    /// Cached keys `[B, NH, P, HS]` (a view), `None` before the first append.
    pub fn keys(&self) -> Option<Tensor> {
        self.k.as_ref().map(|k| filled(k, self.len))
    }

    /// Cached values `[B, NH, P, HS]` (a view), `None` before the first append.
    pub fn values(&self) -> Option<Tensor> {
        self.v.as_ref().map(|v| filled(v, self.len))
    }

    /// Appends keys and values `[B, NH, T, HS]` and returns views of all
    /// `P + T` cached positions `(keys, values)`.
    ///
    /// # Errors
    /// [`NnError::Config`] if the shapes or dtypes differ from each other or
    /// from what is cached, or the dtype is not f32/f64.
    pub fn append(&mut self, k: &Tensor, v: &Tensor) -> Result<(Tensor, Tensor)> {
        let bad = |msg: String| NnError::Config {
            module: "KvCache".into(),
            msg,
        };
        if k.rank() != 4 || k.shape() != v.shape() || k.dtype() != v.dtype() {
            return Err(bad(format!(
                "keys {:?} {} and values {:?} {} must be the same [B, NH, T, HS]",
                k.shape(),
                k.dtype(),
                v.shape(),
                v.dtype()
            )));
        }
        let (sh, t) = (k.shape(), k.shape()[2]);
        if let Some(buf) = &self.k {
            let b = buf.shape();
            if (b[0], b[1], b[3]) != (sh[0], sh[1], sh[3]) || buf.dtype() != k.dtype() {
                return Err(bad(format!(
                    "cannot append keys {:?} {} to a cache of [{}, {}, _, {}] {}",
                    sh,
                    k.dtype(),
                    b[0],
                    b[1],
                    b[3],
                    buf.dtype()
                )));
            }
        }
        let need = self.len + t;
        if need > self.capacity() {
            let cap = need.max(2 * self.capacity()).max(MIN_CAPACITY);
            let grow = |old: Option<&Tensor>| -> Result<Tensor> {
                let mut buf = Tensor::zeros(&[sh[0], sh[1], cap, sh[3]], k.dtype());
                if let Some(old) = old {
                    write_positions(&mut buf, &filled(old, self.len), 0)?;
                }
                Ok(buf)
            };
            let (nk, nv) = (grow(self.k.as_ref())?, grow(self.v.as_ref())?);
            self.k = Some(nk);
            self.v = Some(nv);
        }
        let at = self.len;
        let (kb, vb) = (
            self.k.as_mut().expect("allocated above"),
            self.v.as_mut().expect("allocated above"),
        );
        write_positions(kb, k, at)?;
        write_positions(vb, v, at)?;
        self.len = need;
        Ok((filled(kb, need), filled(vb, need)))
    }
}

/// The first `len` positions of a `[B, NH, capacity, HS]` buffer.
fn filled(buf: &Tensor, len: usize) -> Tensor {
    buf.narrow(2, 0, len)
        .expect("len never exceeds the buffer's capacity")
}

/// Copies `src: [B, NH, T, HS]` into positions `at..at + T` of `buf`.
/// Writes in place when the cache holds the only reference to `buf`
/// (a view still alive elsewhere makes `data_mut` copy first).
fn write_positions(buf: &mut Tensor, src: &Tensor, at: usize) -> Result<()> {
    fn typed<T: kiln_tensor::Element>(buf: &mut Tensor, src: &Tensor, at: usize) -> Result<()> {
        let (bsz, nh, cap, hs) = {
            let s = buf.shape();
            (s[0], s[1], s[2], s[3])
        };
        let t = src.shape()[2];
        let src = src.contiguous();
        let src = src.as_slice::<T>()?;
        let dst = buf.data_mut::<T>()?;
        for bh in 0..bsz * nh {
            let d = (bh * cap + at) * hs;
            dst[d..d + t * hs].copy_from_slice(&src[bh * t * hs..(bh + 1) * t * hs]);
        }
        Ok(())
    }
    match buf.dtype() {
        DType::F32 => typed::<f32>(buf, src, at),
        DType::F64 => typed::<f64>(buf, src, at),
        other => Err(NnError::Config {
            module: "KvCache".into(),
            msg: format!("a cache holds f32 or f64 keys, not {other}"),
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn seq(shape: &[usize], start: f32) -> Tensor {
        let n: usize = shape.iter().product();
        Tensor::from_vec((0..n).map(|i| start + i as f32).collect(), shape).unwrap()
    }

    /// Appending in pieces gives what one `cat` along the positions gives,
    /// across a growth of the buffers.
    #[test]
    fn appends_equal_concatenation() {
        let mut cache = KvCache::default();
        let parts: Vec<Tensor> = [5, 1, 60, 1]
            .iter()
            .enumerate()
            .map(|(i, &t)| seq(&[2, 3, t, 4], 1000.0 * i as f32))
            .collect();
        for (i, p) in parts.iter().enumerate() {
            let (k, v) = cache.append(p, &p.neg().unwrap()).unwrap();
            let refs: Vec<&Tensor> = parts[..=i].iter().collect();
            let want = Tensor::cat(&refs, 2).unwrap();
            assert_eq!(k.to_vec::<f32>().unwrap(), want.to_vec::<f32>().unwrap());
            assert_eq!(
                v.to_vec::<f32>().unwrap(),
                want.neg().unwrap().to_vec::<f32>().unwrap()
            );
        }
        assert_eq!(cache.len(), 67);
        assert_eq!(cache.capacity(), 128);
        assert_eq!(cache.keys().unwrap().shape(), &[2, 3, 67, 4]);
    }

    /// A step with room left writes into the existing buffer.
    #[test]
    fn appends_in_place_while_there_is_room() {
        let mut cache = KvCache::default();
        let x = seq(&[1, 2, 3, 4], 0.0);
        cache.append(&x, &x).unwrap();
        let ptr = |c: &KvCache| c.k.as_ref().unwrap().as_slice::<f32>().unwrap().as_ptr() as usize;
        let before = ptr(&cache);
        cache.append(&x, &x).unwrap();
        assert_eq!(ptr(&cache), before);
    }

    #[test]
    fn mismatched_shapes_are_errors() {
        let mut cache = KvCache::default();
        cache
            .append(&seq(&[1, 2, 3, 4], 0.0), &seq(&[1, 2, 3, 4], 0.0))
            .unwrap();
        let err = cache
            .append(&seq(&[1, 2, 1, 5], 0.0), &seq(&[1, 2, 1, 5], 0.0))
            .unwrap_err()
            .to_string();
        assert!(err.contains("[1, 2, 1, 5]"), "{err}");
        assert!(cache
            .append(&seq(&[1, 2, 1, 4], 0.0), &seq(&[1, 2, 2, 4], 0.0))
            .is_err());
    }
}
