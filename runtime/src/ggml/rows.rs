//! The CPU row kernels: SnakeBeta and ELU in one vectorised pass each
//! (as ggml ops, SnakeBeta took five passes and libm's scalar `sinf`, and
//! ggml's ELU calls libm's scalar `expm1f` per element), compiled for AVX2
//! where the CPU has it. Plain multiplies and adds only, so the AVX2 and the
//! baseline build give the same bits.

use std::sync::OnceLock;

use super::{Context, Tensor};

impl Context {
    /// SnakeBeta with folded parameters: `x + inv_beta ⊙ sin(alpha ⊙ x)²`
    /// per channel of `x` `[c, n]` (contiguous F32); `alpha`, `inv_beta` `[c]`.
    pub fn snake<'a>(
        &'a self,
        x: Tensor<'a>,
        alpha: Tensor<'a>,
        inv_beta: Tensor<'a>,
    ) -> Tensor<'a> {
        if !self.cpu_kernels.get() {
            // standard ops: x + inv_beta · sin²(x · alpha)
            let s = self.sqr(self.sin(self.mul(x, alpha)));
            return self.add(x, self.mul(s, inv_beta));
        }
        self.map_rows(x, &[alpha, inv_beta], snake_row)
    }

    /// ELU (α = 1): `x` where positive, `eˣ − 1` elsewhere (contiguous F32).
    pub fn elu<'a>(&'a self, x: Tensor<'a>) -> Tensor<'a> {
        if !self.cpu_kernels.get() {
            return self.wrap(unsafe { ggml_sys::ggml_elu(self.raw(), x.raw()) });
        }
        self.map_rows(x, &[], elu_row)
    }
}

/// Whether the row kernels take their AVX2 build.
fn avx2() -> bool {
    #[cfg(target_arch = "x86_64")]
    {
        static AVX2: OnceLock<bool> = OnceLock::new();
        *AVX2.get_or_init(|| is_x86_feature_detected!("avx2"))
    }
    #[cfg(not(target_arch = "x86_64"))]
    {
        false
    }
}

/// A row kernel `$name` running `$body` in its AVX2 build where it can.
macro_rules! dispatched {
    ($name:ident, $avx2:ident, $body:ident) => {
        fn $name(out: &mut [f32], x: &[f32], params: &[&[f32]]) {
            #[cfg(target_arch = "x86_64")]
            {
                #[target_feature(enable = "avx2")]
                unsafe fn $avx2(out: &mut [f32], x: &[f32], params: &[&[f32]]) {
                    $body(out, x, params)
                }
                if avx2() {
                    // SAFETY: the CPU has AVX2 (checked).
                    return unsafe { $avx2(out, x, params) };
                }
            }
            $body(out, x, params)
        }
    };
}

dispatched!(snake_row, snake_avx2, snake_body);
dispatched!(elu_row, elu_avx2, elu_body);

/// SnakeBeta over one time step.
#[inline(always)]
fn snake_body(out: &mut [f32], x: &[f32], params: &[&[f32]]) {
    let [alpha, inv_beta] = params else {
        unreachable!("snake takes alpha and inv_beta")
    };
    let n = out.len();
    let (x, alpha, inv_beta) = (&x[..n], &alpha[..n], &inv_beta[..n]);
    for i in 0..n {
        out[i] = x[i] + inv_beta[i] * sin_squared(alpha[i] * x[i]);
    }
}

/// `sin(z)²`, absolute error < 2.5e-7 for |z| ≤ 2·10⁴ (see the test), branch-free
/// so that loops over it vectorise: sin² has period π, so z is reduced to
/// r = z − kπ ∈ [−π/2, π/2] (π in three parts, k·π₁ exact) and sin r is a
/// degree-9 odd minimax polynomial (error 5e-9 before f32 rounding).
#[inline(always)]
fn sin_squared(z: f32) -> f32 {
    // Adding and subtracting 1.5·2²³ rounds to the nearest integer.
    const ROUND: f32 = 12_582_912.0;
    const PI: [f32; 3] = [3.140625, 9.675_026e-4, 1.509_958e-7];
    const C: [f32; 4] = [-0.166_666_57, 8.333_017e-3, -1.980_661_5e-4, 2.600_054_8e-6];
    let k = (z * std::f32::consts::FRAC_1_PI + ROUND) - ROUND;
    let r = ((z - k * PI[0]) - k * PI[1]) - k * PI[2];
    let s = r * r;
    let sin = r + r * s * (C[0] + s * (C[1] + s * (C[2] + s * C[3])));
    sin * sin
}

/// ELU over one time step.
#[inline(always)]
fn elu_body(out: &mut [f32], x: &[f32], _params: &[&[f32]]) {
    let x = &x[..out.len()];
    for (o, &v) in out.iter_mut().zip(x) {
        let e = exp_m1_neg(v.min(0.0));
        *o = if v > 0.0 { v } else { e };
    }
}

