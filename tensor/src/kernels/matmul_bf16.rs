//! Kiln's bf16 GEMM: bf16 operands, f32 accumulation, f32 output.
//!
//! `C[m×n] = alpha · bf16(A)[m×k] · bf16(B)[k×n] + beta · C`, where each
//! operand is either bf16 already or f32 rounded to bf16 (to nearest, ties
//! to even, as `tensor.to(torch.bfloat16)`) while it is packed. That one
//! rule serves every bf16 product: a bf16 model's weights times f32
//! activations, and `torch.autocast`-style mixed precision where f32 master
//! weights and activations are both rounded for the multiply.
//!
//! Three paths, chosen at run time ([`super::isa`]):
//!
//! - **AMX** (`tdpbf16ps` on tile registers, `microkernel_amx.rs`): the same
//!   loop nest with 32×32 C tiles, A panels stored row-major in pairs and
//!   every panel zero-padded to a multiple of 16 pairs (one tile row); each
//!   instruction does 8,192 multiply-adds.
//! - **AVX512-BF16** (`vdpbf16ps`, `microkernel_bf16.rs`): the
//!   blocking of the f32 GEMM ([`super::matmul_packed`]: a shared packed A
//!   block, per-task B blocks in L2, 12×32 register tiles), with panels of
//!   bf16 *pairs along k*, so each instruction does 64 multiply-adds.
//! - **Fallback** (any other CPU, or `KILN_SIMD` below `avx512bf16`): round
//!   both operands to bf16, widen them back to f32 (exact) and run the f32
//!   GEMM. Same operands, same f32 accumulation; only the order of the
//!   additions differs.
//!
//! # Accuracy
//!
//! Both paths compute `Σ_p a_p·b_p` over the bf16-rounded operands with
//! exact products and f32 additions, so against the exact sum (f64 of the
//! rounded operands) `|C − C_ref| ≤ γ · Σ_p |a_p·b_p|`, with
//! `γ = k·2⁻²⁴ / (1 − k·2⁻²⁴)` (the standard bound for recursive summation
//! in f32). The tests check it on every path the machine has. (The
//! AVX512-BF16 and AMX instructions flush bf16 subnormals to zero; bf16 values
//! under 1.2·10⁻³⁸ do not occur in weights or activations.)
//!
//! # Determinism
//!
//! As in the f32 GEMM, threads split C, never k: each `C[i, j]` is summed in
//! the same order at every thread count, so results are bit-identical.

use half::bf16;

use super::isa::Isa;
use super::matmul_packed::{plan, TileOut};
use super::pack_bf16::{pack_pairs, Panel};
pub use super::prepack_bf16::PackedB;
use super::scratch::{with_scratch, PACK_A, PACK_B};
#[cfg(target_arch = "x86_64")]
use super::stream_c::StreamC;
use crate::parallel::SharedPtr;

/// One operand's elements: f32 (rounded to bf16 when packed) or bf16 bits.
#[derive(Clone, Copy, Debug)]
pub enum Elems {
    /// f32 values, rounded to bf16 as they are packed.
    F32(*const f32),
    /// bf16 values, as their 16-bit patterns.
    Bf16(*const u16),
}

/// An operand: element `(i, j)` is at `data + i·rs + j·cs` (in elements).
#[derive(Clone, Copy, Debug)]
pub struct Operand {
    /// Where the elements are, and their type.
    pub data: Elems,
    /// Row stride.
    pub rs: isize,
    /// Column stride.
    pub cs: isize,
}

/// `x` rounded to the nearest bf16 (ties to even; NaN stays NaN), as bits.
#[inline(always)]
pub fn to_bf16_bits(x: f32) -> u16 {
    bf16::from_f32(x).to_bits()
}

/// The f32 a bf16 bit pattern stands for (exact).
#[inline(always)]
pub fn from_bf16_bits(b: u16) -> f32 {
    f32::from_bits((b as u32) << 16)
}

