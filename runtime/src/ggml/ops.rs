//! Graph operations: thin wrappers over ggml's ops (shapes follow ggml's
//! conventions) and the custom row and unfold kernels.

use ggml_sys as sys;

use super::{gemm, gemv, winograd, Context, GgmlType, Tensor};

/// Columns a product gets at least in a column-invariant context: above
/// `gemv`'s vector count and ggml's one-column path.
pub const COLUMN_INVARIANT_MIN: i64 = gemv::MAX_VECTORS + 1;

/// Columns per block of a column-invariant product on a backend without
/// the CPU kernels (see `Context::mul_mat_in_column_blocks`): above the
/// column counts GPU backends give their matrix-vector kernels.
pub const DEVICE_COLUMN_BLOCK: i64 = 32;

impl Context {
    // ---- operations (thin; shapes follow ggml's conventions) -----------------

    /// `a` `[k, n]` (weights) times `b` `[k, m, …]` → `[n, m, …]`. Quantised
    /// weights times up to four vectors take the prefetching row walk of
    /// `gemv` (ggml's kernels, same results), and in a row-dot context (see
    /// [`Context::set_row_dots`]) any weights times up to 64. In a column-invariant
    /// context (see [`Context::set_column_invariant`]) a contiguous `b` of
    /// fewer than [`COLUMN_INVARIANT_MIN`] columns is zero-padded to that
    /// many, so that every column takes the same kernel whatever `m` is.
    pub fn mul_mat<'a>(&'a self, a: Tensor<'a>, b: Tensor<'a>) -> Tensor<'a> {
        let m = b.ne()[1];
        if !self.cpu_kernels.get() && (self.column_invariant.get() || self.row_dots.get()) {
            if let Some(y) = self.mul_mat_in_column_blocks(a, b) {
                return y;
            }
        }
        if self.column_invariant.get()
            && m < COLUMN_INVARIANT_MIN
            && unsafe { sys::ggml_is_contiguous(b.raw()) }
        {
            let right = [0, (COLUMN_INVARIANT_MIN - m) as i32, 0, 0];
            // ggml pads F32 only; F16 goes there and back (exactly).
            let padded = match b.ty() {
                GgmlType::F32 => Some(self.pad(b, [0; 4], right)),
                GgmlType::F16 => {
                    let wide = self.pad(self.cast(b, GgmlType::F32), [0; 4], right);
                    Some(self.cast(wide, GgmlType::F16))
                }
                _ => None,
            };
            if let Some(padded) = padded {
                let full = self.mul_mat_ggml(a, padded);
                let [n, _, n2, n3] = full.ne();
                assert_eq!(n3, 1, "column-invariant products of 4-D tensors");
                let nb = full.nb();
                return self.cont(self.view(full, &[n, m, n2], &nb[1..3], 0));
            }
        }
        if self.cpu_kernels.get() && gemv::applies(a.raw(), b.raw(), self.row_dots.get()) {
            let mut args = [a.raw(), b.raw()];
            return self.wrap(unsafe {
                sys::ggml_custom_4d(
                    self.raw(),
                    GgmlType::F32.raw(),
                    a.ne()[1],
                    b.ne()[1],
                    1,
                    1,
                    args.as_mut_ptr(),
                    2,
                    Some(gemv::compute),
                    sys::GGML_N_TASKS_MAX,
                    std::ptr::null_mut(),
                )
            });
        }
        self.mul_mat_ggml(a, b)
    }

    /// `a · b` with `b`'s columns zero-padded to whole blocks of
    /// [`DEVICE_COLUMN_BLOCK`] and multiplied block by block (a batch of
    /// products of that many columns each): a GPU backend chooses its
    /// kernel, tiles and split of the sum by the column count, so each
    /// column's result would otherwise depend on how many there are. `None`
    /// for 4-D operands.
    fn mul_mat_in_column_blocks<'a>(&'a self, a: Tensor<'a>, b: Tensor<'a>) -> Option<Tensor<'a>> {
        let [k, m, c2, c3] = b.ne();
        let [_, n, a2, a3] = a.ne();
        if c3 != 1 || a3 != 1 || (b.ty() != GgmlType::F32 && b.ty() != GgmlType::F16) {
            return None;
        }
        let w = DEVICE_COLUMN_BLOCK;
        // ggml's Vulkan backend takes another kernel for one output row
        // times a single batch: keep at least two blocks there.
        let blocks = match (m + w - 1) / w {
            1 if n == 1 => 2,
            blocks => blocks,
        };
        let right = [0, (blocks * w - m) as i32, 0, 0];
        let padded = match b.ty() {
            GgmlType::F32 => self.pad(self.contiguous(b), [0; 4], right),
            // ggml pads F32 only; F16 goes there and back (exactly).
            _ => self.cast(
                self.pad(self.cast(b, GgmlType::F32), [0; 4], right),
                GgmlType::F16,
            ),
        };
        // The blocks as a batch over which `a` is shared: [k, w, blocks] (`a`
        // broadcast along its third dim), or for a 3-D `b` [k, w, c2, blocks]
        // with `a` repeated along the fourth (GPU backends broadcast the
        // third dim only).
        let (a, b4) = match c2 {
            1 => (a, self.reshape(padded, &[k, w, blocks])),
            _ => {
                let a = self.contiguous(a);
                let repeated =
                    unsafe { sys::ggml_repeat_4d(self.raw(), a.raw(), k, n, a2, blocks) };
                (
                    self.wrap(repeated),
                    self.permute(self.reshape(padded, &[k, w, blocks, c2]), [0, 1, 3, 2]),
                )
            }
        };
        debug_assert!(c2 % a2 == 0);
        let y = self.mul_mat_ggml(a, b4); // [n, w, blocks] or [n, w, c2, blocks]
        let y = match c2 {
            1 => self.reshape(y, &[n, blocks * w, 1]),
            _ => self.reshape(
                self.cont(self.permute(y, [0, 1, 3, 2])),
                &[n, blocks * w, c2],
            ),
        };
        let nb = y.nb();
        Some(self.cont(self.view(y, &[n, m, c2], &nb[1..3], 0)))
    }

    /// Makes [`Context::mul_mat`] give every column the same result whatever
    /// the number of columns (ggml takes other kernels, with another order
    /// of summation, for fewer than two columns, and `gemv` for up to
    /// four): what a stream decoded in pieces of any size needs to equal the
    /// whole decoded at once. Costs a little on tiny products only.
    pub fn set_column_invariant(&self, on: bool) {
        self.column_invariant.set(on);
    }

    /// Makes [`Context::mul_mat`] of a weight matrix give each column the
    /// one-column result whatever the number of columns, for any weight type
    /// (`gemv`'s row walk with ggml's one-row kernels): what a batch of
    /// sequences decoded together needs to equal each decoded alone.
    pub fn set_row_dots(&self, on: bool) {
        self.row_dots.set(on);
    }

    /// ggml's own `mul_mat`, whatever the shapes (the reference `mul_mat`'s
    /// fast path is tested against).
    pub fn mul_mat_ggml<'a>(&'a self, a: Tensor<'a>, b: Tensor<'a>) -> Tensor<'a> {
        // A GPU backend copies a non-contiguous operand to F16 first (and
        // Mesa's lavapipe has crashed on permuted ones): hand it contiguous
        // F32 (a copy the CPU's kernels do without).
        let (a, b) = match self.cpu_kernels.get() {
            true => (a, b),
            false => (self.contiguous(a), self.contiguous(b)),
        };
        let y = unsafe { sys::ggml_mul_mat(self.raw(), a.raw(), b.raw()) };
        if !self.cpu_kernels.get() {
            // A GPU may otherwise sum in F16 (the CPU always sums in F32).
            unsafe { sys::ggml_mul_mat_set_prec(y, sys::GGML_PREC_F32) };
        }
        self.wrap(y)
    }
    /// `a` itself when contiguous, else a contiguous copy.
    pub fn contiguous<'a>(&'a self, a: Tensor<'a>) -> Tensor<'a> {
        match a.is_contiguous() {
            true => a,
            false => self.cont(a),
        }
    }
    pub fn add<'a>(&'a self, a: Tensor<'a>, b: Tensor<'a>) -> Tensor<'a> {
        self.wrap(unsafe { sys::ggml_add(self.raw(), a.raw(), b.raw()) })
    }
    pub fn mul<'a>(&'a self, a: Tensor<'a>, b: Tensor<'a>) -> Tensor<'a> {
        self.wrap(unsafe { sys::ggml_mul(self.raw(), a.raw(), b.raw()) })
    }
    pub fn scale<'a>(&'a self, a: Tensor<'a>, s: f32) -> Tensor<'a> {
        self.wrap(unsafe { sys::ggml_scale(self.raw(), a.raw(), s) })
    }
    pub fn silu<'a>(&'a self, a: Tensor<'a>) -> Tensor<'a> {
        self.wrap(unsafe { sys::ggml_silu(self.raw(), a.raw()) })
    }
    pub fn gelu_erf<'a>(&'a self, a: Tensor<'a>) -> Tensor<'a> {
        self.wrap(unsafe { sys::ggml_gelu_erf(self.raw(), a.raw()) })
    }
    /// `silu(gate) * up`, fused.
    pub fn swiglu<'a>(&'a self, gate: Tensor<'a>, up: Tensor<'a>) -> Tensor<'a> {
        self.wrap(unsafe { sys::ggml_swiglu_split(self.raw(), gate.raw(), up.raw()) })
    }
    pub fn rms_norm<'a>(&'a self, a: Tensor<'a>, eps: f32) -> Tensor<'a> {
        self.wrap(unsafe { sys::ggml_rms_norm(self.raw(), a.raw(), eps) })
    }
    pub fn norm<'a>(&'a self, a: Tensor<'a>, eps: f32) -> Tensor<'a> {
        self.wrap(unsafe { sys::ggml_norm(self.raw(), a.raw(), eps) })
    }
    pub fn get_rows<'a>(&'a self, table: Tensor<'a>, ids: Tensor<'a>) -> Tensor<'a> {
        self.wrap(unsafe { sys::ggml_get_rows(self.raw(), table.raw(), ids.raw()) })
    }
    /// NEOX-style rotary embedding over the first `n_dims` of `ne[0]`, positions
    /// in the I32 tensor `pos` (one per `ne[2]`).
    pub fn rope_neox<'a>(
        &'a self,
        a: Tensor<'a>,
        pos: Tensor<'a>,
        n_dims: i32,
        theta: f32,
    ) -> Tensor<'a> {
        self.wrap(unsafe {
            sys::ggml_rope_ext(
                self.raw(),
                a.raw(),
                pos.raw(),
                std::ptr::null_mut(),
                n_dims,
                sys::GGML_ROPE_TYPE_NEOX as i32,
                0,
                theta,
                1.0,
                0.0,
                1.0,
                0.0,
                0.0,
            )
        })
    }
    /// `softmax(a * scale + mask)` along `ne[0]`; `mask` may be absent.
    pub fn soft_max_ext<'a>(
        &'a self,
        a: Tensor<'a>,
        mask: Option<Tensor<'a>>,
        scale: f32,
    ) -> Tensor<'a> {
        let m = mask.map_or(std::ptr::null_mut(), |m| m.raw());
        self.wrap(unsafe { sys::ggml_soft_max_ext(self.raw(), a.raw(), m, scale, 0.0) })
    }
    pub fn cont<'a>(&'a self, a: Tensor<'a>) -> Tensor<'a> {
        self.wrap(unsafe { sys::ggml_cont(self.raw(), a.raw()) })
    }
    pub fn transpose<'a>(&'a self, a: Tensor<'a>) -> Tensor<'a> {
        self.wrap(unsafe { sys::ggml_transpose(self.raw(), a.raw()) })
    }
    pub fn permute<'a>(&'a self, a: Tensor<'a>, axes: [i32; 4]) -> Tensor<'a> {
        self.wrap(unsafe {
            sys::ggml_permute(self.raw(), a.raw(), axes[0], axes[1], axes[2], axes[3])
        })
    }
    pub fn reshape<'a>(&'a self, a: Tensor<'a>, ne: &[i64]) -> Tensor<'a> {
        let p = unsafe {
            match ne.len() {
                1 => sys::ggml_reshape_1d(self.raw(), a.raw(), ne[0]),
                2 => sys::ggml_reshape_2d(self.raw(), a.raw(), ne[0], ne[1]),
                3 => sys::ggml_reshape_3d(self.raw(), a.raw(), ne[0], ne[1], ne[2]),
                _ => sys::ggml_reshape_4d(self.raw(), a.raw(), ne[0], ne[1], ne[2], ne[3]),
            }
        };
        self.wrap(p)
    }
    pub fn sub<'a>(&'a self, a: Tensor<'a>, b: Tensor<'a>) -> Tensor<'a> {
        self.wrap(unsafe { sys::ggml_sub(self.raw(), a.raw(), b.raw()) })
    }
    /// `a·s + b` elementwise.
    pub fn scale_bias<'a>(&'a self, a: Tensor<'a>, s: f32, b: f32) -> Tensor<'a> {
        self.wrap(unsafe { sys::ggml_scale_bias(self.raw(), a.raw(), s, b) })
    }
    /// Running sum along `ne[0]`.
    pub fn cumsum<'a>(&'a self, a: Tensor<'a>) -> Tensor<'a> {
        self.wrap(unsafe { sys::ggml_cumsum(self.raw(), a.raw()) })
    }
    /// 1 where `a > 0`, else 0.
    pub fn step<'a>(&'a self, a: Tensor<'a>) -> Tensor<'a> {
        self.wrap(unsafe { sys::ggml_step(self.raw(), a.raw()) })
    }
    /// Index of the maximum of each row (first one on ties), I32.
    pub fn argmax<'a>(&'a self, a: Tensor<'a>) -> Tensor<'a> {
        self.wrap(unsafe { sys::ggml_argmax(self.raw(), a.raw()) })
    }
    /// Indices that sort each row in descending order, I32.
    pub fn argsort_desc<'a>(&'a self, a: Tensor<'a>) -> Tensor<'a> {
        self.wrap(unsafe { sys::ggml_argsort(self.raw(), a.raw(), sys::GGML_SORT_ORDER_DESC) })
    }
    pub fn concat<'a>(&'a self, a: Tensor<'a>, b: Tensor<'a>, dim: i32) -> Tensor<'a> {
        self.wrap(unsafe { sys::ggml_concat(self.raw(), a.raw(), b.raw(), dim) })
    }
    /// Writes the rows of `src` into `dst` at the row indices `rows` (I64/I32);
    /// returns a view of `dst` that must be part of the graph.
    pub fn set_rows<'a>(
        &'a self,
        dst: Tensor<'a>,
        src: Tensor<'a>,
        rows: Tensor<'a>,
    ) -> Tensor<'a> {
        self.wrap(unsafe { sys::ggml_set_rows(self.raw(), dst.raw(), src.raw(), rows.raw()) })
    }
    /// A view of `a` with dims `ne` (up to 4), byte strides `nb` (for dims 1..)
    /// and byte `offset`.
    pub fn view<'a>(
        &'a self,
        a: Tensor<'a>,
        ne: &[i64],
        nb: &[usize],
        offset: usize,
    ) -> Tensor<'a> {
        assert!(
            (1..=4).contains(&ne.len()) && nb.len() + 1 >= ne.len(),
            "view of {} dims with {} strides",
            ne.len(),
            nb.len()
        );
        let p = unsafe {
            match ne.len() {
                1 => sys::ggml_view_1d(self.raw(), a.raw(), ne[0], offset),
                2 => sys::ggml_view_2d(self.raw(), a.raw(), ne[0], ne[1], nb[0], offset),
                3 => sys::ggml_view_3d(
                    self.raw(),
                    a.raw(),
                    ne[0],
                    ne[1],
                    ne[2],
                    nb[0],
                    nb[1],
                    offset,
                ),
                _ => sys::ggml_view_4d(
                    self.raw(),
                    a.raw(),
                    ne[0],
                    ne[1],
                    ne[2],
                    ne[3],
                    nb[0],
                    nb[1],
                    nb[2],
                    offset,
                ),
            }
        };
        self.wrap(p)
    }
    pub fn sin<'a>(&'a self, a: Tensor<'a>) -> Tensor<'a> {
        self.wrap(unsafe { sys::ggml_sin(self.raw(), a.raw()) })
    }
    pub fn sqr<'a>(&'a self, a: Tensor<'a>) -> Tensor<'a> {
        self.wrap(unsafe { sys::ggml_sqr(self.raw(), a.raw()) })
    }
    /// Elementwise clamp to `[min, max]`.
    pub fn clamp<'a>(&'a self, a: Tensor<'a>, min: f32, max: f32) -> Tensor<'a> {
        self.wrap(unsafe { sys::ggml_clamp(self.raw(), a.raw(), min, max) })
    }
    /// Copies `src` into `dst` (same element count); returns a view of `dst`
    /// that must be part of the graph for the copy to happen.
    pub fn cpy<'a>(&'a self, src: Tensor<'a>, dst: Tensor<'a>) -> Tensor<'a> {
        self.wrap(unsafe { sys::ggml_cpy(self.raw(), src.raw(), dst.raw()) })
    }
    /// Zero padding: `left[i]` / `right[i]` elements before / after dim `i`.
    pub fn pad<'a>(&'a self, a: Tensor<'a>, left: [i32; 4], right: [i32; 4]) -> Tensor<'a> {
        self.wrap(unsafe {
            sys::ggml_pad_ext(
                self.raw(),
                a.raw(),
                left[0],
                right[0],
                left[1],
                right[1],
                left[2],
                right[2],
                left[3],
                right[3],
            )
        })
    }
    /// 1-D im2col: `data` `[t, c_in]` → `[c_in·k, t_out]` (tap fastest) of
    /// type `ty`, for a kernel shaped like `kernel` `[k, c_in, c_out]`.
    pub fn im2col_1d<'a>(
        &'a self,
        kernel: Tensor<'a>,
        data: Tensor<'a>,
        stride: i32,
        dilation: i32,
        ty: GgmlType,
    ) -> Tensor<'a> {
        self.wrap(unsafe {
            sys::ggml_im2col(
                self.raw(),
                kernel.raw(),
                data.raw(),
                stride,
                0,
                0,
                0,
                dilation,
                0,
                false,
                ty.raw(),
            )
        })
    }
    pub fn relu<'a>(&'a self, a: Tensor<'a>) -> Tensor<'a> {
        self.wrap(unsafe { sys::ggml_relu(self.raw(), a.raw()) })
    }
    pub fn tanh<'a>(&'a self, a: Tensor<'a>) -> Tensor<'a> {
        self.wrap(unsafe { sys::ggml_tanh(self.raw(), a.raw()) })
    }
    pub fn sigmoid<'a>(&'a self, a: Tensor<'a>) -> Tensor<'a> {
        self.wrap(unsafe { sys::ggml_sigmoid(self.raw(), a.raw()) })
    }
    pub fn sqrt<'a>(&'a self, a: Tensor<'a>) -> Tensor<'a> {
        self.wrap(unsafe { sys::ggml_sqrt(self.raw(), a.raw()) })
    }
    /// Mean of each row (over `ne[0]`).
    pub fn mean<'a>(&'a self, a: Tensor<'a>) -> Tensor<'a> {
        self.wrap(unsafe { sys::ggml_mean(self.raw(), a.raw()) })
    }
    /// Sum of each row (over `ne[0]`).
    pub fn sum_rows<'a>(&'a self, a: Tensor<'a>) -> Tensor<'a> {
        self.wrap(unsafe { sys::ggml_sum_rows(self.raw(), a.raw()) })
    }
    /// `a` tiled to the shape of `like`.
    pub fn repeat<'a>(&'a self, a: Tensor<'a>, like: Tensor<'a>) -> Tensor<'a> {
        self.wrap(unsafe { sys::ggml_repeat(self.raw(), a.raw(), like.raw()) })
    }
    /// Reflect padding along `ne[0]` (edge not repeated).
    pub fn pad_reflect<'a>(&'a self, a: Tensor<'a>, left: i32, right: i32) -> Tensor<'a> {
        self.wrap(unsafe { sys::ggml_pad_reflect_1d(self.raw(), a.raw(), left, right) })
    }
    /// Casts (copies) `a` to type `ty`.
    pub fn cast<'a>(&'a self, a: Tensor<'a>, ty: GgmlType) -> Tensor<'a> {
        self.wrap(unsafe { sys::ggml_cast(self.raw(), a.raw(), ty.raw()) })
    }

    /// A custom elementwise-per-row op: `f(out_row, x_row, params)` for every
    /// row (`ne[0]` elements) of the contiguous F32 tensor `x`, where `params`
    /// are the F32 vectors `params` (each `ne[0]` long, e.g. per-channel
    /// weights). The result has `x`'s shape; rows are split across the
    /// backend's threads.
    pub fn map_rows<'a>(
        &'a self,
        x: Tensor<'a>,
        params: &[Tensor<'a>],
        f: RowKernel,
    ) -> Tensor<'a> {
        let n0 = x.ne()[0];
        assert!(
            x.ty() == GgmlType::F32 && unsafe { sys::ggml_is_contiguous(x.raw()) },
            "map_rows wants a contiguous F32 input"
        );
        for p in params {
            assert!(
                p.ty() == GgmlType::F32
                    && p.n_elements() == n0
                    && unsafe { sys::ggml_is_contiguous(p.raw()) },
                "map_rows parameters must be contiguous F32 vectors of {n0} elements"
            );
        }
        let mut args: Vec<*mut sys::ggml_tensor> = std::iter::once(x.raw())
            .chain(params.iter().map(|p| p.raw()))
            .collect();
        assert!(
            args.len() <= sys::GGML_MAX_SRC as usize,
            "too many map_rows parameters"
        );
        let [ne0, ne1, ne2, ne3] = x.ne();
        self.wrap(unsafe {
            sys::ggml_custom_4d(
                self.raw(),
                GgmlType::F32.raw(),
                ne0,
                ne1,
                ne2,
                ne3,
                args.as_mut_ptr(),
                args.len() as i32,
                Some(map_rows_thunk),
                sys::GGML_N_TASKS_MAX,
                f as *mut std::os::raw::c_void,
            )
        })
    }
}

