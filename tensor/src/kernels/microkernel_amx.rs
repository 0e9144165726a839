//! AMX GEMM micro-kernel: one 32×32 f32 tile of C from bf16 panels, on the
//! CPU's tile matrix unit (`tdpbf16ps`).
//!
//! AMX adds eight *tile* registers `tmm0..tmm7` (up to 16 rows of 64 bytes
//! each) and one instruction that matters here: `tdpbf16ps c, a, b` reads a
//! as 16 rows of 16 bf16 *pairs* and b as 16 rows (one per pair) of 16 pairs
//! of columns, and adds to each f32 `c[i][j]` the 32 products
//! `Σ_q a[i].pair(q) · b[q].pair(j)`, in order of q, low half first: 16·16·32
//! = 8,192 multiply-adds in one instruction, sixteen times a `vdpbf16ps`.
//!
//! So the operand layouts are the AVX512-BF16 kernel's pairs along k, except
//! that the A panel is stored *row-major* (`a[i·kp + q] = (A[i, 2q],
//! A[i, 2q+1])`) because a tile row is 16 consecutive pairs of one row of A.
//! The B panel is unchanged (`b[q·32 + j]` for 32 columns): a tile load with
//! a row stride of 128 bytes picks columns 0..16 at `b`, 16..32 at `b + 64`.
//!
//! The 32×32 C tile lives in four accumulator tiles (2 row halves × 2 column
//! halves); each 16-pair step loads two A tiles and two B tiles and issues
//! four `tdpbf16ps`, so every loaded tile is used twice. A row panel's full
//! tiles run as one call ([`kernel_run`]), which overlaps each tile's
//! stores with the next tile's first products.
//!
//! Rust has no stable AMX intrinsics; the instructions are written with
//! `asm!`, which is stable. Linux hands out the tile registers' 8 KiB of
//! state only to a process that asks for it (`arch_prctl`), which
//! [`permitted`] does once.

use std::arch::asm;
use std::arch::x86_64::*;
use std::sync::OnceLock;

use super::matmul_bf16::TileRun;
use super::matmul_packed::{store_tile_scalar, TileOut};
use super::stream_c::StreamC;

/// Rows of the C tile (two tiles of 16 rows).
pub(crate) const MR: usize = 32;

/// Columns of the C tile (two tiles of 16 f32).
pub(crate) const NR: usize = 32;

/// Pairs of k per step: the depth of one A tile row (64 bytes).
pub(crate) const KSTEP: usize = 16;

/// Whether this CPU has AMX-BF16 and the OS lets this process use it.
///
/// Asks Linux once per process for the tile data state
/// (`arch_prctl(ARCH_REQ_XCOMP_PERM, XFEATURE_XTILEDATA)`; without it the
/// first tile instruction faults). The grant covers every thread of the
/// process.
pub(crate) fn permitted() -> bool {
    static PERMITTED: OnceLock<bool> = OnceLock::new();
    *PERMITTED.get_or_init(|| {
        // CPUID leaf 7: EDX bit 22 is AMX-BF16, bit 24 AMX-TILE.
        let id = __cpuid_count(7, 0);
        let cpu = id.edx >> 22 & 1 == 1 && id.edx >> 24 & 1 == 1;
        cpu && request_tile_data()
    })
}

/// `arch_prctl(ARCH_REQ_XCOMP_PERM, XFEATURE_XTILEDATA) == 0`.
#[cfg(target_os = "linux")]
fn request_tile_data() -> bool {
    const SYS_ARCH_PRCTL: i64 = 158;
    const ARCH_REQ_XCOMP_PERM: i64 = 0x1023;
    const XFEATURE_XTILEDATA: i64 = 18;
    let ret: i64;
    // SAFETY: the arch_prctl system call with these arguments only changes
    // which extended states this process may use; it reads and writes no
    // memory of ours. `syscall` clobbers rcx and r11, declared here.
    unsafe {
        asm!(
            "syscall",
            inlateout("rax") SYS_ARCH_PRCTL => ret,
            in("rdi") ARCH_REQ_XCOMP_PERM,
            in("rsi") XFEATURE_XTILEDATA,
            lateout("rcx") _,
            lateout("r11") _,
            options(nostack),
        );
    }
    ret == 0
}

/// Other systems: not tried (their tile-state rules differ), so AMX is off.
#[cfg(not(target_os = "linux"))]
fn request_tile_data() -> bool {
    false
}

