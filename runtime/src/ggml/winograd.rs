//! Fast convolution for the CPU backend: Winograd / Toom–Cook F(m, k).
//!
//! A causal conv of `k` taps at dilation `d` gives `m` outputs spaced `d`
//! apart (a *tile*) from `α = m + k − 1` inputs spaced `d` apart as
//! `y = Aᵀ[(G g) ⊙ (Bᵀ x)]`: with the kernel transformed once at load
//! (`U = G g`, α matrices, output channels fastest), a tile costs α
//! products over the channels instead of `m·k` — for F(4, 7), 10 instead of
//! 28. The inputs are transformed by [`Context::conv_winograd`]'s first op
//! (`V = Bᵀ x`, α matrices `[c_in, tiles]`), multiplied by the batched
//! product of `gemm` (`M_ξ = U_ξ V_ξ`), and the outputs recovered by its
//! last op (`Aᵀ M`, plus the bias). A small kernel's convolution runs a few
//! segments at a time so that `V` and `M` stay in cache.
//!
//! Tiles never cross a *segment* boundary (a multiple of `segment` output
//! positions; the decoder's segment is one frame at that layer): within a
//! segment, blocks of `m·d` consecutive outputs make `d` tiles (one per
//! phase), the last block's tiles cut off at the segment's end, and inputs
//! past the segment's end read as zeros. So every output is computed from
//! the same numbers whether the next segment is in the same call or a later
//! one, and a stream decoded in whole segments of any schedule equals the
//! whole decoded at once, bit for bit, with nothing held back.
//!
//! The points are 0, ±1, ±2, ±1/2, ±3/4 and ∞, chosen by measured F32
//! error: F(4, 7) with them is ~15× the direct product's rounding error per
//! conv (relative RMS 5e-6, 107 dB); ±3 or ±1/4 instead of ±3/4 double it,
//! and F(6, 7) is 2.3× worse. Over the whole vocoder: 98 dB waveform SNR
//! against the direct F32 convolution.

use std::sync::OnceLock;

use ggml_sys as sys;

use super::gemm::fma_supported;
use super::{Context, GgmlType, Tensor};

/// Outputs per tile.
pub const TILE: usize = 4;
/// Transformed kernels up to this size are applied a few segments at a time.
const SMALL_KERNEL_BYTES: usize = 4 << 20;
/// The transformed inputs of a few segments: what stays in cache.
const CHUNK_BYTES: usize = 1 << 20;
/// The finite interpolation points, in the order they are taken (∞ is the last).
const POINTS: [f64; 9] = [0.0, 1.0, -1.0, 2.0, -2.0, 0.5, -0.5, 0.75, -0.75];
/// The largest kernel the points serve: `α − 1 = TILE + k − 2 ≤ POINTS.len()`.
pub const MAX_KERNEL: usize = POINTS.len() + 2 - TILE;
const MAX_ALPHA: usize = TILE + MAX_KERNEL - 1;

/// Whether a causal conv of `k` taps to `c_out` channels is computed with
/// [`Context::conv_winograd`] on the CPU. Short kernels gain too little over
/// the tiles a short segment wastes; one output channel makes the products
/// matrix × vector, which the direct path does as well.
pub fn applies(k: usize, c_out: usize) -> bool {
    (5..=MAX_KERNEL).contains(&k) && c_out > 1 && fma_supported()
}

/// The transforms of F([`TILE`], k).
pub struct Transform {
    k: usize,
    alpha: usize,
    /// `Aᵀ` `[TILE][α]` (output `i` from the products).
    at: Vec<[f32; MAX_ALPHA]>,
    /// `G` `[α][k]`, in f64: applied once per kernel at load.
    g: Vec<Vec<f64>>,
    /// `Bᵀ` by rows, only the non-zero terms: `(input, coefficient)`.
    bt: Vec<Vec<(usize, f32)>>,
}