impl Context {
    /// The input of a conv as one matrix: `x` `[c, len]` (contiguous F32,
    /// channels fastest), seen with `l` zero columns before it and `r`
    /// after (`x'`), → `[k·c, n]` of type `ty` (F32 or F16), with
    /// `n = (l + len + r − (k − 1)·d − 1) / s + 1`, whose column `t` stacks
    /// columns `t·s, t·s + d, …, t·s + (k − 1)·d` of `x'`. Multiplied by a
    /// kernel laid out `[c, k, c_out]` it gives the conv with stride `s` and
    /// dilation `d`. Unlike ggml's im2col (time fastest) it is whole-column
    /// copies, no transposes, no padded copy of `x` (ggml's pad is an
    /// element-by-element loop), and written in the kernel's type the
    /// product needs no conversion pass of its own.
    pub fn unfold_columns<'a>(
        &'a self,
        x: Tensor<'a>,
        k: usize,
        geometry: Unfold,
        ty: GgmlType,
    ) -> Tensor<'a> {
        let [c, len, ..] = x.ne();
        let Unfold {
            stride,
            dilation,
            left,
            right,
        } = geometry;
        let span = ((k - 1) * dilation) as i64;
        let padded = len + (left + right) as i64;
        assert!(
            k >= 1
                && stride >= 1
                && dilation >= 1
                && padded > span
                && x.ty() == GgmlType::F32
                && x.ne()[2] == 1,
            "unfold_columns: bad input {:?} for k {k}, {geometry:?}",
            x.ne()
        );
        assert!(
            matches!(ty, GgmlType::F32 | GgmlType::F16),
            "unfold_columns writes F32 or F16, not {ty:?}"
        );
        assert!(
            unsafe { sys::ggml_is_contiguous(x.raw()) },
            "unfold_columns wants a contiguous input"
        );
        let n = (padded - span - 1) / stride as i64 + 1;
        if !self.cpu_kernels.get() {
            return self.unfold_columns_standard(x, k, geometry, ty, n);
        }
        let mut args = [x.raw()];
        self.wrap(unsafe {
            sys::ggml_custom_4d(
                self.raw(),
                ty.raw(),
                k as i64 * c,
                n,
                1,
                1,
                args.as_mut_ptr(),
                1,
                Some(unfold_columns_thunk),
                sys::GGML_N_TASKS_MAX,
                geometry.pack(),
            )
        })
    }
}

