//! Tests of the bf16 GEMM: every path against the f64 reference of the
//! bf16-rounded operands, and bit-identical results across thread counts.

use super::*;
use crate::kernels::matmul_packed::tests::Rng;

/// `n` deterministic pseudo-random f32 in [-1, 1).
fn values(n: usize, seed: u64) -> Vec<f32> {
    let mut rng = Rng::new(seed);
    (0..n).map(|_| rng.next()).collect()
}

/// Runs the product on `isa` with `threads`, A as f32 (row-major or
/// transposed) and B as bf16 bits (row-major or transposed).
fn run(
    isa: Isa,
    threads: usize,
    (m, k, n): (usize, usize, usize),
    (a_t, b_t): (bool, bool),
    beta: f32,
) -> (Vec<f32>, Vec<f64>, Vec<f64>) {
    let a = values(m * k, 1);
    let b: Vec<u16> = values(k * n, 2).into_iter().map(to_bf16_bits).collect();
    let c0 = values(m * n, 3);
    let (rsa, csa) = if a_t {
        (1, m as isize)
    } else {
        (k as isize, 1)
    };
    let (rsb, csb) = if b_t {
        (1, k as isize)
    } else {
        (n as isize, 1)
    };
    let mut c = c0.clone();
    let g = GemmBf16 {
        m,
        k,
        n,
        alpha: 0.75,
        a: Operand {
            data: Elems::F32(a.as_ptr()),
            rs: rsa,
            cs: csa,
        },
        b: Operand {
            data: Elems::Bf16(b.as_ptr()),
            rs: rsb,
            cs: csb,
        },
        beta,
        c: c.as_mut_ptr(),
        rsc: n as isize,
        csc: 1,
    };
    // SAFETY: every operand is sized for its strides. (Cut for `threads`
    // threads, run on Kiln's pool.)
    unsafe { gemm_bf16_on(isa, threads, g, None) };
    // The f64 reference of the bf16-rounded operands, and Σ|a·b|.
    let mut want = vec![0f64; m * n];
    let mut mag = vec![0f64; m * n];
    for i in 0..m {
        for j in 0..n {
            let (mut s, mut t) = (0f64, 0f64);
            for p in 0..k {
                let av = a[(i as isize * rsa + p as isize * csa) as usize];
                let ar = from_bf16_bits(to_bf16_bits(av)) as f64;
                let br = from_bf16_bits(b[(p as isize * rsb + j as isize * csb) as usize]) as f64;
                s += ar * br;
                t += (ar * br).abs();
            }
            want[i * n + j] = 0.75 * s + beta as f64 * c0[i * n + j] as f64;
            mag[i * n + j] = 0.75 * t + (beta as f64 * c0[i * n + j] as f64).abs();
        }
    }
    (c, want, mag)
}

#[test]
fn every_path_is_within_the_stated_bound_of_the_f64_reference() {
    for isa in Isa::available() {
        for &shape in &[
            (1, 1, 1),
            (1, 700, 300),
            (13, 7, 33),
            (40, 1029, 70),
            (9, 3300, 40),
            (97, 64, 300),
        ] {
            for &layout in &[(false, false), (true, true), (false, true)] {
                for &beta in &[0.0, 1.0] {
                    let (got, want, mag) = run(isa, 1, shape, layout, beta);
                    let k = shape.1 as f64;
                    // γ_k for the sum, plus a few ulps for alpha·acc + beta·c.
                    let gamma =
                        k * 2f64.powi(-24) / (1.0 - k * 2f64.powi(-24)) + 4.0 * 2f64.powi(-24);
                    for (idx, ((g, w), t)) in got.iter().zip(&want).zip(&mag).enumerate() {
                        let err = (*g as f64 - w).abs();
                        assert!(
                            err <= gamma * t + 1e-30,
                            "{} {shape:?} {layout:?} beta {beta}: C[{idx}] = {g}, reference {w}, error {err:e} > {:e}",
                            isa.name(),
                            gamma * t
                        );
                    }
                }
            }
        }
    }
}

#[test]
fn results_are_bit_identical_across_thread_counts() {
    for isa in Isa::available() {
        // Two K blocks on every kernel.
        let shape = (100, 1700, 500);
        let one = run(isa, 1, shape, (false, false), 0.0).0;
        for threads in [2, 3] {
            let many = run(isa, threads, shape, (false, false), 0.0).0;
            assert!(
                one == many,
                "{}: {threads} threads differ from one",
                isa.name()
            );
        }
    }
}