impl Operand {
    /// Element `(i, j)` as bf16 bits.
    ///
    /// # Safety
    /// The element must be in bounds.
    #[inline(always)]
    unsafe fn at(&self, i: usize, j: usize) -> u16 {
        let off = i as isize * self.rs + j as isize * self.cs;
        // SAFETY: forwarded.
        unsafe {
            match self.data {
                Elems::F32(p) => to_bf16_bits(*p.offset(off)),
                Elems::Bf16(p) => *p.offset(off),
            }
        }
    }
}

/// One bf16 GEMM call, `C[m×n] = alpha · bf16(A) · bf16(B) + beta · C`:
/// [`super::Gemm`] with A and B as [`Operand`]s (each f32 or bf16) and C
/// f32. Building one is safe; [`gemm_bf16`] states what it must satisfy.
#[derive(Clone, Copy)]
pub struct GemmBf16 {
    /// Rows of A and C.
    pub m: usize,
    /// Columns of A, rows of B.
    pub k: usize,
    /// Columns of B and C.
    pub n: usize,
    /// The scale of the product.
    pub alpha: f32,
    /// A, `m×k`.
    pub a: Operand,
    /// B, `k×n`.
    pub b: Operand,
    /// The scale of C's old value; 0 makes C write-only.
    pub beta: f32,
    /// Element `(0, 0)` of C.
    pub c: *mut f32,
    /// C's row stride.
    pub rsc: isize,
    /// C's column stride.
    pub csc: isize,
}
// SAFETY: the pointers are only dereferenced under the contract of
// `gemm_bf16`; threads write disjoint tiles of C.
unsafe impl Send for GemmBf16 {}
// SAFETY: as above.
unsafe impl Sync for GemmBf16 {}

/// Depth of a K block in elements (even): a 12-row A panel of 384 pairs is
/// 18 KiB, in L1; a 1024-wide B block of 384 pairs is 1.5 MiB, in L2.
const KC: usize = 768;
/// Depth of an AMX K block. Each K block ends every C tile with a store
/// (and starts the next with a load) that the tile unit cannot overlap
/// with its products: about a third of the time at 384. With blocks this
/// deep the GPT-2 shapes take one or two (their A panels no longer fit L1,
/// which costs less), and `mlp_down` on two threads ran 30–40 % faster.
const KC_AMX: usize = 1536;
/// Bytes of the B block a task streams its tiles against on AMX: columns
/// are cut so it stays in L2 (2 MiB per core on these Xeons) beside the A
/// panels and C; 1.5 MiB blocks measured a third slower on the LM head.
const B_BLOCK_AMX: usize = 1 << 20;

/// The most A one AMX K block may hold for its B tiles to be loaded past
/// L1. A 32-row panel (or 32 rows of an A read in place) of 48 KiB stays
/// in the 48 KiB L1 of these Xeons while B streams by (qkv, mlp_up: +12 %);
/// at 64 KiB most of it does (1024³: +4 %); at 96 KiB (mlp_down) the
/// prefetched loads are 4 % faster.
const A_PANEL_L1: usize = 64 << 10;
/// The largest B block a task streams past L1: loaded with the
/// non-temporal hint, bigger blocks (the LM head's 1 MiB) no longer stay in
/// L2 from one row panel to the next, and ran 12 % slower.
const B_BLOCK_STREAMED: usize = 640 << 10;

/// The smallest write-only C an AMX run writes past the caches
/// (`StreamC`): the LM head's 103 MB of logits ran 10 % faster on two
/// threads (one: within noise); a C this size would not stay in cache for
/// whatever reads it next anyway, and smaller ones should.
const STREAM_C_BYTES: usize = 32 << 20;

/// Rows of the shared A block.
const MC: usize = 1536;
/// Widest column block per task.
const NC: usize = 1024;

/// Below this many multiply-adds a call stays on the calling thread.
const PARALLEL_MIN_FMAS: usize = 64 * 64 * 64;

/// `C[m×n] = alpha · bf16(A) · bf16(B) + beta · C` (see the module docs).
/// When `beta == 0`, C is write-only.
///
/// # Safety
///
/// As [`super::matmul_packed::gemm_f32`]: every `A[i, p]` (`i < m`,
/// `p < k`), `B[p, j]` and `C[i, j]` in bounds through the strides; C
/// disjoint from A and B, with distinct elements for distinct `(i, j)`,
/// and not accessed by anything else during the call.
pub unsafe fn gemm_bf16(g: GemmBf16) {
    // SAFETY: forwarded from this function's contract.
    unsafe { gemm_bf16_on(Isa::detect(), threads_for(&g), g, None) }
}

