//! A bf16 GEMM's B operand packed once and kept: the weights of a bf16
//! model, which every prompt multiplies again.
//!
//! [`super::matmul_bf16`] packs B's panels on every call: it pairs each two
//! rows of k (and rounds f32 to bf16) into the layout its micro-kernel
//! reads. For a weight matrix that is the same work each time; on a 512-token
//! bf16 prefill of GPT-2 124M it is about a seventh of the forward pass. A
//! [`PackedB`] holds every panel the whole `k` deep, so the panel of any K
//! block is a stretch of it holding exactly what a call would pack for
//! that block (the blocks start at whole kernel steps, and the zero
//! padding past `k` is the same). A product that reads them therefore gives
//! the same bits as one that packs its own, however deep its K blocks.
//! This is the weight prepacking of oneDNN and Intel's extension for
//! PyTorch (`ipex.optimize`), and it costs what theirs costs: a second copy
//! of the matrix, in bf16.
//!
//! The panels serve the kernel they were packed for (AMX or AVX512-BF16,
//! chosen at run time); a product on another instruction set (`KILN_SIMD`)
//! packs its own panels as before.

use super::isa::Isa;
use super::matmul_bf16::Operand;
use super::scratch::Line;

/// B's panels for one kernel, each the whole `k` deep.
pub struct PackedB {
    /// Rows of B.
    k: usize,
    /// Columns of B.
    n: usize,
    /// The kernel the panels are laid out for ([`super::matmul_bf16`]'s
    /// `Kernel::NAME`).
    kernel: &'static str,
    /// Columns per panel (the kernel's NR).
    nr: usize,
    /// Pairs per panel row: `⌈k/2⌉`, padded to the kernel's step.
    kp: usize,
    /// The panels, one after another.
    data: Vec<Line>,
}

impl std::fmt::Debug for PackedB {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PackedB")
            .field("k", &self.k)
            .field("n", &self.n)
            .field("kernel", &self.kernel)
            .field("bytes", &self.bytes())
            .finish()
    }
}

impl PackedB {
    /// Packs the `k×n` operand `b` for the bf16 kernel `isa` runs, or
    /// `None` when `isa` has none (the widening fallback packs nothing).
    ///
    /// # Safety
    ///
    /// Every `B[p, j]` (`p < k`, `j < n`) is in bounds through `b`'s
    /// strides, and nothing writes B during the call.
    pub unsafe fn new(isa: Isa, b: &Operand, k: usize, n: usize) -> Option<PackedB> {
        if k == 0 || n == 0 {
            return None;
        }
        #[cfg(target_arch = "x86_64")]
        {
            use super::matmul_bf16::{Amx, Avx512Bf16};
            if isa.has_amx() {
                // SAFETY: forwarded.
                return Some(unsafe { pack::<Amx>(b, k, n) });
            }
            if isa.has_bf16_dot() {
                // SAFETY: forwarded.
                return Some(unsafe { pack::<Avx512Bf16>(b, k, n) });
            }
        }
        let _ = (isa, b);
        None
    }

    /// Bytes the panels take.
    pub fn bytes(&self) -> usize {
        self.data.len() * std::mem::size_of::<Line>()
    }

    /// Whether these panels serve a `k×n` B on kernel `K`.
    #[cfg(target_arch = "x86_64")]
    pub(super) fn fits<K: super::matmul_bf16::Kernel>(&self, k: usize, n: usize) -> bool {
        self.kernel == K::NAME && self.k == k && self.n == n
    }

    /// Where the panel of columns `j0..` starts for the K block at row `pc`
    /// (`j0` a multiple of the panel width, `pc` of two kernel steps), and
    /// the distance from one panel to the next, both in u32 pairs.
    #[cfg(target_arch = "x86_64")]
    pub(super) fn panels(&self, pc: usize, j0: usize) -> (*const u32, usize) {
        debug_assert!(pc.is_multiple_of(2) && j0.is_multiple_of(self.nr));
        let start = j0 * self.kp + pc / 2 * self.nr;
        let p = self.data.as_ptr().cast::<u32>().wrapping_add(start);
        (p, self.nr * self.kp)
    }
}

/// Columns packed per parallel unit: a whole number of every kernel's
/// panels.
#[cfg(target_arch = "x86_64")]
const COLUMNS_PER_UNIT: usize = 256;

/// Packs B for kernel `K`: every panel the whole `k` deep, in parallel over
/// column ranges.
///
/// # Safety
///
/// As [`PackedB::new`]; the CPU runs `K`'s packing (AVX-512F, which every
/// bf16 kernel's CPU has).
#[cfg(target_arch = "x86_64")]
unsafe fn pack<K: super::matmul_bf16::Kernel>(b: &Operand, k: usize, n: usize) -> PackedB {
    use super::pack_bf16::{pack_pairs, Panel};
    use crate::parallel::SharedPtr;

    /// The operand, shared read-only by the packing threads.
    struct Src(Operand);
    // SAFETY: B is only read, and nothing writes it during the call
    // (contract).
    unsafe impl Sync for Src {}
    impl Src {
        // A method, so the closure captures the whole `Sync` wrapper.
        fn get(&self) -> &Operand {
            &self.0
        }
    }

    let nr = K::NR;
    let kp = k.div_ceil(2).next_multiple_of(K::KSTEP);
    let len = n.div_ceil(nr) * nr * kp;
    let mut data = vec![Line::default(); len.div_ceil(16)];
    let dst = SharedPtr(data.as_mut_ptr().cast::<u32>());
    let src = Src(*b);
    assert!(COLUMNS_PER_UNIT.is_multiple_of(nr));
    crate::parallel::for_each_range(n.div_ceil(COLUMNS_PER_UNIT), 1, |r| {
        for u in r {
            let j0 = u * COLUMNS_PER_UNIT;
            let cols = COLUMNS_PER_UNIT.min(n - j0);
            let b = src.get();
            // SAFETY: columns j0..j0+cols < n and rows 0..k are in bounds
            // (contract); the panels of these columns (⌈cols/nr⌉ of nr·kp
            // pairs from j0·kp) lie inside data and are written by this
            // unit only.
            unsafe {
                pack_pairs(
                    b,
                    j0 as isize * b.cs,
                    b.cs,
                    b.rs,
                    Panel::pair_major_panels(nr, kp, cols.div_ceil(nr)),
                    k,
                    cols,
                    dst.get().add(j0 * kp),
                )
            };
        }
    });
    PackedB {
        k,
        n,
        kernel: K::NAME,
        nr,
        kp,
        data,
    }
}