/// The gemv of decoding (`m = 1`, f32 activations, bf16 weights) gives the
/// same bits on every path and at every thread count, in both weight
/// layouts: the vector loops add in the portable loops' order, and the
/// row-major walk's chunks are added in chunk order.
#[test]
fn the_decode_gemv_is_bit_identical_across_paths_and_threads() {
    // k past one chunk of 64 rows and not a multiple of 4, or a whole
    // number of 32-lane steps (GPT-2's 768: no ragged tail in the column
    // loop); n with a 32-column body, a 16-column step and a scalar tail.
    for (shape, layout) in [(777, false), (777, true), (768, true)]
        .map(|(k, b_t)| ((1, k, 1100 + 16 + 5), (false, b_t)))
    {
        let want = run(Isa::portable(), 1, shape, layout, 1.0).0;
        for isa in Isa::available() {
            for threads in [1, 2, 3] {
                let got = run(isa, threads, shape, layout, 1.0).0;
                assert!(
                    got == want,
                    "{} at {threads} threads, layout {layout:?}: differs from portable",
                    isa.name()
                );
            }
        }
    }
}

#[test]
fn rounding_is_to_nearest_even() {
    // 1 + 2⁻⁸ is halfway between bf16 neighbours 1 and 1 + 2⁻⁷: ties to
    // the even one (1); just above the midpoint rounds up.
    assert_eq!(to_bf16_bits(1.0 + 2f32.powi(-8)), to_bf16_bits(1.0));
    assert_eq!(
        from_bf16_bits(to_bf16_bits(1.0 + 2f32.powi(-8) + 2f32.powi(-20))),
        1.0 + 2f32.powi(-7)
    );
    assert!(from_bf16_bits(to_bf16_bits(f32::NAN)).is_nan());
}

/// `C = alpha·A·B + beta·C0` on `isa` with `threads` (alpha 1 with beta 0,
/// the AMX kernel's in-place tiles; 0.75 otherwise), B's panels packed per
/// call or, with `pack`, read from a [`PackedB`] packed for that ISA.
fn run_prepacked(
    isa: Isa,
    threads: usize,
    (m, k, n): (usize, usize, usize),
    (bf16_a, b_t, beta): (bool, bool, f32),
    pack: Option<Isa>,
) -> Vec<f32> {
    let af = values(m * k, 4);
    let ab: Vec<u16> = af.iter().map(|&x| to_bf16_bits(x)).collect();
    let b: Vec<u16> = values(k * n, 5).into_iter().map(to_bf16_bits).collect();
    let mut c = values(m * n, 6);
    let (rs, cs) = if b_t {
        (1, k as isize)
    } else {
        (n as isize, 1)
    };
    let bop = Operand {
        data: Elems::Bf16(b.as_ptr()),
        rs,
        cs,
    };
    // SAFETY: b holds k·n elements, read through its strides.
    let pre = pack.and_then(|p| unsafe { PackedB::new(p, &bop, k, n) });
    let g = GemmBf16 {
        m,
        k,
        n,
        alpha: if beta == 0.0 { 1.0 } else { 0.75 },
        a: Operand {
            data: if bf16_a {
                Elems::Bf16(ab.as_ptr())
            } else {
                Elems::F32(af.as_ptr())
            },
            rs: k as isize,
            cs: 1,
        },
        b: bop,
        beta,
        c: c.as_mut_ptr(),
        rsc: n as isize,
        csc: 1,
    };
    // SAFETY: every operand is sized for its strides; pre was packed from
    // this B.
    unsafe { gemm_bf16_on(isa, threads, g, pre.as_ref()) };
    c
}

