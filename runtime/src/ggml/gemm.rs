//! A matrix product for the CPU backend with the weights laid out outputs
//! fastest, `[n, k]`: each input value is broadcast against a row of 16
//! outputs in AVX2 registers (6 × 16 accumulators). ggml's GEMM instead takes
//! dot products along `k` and pays horizontal sums per output, as much as the
//! products themselves when `k` is small (the vocoder's late blocks have
//! 96–192 channels: ~60 GFLOP/s there, ~150 here). Every output is summed
//! over `k` in order with fused multiply-adds, in passes of 64 whose sums are
//! added, whatever block it falls in: no result depends on the column count
//! (no padding needed for column invariance).

use std::sync::OnceLock;

use ggml_sys as sys;

use super::{Context, GgmlType, Tensor};

impl Context {
    /// `w` `[n, k, b]` (outputs fastest) times `x` `[k, m, b]` → `[n, m, b]`:
    /// per batch `b`, column `j` of the result is `Σᵢ x[i, j] · w[:, i]`.
    /// Both contiguous F32; needs [`fma_supported`] (on the CPU backend; other
    /// backends get ggml's product of the transposed weights).
    pub fn mul_mat_outputs_fastest<'a>(&'a self, w: Tensor<'a>, x: Tensor<'a>) -> Tensor<'a> {
        if !self.cpu_kernels.get() {
            // standard ops: ggml's product of the transposed weights
            return self.mul_mat(self.cont(self.transpose(w)), x);
        }
        let [n, k, b, _] = w.ne();
        let [xk, m, xb, _] = x.ne();
        assert!(
            k == xk
                && b == xb
                && w.ty() == GgmlType::F32
                && x.ty() == GgmlType::F32
                && w.is_contiguous()
                && x.is_contiguous()
                && fma_supported(),
            "mul_mat_outputs_fastest: {:?} × {:?}",
            w.ne(),
            x.ne()
        );
        let mut args = [w.raw(), x.raw()];
        self.wrap(unsafe {
            sys::ggml_custom_4d(
                self.raw(),
                GgmlType::F32.raw(),
                n,
                m,
                b,
                1,
                args.as_mut_ptr(),
                2,
                Some(products_thunk),
                sys::GGML_N_TASKS_MAX,
                std::ptr::null_mut(),
            )
        })
    }
}

/// Rows × outputs of one register block of [`products`].
const ROWS: usize = 6;
const COLS: usize = 16;
/// Input channels per pass over a block: each pass sums its channels from
/// zero and adds that to the total, which keeps the rounding error of a sum
/// over many channels near that of ggml's eight-lane sums (sums of 256 cost
/// the 0.6B vocoder 8 dB of SNR against the direct convolution).
const DEPTH: usize = 64;
/// Rows of `x` per work item (a panel of the weights is reused over all of them).
const SPAN: usize = 512;

/// Thread `ith`'s share of [`Context::mul_mat_outputs_fastest`] (sources:
/// `w` `[n, k, b]`, `x` `[k, m, b]`; output `[n, m, b]`).
unsafe extern "C" fn products_thunk(
    dst: *mut sys::ggml_tensor,
    ith: std::os::raw::c_int,
    nth: std::os::raw::c_int,
    _userdata: *mut std::os::raw::c_void,
) {
    // SAFETY: `mul_mat_outputs_fastest` checked that both sources are
    // contiguous F32 of the shapes above and created the output so.
    unsafe {
        let dst = &*dst;
        let (u, v) = (&*dst.src[0], &*dst.src[1]);
        let (c_out, c_in, alpha) = (u.ne[0] as usize, u.ne[1] as usize, u.ne[2] as usize);
        let tiles = v.ne[1] as usize; // columns of x
        let shape = Shape { c_in, c_out };
        // Work items: (batch, block of columns, block of outputs), split in
        // contiguous ranges; outputs are split only when the other two make
        // too few items to keep every thread busy.
        let (ith, nth) = (ith as usize, nth as usize);
        let blocks = tiles.div_ceil(SPAN);
        let out_blocks = (2 * nth)
            .div_ceil(alpha * blocks)
            .clamp(1, c_out.div_ceil(2 * COLS));
        let out_span = c_out.div_ceil(out_blocks).div_ceil(2 * COLS) * (2 * COLS);
        let items = alpha * blocks * out_blocks;
        for item in items * ith / nth..items * (ith + 1) / nth {
            let (xi, rest) = (item / (blocks * out_blocks), item % (blocks * out_blocks));
            let (b, o) = (rest / out_blocks, rest % out_blocks);
            let cols = b * SPAN..((b + 1) * SPAN).min(tiles);
            let outs = (o * out_span).min(c_out)..((o + 1) * out_span).min(c_out);
            let u = (u.data as *const f32).add(xi * c_in * c_out);
            let v = (v.data as *const f32).add(xi * tiles * c_in);
            let m = (dst.data as *mut f32).add(xi * tiles * c_out);
            products(shape, u, v, m, cols, outs);
        }
    }
}