/// [`gemm_bf16`], reading B's panels from `pre` (packed from this B) when
/// they fit the product's blocking, and packing them as usual otherwise:
/// the same bits either way.
///
/// # Safety
///
/// As [`gemm_bf16`]; `pre` was packed from `g.b`'s `k×n` elements, which
/// have not changed since.
pub unsafe fn gemm_bf16_prepacked(g: GemmBf16, pre: &PackedB) {
    // SAFETY: forwarded from this function's contract.
    unsafe { gemm_bf16_on(Isa::detect(), threads_for(&g), g, Some(pre)) }
}

/// One thread for small products, all of them otherwise.
fn threads_for(g: &GemmBf16) -> usize {
    if g.m.saturating_mul(g.n).saturating_mul(g.k) < PARALLEL_MIN_FMAS {
        1
    } else {
        crate::parallel::num_threads()
    }
}

/// [`gemm_bf16`] on a chosen instruction set and thread count (tests force
/// each path), reading B's panels from `pre` where they fit the product
/// (see [`PackedB`]) instead of packing them. With `threads > 1` the packed
/// paths cut the work into tasks for that many threads and run them on the
/// caller and Kiln's pool (`parallel::for_each_range`).
///
/// # Safety
///
/// As [`gemm_bf16`]; `isa` came from [`Isa::available`] or [`Isa::detect`];
/// `pre`, if any, was packed from `g.b` (same elements, `k×n`).
pub(super) unsafe fn gemm_bf16_on(isa: Isa, threads: usize, g: GemmBf16, pre: Option<&PackedB>) {
    // SAFETY: forwarded.
    unsafe { gemm_bf16_streaming(isa, threads, g, pre, STREAM_C_BYTES) }
}

/// [`gemm_bf16_on`], writing C past the caches where the AMX kernel can
/// and C has at least `stream_c_min` bytes (the tests lower it).
///
/// # Safety
///
/// As [`gemm_bf16_on`].
pub(super) unsafe fn gemm_bf16_streaming(
    isa: Isa,
    threads: usize,
    g: GemmBf16,
    pre: Option<&PackedB>,
    stream_c_min: usize,
) {
    if g.m == 0 || g.n == 0 {
        return;
    }
    if let (Some(w), Elems::F32(x), true) = (gemv_weights(&g), g.a.data, g.k > 0) {
        // SAFETY: row 0 of A is x, row 0 of C is y; rest forwarded.
        unsafe { super::gemv_bf16::gemv_bf16(isa, &g, x, w) };
        return;
    }
    #[cfg(target_arch = "x86_64")]
    if g.k > 0 && g.alpha != 0.0 {
        if isa.has_amx() {
            // SAFETY: AMX is permitted; rest forwarded.
            unsafe { gemm_packed::<Amx>(threads, &g, pre, stream_c_min) };
            return;
        }
        if isa.has_bf16_dot() {
            // SAFETY: the CPU has AVX512-BF16; rest forwarded.
            unsafe { gemm_packed::<Avx512Bf16>(threads, &g, pre, stream_c_min) };
            return;
        }
    }
    let _ = (isa, pre, stream_c_min);
    // SAFETY: forwarded.
    unsafe { gemm_widened(&g) }
}

/// The weights of a decode step: one f32 row of activations times a bf16
/// matrix stored row- or column-major, which `gemv_bf16.rs` streams
/// at memory speed instead of packing.
fn gemv_weights(g: &GemmBf16) -> Option<super::gemv_bf16::Weights> {
    match (g.m, g.a.data, g.b.data) {
        (1, Elems::F32(_), Elems::Bf16(w)) if g.b.rs == 1 || g.b.cs == 1 => {
            Some(super::gemv_bf16::Weights {
                w,
                rs: g.b.rs,
                cs: g.b.cs,
            })
        }
        _ => None,
    }
}