/// Prepacked B panels give the bits a call that packs its own gives: on
/// every path, at 1–3 threads, over several K blocks and column units,
/// with ragged panels, both B layouts, f32 and bf16 A, and C overwritten
/// (the AMX kernel's in-place tiles) or scaled and accumulated. Panels
/// packed for another ISA are not used, and change nothing.
#[test]
fn prepacked_panels_give_the_bits_of_packing_per_call() {
    let isas = Isa::available();
    for shape in [
        (1, 700, 300),
        (45, 1029, 700),
        (33, 1700, 300),
        (97, 64, 33),
        (130, 800, 600),
    ] {
        for opts in [(false, false, 0.0), (true, true, 0.0), (false, true, 1.0)] {
            let want = run_prepacked(Isa::detect(), 1, shape, opts, None);
            for &isa in &isas {
                for threads in [1, 2, 3] {
                    for &pack in &isas {
                        let got = run_prepacked(isa, threads, shape, opts, Some(pack));
                        let same = run_prepacked(isa, threads, shape, opts, None);
                        assert!(
                            got == same,
                            "{} at {threads} threads, packed for {}, {shape:?} {opts:?}: differs from packing per call",
                            isa.name(),
                            pack.name()
                        );
                        if isa.name() == Isa::detect().name() {
                            assert!(got == want, "{}: thread count changed the bits", isa.name());
                        }
                    }
                }
            }
        }
    }
}

/// A B packed for the AMX or AVX512-BF16 kernel holds the layout's size;
/// the widening fallback packs nothing.
#[test]
fn prepacking_packs_only_for_a_bf16_kernel() {
    let b = vec![0u16; 64 * 40];
    let op = Operand {
        data: Elems::Bf16(b.as_ptr()),
        rs: 40,
        cs: 1,
    };
    for isa in Isa::available() {
        // SAFETY: b holds 64·40 elements, row-major.
        let pre = unsafe { PackedB::new(isa, &op, 64, 40) };
        assert_eq!(
            pre.is_some(),
            isa.has_amx() || isa.has_bf16_dot(),
            "{}",
            isa.name()
        );
        if let Some(p) = pre {
            // Two 32-column panels of 32 pairs (k = 64 is a whole number
            // of steps for either kernel, so nothing is padded).
            assert_eq!(p.bytes(), 2 * 32 * 32 * 4, "{}", isa.name());
        }
    }
}

/// `C = A·B` into a fresh row-major C (alpha 1, beta 0: the AMX kernel's
/// in-place tiles), A row-major with rows `lda` apart, B row-major bf16.
///
/// # Safety
///
/// A holds `m` rows of `lda` (`k` read from each); `b` holds `k·n`.
unsafe fn overwrite(
    isa: Isa,
    threads: usize,
    (m, k, n): (usize, usize, usize),
    (a, lda): (Elems, usize),
    b: &[u16],
    pre: Option<&PackedB>,
) -> Vec<f32> {
    let mut c = vec![0f32; m * n];
    let g = GemmBf16 {
        m,
        k,
        n,
        alpha: 1.0,
        a: Operand {
            data: a,
            rs: lda as isize,
            cs: 1,
        },
        b: Operand {
            data: Elems::Bf16(b.as_ptr()),
            rs: n as isize,
            cs: 1,
        },
        beta: 0.0,
        c: c.as_mut_ptr(),
        rsc: n as isize,
        csc: 1,
    };
    // SAFETY: forwarded; c is m·n.
    unsafe { gemm_bf16_on(isa, threads, g, pre) };
    c
}

/// The panels are really read: B's elements zeroed after packing do not
/// change a product that reads the prepacked panels (several K blocks,
/// the last ragged, on either kernel, or one), while one that packs its
/// own sees the zeros.
#[test]
fn prepacked_panels_are_what_the_kernel_reads() {
    for (m, k, n) in [(64, 3300, 300), (70, 700, 90)] {
        are_read(m, k, n);
    }
}

fn are_read(m: usize, k: usize, n: usize) {
    let a = values(m * k, 7);
    let b0: Vec<u16> = values(k * n, 8).into_iter().map(to_bf16_bits).collect();
    for isa in Isa::available() {
        let product = |b: &[u16], pre: Option<&PackedB>| {
            let a = Elems::F32(a.as_ptr());
            // SAFETY: a, b and c are sized for their strides.
            unsafe { overwrite(isa, 2, (m, k, n), (a, k), b, pre) }
        };
        let op = Operand {
            data: Elems::Bf16(b0.as_ptr()),
            rs: n as isize,
            cs: 1,
        };
        // SAFETY: b0 holds k·n elements, row-major.
        let Some(pre) = (unsafe { PackedB::new(isa, &op, k, n) }) else {
            continue;
        };
        let zeros = vec![0u16; k * n];
        assert!(
            product(&zeros, Some(&pre)) == product(&b0, None),
            "{}: the prepacked panels were not read",
            isa.name()
        );
        assert!(product(&zeros, None).iter().all(|&x| x == 0.0));
    }
}

