//! Quantised weights × a few vectors: the per-token hot path of the talker
//! and the code predictor, which streams every weight from memory once per
//! token, so its speed is the memory system's.
//!
//! The arithmetic is ggml's: its `from_float` quantises the vectors and its
//! `vec_dot` kernels take one weight row at a time; for Q8_0 on x86 a copy of
//! ggml's AVX2 dot loop runs inline (same operations in the same order, so
//! the same sums, without a call and a table lookup per block). What differs
//! is the walk over the rows: each thread takes one contiguous range, and
//! the inline loops prefetch [`PREFETCH_AHEAD`] bytes ahead as they go.
//! ggml's own matrix × vector path reached ~55 % of this machine's read
//! bandwidth on two threads (Q8_0 0.6B: 116 ms per frame), this one ~85 %
//! at Q8_0 (~65 ms) and ~65 % at Q4_K (~45 ms; its loop is compute-bound
//! on two cores).
//! Several vectors (the code predictor's two-token first pass) are dotted
//! with each row while it is in cache, where ggml would switch to its tiled
//! GEMM (slower here). F16 and F32 weights stay on ggml's path (no gain),
//! except in a row-dot context (decode graphs, see `Context::set_row_dots`):
//! there every weight type and up to [`MAX_ROW_DOT_VECTORS`] vectors take
//! this path, so that each vector's product is the one-vector product
//! whatever else is in the batch (ggml switches to tiled kernels, with
//! another order of summation, from two vectors on).

use ggml_sys as sys;

/// The most vectors one product takes (outside row-dot contexts).
pub const MAX_VECTORS: i64 = 4;
/// The most vectors one product takes in a row-dot context: a decode batch
/// (the code predictor's first pass has two per sequence).
pub const MAX_ROW_DOT_VECTORS: i64 = 64;
/// Prefetch distance in bytes: about a row or two of the widest matrices
/// ahead, far enough to cover memory latency at these streaming rates.
const PREFETCH_AHEAD: usize = 4096;

/// ggml's CPU kernels for a weight type: the row · vector dot, the type the
/// vectors are quantised to first, and that quantiser.
struct Kernels {
    dot: sys::ggml_vec_dot_t,
    vector_type: sys::ggml_type,
    quantise: sys::ggml_from_float_t,
}

/// The kernels of `ty` when it has single-row kernels this path drives.
unsafe fn kernels(ty: sys::ggml_type) -> Option<Kernels> {
    unsafe {
        let traits = sys::ggml_get_type_traits_cpu(ty).as_ref()?;
        if traits.nrows != 1 {
            return None;
        }
        let vector = sys::ggml_get_type_traits_cpu(traits.vec_dot_type).as_ref()?;
        (traits.vec_dot.is_some() && vector.from_float.is_some()).then_some(Kernels {
            dot: traits.vec_dot,
            vector_type: traits.vec_dot_type,
            quantise: vector.from_float,
        })
    }
}

/// Whether `w · x` (weights `[k, n]`, `x` `[k, m]`) takes this path: in a
/// row-dot context any weight type and up to [`MAX_ROW_DOT_VECTORS`]
/// vectors, elsewhere quantised weights and up to [`MAX_VECTORS`].
pub fn applies(w: *const sys::ggml_tensor, x: *const sys::ggml_tensor, row_dots: bool) -> bool {
    unsafe {
        let (w, x) = (&*w, &*x);
        let (eligible, max_vectors) = match row_dots {
            true => (true, MAX_ROW_DOT_VECTORS),
            false => (
                !matches!(w.type_, sys::GGML_TYPE_F32 | sys::GGML_TYPE_F16),
                MAX_VECTORS,
            ),
        };
        eligible
            && w.ne[2] == 1
            && w.ne[3] == 1
            && x.type_ == sys::GGML_TYPE_F32
            && x.ne[0] == w.ne[0]
            && x.ne[1] <= max_vectors
            && x.ne[2] == 1
            && x.ne[3] == 1
            && w.ne[0] % sys::ggml_blck_size(w.type_) == 0
            && sys::ggml_is_contiguous(w)
            && sys::ggml_is_contiguous(x)
            && kernels(w.type_).is_some()
    }
}