/// The fallback: bf16-rounded operands widened to f32, then the f32 GEMM.
///
/// # Safety
///
/// As [`gemm_bf16`].
unsafe fn gemm_widened(g: &GemmBf16) {
    let widen = |op: &Operand, rows: usize, cols: usize| -> Vec<f32> {
        let mut v = Vec::with_capacity(rows * cols);
        for i in 0..rows {
            // SAFETY: i < rows, j < cols: in bounds by the contract.
            v.extend((0..cols).map(|j| from_bf16_bits(unsafe { op.at(i, j) })));
        }
        v
    };
    let (a, b) = if g.k == 0 || g.alpha == 0.0 {
        (Vec::new(), Vec::new())
    } else {
        (widen(&g.a, g.m, g.k), widen(&g.b, g.k, g.n))
    };
    // SAFETY: a and b are m×k and k×n row-major (or unread when k == 0 or
    // alpha == 0); C is forwarded.
    unsafe {
        super::matmul_packed::gemm_f32(super::Gemm {
            m: g.m,
            k: g.k,
            n: g.n,
            alpha: g.alpha,
            a: a.as_ptr(),
            rsa: g.k as isize,
            csa: 1,
            b: b.as_ptr(),
            rsb: g.n as isize,
            csb: 1,
            beta: g.beta,
            c: g.c,
            rsc: g.rsc,
            csc: g.csc,
        })
    }
}

/// A bf16 micro-kernel and the panel layout it reads.
#[cfg(target_arch = "x86_64")]
pub(super) trait Kernel {
    /// Which kernel a [`PackedB`] was laid out for.
    const NAME: &'static str;
    /// Rows of the C tile.
    const MR: usize;
    /// Columns of the C tile.
    const NR: usize;
    /// Panels hold a multiple of this many k-pairs (zero-padded).
    const KSTEP: usize;
    /// A panels row-major (`a[i·kp + q]`, AMX) instead of pair-major
    /// (`a[q·MR + i]`, AVX512-BF16).
    const A_ROW_MAJOR: bool;
    /// The deepest K block.
    const KC: usize;
    /// The widest column block per task, for K blocks `kc` deep.
    fn nc(kc: usize) -> usize;
    /// Runs one task's tiles: sets up whatever state the kernel needs.
    unsafe fn scope(f: impl FnOnce());
    /// Whether tiles `kp` pairs deep against a B block of `b_bytes` load
    /// B past L1 (`tile`'s `stream_b`).
    fn stream_b(kp: usize, b_bytes: usize) -> bool;
    /// One tile over `kp` pairs (a multiple of `KSTEP`). Where A is
    /// row-major, `lda` is the distance between its rows in pairs: a
    /// packed panel's `kp`, or A's own row stride where it is read in place.
    unsafe fn tile(
        kp: usize,
        a: *const u32,
        lda: usize,
        b: *const u32,
        out: &TileOut,
        stream_b: bool,
    );
    /// The full, direct tiles of `run` (alpha 1, beta 0 or 1, C's columns
    /// contiguous) side by side; the same bits as `tile` on each. With
    /// `stream_c` (and beta 0) a kernel may write C past the caches (AMX:
    /// `StreamC`).
    unsafe fn run(run: &TileRun, stream_c: bool) {
        let _ = stream_c;
        for t in 0..run.count {
            let out = TileOut {
                c: run.c.wrapping_add(t * Self::NR),
                rsc: run.rsc,
                csc: 1,
                rows: Self::MR,
                cols: Self::NR,
                alpha: 1.0,
                beta: if run.beta_one { 1.0 } else { 0.0 },
            };
            let b = run.b.wrapping_add(t * run.b_stride);
            // SAFETY: forwarded.
            unsafe { Self::tile(run.kp, run.a, run.lda, b, &out, run.stream_b) }
        }
    }
}