/// A bf16 A whose rows are whole aligned cache lines is read in place by
/// the AMX kernel (no packing), and gives the bits of the same A packed:
/// the same A copied one element off alignment, or with a row stride that
/// is not a whole number of lines, takes the packing path. Over one and
/// two K blocks, a short last row panel (which is packed either way), rows
/// wider than k, and 1–3 threads.
#[test]
fn a_read_in_place_gives_the_bits_of_packed_a() {
    for (m, k, n) in [(70, 64, 50), (64, 1600, 40), (33, 96, 33)] {
        for pad in [0, 32] {
            let rs = k + pad;
            let vals: Vec<u16> = values(m * rs, 9).into_iter().map(to_bf16_bits).collect();
            let b: Vec<u16> = values(k * n, 10).into_iter().map(to_bf16_bits).collect();
            // A copied to `skew` elements past a 64-byte boundary, rows `rs`
            // apart.
            let product = |isa: Isa, threads: usize, skew: usize, rs: usize| {
                let mut buf = vec![0u16; m * rs + 64];
                let start = buf.as_ptr().align_offset(64) + skew;
                for i in 0..m {
                    for p in 0..k {
                        buf[start + i * rs + p] = vals[i * (k + pad) + p];
                    }
                }
                let a = Elems::Bf16(buf[start..].as_ptr());
                // SAFETY: A's m rows of rs from start fit in buf; b is
                // k·n.
                unsafe { overwrite(isa, threads, (m, k, n), (a, rs), &b, None) }
            };
            for isa in Isa::available() {
                let packed = product(isa, 1, 1, rs);
                assert!(
                    product(isa, 1, 0, rs + 8) == packed,
                    "{} {m}×{k}×{n}: a row stride off the lines changed the bits",
                    isa.name()
                );
                for threads in [1, 2, 3] {
                    assert!(
                        product(isa, threads, 0, rs) == packed,
                        "{} {m}×{k}×{n}, rows {rs} apart, {threads} threads: A in place differs from A packed",
                        isa.name()
                    );
                }
            }
        }
    }
}

/// A run of AMX tiles with overlapped boundaries (`Kernel::run`) writes
/// the bits of the same tiles one `Kernel::tile` at a time, for beta 0 and
/// 1, B loaded either way, one to four tiles one to three steps deep, and
/// leaves C outside the tiles alone.
#[cfg(target_arch = "x86_64")]
#[test]
fn a_run_of_amx_tiles_gives_the_bits_of_single_tiles() {
    if !Isa::available().iter().any(|i| i.has_amx()) {
        eprintln!("skipped: this CPU (or OS) offers no AMX");
        return;
    }
    let (mr, nr, ks) = (Amx::MR, Amx::NR, Amx::KSTEP);
    for steps in 1..=3 {
        let kp = steps * ks;
        for count in 1..=4 {
            // Pairs of bf16 in u32s, as the panels hold them.
            let pairs = |len: usize, seed: u64| -> Vec<u32> {
                let v: Vec<u32> = values(2 * len, seed)
                    .into_iter()
                    .map(|x| to_bf16_bits(x) as u32)
                    .collect();
                v.chunks(2).map(|p| p[0] | p[1] << 16).collect()
            };
            let a = pairs(mr * kp, 21);
            let b = pairs(count * nr * kp, 22);
            let rsc = count * nr + 9;
            let c0 = values(mr * rsc, 77);
            for beta_one in [false, true] {
                for stream_b in [false, true] {
                    let mut one = c0.clone();
                    let mut run = c0.clone();
                    // SAFETY: AMX is available; A is 32 rows of kp pairs, B
                    // count panels of nr·kp, C 32 rows of rsc ≥ count·NR.
                    unsafe {
                        Amx::scope(|| {
                            for t in 0..count {
                                let out = TileOut {
                                    c: one.as_mut_ptr().add(t * nr),
                                    rsc: rsc as isize,
                                    csc: 1,
                                    rows: mr,
                                    cols: nr,
                                    alpha: 1.0,
                                    beta: if beta_one { 1.0 } else { 0.0 },
                                };
                                Amx::tile(
                                    kp,
                                    a.as_ptr(),
                                    kp,
                                    b.as_ptr().add(t * nr * kp),
                                    &out,
                                    stream_b,
                                );
                            }
                            Amx::run(
                                &TileRun {
                                    kp,
                                    a: a.as_ptr(),
                                    lda: kp,
                                    b: b.as_ptr(),
                                    b_stride: nr * kp,
                                    count,
                                    c: run.as_mut_ptr(),
                                    rsc: rsc as isize,
                                    beta_one,
                                    stream_b,
                                },
                                false,
                            );
                        })
                    };
                    assert!(
                        one.iter().zip(&run).all(|(x, y)| x.to_bits() == y.to_bits()),
                        "{count} tiles of {steps} steps, beta_one {beta_one}, stream_b {stream_b}: a run differs"
                    );
                    assert!(one != c0, "the tiles wrote nothing");
                }
            }
        }
    }
}