impl Context {
    /// [`Context::unfold_columns`] in standard ops (for backends other than
    /// the CPU): the zero-padded input, then one strided view per tap,
    /// stacked along the channels.
    fn unfold_columns_standard<'a>(
        &'a self,
        x: Tensor<'a>,
        k: usize,
        geometry: Unfold,
        ty: GgmlType,
        n: i64,
    ) -> Tensor<'a> {
        let Unfold {
            stride,
            dilation,
            left,
            right,
        } = geometry;
        let c = x.ne()[0];
        let xp = match left + right {
            0 => x,
            _ => self.pad(x, [0, left as i32, 0, 0], [0, right as i32, 0, 0]),
        };
        let es = xp.element_size();
        let c_bytes = c as usize * es;
        let tap = |j: usize| self.view(xp, &[c, n], &[stride * c_bytes], j * dilation * c_bytes);
        let cols = (1..k).fold(self.cont(tap(0)), |all, j| self.concat(all, tap(j), 0));
        match ty {
            GgmlType::F32 => cols,
            _ => self.cast(cols, ty),
        }
    }
}

/// How a conv kernel is laid out in memory, chosen at load for the
/// arithmetic the backend computes the conv with.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ConvKernel {
    /// `[c_in, k, c_out]`: the unfolded input times the kernel, one product.
    Unfolded { k: usize },
    /// One tap, `[c_out, c_in]` (outputs fastest): one product by
    /// [`Context::mul_mat_outputs_fastest`].
    Pointwise,
    /// `[c_out, c_in, α]`, transformed for [`Context::conv_winograd`].
    Winograd { k: usize },
}