impl Transform {
    /// F(TILE, k) for `2 ≤ k ≤ MAX_KERNEL` (built once per `k`).
    pub fn get(k: usize) -> &'static Transform {
        static CACHE: [OnceLock<Transform>; MAX_KERNEL + 1] =
            [const { OnceLock::new() }; MAX_KERNEL + 1];
        assert!(
            (2..=MAX_KERNEL).contains(&k),
            "no Winograd transform for k = {k}"
        );
        CACHE[k].get_or_init(|| Transform::new(k))
    }

    /// Toom–Cook: the correlation is the transpose of the linear convolution
    /// `x * g` computed by evaluation at the points and interpolation, so
    /// `Aᵀ` evaluates (Vandermonde rows), `G` evaluates the kernel and `Bᵀ`
    /// is the transposed interpolation (the inverse of the Vandermonde
    /// matrix with ∞ as the leading coefficient). Each row of `Bᵀ` is
    /// scaled to largest coefficient 1 and `G`'s row by the inverse.
    fn new(k: usize) -> Self {
        let alpha = TILE + k - 1;
        let pts = &POINTS[..alpha - 1];
        let pow = |p: f64, e: usize| p.powi(e as i32); // 0⁰ = 1
        let mut vander = vec![vec![0.0; alpha]; alpha];
        for (j, &p) in pts.iter().enumerate() {
            for (q, v) in vander[j].iter_mut().enumerate() {
                *v = pow(p, q);
            }
        }
        vander[alpha - 1][alpha - 1] = 1.0;
        let inv = invert(vander);
        let mut bt: Vec<Vec<f64>> = (0..alpha)
            .map(|j| (0..alpha).map(|l| inv[l][j]).collect())
            .collect();
        let mut g: Vec<Vec<f64>> = (0..alpha)
            .map(|j| match pts.get(j) {
                Some(&p) => (0..k).map(|q| pow(p, q)).collect(),
                None => (0..k).map(|q| (q == k - 1) as u8 as f64).collect(),
            })
            .collect();
        for (row, grow) in bt.iter_mut().zip(&mut g) {
            let s = row.iter().fold(0.0f64, |m, v| m.max(v.abs()));
            row.iter_mut().for_each(|v| *v /= s);
            grow.iter_mut().for_each(|v| *v *= s);
        }
        let at = (0..TILE)
            .map(|i| {
                let mut row = [0.0f32; MAX_ALPHA];
                for (j, r) in row.iter_mut().enumerate().take(alpha) {
                    *r = match pts.get(j) {
                        Some(&p) => pow(p, i) as f32,
                        None => (i == TILE - 1) as u8 as f32,
                    };
                }
                row
            })
            .collect();
        let bt = bt
            .iter()
            .map(|row| {
                row.iter()
                    .enumerate()
                    .filter(|(_, v)| v.abs() > 1e-12)
                    .map(|(l, &v)| (l, v as f32))
                    .collect()
            })
            .collect();
        Self {
            k,
            alpha,
            at,
            g,
            bt,
        }
    }

    /// Inputs per tile.
    pub fn alpha(&self) -> usize {
        self.alpha
    }

    /// A kernel `w` stored `[k, c_in, c_out]` (taps fastest, as in the
    /// file) → `U` `[c_out, c_in, α]` (output channels fastest: the
    /// products broadcast an input and multiply a row of outputs). Summed
    /// in f64 and rounded once; the input channels are split over the
    /// machine's cores (a load transforms ~40 M values).
    pub fn kernel(&self, w: &[f32], c_in: usize, c_out: usize) -> Vec<f32> {
        let (k, alpha) = (self.k, self.alpha);
        assert_eq!(w.len(), k * c_in * c_out, "kernel size");
        let mut u = vec![0.0f32; alpha * c_out * c_in];
        let threads = std::thread::available_parallelism()
            .map_or(1, |n| n.get())
            .min(8);
        let per = c_in.div_ceil(threads).max(1);
        // Thread t's share: input channels t·per.., in every point's block.
        let mut shares: Vec<Vec<&mut [f32]>> =
            (0..c_in.div_ceil(per)).map(|_| Vec::new()).collect();
        for block in u.chunks_mut(c_in * c_out) {
            for (t, part) in block.chunks_mut(per * c_out).enumerate() {
                shares[t].push(part);
            }
        }
        std::thread::scope(|scope| {
            for (t, mut parts) in shares.into_iter().enumerate() {
                scope.spawn(move || {
                    // One input channel's taps, outputs fastest, and a point's sums.
                    let mut taps = vec![0.0f64; k * c_out];
                    let mut acc = vec![0.0f64; c_out];
                    for (i, ci) in (t * per..((t + 1) * per).min(c_in)).enumerate() {
                        for co in 0..c_out {
                            let src = &w[(co * c_in + ci) * k..][..k];
                            for (q, &v) in src.iter().enumerate() {
                                taps[q * c_out + co] = v as f64;
                            }
                        }
                        for (g, part) in self.g.iter().zip(parts.iter_mut()) {
                            acc.fill(0.0);
                            for (q, &gq) in g.iter().enumerate() {
                                for (a, &v) in acc.iter_mut().zip(&taps[q * c_out..][..c_out]) {
                                    *a += gq * v;
                                }
                            }
                            for (o, &a) in part[i * c_out..][..c_out].iter_mut().zip(&acc) {
                                *o = a as f32;
                            }
                        }
                    }
                });
            }
        });
        u
    }
}