/// `count` full tiles side by side along one row panel of C, for
/// [`Kernel::run`]: tile `t` is the A panel at `a` (`lda` pairs between
/// rows, `kp` pairs deep) times the B panel at `b + t·b_stride`, written
/// to C from `c + t·NR` (rows `rsc` apart), added to C's old values if
/// `beta_one` (beta 1), over them otherwise (beta 0); alpha is 1.
/// `stream_b` as for [`Kernel::tile`].
#[cfg(target_arch = "x86_64")]
#[derive(Clone, Copy)]
pub(super) struct TileRun {
    pub kp: usize,
    pub a: *const u32,
    pub lda: usize,
    pub b: *const u32,
    pub b_stride: usize,
    pub count: usize,
    pub c: *mut f32,
    pub rsc: isize,
    pub beta_one: bool,
    pub stream_b: bool,
}

/// `vdpbf16ps`, 12×32 register tiles (`microkernel_bf16.rs`).
#[cfg(target_arch = "x86_64")]
pub(super) struct Avx512Bf16;

#[cfg(target_arch = "x86_64")]
impl Kernel for Avx512Bf16 {
    const NAME: &'static str = "avx512bf16";
    const MR: usize = super::microkernel_bf16::MR;
    const NR: usize = super::microkernel_bf16::NR;
    const KSTEP: usize = 1;
    const A_ROW_MAJOR: bool = false;
    const KC: usize = KC;
    fn nc(_: usize) -> usize {
        NC
    }
    unsafe fn scope(f: impl FnOnce()) {
        f()
    }
    fn stream_b(_: usize, _: usize) -> bool {
        false
    }
    unsafe fn tile(kp: usize, a: *const u32, _: usize, b: *const u32, out: &TileOut, _: bool) {
        // SAFETY: forwarded (the CPU has AVX512-BF16: this kernel is only
        // chosen then).
        unsafe { super::microkernel_bf16::kernel(kp, a, b, out) }
    }
}

/// AMX tiles, 32×32 (`microkernel_amx.rs`).
#[cfg(target_arch = "x86_64")]
pub(super) struct Amx;

#[cfg(target_arch = "x86_64")]
impl Kernel for Amx {
    const NAME: &'static str = "amx";
    const MR: usize = super::microkernel_amx::MR;
    const NR: usize = super::microkernel_amx::NR;
    const KSTEP: usize = super::microkernel_amx::KSTEP;
    const A_ROW_MAJOR: bool = true;
    const KC: usize = KC_AMX;
    fn nc(kc: usize) -> usize {
        // bf16 B: 2 bytes per element.
        (B_BLOCK_AMX / (2 * kc) / Self::NR * Self::NR).clamp(Self::NR, NC)
    }
    unsafe fn scope(f: impl FnOnce()) {
        // SAFETY: this kernel is only chosen when AMX is permitted.
        unsafe { super::microkernel_amx::with_tiles(f) }
    }
    fn stream_b(kp: usize, b_bytes: usize) -> bool {
        Self::MR * kp * 4 <= A_PANEL_L1 && b_bytes <= B_BLOCK_STREAMED
    }
    unsafe fn tile(
        kp: usize,
        a: *const u32,
        lda: usize,
        b: *const u32,
        out: &TileOut,
        stream_b: bool,
    ) {
        // SAFETY: forwarded; called inside `scope`.
        unsafe { super::microkernel_amx::kernel(kp, a, lda, b, out, stream_b) }
    }
    unsafe fn run(run: &TileRun, stream_c: bool) {
        let mut sc = stream_c.then(StreamC::new);
        // SAFETY: forwarded; called inside `scope`; the run's tiles are
        // the caller's until `finish` has ordered its stores.
        unsafe {
            super::microkernel_amx::kernel_run(run, sc.as_mut());
            if let Some(sc) = &mut sc {
                sc.finish();
            }
        }
    }
}

/// The depth of the K blocks of a product `k` deep on kernel `K`:
/// balanced blocks of an even depth (a whole number of kernel steps where
/// k allows), no deeper than `K::KC`.
#[cfg(target_arch = "x86_64")]
fn k_block<K: Kernel>(k: usize) -> usize {
    k.div_ceil(k.div_ceil(K::KC)).next_multiple_of(2 * K::KSTEP)
}