/// Thread `ith`'s share of `dst = src[0] · src[1]` (a ggml custom op; see
/// [`applies`] for the shapes). Each thread quantises the vectors itself
/// (microseconds), which saves a barrier.
pub unsafe extern "C" fn compute(
    dst: *mut sys::ggml_tensor,
    ith: std::os::raw::c_int,
    nth: std::os::raw::c_int,
    _userdata: *mut std::os::raw::c_void,
) {
    // SAFETY: `applies` checked the shapes, types and contiguity; `dst` is
    // `[n, m]` F32 as `Context::mul_mat` created it.
    unsafe {
        let dst = &*dst;
        let (w, x) = (&*dst.src[0], &*dst.src[1]);
        let (k, n, m) = (w.ne[0], w.ne[1] as usize, x.ne[1] as usize);
        let (ith, nth) = (ith as usize, nth as usize);
        let (first, end) = (n * ith / nth, n * (ith + 1) / nth);
        let Some(Kernels {
            dot: Some(dot),
            vector_type: vec_ty,
            quantise: Some(quantise),
        }) = kernels(w.type_)
        else {
            return;
        };
        let qrow = sys::ggml_row_size(vec_ty, k);
        // The quantised vectors live in a per-thread buffer that is reused,
        // so the hot path allocates nothing after the first token.
        QUANTISED.with_borrow_mut(|vectors| {
            vectors.resize(qrow * m, 0);
            for c in 0..m {
                let v = (x.data as *const u8).add(c * x.nb[1]) as *const f32;
                quantise(v, vectors.as_mut_ptr().add(c * qrow).cast(), k);
            }
            let row_bytes = w.nb[1];
            let rows = w.data as *const u8;
            let out = dst.data as *mut f32;
            #[cfg(target_arch = "x86_64")]
            if w.type_ == sys::GGML_TYPE_Q8_0 && q8_0::supported() {
                let mut scales = SCALES.take();
                q8_0::scales(vectors, &mut scales);
                let dot_product = q8_0::dot_product();
                let mut offsets = OFFSETS.take();
                if dot_product.is_some() {
                    q8_0::offsets(vectors, &mut offsets);
                }
                let y = |c: usize| q8_0::Vector {
                    blocks: vectors.as_ptr().add(c * qrow),
                    scales: scales.as_ptr().add(c * k as usize / 32),
                    offsets: offsets.as_ptr().wrapping_add(c * k as usize / 4),
                };
                let rows = Rows {
                    data: rows,
                    row_bytes,
                    k: k as usize,
                };
                let range = first..end;
                match dot_product {
                    Some(q8_0::DotProduct::Avx512) => {
                        rows.dot_all::<q8_0::Avx512Vnni>(range, m, y, out, n)
                    }
                    Some(q8_0::DotProduct::Avx) => {
                        rows.dot_all::<q8_0::AvxVnni>(range, m, y, out, n)
                    }
                    None => rows.dot_all::<q8_0::Kernel>(range, m, y, out, n),
                }
                SCALES.set(scales);
                OFFSETS.set(offsets);
                return;
            }
            #[cfg(target_arch = "x86_64")]
            if w.type_ == sys::GGML_TYPE_Q4_K && q8_0::supported() {
                let y = |c: usize| vectors.as_ptr().add(c * qrow);
                let rows = Rows {
                    data: rows,
                    row_bytes,
                    k: k as usize,
                };
                rows.dot_all::<q4_k::Kernel>(first..end, m, y, out, n);
                return;
            }
            for r in first..end {
                let row = rows.add(r * row_bytes);
                prefetch(row.wrapping_add(PREFETCH_AHEAD), row_bytes);
                for c in 0..m {
                    let y = vectors.as_ptr().add(c * qrow);
                    dot(
                        k as i32,
                        out.add(c * n + r),
                        0,
                        row.cast(),
                        0,
                        y.cast(),
                        0,
                        1,
                    );
                }
            }
        });
    }
}

