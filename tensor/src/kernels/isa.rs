//! The instruction sets Kiln's kernels run on: one detection, one forcing
//! switch, shared by the GEMMs, the gemvs and the fast elementwise and row
//! kernels.
//!
//! Levels, slowest first: `portable` (plain Rust, runs everywhere), `avx2`
//! (AVX2 + FMA), `avx512` (AVX-512 F/VL/BW/DQ), `avx512bf16` (AVX-512 plus
//! the BF16 dot-product instruction `vdpbf16ps`, used by the bf16 GEMM),
//! `amx` (that plus the AMX-BF16 tile unit, which the bf16 GEMM then runs
//! on; Linux must grant the process the tile state, which detection asks
//! for). Each level includes the ones below it. The best level the CPU supports
//! is picked once per process, capped by the environment variable
//! `KILN_SIMD` (one of those four names), so tests and benchmarks can force
//! every lower path on one machine. f32 results do not depend on the level
//! (only speed does); bf16 results differ between levels only by the order
//! of f32 additions inside a dot product, within the bound the bf16 GEMM
//! documents.

use std::sync::OnceLock;

/// The levels' names, slowest first: the values `KILN_SIMD` accepts.
pub const NAMES: [&str; 5] = ["portable", "avx2", "avx512", "avx512bf16", "amx"];

/// Every level, slowest first.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
enum Tier {
    Portable,
    #[cfg(target_arch = "x86_64")]
    Avx2,
    #[cfg(target_arch = "x86_64")]
    Avx512,
    #[cfg(target_arch = "x86_64")]
    Avx512Bf16,
    #[cfg(target_arch = "x86_64")]
    Amx,
}

/// The levels the f32 kernels distinguish, for matching inside them.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Level {
    Portable,
    #[cfg(target_arch = "x86_64")]
    Avx2,
    #[cfg(target_arch = "x86_64")]
    Avx512,
}

/// An instruction set the kernels can run on. A value of this type only
/// ever names one that the running CPU supports, which is what makes the
/// safe kernel entry points that take it sound.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub struct Isa(Tier);

impl Isa {
    /// The best instruction set this CPU supports, capped by `KILN_SIMD`
    /// (`portable`, `avx2`, `avx512`, `avx512bf16` or `amx`; read once). A cap
    /// above what the CPU has caps nothing; an unknown value is reported on
    /// stderr and ignored.
    pub fn detect() -> Isa {
        static DETECTED: OnceLock<Isa> = OnceLock::new();
        *DETECTED.get_or_init(|| {
            let cap = std::env::var("KILN_SIMD").unwrap_or_default();
            let cap = cap.trim();
            let rank = |name: &str| NAMES.iter().position(|n| *n == name);
            let limit = rank(cap);
            if limit.is_none() && !cap.is_empty() {
                eprintln!("kiln: KILN_SIMD={cap:?} is not one of {NAMES:?}; ignored");
            }
            Isa::available()
                .into_iter()
                .rfind(|isa| limit.is_none_or(|l| rank(isa.name()).is_some_and(|r| r <= l)))
                .unwrap_or(Isa(Tier::Portable))
        })
    }

    /// The baseline build, which runs everywhere.
    pub fn portable() -> Isa {
        Isa(Tier::Portable)
    }

    /// Every instruction set this CPU supports, slowest first.
    pub fn available() -> Vec<Isa> {
        #[allow(unused_mut)]
        let mut v = vec![Isa(Tier::Portable)];
        #[cfg(target_arch = "x86_64")]
        {
            if is_x86_feature_detected!("avx2") && is_x86_feature_detected!("fma") {
                v.push(Isa(Tier::Avx2));
                if is_x86_feature_detected!("avx512f")
                    && is_x86_feature_detected!("avx512vl")
                    && is_x86_feature_detected!("avx512bw")
                    && is_x86_feature_detected!("avx512dq")
                {
                    v.push(Isa(Tier::Avx512));
                    if is_x86_feature_detected!("avx512bf16") {
                        v.push(Isa(Tier::Avx512Bf16));
                        if super::microkernel_amx::permitted() {
                            v.push(Isa(Tier::Amx));
                        }
                    }
                }
            }
        }
        v
    }

    /// `"portable"`, `"avx2"`, `"avx512"`, `"avx512bf16"` or `"amx"`.
    pub fn name(self) -> &'static str {
        match self.0 {
            Tier::Portable => "portable",
            #[cfg(target_arch = "x86_64")]
            Tier::Avx2 => "avx2",
            #[cfg(target_arch = "x86_64")]
            Tier::Avx512 => "avx512",
            #[cfg(target_arch = "x86_64")]
            Tier::Avx512Bf16 => "avx512bf16",
            #[cfg(target_arch = "x86_64")]
            Tier::Amx => "amx",
        }
    }

    /// Whether the bf16 dot-product instruction is available.
    pub fn has_bf16_dot(self) -> bool {
        #[cfg(target_arch = "x86_64")]
        {
            self.0 >= Tier::Avx512Bf16
        }
        #[cfg(not(target_arch = "x86_64"))]
        {
            false
        }
    }

    /// Whether the AMX-BF16 tile unit is available (and granted).
    pub fn has_amx(self) -> bool {
        #[cfg(target_arch = "x86_64")]
        {
            self.0 == Tier::Amx
        }
        #[cfg(not(target_arch = "x86_64"))]
        {
            false
        }
    }

    /// The level the f32 kernels use (they have nothing beyond AVX-512).
    pub(crate) fn f32(self) -> Level {
        match self.0 {
            Tier::Portable => Level::Portable,
            #[cfg(target_arch = "x86_64")]
            Tier::Avx2 => Level::Avx2,
            #[cfg(target_arch = "x86_64")]
            Tier::Avx512 | Tier::Avx512Bf16 | Tier::Amx => Level::Avx512,
        }
    }
}