#[derive(Clone, Copy)]
struct Shape {
    c_in: usize,
    c_out: usize,
}

/// The products of columns `range` of one batch, outputs `outs` (see
/// [`products_thunk`]).
///
/// # Safety
/// `u` `[c_out, c_in]`, `v` `[c_in, columns]` and `m` `[c_out, columns]`
/// (first dim fastest) are valid F32 arrays.
unsafe fn products(
    s: Shape,
    u: *const f32,
    v: *const f32,
    m: *mut f32,
    range: std::ops::Range<usize>,
    outs: std::ops::Range<usize>,
) {
    #[cfg(target_arch = "x86_64")]
    if avx512_supported() {
        // SAFETY: the CPU has AVX-512F (and AVX2 and FMA).
        return unsafe { x86::products_avx512(s, u, v, m, range, outs) };
    }
    #[cfg(target_arch = "x86_64")]
    if fma_supported() {
        // SAFETY: the CPU has AVX2 and FMA.
        return unsafe { x86::products(s, u, v, m, range, outs) };
    }
    // SAFETY: as this function requires.
    unsafe { products_portable(s, u, v, m, range, outs) }
}

/// Whether [`products`] runs its fused multiply-adds in hardware (the
/// fast convolution is chosen only then: a software `fma` would be slow).
pub fn fma_supported() -> bool {
    #[cfg(target_arch = "x86_64")]
    {
        static FMA: OnceLock<bool> = OnceLock::new();
        *FMA.get_or_init(|| is_x86_feature_detected!("avx2") && is_x86_feature_detected!("fma"))
    }
    #[cfg(not(target_arch = "x86_64"))]
    {
        true
    }
}

/// Whether [`products`] takes blocks of 32 outputs in AVX-512 registers.
#[cfg(target_arch = "x86_64")]
fn avx512_supported() -> bool {
    static AVX512: OnceLock<bool> = OnceLock::new();
    *AVX512.get_or_init(|| fma_supported() && is_x86_feature_detected!("avx512f"))
}

/// One block: `rows` tiles from `t`, `cols` outputs from `co`, input
/// channels `ci` (added to the sums already in `m` unless `ci` starts at 0).
#[inline(always)]
unsafe fn block_portable(
    s: Shape,
    (u, v, m): (*const f32, *const f32, *mut f32),
    (t, rows): (usize, usize),
    (co, cols): (usize, usize),
    ci: std::ops::Range<usize>,
) {
    unsafe {
        for j in t..t + rows {
            let out = m.add(j * s.c_out + co);
            let mut acc = [0.0f32; COLS];
            for i in ci.clone() {
                let b = *v.add(j * s.c_in + i);
                let row = u.add(i * s.c_out + co);
                for (q, a) in acc.iter_mut().enumerate().take(cols) {
                    *a = b.mul_add(*row.add(q), *a);
                }
            }
            for (q, a) in acc.iter().enumerate().take(cols) {
                *out.add(q) = if ci.start > 0 { *out.add(q) + *a } else { *a };
            }
        }
    }
}