/// The packed, blocked product (the f32 GEMM's loop nest; see
/// [`super::matmul_packed`]) on micro-kernel `K`.
///
/// # Safety
///
/// The CPU runs `K`; `g` satisfies [`gemm_bf16`]'s contract with
/// `m, n, k > 0`.
#[cfg(target_arch = "x86_64")]
unsafe fn gemm_packed<K: Kernel>(
    threads: usize,
    g: &GemmBf16,
    pre: Option<&PackedB>,
    stream_c_min: usize,
) {
    let (mr, nr) = (K::MR, K::NR);
    let kc = k_block::<K>(g.k);
    let pre = pre.filter(|p| p.fits::<K>(g.k, g.n));
    let kpp = kc / 2; // pairs per panel row, padded
    let mc = g.m.div_ceil(g.m.div_ceil(MC)).div_ceil(mr) * mr;
    let a_panel = |kp| {
        if K::A_ROW_MAJOR {
            Panel::lane_major(mr, kp)
        } else {
            Panel::pair_major(mr, kp)
        }
    };
    // AMX reads its A tiles straight from a bf16 A whose rows run along k
    // when every tile row is a whole, aligned cache line and every K block
    // a whole number of kernel steps (so no step reads past a row; `kc`
    // always is one, so k decides for the last block): packing would only
    // copy it. A row panel short of MR rows is still packed, as its
    // missing rows must read as zeros.
    let in_place = K::A_ROW_MAJOR
        && matches!(g.a.data, Elems::Bf16(p) if (p as usize).is_multiple_of(64))
        && g.a.cs == 1
        && g.a.rs > 0
        && (g.a.rs as usize * 2).is_multiple_of(64)
        && g.k.is_multiple_of(2 * K::KSTEP);
    with_scratch(&PACK_A, mc * kpp, |apack| {
        let apack = SharedPtr(apack.cast::<u32>());
        for ic in (0..g.m).step_by(mc) {
            let mcur = mc.min(g.m - ic);
            let mpanels = mcur.div_ceil(mr);
            let (row_parts, width) = plan(g.n, nr, K::nc(kc), mpanels, threads);
            let col_blocks = g.n.div_ceil(width);
            for pc in (0..g.k).step_by(kc) {
                let kcur = kc.min(g.k - pc);
                let kp = kcur.div_ceil(2).next_multiple_of(K::KSTEP);
                let beta = if pc == 0 { g.beta } else { 1.0 };
                // A write-only C too big for the caches, finished in one K
                // block, is written past them (`StreamC`).
                let stream_c = kcur == g.k
                    && beta == 0.0
                    && g.m.saturating_mul(g.n).saturating_mul(4) >= stream_c_min;
                let pack_a = |ip: usize| {
                    let row = ic + ip * mr;
                    // SAFETY: rows row..row+valid < m, columns pc..pc+kcur
                    // < k; panel ip of the buffer (mr·kp ≤ mr·kpp pairs) is
                    // written by this call only.
                    unsafe {
                        pack_pairs(
                            &g.a,
                            row as isize * g.a.rs + pc as isize * g.a.cs,
                            g.a.rs,
                            g.a.cs,
                            a_panel(kp),
                            kcur,
                            mr.min(g.m - row),
                            apack.get().add(ip * mr * kp),
                        )
                    }
                };
                // The row panels that are packed: all, or the short last one.
                let packed = if in_place { mcur / mr } else { 0 }..mpanels;
                if threads > 1 && packed.len() * mr * kcur >= 1 << 15 {
                    crate::parallel::for_each_range(packed.len(), 1, |r| {
                        r.for_each(|i| pack_a(packed.start + i))
                    });
                } else {
                    packed.clone().for_each(pack_a);
                }
                // Row panel ip's A, and its row stride in pairs.
                let a_at = |ip: usize| match g.a.data {
                    Elems::Bf16(p) if ip < packed.start => {
                        // Inside A: the panel's rows are all below m, and
                        // pc < k (even, so a whole pair in).
                        let at = (ic + ip * mr) as isize * g.a.rs + pc as isize;
                        (p.wrapping_offset(at).cast::<u32>(), g.a.rs as usize / 2)
                    }
                    _ => (apack.get().wrapping_add(ip * mr * kp).cast_const(), kp),
                };
                let task = |t: usize| {
                    let (part, cb) = (t / col_blocks, t % col_blocks);
                    let j0 = cb * width;
                    let ncur = width.min(g.n - j0);
                    let npanels = ncur.div_ceil(nr);
                    let (p0, p1) = (part * mpanels / row_parts, (part + 1) * mpanels / row_parts);
                    let stream_b = K::stream_b(kp, npanels * nr * kp * 4);
                    // The tiles of this task against the B panels from
                    // `bpack` (column j0 on), `stride` pairs apart.
                    let run = |bpack: *const u32, stride: usize| {
                        let tiles = || {
                            for ip in p0..p1 {
                                let row = ip * mr;
                                // Full tiles stored straight into C run
                                // together, their boundaries overlapped.
                                let runs = mr.min(mcur - row) == mr
                                    && g.csc == 1
                                    && g.alpha == 1.0
                                    && (beta == 0.0 || beta == 1.0);
                                let full = if runs { ncur / nr } else { 0 };
                                if full > 0 {
                                    let (a, lda) = a_at(ip);
                                    // SAFETY: as for `K::tile` below, for
                                    // the row panel's first `full` tiles.
                                    unsafe {
                                        K::run(
                                            &TileRun {
                                                kp,
                                                a,
                                                lda,
                                                b: bpack,
                                                b_stride: stride,
                                                count: full,
                                                c: g.c.wrapping_offset(
                                                    (ic + row) as isize * g.rsc + j0 as isize,
                                                ),
                                                rsc: g.rsc,
                                                beta_one: beta == 1.0,
                                                stream_b,
                                            },
                                            stream_c,
                                        )
                                    };
                                }
                                for jp in full..npanels {
                                    let col = jp * nr;
                                    let out = TileOut {
                                        c: g.c.wrapping_offset(
                                            (ic + row) as isize * g.rsc
                                                + (j0 + col) as isize * g.csc,
                                        ),
                                        rsc: g.rsc,
                                        csc: g.csc,
                                        rows: mr.min(mcur - row),
                                        cols: nr.min(ncur - col),
                                        alpha: g.alpha,
                                        beta,
                                    };
                                    let (a, lda) = a_at(ip);
                                    // SAFETY: B panels packed with kp pairs
                                    // (here or by `PackedB`); A packed so, or
                                    // read in place (`in_place`: whole
                                    // aligned steps of whole rows); the tile
                                    // is inside C and owned by this task;
                                    // inside `K::scope`.
                                    unsafe {
                                        K::tile(kp, a, lda, bpack.add(jp * stride), &out, stream_b)
                                    };
                                }
                            }
                        };
                        // SAFETY: the CPU runs K (contract).
                        unsafe { K::scope(tiles) }
                    };
                    if let Some(p) = pre {
                        // j0 is a whole number of panels (`plan` widths are
                        // multiples of nr), pc of kernel steps (kc is).
                        let (bpack, stride) = p.panels(pc, j0);
                        return run(bpack, stride);
                    }
                    with_scratch(&PACK_B, npanels * nr * kp, |bpack| {
                        let bpack = bpack.cast::<u32>();
                        // SAFETY: columns j0..j0+ncur < n, rows pc..pc+kcur
                        // < k; the npanels panels fill bpack.
                        unsafe {
                            pack_pairs(
                                &g.b,
                                pc as isize * g.b.rs + j0 as isize * g.b.cs,
                                g.b.cs,
                                g.b.rs,
                                Panel::pair_major_panels(nr, kp, npanels),
                                kcur,
                                ncur,
                                bpack,
                            )
                        };
                        run(bpack, nr * kp)
                    })
                };
                let tasks = row_parts * col_blocks;
                if threads > 1 && tasks > 1 {
                    crate::parallel::for_each_range(tasks, 1, |r| r.for_each(task));
                } else {
                    (0..tasks).for_each(task);
                }
            }
        }
    });
}

#[cfg(test)]
#[path = "matmul_bf16_tests.rs"]
mod tests;