/// `eˣ − 1` for `x ≤ 0`, relative error < 3e-7 (see the test), branch-free
/// so that loops over it vectorise: `x = n·ln 2 + r` with `|r| ≤ ln 2 / 2`
/// (ln 2 in two parts), `eʳ − 1` by its Taylor series to r⁸ (truncation
/// < 2e-9 relative), then `eˣ − 1 = 2ⁿ·(eʳ − 1) + (2ⁿ − 1)`, both terms
/// exact scalings for `n ≥ −24` and the sum rounded once. Below −87 it is −1.
#[inline(always)]
fn exp_m1_neg(x: f32) -> f32 {
    const ROUND: f32 = 12_582_912.0;
    const LN2: [f32; 2] = [0.693_145_75, 1.428_606_8e-6];
    const C: [f32; 7] = [
        1.0 / 2.0,
        1.0 / 6.0,
        1.0 / 24.0,
        1.0 / 120.0,
        1.0 / 720.0,
        1.0 / 5040.0,
        1.0 / 40320.0,
    ];
    let x = x.max(-87.0);
    let shifted = x * std::f32::consts::LOG2_E + ROUND;
    let n = shifted - ROUND;
    let r = (x - n * LN2[0]) - n * LN2[1];
    let p = C[0] + r * (C[1] + r * (C[2] + r * (C[3] + r * (C[4] + r * (C[5] + r * C[6])))));
    let em1 = r + r * r * p;
    // 2ⁿ from n's bits in `shifted`'s mantissa (no float → int conversion,
    // which would not vectorise).
    let n_bits = shifted.to_bits().wrapping_sub(ROUND.to_bits());
    let scale = f32::from_bits(n_bits.wrapping_add(127) << 23);
    scale * em1 + (scale - 1.0)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::f32::consts::{FRAC_PI_2, PI};

    /// The error bound `exp_m1_neg` documents, against f64 `exp_m1`, and ELU
    /// on both sides of zero.
    #[test]
    fn exp_m1_neg_error_bound() {
        let mut worst = (0f64, 0f32);
        let mut check = |x: f32| {
            let want = (x as f64).exp_m1();
            let rel = (exp_m1_neg(x) as f64 - want).abs() / want.abs().max(f64::MIN_POSITIVE);
            if rel > worst.0 {
                worst = (rel, x);
            }
        };
        for i in 0..=2_000_000 {
            check(-(i as f32) * 1e-5); // 0 ≥ x ≥ −20, dense
        }
        for i in 0..=100_000 {
            check(-(i as f32) * 1e-3 - 20.0); // to −120 (−1 from −87 on)
        }
        for x in [
            -1e-30,
            -1e-10,
            -1e-6,
            -std::f32::consts::LN_2 / 2.0,
            -87.0,
            -1e4,
        ] {
            check(x);
        }
        assert!(
            worst.0 < 3e-7,
            "expm1 relative error {:e} at {}",
            worst.0,
            worst.1
        );
        let (mut out, x) = ([0.0; 4], [2.5, 0.0, -0.5, -1e-8]);
        elu_row(&mut out, &x, &[]);
        assert_eq!(out[..2], [2.5, 0.0]);
        assert!((out[2] - (-0.5f32).exp_m1()).abs() < 1e-7 && out[3] == -1e-8);
    }

    /// The error bound `sin_squared` documents, against f64 `sin` over the
    /// arguments SnakeBeta sees (and far beyond).
    #[test]
    fn sin_squared_error_bound() {
        let mut worst = (0f64, 0f32);
        let mut check = |z: f32| {
            let err = (sin_squared(z) as f64 - (z as f64).sin().powi(2)).abs();
            if err > worst.0 {
                worst = (err, z);
            }
        };
        for i in -2_000_000..=2_000_000 {
            check(i as f32 * 1e-4); // |z| ≤ 200, dense
        }
        for i in -1_000_000..=1_000_000 {
            check(i as f32 * 0.02 + 0.0123); // |z| ≤ 2e4
        }
        for z in [0.0, 1e-30, FRAC_PI_2, PI, 2e4] {
            check(z);
            check(-z);
        }
        assert!(worst.0 < 2.5e-7, "sin² error {:e} at {}", worst.0, worst.1);
        // Beyond, k·π₂ is no longer exact and the error grows slowly with |z|.
        for i in 0..=100_000 {
            let z = 2e4 + i as f32 * 0.8 + 0.0123;
            let err = (sin_squared(z) as f64 - (z as f64).sin().powi(2)).abs();
            assert!(err < 3e-6, "sin² error {err:e} at {z}");
        }
    }
}