/// The tile configuration (`ldtilecfg`'s 64-byte operand, palette 1):
/// every tile used is 16 rows × 64 bytes.
#[repr(C, align(64))]
struct TileConfig([u8; 64]);

impl TileConfig {
    fn new() -> TileConfig {
        let mut c = [0u8; 64];
        c[0] = 1; // palette 1
        for t in 0..8 {
            // Bytes 16..32: bytes per row of each tile (u16, little-endian);
            // bytes 48..56: rows of each tile.
            c[16 + 2 * t] = 64;
            c[48 + t] = 16;
        }
        TileConfig(c)
    }
}

/// Runs `f` with the tiles configured for [`kernel`], and releases them
/// afterwards (so the thread's tile state goes back to its init state and
/// costs nothing at context switches).
///
/// # Safety
///
/// [`permitted`] returned true.
pub(crate) unsafe fn with_tiles<R>(f: impl FnOnce() -> R) -> R {
    let cfg = TileConfig::new();
    // SAFETY: AMX is permitted (contract); cfg is a valid palette-1
    // configuration, 64 bytes, read only.
    unsafe { asm!("ldtilecfg [{}]", in(reg) cfg.0.as_ptr(), options(nostack, readonly)) };
    let r = f();
    // SAFETY: as above; releasing the tiles touches no memory.
    unsafe { asm!("tilerelease", options(nostack, nomem)) };
    r
}

/// `C_tile = alpha · A_panel · B_panel + beta · C_tile` over `kp` k-pairs,
/// `kp` a multiple of [`KSTEP`].
///
/// The sum for each `C[i, j]` runs over the pairs in order, so it does not
/// depend on where the tile sits in C or how C is split between threads.
/// A full tile with `alpha == 1` and `beta` 0 or 1 is accumulated in C
/// itself (`tileloadd` of C, the products, `tilestored`): `C + Σ` in that
/// order, with the same error bound as the buffered `alpha·Σ + beta·C`
/// every other tile takes.
///
/// # Safety
///
/// Inside [`with_tiles`]. `a` valid for reads of pairs `0..kp` of `MR`
/// rows `lda` pairs apart (a packed panel's `kp`, or A's own row stride
/// where A is read in place); `b` for `kp·NR` reads; `out` satisfies
/// [`TileOut`]'s contract. The CPU has AVX-512F (every AMX CPU does).
/// Every A row should start on a 64-byte boundary (`a` and `4·lda`
/// multiples of 64): a tile row that straddles two cache lines loads
/// several times slower.
///
/// `stream_b` loads B's tiles with the non-temporal hint (`tileloaddt1`)
/// instead of prefetching them into L1: for a caller whose A panel fits
/// L1 beside little else, so that B streaming past does not evict it.
#[target_feature(enable = "avx512f")]
pub(crate) unsafe fn kernel(
    kp: usize,
    a: *const u32,
    lda: usize,
    b: *const u32,
    out: &TileOut,
    stream_b: bool,
) {
    // A full tile of contiguous rows with alpha 1 and beta 0 or 1 (every
    // product Kiln's models run) accumulates in place: the accumulators
    // start from C (or zero) and are stored straight back, with no pass
    // through a buffer.
    let direct = out.rows == MR
        && out.cols == NR
        && out.csc == 1
        && out.alpha == 1.0
        && (out.beta == 0.0 || out.beta == 1.0);
    let run = TileRun {
        kp,
        a,
        lda,
        b,
        b_stride: 0,
        count: 1,
        c: out.c,
        rsc: out.rsc,
        beta_one: out.beta == 1.0,
        stream_b,
    };
    if direct {
        // SAFETY: a run of one tile, forwarded (the tile is full, its rows
        // contiguous, readable when beta is 1: TileOut contract).
        unsafe { kernel_run(&run, None) };
        return;
    }
    // Otherwise the accumulators go to a buffer, then alpha·acc + beta·C.
    let mut tmp = Tmp(std::mem::MaybeUninit::uninit());
    let into_tmp = TileRun {
        c: tmp.0.as_mut_ptr().cast::<f32>(),
        rsc: NR as isize,
        beta_one: false,
        ..run
    };
    // SAFETY: a run of one tile into tmp, 32 rows of NR (beta 0: only
    // written).
    unsafe { kernel_run(&into_tmp, None) };
    // SAFETY: the run's four tile stores wrote all of tmp.
    let tmp = unsafe { tmp.0.assume_init_ref() };
    if out.rows == MR && out.cols == NR && out.csc == 1 {
        // Full tile, contiguous rows: alpha·acc, then + beta·c, unfused, as
        // `store_tile_scalar` rounds it.
        let alpha = _mm512_set1_ps(out.alpha);
        let beta = _mm512_set1_ps(out.beta);
        for i in 0..MR {
            for h in 0..NR / 16 {
                // SAFETY: 16 floats at i·NR + 16h are in tmp; 32 floats from
                // each row start are inside C (TileOut contract).
                unsafe {
                    let ch = out.c.offset(i as isize * out.rsc).add(16 * h);
                    let mut r =
                        _mm512_mul_ps(alpha, _mm512_loadu_ps(tmp.as_ptr().add(i * NR + 16 * h)));
                    if out.beta != 0.0 {
                        r = _mm512_add_ps(r, _mm512_mul_ps(beta, _mm512_loadu_ps(ch)));
                    }
                    _mm512_storeu_ps(ch, r);
                }
            }
        }
    } else {
        // SAFETY: out forwarded.
        unsafe { store_tile_scalar(tmp, NR, out) }
    }
}