/// Visits the blocks of columns `range` × outputs `outs`: for each pass of
/// [`DEPTH`] input channels, (first column, rows, first output, outputs).
#[inline(always)]
fn for_blocks<const R: usize, const C: usize>(
    s: Shape,
    range: std::ops::Range<usize>,
    outs: std::ops::Range<usize>,
    mut block: impl FnMut((usize, usize), (usize, usize), std::ops::Range<usize>),
) {
    for c0 in (0..s.c_in).step_by(DEPTH) {
        let ci = c0..(c0 + DEPTH).min(s.c_in);
        for co in outs.clone().step_by(C) {
            let cols = C.min(outs.end - co);
            for t in range.clone().step_by(R) {
                block((t, R.min(range.end - t)), (co, cols), ci.clone());
            }
        }
    }
}

#[inline(always)]
unsafe fn products_portable(
    s: Shape,
    u: *const f32,
    v: *const f32,
    m: *mut f32,
    range: std::ops::Range<usize>,
    outs: std::ops::Range<usize>,
) {
    for_blocks::<ROWS, COLS>(s, range, outs, |rows, cols, ci| {
        // SAFETY: as this function requires.
        unsafe { block_portable(s, (u, v, m), rows, cols, ci) }
    });
}

#[cfg(target_arch = "x86_64")]
mod x86 {
    use super::*;
    use std::arch::x86_64::*;

    /// [`products_portable`] with blocks of 16 outputs in AVX2 registers
    /// (up to 6 × 16 accumulators); the same sums, in the same order.
    #[target_feature(enable = "avx2,fma")]
    pub(super) unsafe fn products(
        s: Shape,
        u: *const f32,
        v: *const f32,
        m: *mut f32,
        range: std::ops::Range<usize>,
        outs: std::ops::Range<usize>,
    ) {
        for_blocks::<ROWS, COLS>(s, range, outs, |rows, cols, ci| {
            // SAFETY: the caller's CPU has AVX2 and FMA; the blocks lie in
            // the arrays as `products` requires.
            unsafe { block_avx2(s, (u, v, m), rows, cols, ci) }
        });
    }

    /// One block of at most 6 tiles × 16 outputs.
    #[inline]
    #[target_feature(enable = "avx2,fma")]
    unsafe fn block_avx2(
        s: Shape,
        at: (*const f32, *const f32, *mut f32),
        (t, rows): (usize, usize),
        (co, cols): (usize, usize),
        ci: std::ops::Range<usize>,
    ) {
        unsafe {
            match (rows, cols == COLS) {
                (6, true) => block::<6>(s, at, t, co, ci),
                (5, true) => block::<5>(s, at, t, co, ci),
                (4, true) => block::<4>(s, at, t, co, ci),
                (3, true) => block::<3>(s, at, t, co, ci),
                (2, true) => block::<2>(s, at, t, co, ci),
                (1, true) => block::<1>(s, at, t, co, ci),
                _ => block_portable(s, at, (t, rows), (co, cols), ci),
            }
        }
    }

    /// Rows of one block of [`products_avx512`]: 12 × 2 accumulators, two
    /// weight registers and room for the broadcasts in 32 registers.
    const ROWS_512: usize = 12;

    /// [`products`] with blocks of 32 outputs in AVX-512 registers (up to
    /// 12 × 32 accumulators): each output's sum is the same chain of fused
    /// multiply-adds in the same order, so the results are the same bit for
    /// bit; a block of 16 outputs takes [`products`]' kernel.
    #[target_feature(enable = "avx2,fma,avx512f")]
    pub(super) unsafe fn products_avx512(
        s: Shape,
        u: *const f32,
        v: *const f32,
        m: *mut f32,
        range: std::ops::Range<usize>,
        outs: std::ops::Range<usize>,
    ) {
        let at = (u, v, m);
        for_blocks::<ROWS_512, { 2 * COLS }>(s, range, outs, |(t, rows), (co, cols), ci| {
            // SAFETY: the caller's CPU has AVX-512F, AVX2 and FMA; the
            // blocks lie in the arrays as `products` requires.
            unsafe {
                if cols == 2 * COLS {
                    match rows {
                        12 => block_512::<12>(s, at, t, co, ci),
                        11 => block_512::<11>(s, at, t, co, ci),
                        10 => block_512::<10>(s, at, t, co, ci),
                        9 => block_512::<9>(s, at, t, co, ci),
                        8 => block_512::<8>(s, at, t, co, ci),
                        7 => block_512::<7>(s, at, t, co, ci),
                        6 => block_512::<6>(s, at, t, co, ci),
                        5 => block_512::<5>(s, at, t, co, ci),
                        4 => block_512::<4>(s, at, t, co, ci),
                        3 => block_512::<3>(s, at, t, co, ci),
                        2 => block_512::<2>(s, at, t, co, ci),
                        _ => block_512::<1>(s, at, t, co, ci),
                    }
                } else {
                    // the last outputs (fewer than 32) in AVX2 blocks
                    for c in (co..co + cols).step_by(COLS) {
                        let n = COLS.min(co + cols - c);
                        for r in (t..t + rows).step_by(ROWS) {
                            let rows = (r, ROWS.min(t + rows - r));
                            block_avx2(s, at, rows, (c, n), ci.clone());
                        }
                    }
                }
            }
        });
    }