/// An inline kernel dotting one weight row with up to four vectors at once
/// (each vector's sum as alone).
#[cfg(target_arch = "x86_64")]
trait RowDots {
    type Vector: Copy;
    /// # Safety
    /// The CPU features the kernel needs; `row` and the vectors hold `k` values.
    unsafe fn dots<const N: usize>(k: usize, row: *const u8, ys: [Self::Vector; N]) -> [f32; N];
}

/// A thread's weight rows.
#[cfg(target_arch = "x86_64")]
struct Rows {
    data: *const u8,
    row_bytes: usize,
    k: usize,
}

#[cfg(target_arch = "x86_64")]
impl Rows {
    /// `out[c·n + r] = row r · vector c` for the rows in `range`, up to four
    /// vectors per pass over a row (registers), the row staying in L1
    /// between passes.
    ///
    /// # Safety
    /// As [`RowDots::dots`]; `out` holds `n × m` values.
    unsafe fn dot_all<D: RowDots>(
        &self,
        range: std::ops::Range<usize>,
        m: usize,
        y: impl Fn(usize) -> D::Vector,
        out: *mut f32,
        n: usize,
    ) {
        unsafe {
            for r in range {
                let row = self.data.add(r * self.row_bytes);
                let mut c = 0;
                while c < m {
                    let sums: &[f32] = match m - c {
                        1 => &D::dots::<1>(self.k, row, [y(c)]),
                        2 => &D::dots::<2>(self.k, row, [y(c), y(c + 1)]),
                        3 => &D::dots::<3>(self.k, row, [y(c), y(c + 1), y(c + 2)]),
                        _ => &D::dots::<4>(self.k, row, [y(c), y(c + 1), y(c + 2), y(c + 3)]),
                    };
                    for (i, &sum) in sums.iter().enumerate() {
                        *out.add((c + i) * n + r) = sum;
                    }
                    c += sums.len();
                }
            }
        }
    }
}

thread_local! {
    /// Each compute thread's quantised copy of the vectors.
    static QUANTISED: std::cell::RefCell<Vec<u8>> = const { std::cell::RefCell::new(Vec::new()) };
    /// And their Q8_0 block scales as f32.
    static SCALES: std::cell::Cell<Vec<f32>> = const { std::cell::Cell::new(Vec::new()) };
    /// And their Q8_0 blocks' offsets for the dot-product instructions.
    static OFFSETS: std::cell::Cell<Vec<i32>> = const { std::cell::Cell::new(Vec::new()) };
}

/// ggml's AVX2 `ggml_vec_dot_q8_0_q8_0` loop, inline, with a prefetch per
/// block, for up to four vectors at once: each weight block is loaded and
/// prepared once for all of them, and each vector has its own accumulator
/// (independent chains). Every vector's operations are those of the
/// one-vector loop, in its order, so its sum is the same whatever `N` is.
#[cfg(target_arch = "x86_64")]
mod q8_0 {
    use std::arch::x86_64::*;

    /// 32 weights per block: an f16 scale, then 32 i8.
    const QK: usize = 32;
    const BLOCK_BYTES: usize = 2 + QK;

    pub fn supported() -> bool {
        is_x86_feature_detected!("avx2")
            && is_x86_feature_detected!("fma")
            && is_x86_feature_detected!("f16c")
    }

    /// The f16 at `at` (a block's scale) as f32 (exact) in all eight lanes.
    ///
    /// A broadcast writes the whole register. Converting one lane instead
    /// (`_mm_set1_epi16` then `_mm_cvtss_f32`) compiled to a `pinsrw` that
    /// merged into whatever register was free, here the accumulator, which
    /// chained every block's scale to the previous block's FMA: the Q8_0
    /// loop ran 1.2–1.4× slower.
    #[inline]
    #[target_feature(enable = "avx2,fma,f16c")]
    pub(super) unsafe fn half8(at: *const u8) -> __m256 {
        unsafe {
            let h = (at as *const i16).read_unaligned();
            _mm256_cvtph_ps(_mm_set1_epi16(h))
        }
    }