/// A write-only C stored past the caches (`StreamC`: whole lines shifted
/// into place, non-temporal stores, masked stores at each run's ends)
/// holds the same bits as C stored tile by tile, and nothing outside C
/// changes: C at every alignment within a line, rows padded or not, a
/// short last row panel and column panel, B row-major or transposed (the
/// LM head), two K blocks (never streamed), on 1–3 threads; each tile's
/// rows written all at once (one kernel step) or a few per step of the
/// next tile (17 steps).
#[cfg(target_arch = "x86_64")]
#[test]
fn c_streamed_past_the_caches_gives_the_bits_of_c_stored_per_tile() {
    use std::sync::atomic::Ordering;
    for (m, k, n) in [
        (64, 96, 100),
        (70, 64, 257),
        (32, 1600, 64),
        (96, 32, 33),
        (40, 544, 200),
        (64, 32, 100),
    ] {
        let a: Vec<u16> = values(m * k, 11).into_iter().map(to_bf16_bits).collect();
        let b: Vec<u16> = values(k * n, 12).into_iter().map(to_bf16_bits).collect();
        for (pad, skew, b_t) in [
            (0, 0, true),
            (0, 1, true),
            (5, 7, false),
            (0, 15, false),
            (16, 3, true),
        ] {
            let rsc = n + pad;
            let product = |isa: Isa, threads: usize, stream_c_min: usize| {
                let mut buf = vec![-7.5f32; m * rsc + 64];
                let start = buf.as_ptr().align_offset(64) + skew;
                let (rsb, csb) = if b_t {
                    (1, k as isize)
                } else {
                    (n as isize, 1)
                };
                let g = GemmBf16 {
                    m,
                    k,
                    n,
                    alpha: 1.0,
                    a: Operand {
                        data: Elems::Bf16(a.as_ptr()),
                        rs: k as isize,
                        cs: 1,
                    },
                    b: Operand {
                        data: Elems::Bf16(b.as_ptr()),
                        rs: rsb,
                        cs: csb,
                    },
                    beta: 0.0,
                    c: buf[start..].as_mut_ptr(),
                    rsc: rsc as isize,
                    csc: 1,
                };
                // SAFETY: A is m×k, B k×n, C m rows of rsc from start.
                unsafe { gemm_bf16_streaming(isa, threads, g, None, stream_c_min) };
                // Nothing before or after C's rows changed.
                let end = start + (m - 1) * rsc + n;
                assert!(buf[..start].iter().chain(&buf[end..]).all(|&x| x == -7.5));
                buf[start..end].to_vec()
            };
            for isa in Isa::available() {
                let stored = product(isa, 1, usize::MAX);
                for threads in [1, 2, 3] {
                    let before = super::super::stream_c::STREAMED_TILES.load(Ordering::Relaxed);
                    let streamed = product(isa, threads, 0);
                    let after = super::super::stream_c::STREAMED_TILES.load(Ordering::Relaxed);
                    if isa.has_amx() && k <= KC_AMX && m >= 32 && n >= 32 {
                        assert!(after > before, "{m}×{k}×{n}: no tile was streamed");
                    }
                    assert!(
                        streamed == stored,
                        "{} {m}×{k}×{n}, rows {rsc} apart, {skew} past a line, {threads} threads: streamed C differs",
                        isa.name()
                    );
                }
            }
        }
    }
}