/// Gauss–Jordan inverse with partial pivoting (the small, well-conditioned
/// Vandermonde matrices of the points).
fn invert(mut a: Vec<Vec<f64>>) -> Vec<Vec<f64>> {
    let n = a.len();
    let mut inv: Vec<Vec<f64>> = (0..n)
        .map(|i| (0..n).map(|j| (i == j) as u8 as f64).collect())
        .collect();
    for col in 0..n {
        let piv = (col..n)
            .max_by(|&x, &y| a[x][col].abs().total_cmp(&a[y][col].abs()))
            .expect("a column");
        a.swap(col, piv);
        inv.swap(col, piv);
        let p = a[col][col];
        assert!(p.abs() > 1e-12, "singular Vandermonde matrix");
        for j in 0..n {
            a[col][j] /= p;
            inv[col][j] /= p;
        }
        for r in 0..n {
            if r != col && a[r][col] != 0.0 {
                let f = a[r][col];
                for j in 0..n {
                    a[r][j] -= f * a[col][j];
                    inv[r][j] -= f * inv[col][j];
                }
            }
        }
    }
    inv
}

/// Where a conv's tiles lie: `k` taps, dilation, segment length (outputs),
/// and the segment the first tile is in (an op computing part of a conv).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Tiling {
    k: usize,
    dilation: usize,
    segment: usize,
    first: usize,
}

impl Tiling {
    /// Tiles per segment: `d` per block of `TILE·d` outputs.
    fn per_segment(self) -> usize {
        self.segment.div_ceil(TILE * self.dilation) * self.dilation
    }

    /// Tile `t`'s first output position, and the end of its segment.
    fn place(self, t: usize) -> (usize, usize) {
        let per = self.per_segment();
        let (seg, rest) = (self.first + t / per, t % per);
        let (block, phase) = (rest / self.dilation, rest % self.dilation);
        let start = seg * self.segment;
        (
            start + block * TILE * self.dilation + phase,
            start + self.segment,
        )
    }

    /// Packed into the ops' `userdata` word: k 4 bits, dilation 12, segment
    /// 24, first 24.
    fn pack(self) -> *mut std::os::raw::c_void {
        assert!(
            self.k < 1 << 4
                && self.dilation < 1 << 12
                && self.segment < 1 << 24
                && self.first < 1 << 24,
            "Winograd tiling out of range: {self:?}"
        );
        let w = (self.k as u64) << 60
            | (self.dilation as u64) << 48
            | (self.segment as u64) << 24
            | self.first as u64;
        w as usize as *mut std::os::raw::c_void
    }

    fn unpack(word: *mut std::os::raw::c_void) -> Self {
        let w = word as usize as u64;
        Self {
            k: (w >> 60) as usize,
            dilation: ((w >> 48) & 0xfff) as usize,
            segment: ((w >> 24) & 0xff_ffff) as usize,
            first: (w & 0xff_ffff) as usize,
        }
    }
}