    /// A quantised vector: its blocks, their scales as f32 and, for the
    /// dot-product kernels, their offsets (see [`offsets`]).
    #[derive(Clone, Copy)]
    pub struct Vector {
        pub blocks: *const u8,
        pub scales: *const f32,
        pub offsets: *const i32,
    }

    /// The scales of all blocks of `vectors` (back to back) as f32 into
    /// `out`: converted once rather than once per row.
    pub fn scales(vectors: &[u8], out: &mut Vec<f32>) {
        out.clear();
        out.extend(
            vectors
                .chunks_exact(BLOCK_BYTES)
                .map(|b| ::half::f16::from_le_bytes([b[0], b[1]]).to_f32()),
        );
    }

    /// For each block of `vectors`, eight lanes of `-128 · Σ y` over the
    /// lane's four values: the dot-product kernels multiply the weights
    /// shifted to unsigned (`x + 128`) and start each lane's sum here, so
    /// that it ends as `Σ x · y` exactly.
    pub fn offsets(vectors: &[u8], out: &mut Vec<i32>) {
        out.clear();
        for block in vectors.chunks_exact(BLOCK_BYTES) {
            out.extend(
                block[2..]
                    .chunks_exact(4)
                    .map(|q| -128 * q.iter().map(|&v| v as i8 as i32).sum::<i32>()),
            );
        }
    }

    /// The CPU's 8-bit dot-product instruction (`vpdpbusd`), if it has one.
    #[derive(Clone, Copy, PartialEq, Eq, Debug)]
    pub enum DotProduct {
        /// AVX512-VNNI with AVX512-VL (its 256-bit form).
        Avx512,
        /// AVX-VNNI.
        Avx,
    }

    pub fn dot_product() -> Option<DotProduct> {
        static FOUND: std::sync::OnceLock<Option<DotProduct>> = std::sync::OnceLock::new();
        *FOUND.get_or_init(|| {
            if is_x86_feature_detected!("avx512vnni") && is_x86_feature_detected!("avx512vl") {
                Some(DotProduct::Avx512)
            } else if is_x86_feature_detected!("avxvnni") {
                Some(DotProduct::Avx)
            } else {
                None
            }
        })
    }

    /// [`dots`] with the CPU's dot-product instruction: one `vpdpbusd` per
    /// block and vector in place of the sign, multiply-add and widening
    /// steps. Each lane's integer is the same exact `Σ x · y` over its four
    /// values, and the float steps are those of [`dots`], so the sums are
    /// the same bit for bit (for the weights' range, -127…127).
    macro_rules! dot_product_kernel {
        ($kernel:ident, $dots:ident, $features:literal, $dpbusd:ident) => {
            pub struct $kernel;

            impl super::RowDots for $kernel {
                type Vector = Vector;
                unsafe fn dots<const N: usize>(
                    k: usize,
                    row: *const u8,
                    ys: [Vector; N],
                ) -> [f32; N] {
                    unsafe { $dots(k, row, ys) }
                }
            }

            /// # Safety
            /// The features named; `row` and each of `ys` hold `k / 32`
            /// blocks, and each of `ys` its offsets.
            #[target_feature(enable = $features)]
            unsafe fn $dots<const N: usize>(k: usize, row: *const u8, ys: [Vector; N]) -> [f32; N] {
                unsafe {
                    let unsigned = _mm256_set1_epi8(-128);
                    let mut acc = [_mm256_setzero_ps(); N];
                    for b in 0..k / QK {
                        let xb = row.add(b * BLOCK_BYTES);
                        _mm_prefetch::<_MM_HINT_T0>(
                            xb.wrapping_add(super::PREFETCH_AHEAD) as *const i8
                        );
                        let x = _mm256_loadu_si256(xb.add(2) as *const __m256i);
                        let x = _mm256_xor_si256(x, unsigned); // x + 128 as u8
                        let x_scale = half8(xb);
                        for (acc, y) in acc.iter_mut().zip(&ys) {
                            let yb = y.blocks.add(b * BLOCK_BYTES);
                            let yq = _mm256_loadu_si256(yb.add(2) as *const __m256i);
                            let offset = _mm256_loadu_si256(y.offsets.add(8 * b) as *const __m256i);
                            let sum = _mm256_cvtepi32_ps($dpbusd(offset, x, yq));
                            let d = _mm256_mul_ps(x_scale, _mm256_set1_ps(*y.scales.add(b)));
                            *acc = _mm256_fmadd_ps(d, sum, *acc);
                        }
                    }
                    acc.map(|a| hsum(a))
                }
            }
        };
    }