impl ConvKernel {
    /// The layout for a causal conv of `k` taps to `c_out` channels: the
    /// CPU's fast convolution where it applies and `fast` allows it, else
    /// the direct product.
    pub fn choose(k: usize, c_out: usize, fast: bool) -> Self {
        if fast && winograd::applies(k, c_out) {
            Self::Winograd { k }
        } else if fast && k == 1 && outputs_fastest_pays(c_out) {
            Self::Pointwise
        } else {
            Self::Unfolded { k }
        }
    }

    /// Taps.
    pub fn k(self) -> usize {
        match self {
            Self::Unfolded { k } | Self::Winograd { k } => k,
            Self::Pointwise => 1,
        }
    }

    /// The kernel's dims in this layout.
    pub fn dims(self, c_in: usize, c_out: usize) -> [usize; 3] {
        match self {
            Self::Unfolded { k } => [c_in, k, c_out],
            Self::Pointwise => [c_out, c_in, 1],
            Self::Winograd { k } => [c_out, c_in, winograd::Transform::get(k).alpha()],
        }
    }

    /// A Winograd layout's kernel from `w` stored `[k, c_in, c_out]`.
    pub fn winograd_kernel(k: usize, w: &[f32], c_in: usize, c_out: usize) -> Vec<f32> {
        winograd::Transform::get(k).kernel(w, c_in, c_out)
    }
}