/// The `count` full tiles of `run` side by side, `C_t = A_panel ·
/// B_panel_t (+ C_t)` for `t < count`, with the tile boundaries overlapped
/// ([`kernel`] is a run of one tile).
///
/// The tile registers are not renamed, so a tile that ends with its four
/// stores and the next that starts with four zeroings (or loads of C)
/// drain the tile unit between them: a store waits for the last product
/// into its accumulator, and the next products wait for all the stores.
/// Here each accumulator's store is followed at once by its reset and the
/// next tile's first product into it, so the unit keeps working on the
/// other three while one is stored. The sums, and so the bits, are those
/// of one tile at a time.
///
/// With `stream_c` (and beta 0) each tile goes through a 4 KiB buffer to
/// [`StreamC`] instead of into C, a few rows before each step of the next
/// tile (written all at once, the tile unit sat idle behind 64 line stores:
/// the LM head on two threads ran about 10 % slower); the caller calls
/// [`StreamC::finish`] after the run.
///
/// # Safety
///
/// Inside [`with_tiles`]; `count ≥ 1`; `a` as for [`kernel`], each B panel
/// as `kernel`'s `b`; the `count` tiles of 32×32 from `c`, rows `rsc`
/// apart, inside C, owned by the caller (readable when `beta_one`).
#[target_feature(enable = "avx512f")]
pub(crate) unsafe fn kernel_run(run: &TileRun, stream_c: Option<&mut StreamC>) {
    let TileRun {
        kp,
        a,
        lda,
        b,
        b_stride,
        count,
        c,
        rsc,
        beta_one,
        stream_b,
    } = *run;
    debug_assert!(kp.is_multiple_of(KSTEP) && kp > 0 && count > 0);
    let mut stream_c = stream_c.filter(|_| !beta_one);
    let mut tmp = Tmp(std::mem::MaybeUninit::uninit());
    let tmp_lo = tmp.0.as_mut_ptr().cast::<u8>();
    let tmp_hi = tmp_lo.wrapping_add(16 * NR * 4);
    let lda = lda * 4;
    let a_lo = a.cast::<u8>();
    let a_hi = a_lo.wrapping_add(16 * lda);
    let ldc = rsc.wrapping_mul(4);
    let ldb = NR * 4;
    let c_at = |t: usize| {
        let lo = c.wrapping_add(t * NR).cast::<u8>();
        (lo, lo.wrapping_offset(16 * ldc))
    };
    let steps = kp / KSTEP;
    // Unless B streams past L1, it comes from L2: ask for the step two
    // ahead of `bs` now, so its tile loads find it in L1. A prefetch past
    // the panel's end is harmless (it does not fault).
    let prefetch_b = |bs: *const u32| {
        let ahead = bs.wrapping_add(2 * KSTEP * NR).cast::<i8>();
        for line in 0..KSTEP * NR * 4 / 64 {
            _mm_prefetch::<_MM_HINT_T0>(ahead.wrapping_add(64 * line));
        }
    };
    let (c_lo, c_hi) = c_at(0);
    // SAFETY: tile 0's 32 rows of 128 bytes are inside C, readable when
    // beta_one (contract); tiles configured.
    unsafe {
        if beta_one {
            asm!(
                "tileloadd tmm0, [{cl} + {ld}*1]",
                "tileloadd tmm1, [{cl} + {ld}*1 + 64]",
                "tileloadd tmm2, [{ch} + {ld}*1]",
                "tileloadd tmm3, [{ch} + {ld}*1 + 64]",
                cl = in(reg) c_lo,
                ch = in(reg) c_hi,
                ld = in(reg) ldc,
                options(nostack, readonly),
            )
        } else {
            asm!(
                "tilezero tmm0",
                "tilezero tmm1",
                "tilezero tmm2",
                "tilezero tmm3",
                options(nostack, nomem)
            )
        }
    }
    // One step: two A tiles, two B tiles (loaded with `$load_b`), four
    // products. A tile register is only reloaded after the products that
    // read it: the loads are interleaved with the products so each waits
    // as little as possible on the one before.
    macro_rules! step {
        ($load_b:literal, $al:expr, $ah:expr, $bs:expr) => {
            asm!(
                "tileloadd tmm4, [{al} + {lda}*1]",
                concat!($load_b, " tmm6, [{b} + {ldb}*1]"),
                "tdpbf16ps tmm0, tmm4, tmm6",
                concat!($load_b, " tmm7, [{b} + {ldb}*1 + 64]"),
                "tdpbf16ps tmm1, tmm4, tmm7",
                "tileloadd tmm5, [{ah} + {lda}*1]",
                "tdpbf16ps tmm2, tmm5, tmm6",
                "tdpbf16ps tmm3, tmm5, tmm7",
                al = in(reg) $al,
                ah = in(reg) $ah,
                b = in(reg) $bs,
                lda = in(reg) lda,
                ldb = in(reg) ldb,
                options(nostack, readonly),
            )
        };
    }
    // The boundary: store accumulator i of the tile at (cl, ch), reset it
    // (`$init` i) and issue the next tile's first product into it, for
    // i = 0..4, with step 0's loads of A and of the next B panel `b`.
    macro_rules! boundary {
        ($cl:expr, $ch:expr, $ldc:expr, $bn:expr, $load_b:literal, $i0:literal, $i1:literal, $i2:literal, $i3:literal, $($next:tt)*) => {
            asm!(
                "tilestored [{cl} + {ldc}*1], tmm0",
                "tileloadd tmm4, [{al} + {lda}*1]",
                $i0,
                concat!($load_b, " tmm6, [{b} + {ldb}*1]"),
                "tdpbf16ps tmm0, tmm4, tmm6",
                "tilestored [{cl} + {ldc}*1 + 64], tmm1",
                $i1,
                concat!($load_b, " tmm7, [{b} + {ldb}*1 + 64]"),
                "tdpbf16ps tmm1, tmm4, tmm7",
                "tilestored [{ch} + {ldc}*1], tmm2",
                $i2,
                "tileloadd tmm5, [{ah} + {lda}*1]",
                "tdpbf16ps tmm2, tmm5, tmm6",
                "tilestored [{ch} + {ldc}*1 + 64], tmm3",
                $i3,
                "tdpbf16ps tmm3, tmm5, tmm7",
                cl = in(reg) $cl,
                ch = in(reg) $ch,
                al = in(reg) a_lo,
                ah = in(reg) a_hi,
                b = in(reg) $bn,
                lda = in(reg) lda,
                ldb = in(reg) ldb,
                ldc = in(reg) $ldc,
                $($next)*
                options(nostack),
            )
        };
    }
    // A tile that goes to StreamC leaves tmp a few rows before each step
    // of the next tile, so that its stores spread between that tile's
    // products instead of holding them up all at once; `pending` are the
    // rows not yet written.
    let per_step = if steps > 1 {
        MR.div_ceil(steps - 1)
    } else {
        MR
    };
    let mut pending = 0..0;
    // Writes up to `n` of the pending rows.
    macro_rules! emit {
        ($n:expr) => {
            // SAFETY: the tile StreamC started (`begin!`) was stored whole
            // into tmp, which nothing has written since.
            unsafe { drip(stream_c.as_deref_mut(), &tmp, &mut pending, $n) }
        };
    }
    // Tile `t` is in tmp: StreamC starts it, its rows now pending.
    macro_rules! begin {
        ($t:expr) => {
            if let Some(sc) = stream_c.as_deref_mut() {
                let out = TileOut {
                    c: c.wrapping_add($t * NR),
                    rsc,
                    csc: 1,
                    rows: MR,
                    cols: NR,
                    alpha: 1.0,
                    beta: 0.0,
                };
                // SAFETY: the last tile's rows are all written (`emit!`
                // before every store into tmp); the tile is inside C,
                // write-only (contract).
                unsafe { sc.start(&out) };
                pending = 0..MR;
            }
        };
    }
    for t in 0..count {
        let bt = b.wrapping_add(t * b_stride);
        let (c_lo, c_hi) = c_at(t);
        // Where tile t is stored: C, or the buffer StreamC reads.
        let (s_lo, s_hi, s_ld) = if stream_c.is_some() {
            (tmp_lo, tmp_hi, (NR * 4) as isize)
        } else {
            (c_lo, c_hi, ldc)
        };
        for s in (if t == 0 { 0 } else { 1 })..steps {
            let al = a_lo.wrapping_add(64 * s);
            let ah = a_hi.wrapping_add(64 * s);
            let bs = bt.wrapping_add(s * KSTEP * NR);
            emit!(per_step);
            if stream_b {
                // SAFETY: step s of A's 32 rows and of B panel t: inside
                // both (contract).
                unsafe { step!("tileloaddt1", al, ah, bs) };
                continue;
            }
            prefetch_b(bs);
            // SAFETY: as above.
            unsafe { step!("tileloadd", al, ah, bs) };
        }
        // The last tile's rows must be out before tmp is written again.
        emit!(MR);
        if t + 1 == count {
            // SAFETY: tile t is inside C, writable (contract).
            unsafe {
                asm!(
                    "tilestored [{cl} + {ld}*1], tmm0",
                    "tilestored [{cl} + {ld}*1 + 64], tmm1",
                    "tilestored [{ch} + {ld}*1], tmm2",
                    "tilestored [{ch} + {ld}*1 + 64], tmm3",
                    cl = in(reg) s_lo,
                    ch = in(reg) s_hi,
                    ld = in(reg) s_ld,
                    options(nostack),
                )
            };
            begin!(t);
            emit!(MR);
            break;
        }
        let bn = b.wrapping_add((t + 1) * b_stride);
        let (n_lo, n_hi) = c_at(t + 1);
        if !stream_b {
            prefetch_b(bn);
        }
        // The boundary with B loaded by `$load_b`: the accumulators reset
        // to the next tile's C (beta 1) or to zero.
        macro_rules! boundary_to_next {
            ($load_b:literal) => {
                if beta_one {
                    boundary!(
                        s_lo, s_hi, s_ld, bn, $load_b,
                        "tileloadd tmm0, [{nl} + {ldc}*1]",
                        "tileloadd tmm1, [{nl} + {ldc}*1 + 64]",
                        "tileloadd tmm2, [{nh} + {ldc}*1]",
                        "tileloadd tmm3, [{nh} + {ldc}*1 + 64]",
                        nl = in(reg) n_lo, nh = in(reg) n_hi,
                    )
                } else {
                    boundary!(
                        s_lo, s_hi, s_ld, bn, $load_b,
                        "tilezero tmm0",
                        "tilezero tmm1",
                        "tilezero tmm2",
                        "tilezero tmm3",
                    )
                }
            };
        }
        // SAFETY: tile t is written and tile t + 1 read (beta_one) inside
        // C (contract); step 0 of A and of B panel t + 1 as above.
        unsafe {
            if stream_b {
                boundary_to_next!("tileloaddt1")
            } else {
                boundary_to_next!("tileloadd")
            }
        }
        begin!(t);
    }
}

/// Writes rows `pending.start..` of the tile in `tmp` through `sc`, at
/// most `n` of them, and takes them off `pending`.
///
/// # Safety
///
/// `sc` started the tile (`StreamC::start`) that `tmp` holds whole; the CPU
/// has AVX-512F.
#[target_feature(enable = "avx512f")]
unsafe fn drip(
    sc: Option<&mut StreamC>,
    tmp: &Tmp,
    pending: &mut std::ops::Range<usize>,
    n: usize,
) {
    if let Some(sc) = sc {
        let now = pending.start..(pending.start + n).min(pending.end);
        pending.start = now.end;
        // SAFETY: forwarded; `now` follows the rows already written.
        unsafe { sc.rows(tmp.0.assume_init_ref(), now) };
    }
}

/// The 4 KiB a run's tiles go through on their way to `StreamC`.
#[repr(C, align(64))]
struct Tmp(std::mem::MaybeUninit<[f32; MR * NR]>);