    dot_product_kernel!(
        Avx512Vnni,
        dots_avx512_vnni,
        "avx2,fma,f16c,avx512vnni,avx512vl",
        _mm256_dpbusd_epi32
    );
    dot_product_kernel!(
        AvxVnni,
        dots_avx_vnni,
        "avx2,fma,f16c,avxvnni",
        _mm256_dpbusd_avx_epi32
    );

    /// ggml's `hsum_float_8`, in its order.
    #[inline]
    #[target_feature(enable = "avx2")]
    fn hsum(acc: __m256) -> f32 {
        let mut res = _mm256_extractf128_ps(acc, 1);
        res = _mm_add_ps(res, _mm256_castps256_ps128(acc));
        res = _mm_add_ps(res, _mm_movehl_ps(res, res));
        res = _mm_add_ss(res, _mm_movehdup_ps(res));
        _mm_cvtss_f32(res)
    }

    /// [`dots`] as a [`super::RowDots`] kernel.
    pub struct Kernel;

    impl super::RowDots for Kernel {
        type Vector = Vector;
        unsafe fn dots<const N: usize>(k: usize, row: *const u8, ys: [Vector; N]) -> [f32; N] {
            unsafe { dots(k, row, ys) }
        }
    }

    /// One Q8_0 row of `k` values · `N` Q8_0 vectors (ggml's block layout).
    ///
    /// # Safety
    /// AVX2, FMA and F16C ([`supported`]); `row` and each of `ys` hold
    /// `k / 32` blocks.
    #[target_feature(enable = "avx2,fma,f16c")]
    pub unsafe fn dots<const N: usize>(k: usize, row: *const u8, ys: [Vector; N]) -> [f32; N] {
        unsafe {
            let ones = _mm256_set1_epi16(1);
            let mut acc = [_mm256_setzero_ps(); N];
            for b in 0..k / QK {
                let xb = row.add(b * BLOCK_BYTES);
                _mm_prefetch::<_MM_HINT_T0>(xb.wrapping_add(super::PREFETCH_AHEAD) as *const i8);
                let x = _mm256_loadu_si256(xb.add(2) as *const __m256i);
                let x_abs = _mm256_sign_epi8(x, x);
                let x_scale = half8(xb);
                for (acc, y) in acc.iter_mut().zip(&ys) {
                    let yb = y.blocks.add(b * BLOCK_BYTES);
                    let yq = _mm256_loadu_si256(yb.add(2) as *const __m256i);
                    // mul_sum_i8_pairs_float: |x| · sign(y, x), pairwise sums
                    let dot = _mm256_maddubs_epi16(x_abs, _mm256_sign_epi8(yq, x));
                    let sum = _mm256_cvtepi32_ps(_mm256_madd_epi16(ones, dot));
                    // the scales' f32 product, as ggml forms it, in every lane
                    let d = _mm256_mul_ps(x_scale, _mm256_set1_ps(*y.scales.add(b)));
                    *acc = _mm256_fmadd_ps(d, sum, *acc);
                }
            }
            acc.map(|a| hsum(a))
        }
    }
}

/// ggml's AVX2 `ggml_vec_dot_q4_K_q8_K` loop, inline, for up to four Q8_K
/// vectors at once: each super-block's scales and nibbles are unpacked once
/// for all of them; every vector's operations are the one-vector loop's, in
/// its order (the integer parts are exact whichever way they are summed), so
/// its sum is the same whatever `N` is.
#[cfg(target_arch = "x86_64")]
mod q4_k {
    use std::arch::x86_64::*;