/// Whether products to `n_out` outputs are faster with the weights outputs
/// fastest (the CPU has FMA and a row of 16 outputs is filled).
fn outputs_fastest_pays(n_out: usize) -> bool {
    n_out >= 16 && gemm::fma_supported()
}

impl Context {
    /// Weights `w` `[n, k]` laid out outputs fastest times `x` `[k, m]`
    /// (contiguous F32) → `[n, m]`: the CPU's outputs-fastest product where
    /// it pays, else ggml's product of the transposed weights (a copy).
    pub fn product_outputs_fastest<'a>(&'a self, w: Tensor<'a>, x: Tensor<'a>) -> Tensor<'a> {
        match outputs_fastest_pays(w.ne()[0] as usize) {
            true => self.mul_mat_outputs_fastest(w, x),
            false => self.mul_mat(self.cont(self.transpose(w)), x),
        }
    }
}

/// How a transposed conv's kernel is laid out in memory.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum TapsKernel {
    /// `[c_in, c_out, k]`: ggml's product.
    InputsFastest,
    /// `[c_out, k, c_in]`: [`Context::mul_mat_outputs_fastest`].
    OutputsFastest,
}

impl TapsKernel {
    /// The layout for `c_out · k` outputs per input column.
    pub fn choose(c_out: usize, k: usize, fast: bool) -> Self {
        match fast && outputs_fastest_pays(c_out * k) {
            true => Self::OutputsFastest,
            false => Self::InputsFastest,
        }
    }