impl Context {
    /// A causal conv by F([`TILE`], k): `xp` `[c_in, (k − 1)·d + n]` (the
    /// input with its left context, contiguous F32), `u` the kernel from
    /// [`Transform::kernel`] `[c_out, c_in, α]` (F32), `bias`
    /// `[c_out]` or none → `[c_out, n]`, tiled within segments of `segment`
    /// outputs (`n` a multiple of it; see the module docs).
    pub fn conv_winograd<'a>(
        &'a self,
        xp: Tensor<'a>,
        u: Tensor<'a>,
        bias: Option<Tensor<'a>>,
        dilation: usize,
        segment: usize,
    ) -> Tensor<'a> {
        let [c_in, len, ..] = xp.ne();
        let [c_out, uc_in, alpha, _] = u.ne();
        let k = (alpha as usize + 1).saturating_sub(TILE);
        let pad = (k.max(1) - 1) * dilation;
        let n = len as usize - pad.min(len as usize);
        assert!(
            uc_in == c_in
                && (2..=MAX_KERNEL).contains(&k)
                && dilation >= 1
                && n > 0
                && segment > 0
                && n.is_multiple_of(segment)
                && xp.ty() == GgmlType::F32
                && xp.is_contiguous()
                && u.ty() == GgmlType::F32
                && u.is_contiguous(),
            "conv_winograd: input {:?}, kernel {:?} {:?}, dilation {dilation}, segment {segment}",
            xp.ne(),
            u.ne(),
            u.ty()
        );
        if let Some(b) = bias {
            assert!(
                b.ty() == GgmlType::F32 && b.n_elements() == c_out && b.is_contiguous(),
                "conv_winograd: bias {:?}",
                b.ne()
            );
        }
        let tiling = |first| Tiling {
            k,
            dilation,
            segment,
            first,
        };
        let per_segment = tiling(0).per_segment();
        let segments = n / segment;
        // With a small kernel the products are quick, and the transformed
        // inputs and the products (2.5 times the input each) would go to
        // memory and back: a few segments at a time they stay in cache. A
        // large kernel is better read once for all segments.
        let u_bytes = (alpha * c_in * c_out) as usize * 4;
        let v_bytes = alpha as usize * per_segment * c_in.max(c_out) as usize * 4;
        let chunk = match u_bytes <= SMALL_KERNEL_BYTES {
            true => (CHUNK_BYTES / v_bytes).max(1),
            false => segments,
        };
        let es = xp.element_size();
        let mut y: Option<Tensor<'a>> = None;
        for first in (0..segments).step_by(chunk) {
            let count = chunk.min(segments - first);
            let part = match count == segments {
                true => xp,
                false => self.view(
                    xp,
                    &[c_in, (pad + count * segment) as i64],
                    &[c_in as usize * es],
                    first * segment * c_in as usize * es,
                ),
            };
            let mut args = [part.raw()];
            let v = self.wrap(unsafe {
                sys::ggml_custom_4d(
                    self.raw(),
                    GgmlType::F32.raw(),
                    c_in,
                    (count * per_segment) as i64,
                    alpha,
                    1,
                    args.as_mut_ptr(),
                    1,
                    Some(input_thunk),
                    sys::GGML_N_TASKS_MAX,
                    tiling(0).pack(),
                )
            });
            let m = self.mul_mat_outputs_fastest(u, v); // [c_out, tiles, α]
            let mut args: Vec<_> = std::iter::once(m.raw())
                .chain(bias.map(|b| b.raw()))
                .collect();
            // The first part creates the output, the others write into it.
            y = Some(self.wrap(unsafe {
                match y {
                    None => sys::ggml_custom_4d(
                        self.raw(),
                        GgmlType::F32.raw(),
                        c_out,
                        n as i64,
                        1,
                        1,
                        args.as_mut_ptr(),
                        args.len() as i32,
                        Some(output_thunk),
                        sys::GGML_N_TASKS_MAX,
                        tiling(first).pack(),
                    ),
                    Some(y) => sys::ggml_custom_inplace(
                        self.raw(),
                        y.raw(),
                        args.as_mut_ptr(),
                        args.len() as i32,
                        Some(output_inplace_thunk),
                        sys::GGML_N_TASKS_MAX,
                        tiling(first).pack(),
                    ),
                }
            }));
        }
        y.expect("at least one segment")
    }
}