    const QK_K: usize = 256;
    /// f16 d, f16 dmin, 12 bytes of 6-bit scales and mins, 128 bytes of nibbles.
    const BLOCK_BYTES: usize = 4 + 12 + QK_K / 2;
    /// f32 d, 256 i8, 16 i16 sums of 16.
    const VECTOR_BLOCK_BYTES: usize = 4 + QK_K + 2 * QK_K / 16;

    /// [`dots`] as a [`super::RowDots`] kernel.
    pub struct Kernel;

    impl super::RowDots for Kernel {
        type Vector = *const u8;
        unsafe fn dots<const N: usize>(k: usize, row: *const u8, ys: [*const u8; N]) -> [f32; N] {
            unsafe { dots(k, row, ys) }
        }
    }

    /// One Q4_K row of `k` values · `N` Q8_K vectors (ggml's block layouts).
    ///
    /// # Safety
    /// AVX2, FMA and F16C; `row` holds `k / 256` Q4_K blocks and each of
    /// `ys` as many Q8_K blocks.
    #[target_feature(enable = "avx2,fma,f16c")]
    pub unsafe fn dots<const N: usize>(k: usize, row: *const u8, ys: [*const u8; N]) -> [f32; N] {
        const KMASK1: u32 = 0x3f3f3f3f;
        const KMASK2: u32 = 0x0f0f0f0f;
        /// ggml's `(w >> 6 & 0x03…) << 4`, as `w >> 2 & 0x30…`.
        const KMASK4: u32 = 0x30303030;
        unsafe {
            let m4 = _mm256_set1_epi8(0xF);
            let mut acc = [_mm256_setzero_ps(); N];
            let mut acc_m = [_mm_setzero_ps(); N];
            for i in 0..k / QK_K {
                let x = row.add(i * BLOCK_BYTES);
                // The super-block's (up to) three lines ahead, spread over the
                // loop: a row's worth of prefetches at its start stalled the
                // walk (0.6B T+CP 56 → 44 ms per frame).
                for line in [0, 64, 128] {
                    let ahead = x.wrapping_add(super::PREFETCH_AHEAD + line);
                    _mm_prefetch::<_MM_HINT_T0>(ahead as *const i8);
                }
                // d and dmin in one 32-bit load (movd: no merge into another register)
                let d_dmin = _mm_cvtph_ps(_mm_cvtsi32_si128((x as *const i32).read_unaligned()));
                let (x_d, x_dmin) = (
                    _mm_cvtss_f32(d_dmin),
                    _mm_cvtss_f32(_mm_movehdup_ps(d_dmin)),
                );
                // The 6-bit scales and mins, unpacked as ggml's utmp words in
                // SIMD registers (its scalar shuffle and four inserts were a
                // long chain at the head of every super-block):
                // [u0 & m1, (u2 & m2) | (u0 >> 2 & 0x30…), u1 & m1, (u2 >> 4 & m2) | (u1 >> 2 & 0x30…)].
                // The 16-byte load reads 4 bytes of nibbles past the 12 (unused).
                let u = _mm_loadu_si128(x.add(4) as *const __m128i);
                let a = _mm_shuffle_epi32::<0b10_01_10_00>(u); // u0 u2 u1 u2
                let b = _mm_shuffle_epi32::<0b01_01_00_00>(u); // u0 u0 u1 u1
                let low = _mm_and_si128(
                    _mm_srlv_epi32(a, _mm_setr_epi32(0, 0, 0, 4)),
                    _mm_setr_epi32(KMASK1 as i32, KMASK2 as i32, KMASK1 as i32, KMASK2 as i32),
                );
                let high = _mm_and_si128(
                    _mm_srli_epi32::<2>(b),
                    _mm_setr_epi32(0, KMASK4 as i32, 0, KMASK4 as i32),
                );
                let mins_and_scales = _mm256_cvtepu8_epi16(_mm_or_si128(low, high));
                let mins = _mm256_extracti128_si256(mins_and_scales, 1);
                let sc128 = _mm256_extracti128_si256(mins_and_scales, 0);
                let scales = _mm256_set_m128i(sc128, sc128);
                // The super-block's nibbles and per-sub-block scales, once.
                let q4 = x.add(16);
                let mut lows = [_mm256_setzero_si256(); QK_K / 64];
                let mut highs = [_mm256_setzero_si256(); QK_K / 64];
                let mut scale_l = [_mm256_setzero_si256(); QK_K / 64];
                let mut scale_h = [_mm256_setzero_si256(); QK_K / 64];
                for j in 0..QK_K / 64 {
                    let bits = _mm256_loadu_si256(q4.add(32 * j) as *const __m256i);
                    lows[j] = _mm256_and_si256(bits, m4);
                    highs[j] = _mm256_and_si256(_mm256_srli_epi16(bits, 4), m4);
                    // ggml's get_scale_shuffle_k4(2j), (2j+1): 16-bit scale 2j (2j+1) everywhere
                    scale_l[j] = _mm256_shuffle_epi8(
                        scales,
                        _mm256_set1_epi16((0x0100 + 0x0202 * 2 * j) as i16),
                    );
                    scale_h[j] = _mm256_shuffle_epi8(
                        scales,
                        _mm256_set1_epi16((0x0100 + 0x0202 * (2 * j + 1)) as i16),
                    );
                }
                for c in 0..N {
                    let y = ys[c].add(i * VECTOR_BLOCK_BYTES);
                    let y_d = (y as *const f32).read_unaligned();
                    let d = y_d * x_d;
                    let dmin = -y_d * x_dmin;
                    let q8sums = _mm256_loadu_si256(y.add(4 + QK_K) as *const __m256i);
                    let q8s = _mm_hadd_epi16(
                        _mm256_extracti128_si256(q8sums, 0),
                        _mm256_extracti128_si256(q8sums, 1),
                    );
                    let prod = _mm_madd_epi16(mins, q8s);
                    acc_m[c] = _mm_fmadd_ps(_mm_set1_ps(dmin), _mm_cvtepi32_ps(prod), acc_m[c]);
                    let q8 = y.add(4);
                    let mut sumi = _mm256_setzero_si256();
                    for j in 0..QK_K / 64 {
                        let q8l = _mm256_loadu_si256(q8.add(64 * j) as *const __m256i);
                        let p16l =
                            _mm256_madd_epi16(scale_l[j], _mm256_maddubs_epi16(lows[j], q8l));
                        let q8h = _mm256_loadu_si256(q8.add(64 * j + 32) as *const __m256i);
                        let p16h =
                            _mm256_madd_epi16(scale_h[j], _mm256_maddubs_epi16(highs[j], q8h));
                        sumi = _mm256_add_epi32(sumi, _mm256_add_epi32(p16l, p16h));
                    }
                    acc[c] = _mm256_fmadd_ps(_mm256_set1_ps(d), _mm256_cvtepi32_ps(sumi), acc[c]);
                }
            }
            let mut out = [0.0f32; N];
            for c in 0..N {
                let mut m = acc_m[c];
                m = _mm_add_ps(m, _mm_movehl_ps(m, m));
                m = _mm_add_ss(m, _mm_movehdup_ps(m));
                // hsum_float_8, in its order
                let a = acc[c];
                let mut res = _mm256_extractf128_ps(a, 1);
                res = _mm_add_ps(res, _mm256_castps256_ps128(a));
                res = _mm_add_ps(res, _mm_movehl_ps(res, res));
                res = _mm_add_ss(res, _mm_movehdup_ps(res));
                out[c] = _mm_cvtss_f32(res) + _mm_cvtss_f32(m);
            }
            out
        }
    }
}