    /// `R` tiles × 32 outputs in AVX-512 registers.
    #[inline]
    #[target_feature(enable = "avx2,fma,avx512f")]
    unsafe fn block_512<const R: usize>(
        s: Shape,
        (u, v, m): (*const f32, *const f32, *mut f32),
        t: usize,
        co: usize,
        ci: std::ops::Range<usize>,
    ) {
        unsafe {
            let mut acc = [[_mm512_setzero_ps(); 2]; R];
            let vrow = v.add(t * s.c_in);
            for i in ci.clone() {
                let row = u.add(i * s.c_out + co);
                let (u0, u1) = (_mm512_loadu_ps(row), _mm512_loadu_ps(row.add(16)));
                for (j, a) in acc.iter_mut().enumerate() {
                    let b = _mm512_set1_ps(*vrow.add(j * s.c_in + i));
                    a[0] = _mm512_fmadd_ps(b, u0, a[0]);
                    a[1] = _mm512_fmadd_ps(b, u1, a[1]);
                }
            }
            for (j, a) in acc.iter().enumerate() {
                let out = m.add((t + j) * s.c_out + co);
                let (mut a0, mut a1) = (a[0], a[1]);
                if ci.start > 0 {
                    a0 = _mm512_add_ps(_mm512_loadu_ps(out), a0);
                    a1 = _mm512_add_ps(_mm512_loadu_ps(out.add(16)), a1);
                }
                _mm512_storeu_ps(out, a0);
                _mm512_storeu_ps(out.add(16), a1);
            }
        }
    }