    /// The kernel's dims in this layout.
    pub fn dims(self, c_in: usize, c_out: usize, k: usize) -> [usize; 3] {
        match self {
            Self::InputsFastest => [c_in, c_out, k],
            Self::OutputsFastest => [c_out, k, c_in],
        }
    }
}

impl Context {
    /// Every tap's contribution of every column of `x` `[c_in, n]`:
    /// `[c_out·k, n]` ordered (tap, output channel), for a kernel laid out as
    /// `layout` says.
    pub fn taps_product<'a>(
        &'a self,
        w: Tensor<'a>,
        layout: TapsKernel,
        x: Tensor<'a>,
    ) -> Tensor<'a> {
        let ne = w.ne();
        match layout {
            TapsKernel::InputsFastest => self.mul_mat(self.reshape(w, &[ne[0], ne[1] * ne[2]]), x),
            TapsKernel::OutputsFastest => {
                self.mul_mat_outputs_fastest(self.reshape(w, &[ne[0] * ne[1], ne[2]]), x)
            }
        }
    }
}

impl Context {
    /// A causal conv: `xp` `[c_in, (k − 1)·d + n]` (the input after its left
    /// context, contiguous F32), kernel `w` laid out as `layout` says, `bias`
    /// `[c_out]` or none → `[c_out, n]`. Segments of `segment` outputs (`n` a
    /// multiple of it) are computed on their own: an output is the same
    /// whether the next segment is in the same call or not, so a stream
    /// computed in whole segments equals the whole computed at once.
    pub fn causal_conv<'a>(
        &'a self,
        xp: Tensor<'a>,
        w: Tensor<'a>,
        layout: ConvKernel,
        bias: Option<Tensor<'a>>,
        dilation: usize,
        segment: usize,
    ) -> Tensor<'a> {
        let k = match layout {
            ConvKernel::Winograd { .. } => {
                assert!(
                    self.cpu_kernels.get(),
                    "a Winograd-layout kernel needs the CPU backend's kernels \
                     (load the decoder without fast convolution for this backend)"
                );
                return self.conv_winograd(xp, w, bias, dilation, segment);
            }
            ConvKernel::Pointwise => {
                let y = self.mul_mat_outputs_fastest(w, xp);
                return bias.map_or(y, |b| self.add(y, b));
            }
            ConvKernel::Unfolded { k } => k,
        };
        let [c_in, _, c_out, _] = w.ne();
        let cols = if k == 1 {
            xp
        } else {
            // In the kernel's type: an F16 product would otherwise convert it.
            let ty = if w.ty() == GgmlType::F16 {
                GgmlType::F16
            } else {
                GgmlType::F32
            };
            let geometry = Unfold {
                dilation,
                ..Unfold::PLAIN
            };
            self.unfold_columns(xp, k, geometry, ty)
        };
        let y = self.mul_mat(self.reshape(w, &[c_in * k as i64, c_out]), cols);
        match bias {
            Some(b) => self.add(y, b),
            None => y,
        }
    }
}