/// Asks for `len` bytes from `at` to be brought into cache (a hint: it never
/// faults, even past the end of the data).
#[inline(always)]
unsafe fn prefetch(at: *const u8, len: usize) {
    #[cfg(target_arch = "x86_64")]
    unsafe {
        use std::arch::x86_64::{_mm_prefetch, _MM_HINT_T0};
        for offset in (0..len).step_by(64) {
            _mm_prefetch::<_MM_HINT_T0>(at.wrapping_add(offset) as *const i8);
        }
    }
    #[cfg(not(target_arch = "x86_64"))]
    let _ = (at, len);
}

#[cfg(all(test, target_arch = "x86_64"))]
mod tests {
    use super::*;
    use crate::ggml::{quantize, GgmlType};

    /// Every Q8_0 kernel this CPU can run (ggml's AVX2 loop inline, and the
    /// dot-product ones) gives ggml's own `vec_dot` sum bit for bit, for one
    /// to four vectors at once, including the extremes of the weights' range.
    #[test]
    fn q8_0_kernels_equal_ggml_vec_dot() {
        if !q8_0::supported() {
            return;
        }
        let _cpu = crate::ggml::Backend::cpu(1); // initialises ggml's CPU kernels
        let k = 1024;
        let rows = 5;
        let w: Vec<f32> = (0..k * rows)
            .map(|i| match i % 97 {
                0 => 1.0,
                1 => -1.0, // the row's maximum: quantised to ±127
                _ => ((i * 7919 % 1013) as f32 - 506.0) / 600.0,
            })
            .collect();
        let x: Vec<f32> = (0..k * 4)
            .map(|i| ((i * 104_729 % 991) as f32 - 495.0) * 3e-3)
            .collect();
        let wq = quantize(GgmlType::Q8_0, &w, k);
        let xq = quantize(GgmlType::Q8_0, &x, k);
        let row_bytes = wq.len() / rows;
        let qrow = xq.len() / 4;
        let dot = unsafe { kernels(sys::GGML_TYPE_Q8_0).unwrap().dot.unwrap() };
        let want: Vec<Vec<f32>> = (0..rows)
            .map(|r| {
                (0..4)
                    .map(|c| {
                        let mut s = 0.0f32;
                        unsafe {
                            dot(
                                k as i32,
                                &mut s,
                                0,
                                wq.as_ptr().add(r * row_bytes).cast(),
                                0,
                                xq.as_ptr().add(c * qrow).cast(),
                                0,
                                1,
                            )
                        };
                        s
                    })
                    .collect()
            })
            .collect();
        let mut scales = Vec::new();
        let mut offsets = Vec::new();
        q8_0::scales(&xq, &mut scales);
        q8_0::offsets(&xq, &mut offsets);
        let y = |c: usize| q8_0::Vector {
            blocks: xq.as_ptr().wrapping_add(c * qrow),
            scales: scales.as_ptr().wrapping_add(c * k / 32),
            offsets: offsets.as_ptr().wrapping_add(c * k / 4),
        };
        let run = |kernel: &dyn Fn(usize, &mut [f32])| {
            for m in 1..=4 {
                let mut out = vec![0.0f32; rows * m];
                kernel(m, &mut out);
                for r in 0..rows {
                    for c in 0..m {
                        assert_eq!(out[c * rows + r], want[r][c], "row {r} vector {c} of {m}");
                    }
                }
            }
        };
        let rows_of = Rows {
            data: wq.as_ptr(),
            row_bytes,
            k,
        };
        run(&|m, out| unsafe {
            rows_of.dot_all::<q8_0::Kernel>(0..rows, m, y, out.as_mut_ptr(), rows)
        });
        if is_x86_feature_detected!("avx512vnni") && is_x86_feature_detected!("avx512vl") {
            run(&|m, out| unsafe {
                rows_of.dot_all::<q8_0::Avx512Vnni>(0..rows, m, y, out.as_mut_ptr(), rows)
            });
        }
        if is_x86_feature_detected!("avxvnni") {
            run(&|m, out| unsafe {
                rows_of.dot_all::<q8_0::AvxVnni>(0..rows, m, y, out.as_mut_ptr(), rows)
            });
        }
    }
}