    /// `R` tiles × 16 outputs in registers.
    #[inline]
    #[target_feature(enable = "avx2,fma")]
    unsafe fn block<const R: usize>(
        s: Shape,
        (u, v, m): (*const f32, *const f32, *mut f32),
        t: usize,
        co: usize,
        ci: std::ops::Range<usize>,
    ) {
        unsafe {
            let mut acc = [[_mm256_setzero_ps(); 2]; R];
            let vrow = v.add(t * s.c_in);
            for i in ci.clone() {
                let row = u.add(i * s.c_out + co);
                let (u0, u1) = (_mm256_loadu_ps(row), _mm256_loadu_ps(row.add(8)));
                for (j, a) in acc.iter_mut().enumerate() {
                    let b = _mm256_broadcast_ss(&*vrow.add(j * s.c_in + i));
                    a[0] = _mm256_fmadd_ps(b, u0, a[0]);
                    a[1] = _mm256_fmadd_ps(b, u1, a[1]);
                }
            }
            for (j, a) in acc.iter().enumerate() {
                let out = m.add((t + j) * s.c_out + co);
                let (mut a0, mut a1) = (a[0], a[1]);
                if ci.start > 0 {
                    a0 = _mm256_add_ps(_mm256_loadu_ps(out), a0);
                    a1 = _mm256_add_ps(_mm256_loadu_ps(out.add(8)), a1);
                }
                _mm256_storeu_ps(out, a0);
                _mm256_storeu_ps(out.add(8), a1);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use crate::ggml::{Backend, GgmlType, OwnedGraph, Slot};
    use std::sync::Arc;

    fn product(w: &[f32], [n, k, b]: [usize; 3], x: &[f32], m: usize) -> Vec<f32> {
        let backend = Arc::new(Backend::cpu(2));
        let mut g = OwnedGraph::build(&backend, 16, |ctx| {
            let wt = ctx
                .new_tensor(GgmlType::F32, &[n as i64, k as i64, b as i64])
                .set_input();
            let xt = ctx
                .new_tensor(GgmlType::F32, &[k as i64, m as i64, b as i64])
                .set_input();
            let y = ctx.mul_mat_outputs_fastest(wt, xt);
            let io: [Slot; 3] = [ctx.slot(wt), ctx.slot(xt), ctx.slot(y)];
            (io, vec![y])
        });
        let io = *g.io();
        g.compute(|g| {
            g.tensor(io[0]).set_f32(w);
            g.tensor(io[1]).set_f32(x);
        })
        .unwrap();
        g.tensor(io[2]).get_f32()
    }

    /// Against the f64 sums, for outputs and depths that are and are not
    /// multiples of the blocks, and a batch; and a column's result is the
    /// same alone as among many.
    #[test]
    fn matches_f64_and_is_column_invariant() {
        for (n, k, m, b) in [
            (16, 64, 6, 1),
            (37, 200, 13, 2),
            (96, 96, 530, 1),
            (5, 3, 2, 3),
        ] {
            let w: Vec<f32> = (0..n * k * b)
                .map(|i| ((i * 7919 % 997) as f32 - 498.0) * 1e-3)
                .collect();
            let x: Vec<f32> = (0..k * m * b)
                .map(|i| ((i * 104_729 % 991) as f32 - 495.0) * 1e-3)
                .collect();
            let y = product(&w, [n, k, b], &x, m);
            for bi in 0..b {
                for j in 0..m {
                    for o in 0..n {
                        let want: f64 = (0..k)
                            .map(|i| {
                                w[(bi * k + i) * n + o] as f64 * x[(bi * m + j) * k + i] as f64
                            })
                            .sum();
                        let got = y[(bi * m + j) * n + o] as f64;
                        assert!(
                            (got - want).abs() <= 1e-5 * (1.0 + want.abs()),
                            "{n} {k} {m} {b}: {got} vs {want}"
                        );
                    }
                }
            }
            if b == 1 && m > 1 {
                let one = product(&w, [n, k, 1], &x[k..2 * k], 1);
                assert_eq!(one, y[n..2 * n], "column 1 alone");
            }
        }
    }

    /// The AVX-512 blocks give the AVX2 blocks' results bit for bit (each
    /// output the same chain of fused multiply-adds), for outputs and rows
    /// that do and do not fill the blocks.
    #[cfg(target_arch = "x86_64")]
    #[test]
    fn avx512_blocks_equal_avx2_blocks() {
        if !super::avx512_supported() {
            return;
        }
        for (c_out, c_in, tiles) in [(96, 96, 530), (48, 200, 13), (37, 70, 25), (1536, 1024, 7)] {
            let u: Vec<f32> = (0..c_out * c_in)
                .map(|i| ((i * 7919 % 997) as f32 - 498.0) * 1e-3)
                .collect();
            let v: Vec<f32> = (0..c_in * tiles)
                .map(|i| ((i * 104_729 % 991) as f32 - 495.0) * 1e-3)
                .collect();
            let s = super::Shape { c_in, c_out };
            let run = |wide: bool| {
                let mut m = vec![0.0f32; c_out * tiles];
                let at = (u.as_ptr(), v.as_ptr(), m.as_mut_ptr());
                unsafe {
                    match wide {
                        true => {
                            super::x86::products_avx512(s, at.0, at.1, at.2, 0..tiles, 0..c_out)
                        }
                        false => super::x86::products(s, at.0, at.1, at.2, 0..tiles, 0..c_out),
                    }
                }
                m
            };
            assert_eq!(run(true), run(false), "{c_out} × {c_in}, {tiles} columns");
        }
    }
}