/// Stride, dilation and zero padding of [`Context::unfold_columns`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Unfold {
    pub stride: usize,
    pub dilation: usize,
    /// Zero columns before the input.
    pub left: usize,
    /// Zero columns after it.
    pub right: usize,
}

impl Unfold {
    /// Stride and dilation 1, no padding.
    pub const PLAIN: Unfold = Unfold {
        stride: 1,
        dilation: 1,
        left: 0,
        right: 0,
    };

    /// Packed into the op's `userdata` word (a value, not a pointer): 16
    /// bits each.
    fn pack(self) -> *mut std::os::raw::c_void {
        let fields = [self.stride, self.dilation, self.left, self.right];
        assert!(
            fields.iter().all(|&f| f < 1 << 16),
            "unfold geometry out of range: {self:?}"
        );
        fields.iter().fold(0u64, |word, &f| word << 16 | f as u64) as usize
            as *mut std::os::raw::c_void
    }

    fn unpack(word: *mut std::os::raw::c_void) -> Self {
        let word = word as usize as u64;
        let field = |i: u32| ((word >> (48 - 16 * i)) & 0xffff) as usize;
        Self {
            stride: field(0),
            dilation: field(1),
            left: field(2),
            right: field(3),
        }
    }
}

/// Thread `ith`'s share of the output columns of [`Context::unfold_columns`]
/// (k follows from the shapes, the geometry from `userdata`).
unsafe extern "C" fn unfold_columns_thunk(
    dst: *mut sys::ggml_tensor,
    ith: std::os::raw::c_int,
    nth: std::os::raw::c_int,
    userdata: *mut std::os::raw::c_void,
) {
    use half::slice::HalfFloatSliceExt;
    // SAFETY: `unfold_columns` checked that the input is contiguous F32
    // `[c, len]` and created the output contiguous `[k·c, n]` of F32 or F16
    // with `(n − 1)·s + (k − 1)·d < l + len + r`; source columns are read
    // only where they lie in `0..len`, and every output slice lies in the
    // output.
    unsafe {
        let dst = &*dst;
        let x = &*dst.src[0];
        let (c, len) = (x.ne[0] as usize, x.ne[1] as usize);
        let (kc, n) = (dst.ne[0] as usize, dst.ne[1] as usize);
        let k = kc / c;
        let Unfold {
            stride,
            dilation,
            left,
            ..
        } = Unfold::unpack(userdata);
        let src = std::slice::from_raw_parts(x.data as *const f32, c * len);
        let f16_out = dst.type_ == GgmlType::F16.raw();
        let (ith, nth) = (ith as usize, nth as usize);
        let (first, end) = (n * ith / nth, n * (ith + 1) / nth);
        // Output values `at..at + count` from source columns `col..` (all in
        // range), or zeros where `col` is `None`.
        let put = |at: usize, col: Option<usize>, count: usize| {
            if f16_out {
                let out =
                    std::slice::from_raw_parts_mut((dst.data as *mut half::f16).add(at), count);
                match col {
                    Some(col) => out.convert_from_f32_slice(&src[col * c..][..count]),
                    None => out.fill(half::f16::ZERO),
                }
            } else {
                let out = std::slice::from_raw_parts_mut((dst.data as *mut f32).add(at), count);
                match col {
                    Some(col) => out.copy_from_slice(&src[col * c..][..count]),
                    None => out.fill(0.0),
                }
            }
        };
        for t in first..end {
            // Column t·s + j·d of the padded input is column t·s + j·d − l of x.
            let start = t * stride;
            let inside = start >= left && start + (k - 1) * dilation < left + len;
            if dilation == 1 && inside {
                put(t * kc, Some(start - left), kc); // the k columns are adjacent
                continue;
            }
            for j in 0..k {
                let col = (start + j * dilation)
                    .checked_sub(left)
                    .filter(|&col| col < len);
                put(t * kc + j * c, col, c);
            }
        }
    }
}

