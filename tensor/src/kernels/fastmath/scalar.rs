//! The scalar approximations, inlined into every kernel (method: the
//! module docs of `fastmath`).

/// Adding `1.5·2²³` to a float of magnitude below 2²² rounds it to an
/// integer (to nearest, ties to even), which then sits in the low mantissa
/// bits.
pub(super) const SHIFTER: f32 = 12_582_912.0;
/// ln 2 split for Cody–Waite reduction: a 9-bit head (355/512), so `n·head`
/// is exact for `|n| < 2¹⁵`, and the f32 nearest the rest.
pub(super) const LN2_HI: f32 = 355.0 / 512.0;
pub(super) const LN2_LO: f32 = -2.121_944_4e-4;
/// GELU's constants, doubled: 2·√(2/π) and 2·√(2/π)·0.044715, each the
/// nearest f32.
pub(super) const GELU_2C: f32 = 1.595_769_2;
pub(super) const GELU_2CK: f32 = 0.071_354_814;

/// The coefficients of `q` in `eʳ ≈ 1 + r + r²·q(r)`, constant term first.
pub(super) const EXP_Q: [f32; 5] = [
    0.499_999_94,
    0.166_665_21,
    0.041_668_39,
    0.008_368_732,
    0.001_381_447_3,
];

/// The coefficients of `P` in `tanh x ≈ x + x³·P(x²)` on `|x| < 0.625`.
pub(super) const TANH_P: [f32; 5] = [
    -0.333_332_84,
    0.133_314_92,
    -0.053_743_567,
    0.020_650_817,
    -0.005_717_309_7,
];

/// `eˣ` in f32, under 1 ulp of error; `+inf` above ≈88.72, 0 below ≈−103.97,
/// NaN for NaN. See the module docs for the method. Branch-free, so loops of
/// it vectorise; inside non-FMA code it calls `fmaf`.
#[inline(always)]
pub fn exp_f32(x: f32) -> f32 {
    // Clamp to [−104, 89]: beyond, the answer is 0 or +inf anyway, and n
    // stays within [−150, 129], whose two half-scales are normal numbers.
    // `if x > hi { hi } else { x }` keeps NaN (the comparison is false).
    let x = if x > 89.0 { 89.0 } else { x };
    let x = if x < -104.0 { -104.0 } else { x };
    let t = x.mul_add(std::f32::consts::LOG2_E, SHIFTER);
    let n = t - SHIFTER;
    let r = n.mul_add(-LN2_HI, x);
    let r = n.mul_add(-LN2_LO, r);
    let q = r.mul_add(EXP_Q[4], EXP_Q[3]);
    let q = q.mul_add(r, EXP_Q[2]);
    let q = q.mul_add(r, EXP_Q[1]);
    let q = q.mul_add(r, EXP_Q[0]);
    // 1 + r·(1 + r·q): plain Horner, one operation shorter and (measured)
    // more accurate than 1 + (r + r²·q).
    let p = q.mul_add(r, 1.0).mul_add(r, 1.0);
    // n as an integer: t's low mantissa bits hold it (|n| < 2²²). Wrapping
    // ops because a NaN input makes garbage here (the product is NaN anyway).
    let ni = (t.to_bits() as i32).wrapping_sub(SHIFTER.to_bits() as i32);
    let n1 = ni >> 1;
    let n2 = ni.wrapping_sub(n1);
    let s1 = f32::from_bits((n1.wrapping_add(127) as u32) << 23);
    let s2 = f32::from_bits((n2.wrapping_add(127) as u32) << 23);
    p * s1 * s2
}

/// `tanh x` in f32, under 1.5 ulp of error; ±1 at ±inf, NaN for NaN.
#[inline(always)]
pub fn tanh_f32(x: f32) -> f32 {
    let a = x.abs();
    let z = x * x;
    let p = z.mul_add(TANH_P[4], TANH_P[3]);
    let p = p.mul_add(z, TANH_P[2]);
    let p = p.mul_add(z, TANH_P[1]);
    let p = p.mul_add(z, TANH_P[0]);
    let small = (a * z).mul_add(p, a);
    let big = 1.0 - 2.0 / (exp_f32(a + a) + 1.0);
    // NaN fails the comparison and takes `big`, which is NaN. tanh is odd:
    // work on |x| and copy the sign back (which also keeps −0).
    let t = if a < 0.625 { small } else { big };
    t.copysign(x)
}

/// The logistic function `1/(1 + e⁻ˣ)` in f32, within 2.5 ulp.
#[inline(always)]
pub fn sigmoid_f32(x: f32) -> f32 {
    // e^{−|x|} ≤ 1 never overflows; for x < 0 the answer is e/(1 + e).
    let e = exp_f32(-x.abs());
    let num = if x < 0.0 { e } else { 1.0 };
    num / (1.0 + e)
}

/// GPT-2's GELU, `0.5·x·(1 + tanh(√(2/π)(x + 0.044715x³)))`
/// (`F.gelu(x, approximate="tanh")`), in f32, computed as `x·sigmoid(2u)`.
#[inline(always)]
pub fn gelu_f32(x: f32) -> f32 {
    let v = x * (x * x).mul_add(GELU_2CK, GELU_2C);
    x * sigmoid_f32(v)
}

/// The derivative of [`gelu_f32`]: with `v = 2u` and `s = sigmoid(v)`,
/// `d/dx x·s = s + x·s·(1 − s)·v'`, `v' = 2√(2/π)(1 + 3·0.044715x²)`.
#[inline(always)]
pub fn gelu_grad_f32(x: f32) -> f32 {
    let x2 = x * x;
    let s = sigmoid_f32(x * x2.mul_add(GELU_2CK, GELU_2C));
    let dv = x2.mul_add(3.0 * GELU_2CK, GELU_2C);
    (x * s * (1.0 - s)).mul_add(dv, s)
}