/// `out = Σ coef · x` over `terms` (in order), `out` first set to `init`
/// (or to the first term). Plain multiplies and adds (no fused multiply-add),
/// so the vectorised and the scalar build give the same bits.
#[inline(always)]
fn combine(out: &mut [f32], init: Option<&[f32]>, terms: &[(&[f32], f32)]) {
    let n = out.len();
    let mut rest = terms;
    match init {
        Some(b) => out.copy_from_slice(&b[..n]),
        None => {
            let (x, c) = terms[0];
            for (o, &v) in out.iter_mut().zip(&x[..n]) {
                *o = c * v;
            }
            rest = &terms[1..];
        }
    }
    for &(x, c) in rest {
        for (o, &v) in out.iter_mut().zip(&x[..n]) {
            *o += c * v;
        }
    }
}

/// [`combine`] compiled for AVX2 (eight lanes) where the CPU has it.
fn combine_dispatch(out: &mut [f32], init: Option<&[f32]>, terms: &[(&[f32], f32)]) {
    #[cfg(target_arch = "x86_64")]
    {
        #[target_feature(enable = "avx2")]
        unsafe fn avx2(out: &mut [f32], init: Option<&[f32]>, terms: &[(&[f32], f32)]) {
            combine(out, init, terms)
        }
        static AVX2: OnceLock<bool> = OnceLock::new();
        if *AVX2.get_or_init(|| is_x86_feature_detected!("avx2")) {
            // SAFETY: the CPU has AVX2 (checked above).
            return unsafe { avx2(out, init, terms) };
        }
    }
    combine(out, init, terms)
}

/// Thread `ith`'s share of the tiles: `V_ξ = Bᵀ x` per tile, inputs past
/// the tile's segment read as zeros.
unsafe extern "C" fn input_thunk(
    dst: *mut sys::ggml_tensor,
    ith: std::os::raw::c_int,
    nth: std::os::raw::c_int,
    userdata: *mut std::os::raw::c_void,
) {
    // SAFETY: `conv_winograd` checked that the input is contiguous F32
    // `[c, (k − 1)·d + n]` and created the output contiguous F32 `[c, tiles, α]`
    // with tiles as `Tiling` places them; every input column
    // read lies before its segment's end plus the left context, within the
    // input, and every output slice within the output.
    unsafe {
        let dst = &*dst;
        let x = &*dst.src[0];
        let tiling = Tiling::unpack(userdata);
        let tr = Transform::get(tiling.k);
        let (c, len) = (x.ne[0] as usize, x.ne[1] as usize);
        let tiles = dst.ne[1] as usize;
        let src = std::slice::from_raw_parts(x.data as *const f32, c * len);
        let pad = (tiling.k - 1) * tiling.dilation;
        let zeros = vec![0.0f32; c];
        let (ith, nth) = (ith as usize, nth as usize);
        let mut inputs: [&[f32]; MAX_ALPHA] = [&[]; MAX_ALPHA];
        let mut terms: Vec<(&[f32], f32)> = Vec::with_capacity(MAX_ALPHA);
        for t in tiles * ith / nth..tiles * (ith + 1) / nth {
            let (first, seg_end) = tiling.place(t);
            // Input ι of the tile is column first + ι·d of `xp`, i.e. input
            // position first + ι·d − pad; past the segment's end it is zero.
            for (i, slot) in inputs.iter_mut().enumerate().take(tr.alpha) {
                let col = first + i * tiling.dilation;
                *slot = if col < seg_end + pad {
                    &src[col * c..][..c]
                } else {
                    &zeros
                };
            }
            for (xi, row) in tr.bt.iter().enumerate() {
                terms.clear();
                terms.extend(row.iter().map(|&(l, coef)| (inputs[l], coef)));
                let at = (xi * tiles + t) * c;
                let out = std::slice::from_raw_parts_mut((dst.data as *mut f32).add(at), c);
                combine_dispatch(out, None, &terms);
            }
        }
    }
}