/// The per-row kernel of [`Context::map_rows`]: `out` and `x` are one row,
/// `params` the parameter vectors (all the same length).
pub type RowKernel = fn(out: &mut [f32], x: &[f32], params: &[&[f32]]);

/// Runs a [`RowKernel`] (passed as `userdata`) over thread `ith`'s share of the rows.
unsafe extern "C" fn map_rows_thunk(
    dst: *mut sys::ggml_tensor,
    ith: std::os::raw::c_int,
    nth: std::os::raw::c_int,
    userdata: *mut std::os::raw::c_void,
) {
    // SAFETY: `map_rows` stored a `RowKernel` in `userdata` and checked that
    // the input and the parameters are contiguous F32 with rows of `n0`; the
    // output was created contiguous with the input's shape.
    unsafe {
        let f = std::mem::transmute::<*mut std::os::raw::c_void, RowKernel>(userdata);
        let dst = &*dst;
        let n0 = dst.ne[0] as usize;
        let rows = (sys::ggml_nelements(dst) as usize)
            .checked_div(n0)
            .unwrap_or(0);
        let n_src = dst.src.iter().take_while(|s| !s.is_null()).count();
        let x = &*dst.src[0];
        let mut params = [&[][..]; sys::GGML_MAX_SRC as usize];
        for (slot, &p) in params.iter_mut().zip(&dst.src[1..n_src]) {
            *slot = std::slice::from_raw_parts((*p).data as *const f32, n0);
        }
        let params = &params[..n_src - 1];
        let (ith, nth) = (ith as usize, nth as usize);
        let (start, end) = (rows * ith / nth, rows * (ith + 1) / nth);
        for r in start..end {
            let out = std::slice::from_raw_parts_mut((dst.data as *mut f32).add(r * n0), n0);
            let xr = std::slice::from_raw_parts((x.data as *const f32).add(r * n0), n0);
            f(out, xr, params);
        }
    }
}