/// Thread `ith`'s share of the tiles: outputs `Aᵀ M` (+ bias) of each tile
/// inside its segment, into a new tensor (sources: products, bias).
unsafe extern "C" fn output_thunk(
    dst: *mut sys::ggml_tensor,
    ith: std::os::raw::c_int,
    nth: std::os::raw::c_int,
    userdata: *mut std::os::raw::c_void,
) {
    // SAFETY: as `outputs` requires (`conv_winograd` made the op so).
    unsafe { outputs(dst, 0, ith, nth, userdata) }
}

/// [`output_thunk`] into the output of an earlier part (sources: that
/// output, products, bias).
unsafe extern "C" fn output_inplace_thunk(
    dst: *mut sys::ggml_tensor,
    ith: std::os::raw::c_int,
    nth: std::os::raw::c_int,
    userdata: *mut std::os::raw::c_void,
) {
    // SAFETY: as `outputs` requires (`conv_winograd` made the op so).
    unsafe { outputs(dst, 1, ith, nth, userdata) }
}

/// # Safety
/// `dst` is contiguous F32 `[c, n]`; its sources from `src` on are the
/// products `[c, tiles, α]` (F32, contiguous: ggml's mul_mat result) and
/// a contiguous F32 bias of `c` or none; the tiles, placed by the tiling in
/// `userdata`, lie inside `dst` (tiles write disjoint output columns).
unsafe fn outputs(
    dst: *mut sys::ggml_tensor,
    src: usize,
    ith: std::os::raw::c_int,
    nth: std::os::raw::c_int,
    userdata: *mut std::os::raw::c_void,
) {
    unsafe {
        let dst = &*dst;
        let m = &*dst.src[src];
        let tiling = Tiling::unpack(userdata);
        let tr = Transform::get(tiling.k);
        let (c, tiles, alpha) = (m.ne[0] as usize, m.ne[1] as usize, m.ne[2] as usize);
        let prod = std::slice::from_raw_parts(m.data as *const f32, c * tiles * alpha);
        let b = dst.src[src + 1];
        let bias = (!b.is_null()).then(|| std::slice::from_raw_parts((*b).data as *const f32, c));
        let (ith, nth) = (ith as usize, nth as usize);
        let mut terms: Vec<(&[f32], f32)> = Vec::with_capacity(MAX_ALPHA);
        for t in tiles * ith / nth..tiles * (ith + 1) / nth {
            let (first, seg_end) = tiling.place(t);
            for (i, coefs) in tr.at.iter().enumerate() {
                let pos = first + i * tiling.dilation;
                if pos >= seg_end {
                    break;
                }
                terms.clear();
                terms.extend(
                    (0..alpha)
                        .filter(|&xi| coefs[xi] != 0.0)
                        .map(|xi| (&prod[(xi * tiles + t) * c..][..c], coefs[xi])),
                );
                let out = std::slice::from_raw_parts_mut((dst.data as *mut f32).add(pos * c), c);
                combine_dispatch(out, bias, &terms);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// `Aᵀ[(G g) ⊙ (Bᵀ x)]` is the correlation of `x` with `g`: the
    /// transforms of every kernel size satisfy the bilinear identity.
    #[test]
    fn transforms_compute_the_correlation() {
        for k in 2..=MAX_KERNEL {
            let tr = Transform::get(k);
            let a = tr.alpha;
            let mut bt = vec![vec![0.0f64; a]; a];
            for (xi, row) in tr.bt.iter().enumerate() {
                for &(l, c) in row {
                    bt[xi][l] = c as f64;
                }
            }
            for i in 0..TILE {
                for q in 0..k {
                    for l in 0..a {
                        let s: f64 = bt
                            .iter()
                            .enumerate()
                            .map(|(xi, row)| tr.at[i][xi] as f64 * tr.g[xi][q] * row[l])
                            .sum();
                        let want = (l == i + q) as u8 as f64;
                        assert!((s - want).abs() < 1e-5, "k {k}: ({i}, {q}, {l}) = {s}");
                    }
                }
            }
        }
    }

    use crate::ggml::{Backend, ConvKernel, OwnedGraph, Slot};
    use std::sync::Arc;

    /// A causal conv through the ops layer on the CPU backend: `x` `[c_in,
    /// len]` (left context included), kernel `w` stored `[k, c_in, c_out]`.
    #[allow(clippy::too_many_arguments)]
    fn conv(
        layout: ConvKernel,
        x: &[f32],
        c_in: usize,
        w: &[f32],
        bias: &[f32],
        c_out: usize,
        dilation: usize,
        segment: usize,
    ) -> Vec<f32> {
        let k = layout.k();
        let kernel: Vec<f32> = match layout {
            ConvKernel::Unfolded { .. } => {
                let bytes = crate::weights::permute3(
                    crate::ggml::as_bytes(w),
                    4,
                    [k, c_in, c_out],
                    [1, 0, 2],
                );
                bytes
                    .chunks_exact(4)
                    .map(|b| f32::from_le_bytes(b.try_into().unwrap()))
                    .collect()
            }
            ConvKernel::Winograd { .. } => Transform::get(k).kernel(w, c_in, c_out),
            ConvKernel::Pointwise => (0..c_in * c_out)
                .map(|i| w[(i % c_out) * c_in + i / c_out])
                .collect(),
        };
        let dims = layout.dims(c_in, c_out).map(|d| d as i64);
        let len = (x.len() / c_in) as i64;
        let backend = Arc::new(Backend::cpu(2));
        let mut g = OwnedGraph::build(&backend, 1024, |ctx| {
            ctx.set_column_invariant(true);
            let xt = ctx
                .new_tensor(GgmlType::F32, &[c_in as i64, len])
                .set_input();
            let wt = ctx.new_tensor(GgmlType::F32, &dims).set_input();
            let bt = ctx.new_tensor(GgmlType::F32, &[c_out as i64]).set_input();
            let y = ctx.causal_conv(xt, wt, layout, Some(bt), dilation, segment);
            let io: [Slot; 4] = [ctx.slot(xt), ctx.slot(wt), ctx.slot(bt), ctx.slot(y)];
            (io, vec![y])
        });
        let io = *g.io();
        g.compute(|g| {
            g.tensor(io[0]).set_f32(x);
            g.tensor(io[1]).set_f32(&kernel);
            g.tensor(io[2]).set_f32(bias);
        })
        .unwrap();
        g.tensor(io[3]).get_f32()
    }

    fn noise(n: usize, seed: u64, scale: f32) -> Vec<f32> {
        let mut s = seed.wrapping_mul(0x9e37_79b9_7f4a_7c15) | 1;
        (0..n)
            .map(|_| {
                s ^= s << 13;
                s ^= s >> 7;
                s ^= s << 17;
                ((s >> 40) as f32 / (1u64 << 24) as f32 - 0.5) * scale
            })
            .collect()
    }

    fn rel_rms(got: &[f32], want: &[f32]) -> f64 {
        let (mut e, mut p) = (0.0f64, 0.0f64);
        for (&a, &b) in got.iter().zip(want) {
            e += ((a - b) as f64).powi(2);
            p += (b as f64).powi(2);
        }
        (e / p).sqrt()
    }

    /// Against the direct F32 conv for every shape of the vocoder's
    /// residual units (channels, dilation, samples per frame at that
    /// layer) and its first conv, other kernel sizes, and segments that end
    /// inside a tile: relative RMS error ≤ 2e-5 (the direct product's own
    /// rounding is ~3e-7; F(4, 7) measures ~5e-6).
    #[test]
    fn matches_the_direct_conv() {
        let mut cases = vec![(64, 96, 7, 1, 4, 3)]; // first conv: 4 columns per frame
        for (c, segment) in [(768, 32), (384, 160), (192, 640), (96, 1920)] {
            for d in [1, 3, 9] {
                cases.push((c, c, 7, d, segment, 2));
            }
        }
        // odd segments and lengths, other kernels
        cases.extend([
            (16, 24, 7, 9, 7, 5),
            (8, 8, 5, 3, 33, 3),
            (24, 16, 6, 2, 13, 4),
        ]);
        // one tap, outputs fastest
        for (c_in, c_out, n) in [(96, 96, 40), (200, 37, 13), (7, 16, 1)] {
            let x = noise(c_in * n, 300, 2.0);
            let w = noise(c_in * c_out, 301, 1.0 / c_in as f32);
            let b = noise(c_out, 302, 0.1);
            let direct = conv(ConvKernel::Unfolded { k: 1 }, &x, c_in, &w, &b, c_out, 1, n);
            let fast = conv(ConvKernel::Pointwise, &x, c_in, &w, &b, c_out, 1, n);
            let err = rel_rms(&fast, &direct);
            assert!(
                err <= 1e-6,
                "pointwise {c_in}→{c_out}: relative error {err:e}"
            );
        }
        for (i, &(c_in, c_out, k, d, segment, segments)) in cases.iter().enumerate() {
            let len = (k - 1) * d + segment * segments;
            let x = noise(c_in * len, i as u64, 2.0);
            let w = noise(k * c_in * c_out, 100 + i as u64, 1.0 / (c_in * k) as f32);
            let b = noise(c_out, 200 + i as u64, 0.1);
            let run = |layout| conv(layout, &x, c_in, &w, &b, c_out, d, segment);
            let (direct, fast) = (
                run(ConvKernel::Unfolded { k }),
                run(ConvKernel::Winograd { k }),
            );
            assert_eq!(fast.len(), c_out * segment * segments);
            let err = rel_rms(&fast, &direct);
            assert!(
                err <= 2e-5,
                "{c_in}→{c_out} k {k} d {d} segment {segment}: relative error {err:e}"
            );
        }
    }

    /// A segment's outputs do not depend on what follows it: the conv of
    /// three segments in one call equals, bit for bit, the first segment
    /// alone and then the next two with the first's tail as left context —
    /// with tiles cut off inside the segments (32 outputs at dilation 9
    /// make tiles of 4 phases apart; 7 at dilation 3).
    #[test]
    fn segments_are_computed_on_their_own() {
        for (c, d, segment) in [(16, 9, 32), (8, 3, 7), (8, 1, 6)] {
            let (k, pad) = (7, 6 * d);
            let x = noise(c * (pad + 3 * segment), d as u64, 2.0);
            let w = noise(k * c * c, 7, 0.2);
            let b = noise(c, 8, 0.1);
            let layout = ConvKernel::Winograd { k };
            let whole = conv(layout, &x, c, &w, &b, c, d, segment);
            let first = conv(layout, &x[..c * (pad + segment)], c, &w, &b, c, d, segment);
            let rest = conv(layout, &x[c * segment..], c, &w, &b, c, d, segment);
            assert_eq!(first, whole[..c * segment], "d {d} segment {segment}");
            assert_eq!(rest, whole[c * segment..], "d {d} segment {segment}");
        }
    }

    #[test]
    fn tiling_packs_and_places() {
        let t = Tiling {
            k: 7,
            dilation: 9,
            segment: 32,
            first: 0,
        };
        assert_eq!(Tiling::unpack(t.pack()), t);
        // 32 outputs at dilation 9: one block of 36, nine tiles (phases).
        assert_eq!(t.per_segment(), 9);
        assert_eq!(t.place(0), (0, 32));
        assert_eq!(t.place(8), (8, 32));
        assert_eq!(t.place(9), (32, 64));
        let t = Tiling {
            k: 7,
            dilation: 3,
            segment: 32,
            first: 5,
        };
        // blocks of 12 outputs: 0, 12, 24 → three blocks of three tiles
        assert_eq!(t.per_segment(), 9);
        assert_eq!(t.place(4), (5 * 32 + 13, 6 * 32));
    }
}
