//! Safe wrappers over the ggml FFI. This module (with its submodules) is the
//! only place in the project that uses `unsafe`.
//!
//! Ownership model: a [`Context`] owns ggml's tensor/graph metadata; every
//! [`Tensor`] borrows its context, so a tensor handle cannot outlive the
//! memory it points into. Tensor *data* lives in backend buffers
//! ([`BackendBuffer`] for weights, the scheduler's buffers for activations).

mod gemv;
pub mod gguf;
pub mod mmap;
pub mod quant;

use std::ffi::{CStr, CString};
use std::marker::PhantomData;
use std::ptr::NonNull;
use std::sync::{Mutex, Once};

use ggml_sys as sys;

pub use quant::{dequantize, quantize, GgmlType};

/// Maximum number of dimensions of a ggml tensor.
pub const MAX_DIMS: usize = sys::GGML_MAX_DIMS as usize;
/// Longest tensor name ggml stores (including the terminating NUL).
pub const MAX_NAME: usize = sys::GGML_MAX_NAME as usize;

// ---------------------------------------------------------------------------
// Logging: ggml reports problems (e.g. a malformed GGUF) through its log
// callback; we keep the recent warnings/errors to put them into our errors.

static LOG_INIT: Once = Once::new();
static LOG_BUFFER: Mutex<String> = Mutex::new(String::new());

unsafe extern "C" fn log_callback(
    level: sys::ggml_log_level,
    text: *const std::os::raw::c_char,
    _user: *mut std::os::raw::c_void,
) {
    if text.is_null() {
        return;
    }
    let msg = unsafe { CStr::from_ptr(text) }.to_string_lossy();
    // Keep warnings and errors (and their continuation lines); drop info/debug chatter.
    let keep = matches!(
        level,
        sys::GGML_LOG_LEVEL_WARN | sys::GGML_LOG_LEVEL_ERROR | sys::GGML_LOG_LEVEL_CONT
    );
    if keep {
        if let Ok(mut buf) = LOG_BUFFER.lock() {
            if buf.len() > 16 * 1024 {
                buf.clear();
            }
            buf.push_str(&msg);
        }
    }
}

/// Routes ggml's log output into our buffer (idempotent).
pub fn init_logging() {
    LOG_INIT.call_once(|| unsafe {
        sys::ggml_log_set(Some(log_callback), std::ptr::null_mut());
    });
}

/// Returns and clears what ggml logged (warnings and errors) since the last call.
pub fn take_log() -> String {
    LOG_BUFFER
        .lock()
        .map(|mut b| std::mem::take(&mut *b).trim().to_string())
        .unwrap_or_default()
}

// ---------------------------------------------------------------------------
// Context and tensors

/// A ggml context holding tensor and graph metadata (never tensor data: all
/// contexts are created with `no_alloc`, data goes to backend buffers).
pub struct Context {
    ptr: NonNull<sys::ggml_context>,
}

// The context is only used from one thread at a time; ggml has no hidden
// thread affinity for contexts.
unsafe impl Send for Context {}

/// A handle to a tensor inside a [`Context`].
#[derive(Clone, Copy)]
pub struct Tensor<'ctx> {
    ptr: NonNull<sys::ggml_tensor>,
    _ctx: PhantomData<&'ctx Context>,
}

impl Context {
    /// A metadata-only context with room for `max_tensors` tensors and one
    /// graph of up to `graph_nodes` nodes (0 for none).
    pub fn new(max_tensors: usize, graph_nodes: usize) -> Self {
        init_logging();
        let mut mem = max_tensors * unsafe { sys::ggml_tensor_overhead() } + 1024;
        if graph_nodes > 0 {
            mem += unsafe { sys::ggml_graph_overhead_custom(graph_nodes, false) };
        }
        let params = sys::ggml_init_params {
            mem_size: mem,
            mem_buffer: std::ptr::null_mut(),
            no_alloc: true,
        };
        let ptr = unsafe { sys::ggml_init(params) };
        Self {
            ptr: NonNull::new(ptr).expect("ggml_init returned NULL (out of memory)"),
        }
    }

    fn wrap(&self, ptr: *mut sys::ggml_tensor) -> Tensor<'_> {
        Tensor {
            ptr: NonNull::new(ptr).expect("ggml returned a NULL tensor"),
            _ctx: PhantomData,
        }
    }

    fn raw(&self) -> *mut sys::ggml_context {
        self.ptr.as_ptr()
    }

    /// A new tensor with dimensions in ggml order (`ne[0]` is the contiguous one).
    pub fn new_tensor(&self, ty: GgmlType, ne: &[i64]) -> Tensor<'_> {
        assert!(
            !ne.is_empty() && ne.len() <= MAX_DIMS,
            "bad tensor rank {}",
            ne.len()
        );
        let p = unsafe {
            match ne.len() {
                1 => sys::ggml_new_tensor_1d(self.raw(), ty.raw(), ne[0]),
                2 => sys::ggml_new_tensor_2d(self.raw(), ty.raw(), ne[0], ne[1]),
                3 => sys::ggml_new_tensor_3d(self.raw(), ty.raw(), ne[0], ne[1], ne[2]),
                _ => sys::ggml_new_tensor_4d(self.raw(), ty.raw(), ne[0], ne[1], ne[2], ne[3]),
            }
        };
        self.wrap(p)
    }

    /// Looks a tensor up by name.
    pub fn get_tensor(&self, name: &str) -> Option<Tensor<'_>> {
        let c = CString::new(name).ok()?;
        let p = unsafe { sys::ggml_get_tensor(self.raw(), c.as_ptr()) };
        NonNull::new(p).map(|ptr| Tensor {
            ptr,
            _ctx: PhantomData,
        })
    }

    /// Allocates every tensor of this context in one buffer of `backend`.
    pub fn alloc_tensors(&self, backend: &Backend) -> BackendBuffer {
        let p = unsafe { sys::ggml_backend_alloc_ctx_tensors(self.raw(), backend.ptr.as_ptr()) };
        BackendBuffer {
            ptr: NonNull::new(p).expect("failed to allocate the backend buffer for weights"),
        }
    }

    /// Builds the forward graph computing `outputs`.
    pub fn build_graph(&self, outputs: &[Tensor<'_>], max_nodes: usize) -> Graph<'_> {
        let g = unsafe { sys::ggml_new_graph_custom(self.raw(), max_nodes, false) };
        let g = NonNull::new(g).expect("ggml_new_graph_custom returned NULL");
        for t in outputs {
            unsafe { sys::ggml_build_forward_expand(g.as_ptr(), t.ptr.as_ptr()) };
        }
        Graph {
            ptr: g,
            _ctx: PhantomData,
        }
    }

    // ---- operations (thin; shapes follow ggml's conventions) -----------------

    /// `a` `[k, n]` (weights) times `b` `[k, m, …]` → `[n, m, …]`. Quantised
    /// or F16 weights times up to four vectors take the prefetching row walk
    /// of `gemv` (ggml's kernels, same results).
    pub fn mul_mat<'a>(&'a self, a: Tensor<'a>, b: Tensor<'a>) -> Tensor<'a> {
        if gemv::applies(a.raw(), b.raw()) {
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

    /// ggml's own `mul_mat`, whatever the shapes (the reference `mul_mat`'s
    /// fast path is tested against).
    pub fn mul_mat_ggml<'a>(&'a self, a: Tensor<'a>, b: Tensor<'a>) -> Tensor<'a> {
        self.wrap(unsafe { sys::ggml_mul_mat(self.raw(), a.raw(), b.raw()) })
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
    /// Fused attention. q: [d, n_q, heads], k/v: [d, n_kv, kv_heads], mask
    /// [n_kv, n_q_padded] F16. Result [d, heads, n_q] (permuted).
    pub fn flash_attn_ext<'a>(
        &'a self,
        q: Tensor<'a>,
        k: Tensor<'a>,
        v: Tensor<'a>,
        mask: Option<Tensor<'a>>,
        scale: f32,
    ) -> Tensor<'a> {
        let m = mask.map_or(std::ptr::null_mut(), |m| m.raw());
        self.wrap(unsafe {
            sys::ggml_flash_attn_ext(self.raw(), q.raw(), k.raw(), v.raw(), m, scale, 0.0, 0.0)
        })
    }
    /// 1-D convolution (im2col + matmul). Kernel [k, c_in, c_out], data [t, c_in].
    pub fn conv_1d<'a>(
        &'a self,
        kernel: Tensor<'a>,
        data: Tensor<'a>,
        stride: i32,
        pad: i32,
        dilation: i32,
    ) -> Tensor<'a> {
        self.wrap(unsafe {
            sys::ggml_conv_1d(self.raw(), kernel.raw(), data.raw(), stride, pad, dilation)
        })
    }
    /// Transposed 1-D convolution. Kernel [k, c_out, c_in], data [t, c_in].
    pub fn conv_transpose_1d<'a>(
        &'a self,
        kernel: Tensor<'a>,
        data: Tensor<'a>,
        stride: i32,
    ) -> Tensor<'a> {
        self.wrap(unsafe {
            sys::ggml_conv_transpose_1d(self.raw(), kernel.raw(), data.raw(), stride, 0, 1)
        })
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
    pub fn div<'a>(&'a self, a: Tensor<'a>, b: Tensor<'a>) -> Tensor<'a> {
        self.wrap(unsafe { sys::ggml_div(self.raw(), a.raw(), b.raw()) })
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
    /// A view of `a` with dims `ne` (up to 3), byte strides `nb` (for dims 1..)
    /// and byte `offset`.
    pub fn view<'a>(
        &'a self,
        a: Tensor<'a>,
        ne: &[i64],
        nb: &[usize],
        offset: usize,
    ) -> Tensor<'a> {
        let p = unsafe {
            match ne.len() {
                1 => sys::ggml_view_1d(self.raw(), a.raw(), ne[0], offset),
                2 => sys::ggml_view_2d(self.raw(), a.raw(), ne[0], ne[1], nb[0], offset),
                _ => sys::ggml_view_3d(
                    self.raw(),
                    a.raw(),
                    ne[0],
                    ne[1],
                    ne[2],
                    nb[0],
                    nb[1],
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
    pub fn elu<'a>(&'a self, a: Tensor<'a>) -> Tensor<'a> {
        self.wrap(unsafe { sys::ggml_elu(self.raw(), a.raw()) })
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
    /// The input of a dilated conv as one matrix: `x` `[c, n + (k − 1)·d]`
    /// (contiguous F32, channels fastest) → `[k·c, n]` of type `ty` (F32 or
    /// F16) whose column `t` stacks columns `t, t + d, …, t + (k − 1)·d` of
    /// `x`. Multiplied by a kernel laid out `[c, k, c_out]` it gives the
    /// conv; unlike ggml's im2col (time fastest) it is whole-column copies,
    /// no transposes, and written in the kernel's type the product needs no
    /// conversion pass of its own.
    pub fn unfold_columns<'a>(
        &'a self,
        x: Tensor<'a>,
        k: usize,
        dilation: usize,
        ty: GgmlType,
    ) -> Tensor<'a> {
        let [c, len, ..] = x.ne();
        let pad = ((k - 1) * dilation) as i64;
        assert!(
            k >= 2 && dilation >= 1 && len > pad && x.ty() == GgmlType::F32 && x.ne()[2] == 1,
            "unfold_columns: bad input {:?} for k {k}, dilation {dilation}",
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
        let mut args = [x.raw()];
        self.wrap(unsafe {
            sys::ggml_custom_4d(
                self.raw(),
                ty.raw(),
                k as i64 * c,
                len - pad,
                1,
                1,
                args.as_mut_ptr(),
                1,
                Some(unfold_columns_thunk),
                sys::GGML_N_TASKS_MAX,
                std::ptr::null_mut(),
            )
        })
    }
}

/// Thread `ith`'s share of the output columns of [`Context::unfold_columns`]
/// (k and the dilation follow from the shapes).
unsafe extern "C" fn unfold_columns_thunk(
    dst: *mut sys::ggml_tensor,
    ith: std::os::raw::c_int,
    nth: std::os::raw::c_int,
    _userdata: *mut std::os::raw::c_void,
) {
    use half::slice::HalfFloatSliceExt;
    // SAFETY: `unfold_columns` checked that the input is contiguous F32
    // `[c, n + (k − 1)·d]` and created the output contiguous `[k·c, n]` of
    // F32 or F16; every slice below lies inside those.
    unsafe {
        let dst = &*dst;
        let x = &*dst.src[0];
        let c = x.ne[0] as usize;
        let (kc, n) = (dst.ne[0] as usize, dst.ne[1] as usize);
        let k = kc / c;
        let d = (x.ne[1] as usize - n) / (k - 1);
        let src = std::slice::from_raw_parts(x.data as *const f32, c * x.ne[1] as usize);
        let f16_out = dst.type_ == GgmlType::F16.raw();
        let (ith, nth) = (ith as usize, nth as usize);
        let (first, end) = (n * ith / nth, n * (ith + 1) / nth);
        let put = |t: usize, j: usize, len: usize| {
            let from = &src[(t + j * d) * c..][..len];
            let at = t * kc + j * c;
            if f16_out {
                let out = (dst.data as *mut half::f16).add(at);
                std::slice::from_raw_parts_mut(out, len).convert_from_f32_slice(from);
            } else {
                let out = (dst.data as *mut f32).add(at);
                std::slice::from_raw_parts_mut(out, len).copy_from_slice(from);
            }
        };
        for t in first..end {
            if d == 1 {
                put(t, 0, kc); // the k columns are adjacent
            } else {
                for j in 0..k {
                    put(t, j, c);
                }
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

impl Drop for Context {
    fn drop(&mut self) {
        unsafe { sys::ggml_free(self.ptr.as_ptr()) };
    }
}

impl<'ctx> Tensor<'ctx> {
    fn raw(&self) -> *mut sys::ggml_tensor {
        self.ptr.as_ptr()
    }
    fn inner(&self) -> &sys::ggml_tensor {
        // The tensor lives as long as its context, which `'ctx` borrows.
        unsafe { self.ptr.as_ref() }
    }
    /// Dimensions in ggml order.
    pub fn ne(&self) -> [i64; MAX_DIMS] {
        self.inner().ne
    }
    pub fn ty(&self) -> GgmlType {
        GgmlType::from_raw(self.inner().type_).expect("tensor of a type this crate does not know")
    }
    pub fn n_elements(&self) -> i64 {
        unsafe { sys::ggml_nelements(self.raw()) }
    }
    pub fn n_bytes(&self) -> usize {
        unsafe { sys::ggml_nbytes(self.raw()) }
    }
    /// Byte strides in ggml order.
    pub fn nb(&self) -> [usize; MAX_DIMS] {
        self.inner().nb
    }
    /// Bytes per element (for plain types).
    pub fn element_size(&self) -> usize {
        unsafe { sys::ggml_element_size(self.raw()) }
    }
    /// The operation that computes this tensor, as ggml names it
    /// (`MUL_MAT`, `CUSTOM`, … ; `NONE` for leaves).
    pub fn op(&self) -> String {
        unsafe { CStr::from_ptr(sys::ggml_op_desc(self.raw())) }
            .to_string_lossy()
            .into_owned()
    }
    pub fn name(&self) -> String {
        let raw = &self.inner().name;
        let bytes: Vec<u8> = raw
            .iter()
            .take_while(|&&c| c != 0)
            .map(|&c| c as u8)
            .collect();
        String::from_utf8_lossy(&bytes).into_owned()
    }
    /// Names the tensor (truncated by ggml at [`MAX_NAME`] − 1 bytes).
    pub fn set_name(self, name: &str) -> Self {
        let c = CString::new(name).expect("tensor name with NUL");
        unsafe { sys::ggml_set_name(self.raw(), c.as_ptr()) };
        self
    }
    /// Marks the tensor as a graph input (its data is set before compute).
    pub fn set_input(self) -> Self {
        unsafe { sys::ggml_set_input(self.raw()) };
        self
    }
    /// Marks the tensor as a graph output (kept after compute).
    pub fn set_output(self) -> Self {
        unsafe { sys::ggml_set_output(self.raw()) };
        self
    }
    fn check_allocated(&self) {
        assert!(
            !self.inner().buffer.is_null(),
            "tensor '{}' has no backend buffer (graph not allocated?)",
            self.name()
        );
    }
    /// Copies raw bytes into the tensor (its full size).
    pub fn set_bytes(&self, data: &[u8]) {
        self.check_allocated();
        assert_eq!(
            data.len(),
            self.n_bytes(),
            "set_bytes size mismatch for '{}'",
            self.name()
        );
        unsafe { sys::ggml_backend_tensor_set(self.raw(), data.as_ptr().cast(), 0, data.len()) };
    }
    /// Copies raw bytes into the tensor starting at byte `offset`.
    pub fn set_bytes_at(&self, offset: usize, data: &[u8]) {
        self.check_allocated();
        assert!(
            offset + data.len() <= self.n_bytes(),
            "set_bytes_at out of range for '{}'",
            self.name()
        );
        unsafe {
            sys::ggml_backend_tensor_set(self.raw(), data.as_ptr().cast(), offset, data.len())
        };
    }
    pub fn set_f32(&self, data: &[f32]) {
        assert_eq!(
            self.ty(),
            GgmlType::F32,
            "set_f32 on a {:?} tensor",
            self.ty()
        );
        self.set_bytes(as_bytes(data));
    }
    pub fn set_i32(&self, data: &[i32]) {
        assert_eq!(
            self.ty(),
            GgmlType::I32,
            "set_i32 on a {:?} tensor",
            self.ty()
        );
        self.set_bytes(as_bytes(data));
    }
    /// Reads the whole tensor back as raw bytes.
    pub fn get_bytes(&self) -> Vec<u8> {
        self.check_allocated();
        let mut out = vec![0u8; self.n_bytes()];
        unsafe { sys::ggml_backend_tensor_get(self.raw(), out.as_mut_ptr().cast(), 0, out.len()) };
        out
    }
    /// Reads the tensor back as f32 (dequantising / converting as needed).
    /// Non-contiguous views are not supported.
    pub fn get_f32(&self) -> Vec<f32> {
        assert!(
            unsafe { sys::ggml_is_contiguous(self.raw()) },
            "get_f32 on a non-contiguous tensor"
        );
        dequantize(self.ty(), &self.get_bytes(), self.n_elements() as usize)
    }
}

/// Views a slice of plain numbers as bytes.
pub fn as_bytes<T: Copy>(data: &[T]) -> &[u8] {
    // f32/i32/u16/etc. have no padding and any byte pattern is valid to read.
    unsafe { std::slice::from_raw_parts(data.as_ptr().cast(), std::mem::size_of_val(data)) }
}

/// A computation graph built in a [`Context`].
pub struct Graph<'ctx> {
    ptr: NonNull<sys::ggml_cgraph>,
    _ctx: PhantomData<&'ctx Context>,
}

impl Graph<'_> {
    pub fn n_nodes(&self) -> usize {
        unsafe { sys::ggml_graph_n_nodes(self.ptr.as_ptr()) as usize }
    }
}

// ---------------------------------------------------------------------------
// Backends, buffers, scheduler

/// A compute backend (the CPU one here; GPU backends plug in the same way).
pub struct Backend {
    ptr: NonNull<sys::ggml_backend>,
}

unsafe impl Send for Backend {}

impl Backend {
    /// The CPU backend using `n_threads` threads.
    pub fn cpu(n_threads: usize) -> Self {
        init_logging();
        let p = unsafe { sys::ggml_backend_cpu_init() };
        let ptr = NonNull::new(p).expect("ggml_backend_cpu_init failed");
        unsafe { sys::ggml_backend_cpu_set_n_threads(ptr.as_ptr(), n_threads.max(1) as i32) };
        Self { ptr }
    }
    pub fn set_threads(&self, n_threads: usize) {
        unsafe { sys::ggml_backend_cpu_set_n_threads(self.ptr.as_ptr(), n_threads.max(1) as i32) };
    }
    pub fn name(&self) -> String {
        unsafe { CStr::from_ptr(sys::ggml_backend_name(self.ptr.as_ptr())) }
            .to_string_lossy()
            .into_owned()
    }
}

impl Drop for Backend {
    fn drop(&mut self) {
        unsafe { sys::ggml_backend_free(self.ptr.as_ptr()) };
    }
}

/// A backend buffer holding the data of a context's tensors (e.g. weights).
pub struct BackendBuffer {
    ptr: NonNull<sys::ggml_backend_buffer>,
}

unsafe impl Send for BackendBuffer {}

impl BackendBuffer {
    pub fn size(&self) -> usize {
        unsafe { sys::ggml_backend_buffer_get_size(self.ptr.as_ptr()) }
    }
}

impl Drop for BackendBuffer {
    fn drop(&mut self) {
        unsafe { sys::ggml_backend_buffer_free(self.ptr.as_ptr()) };
    }
}

/// A `ggml_backend_sched` over one or more backends (the last must be the CPU).
/// It must not outlive the backends it was created with; callers keep both in
/// one struct with the scheduler declared first so it drops first.
pub struct Scheduler {
    ptr: NonNull<sys::ggml_backend_sched>,
}

unsafe impl Send for Scheduler {}

impl Scheduler {
    pub fn new(backends: &[&Backend], graph_size: usize) -> Self {
        let mut raw: Vec<sys::ggml_backend_t> = backends.iter().map(|b| b.ptr.as_ptr()).collect();
        let p = unsafe {
            sys::ggml_backend_sched_new(
                raw.as_mut_ptr(),
                std::ptr::null_mut(),
                raw.len() as i32,
                graph_size,
                false,
                false,
            )
        };
        Self {
            ptr: NonNull::new(p).expect("ggml_backend_sched_new failed"),
        }
    }

    /// Allocates the graph's intermediate tensors (inputs become writable).
    pub fn alloc_graph(&mut self, graph: &Graph<'_>) -> Result<(), String> {
        unsafe { sys::ggml_backend_sched_reset(self.ptr.as_ptr()) };
        if unsafe { sys::ggml_backend_sched_alloc_graph(self.ptr.as_ptr(), graph.ptr.as_ptr()) } {
            Ok(())
        } else {
            Err(format!("failed to allocate compute graph: {}", take_log()))
        }
    }

    /// Computes an allocated graph.
    pub fn compute(&mut self, graph: &Graph<'_>) -> Result<(), String> {
        let status =
            unsafe { sys::ggml_backend_sched_graph_compute(self.ptr.as_ptr(), graph.ptr.as_ptr()) };
        if status == sys::GGML_STATUS_SUCCESS {
            Ok(())
        } else {
            Err(format!(
                "graph compute failed (status {status}): {}",
                take_log()
            ))
        }
    }
}

impl Drop for Scheduler {
    fn drop(&mut self) {
        unsafe { sys::ggml_backend_sched_free(self.ptr.as_ptr()) };
    }
}

// ---------------------------------------------------------------------------
// Persistent tensors and reusable graphs

/// A tensor to create in a [`TensorStore`]: name, type, ggml-order dims.
pub type TensorSpec = (String, GgmlType, Vec<i64>);

/// Alignment ggml's CPU backend requires of tensor data.
pub const TENSOR_ALIGNMENT: usize = 32;

/// Tensors that live across graph executions (weights, KV caches): metadata
/// contexts plus the backend buffers holding their data. Weights stored as
/// the model computes with them can stay in the mapped model file (no copy:
/// the OS pages them in on first use, and a lookup table only costs the rows
/// actually read).
pub struct TensorStore {
    // Field order: buffers are freed before the contexts, the mapping last.
    owned: Option<BackendBuffer>,
    mapped: Option<BackendBuffer>,
    contexts: Vec<Context>,
    mapping: Option<std::sync::Arc<mmap::MappedFile>>,
}

impl TensorStore {
    /// Creates tensors with `specs` and allocates them on `backend`
    /// (contents uninitialised until set).
    pub fn new(backend: &Backend, specs: &[TensorSpec]) -> Self {
        let ctx = Context::new(specs.len().max(1), 0);
        for (name, ty, ne) in specs {
            ctx.new_tensor(*ty, ne).set_name(name);
        }
        Self {
            owned: (!specs.is_empty()).then(|| ctx.alloc_tensors(backend)),
            mapped: None,
            contexts: vec![ctx],
            mapping: None,
        }
    }

    /// Like [`TensorStore::new`] for `owned`, plus `mapped` tensors whose
    /// data is used in place at the given byte offsets of `mapping` (each a
    /// multiple of [`TENSOR_ALIGNMENT`], holding the tensor's exact bytes).
    /// Mapped tensors are read-only: nothing may write to them.
    pub fn with_mapped(
        backend: &Backend,
        owned: &[TensorSpec],
        mapping: std::sync::Arc<mmap::MappedFile>,
        mapped: &[(TensorSpec, usize)],
    ) -> Self {
        let mut store = Self::new(backend, owned);
        if mapped.is_empty() {
            return store;
        }
        let ctx = Context::new(mapped.len(), 0);
        let bytes = mapping.bytes();
        let mut range = (usize::MAX, 0);
        let tensors: Vec<(Tensor<'_>, usize)> = mapped
            .iter()
            .map(|((name, ty, ne), offset)| {
                let t = ctx.new_tensor(*ty, ne).set_name(name);
                assert!(
                    offset % TENSOR_ALIGNMENT == 0 && offset + t.n_bytes() <= bytes.len(),
                    "mapped tensor '{name}' is unaligned or outside the file"
                );
                range = (range.0.min(*offset), range.1.max(offset + t.n_bytes()));
                (t, *offset)
            })
            .collect();
        // ggml never writes through or frees a from_ptr buffer; `mapping`
        // keeps the memory alive as long as the buffer.
        let base = bytes[range.0..].as_ptr() as *mut std::os::raw::c_void;
        let buffer = unsafe { sys::ggml_backend_cpu_buffer_from_ptr(base, range.1 - range.0) };
        let buffer = BackendBuffer {
            ptr: NonNull::new(buffer).expect("ggml_backend_cpu_buffer_from_ptr failed"),
        };
        for (t, offset) in &tensors {
            let addr = bytes[*offset..].as_ptr() as *mut std::os::raw::c_void;
            let status = unsafe {
                sys::ggml_backend_tensor_alloc(buffer.ptr.as_ptr(), t.ptr.as_ptr(), addr)
            };
            assert_eq!(
                status,
                sys::GGML_STATUS_SUCCESS,
                "ggml_backend_tensor_alloc"
            );
        }
        drop(tensors);
        store.mapped = Some(buffer);
        store.contexts.push(ctx);
        store.mapping = Some(mapping);
        store
    }

    /// The tensor called `name`, if any.
    pub fn get(&self, name: &str) -> Option<Tensor<'_>> {
        self.contexts.iter().find_map(|c| c.get_tensor(name))
    }

    /// Bytes of backend memory held (mapped file ranges included).
    pub fn size(&self) -> usize {
        self.owned
            .iter()
            .chain(&self.mapped)
            .map(BackendBuffer::size)
            .sum()
    }

    /// Fills every byte of every owned tensor with `value` (e.g. to clear a
    /// cache); mapped tensors are read-only and left alone.
    pub fn clear(&self, value: u8) {
        if let Some(b) = &self.owned {
            unsafe { sys::ggml_backend_buffer_clear(b.ptr.as_ptr(), value) };
        }
    }
}

/// A graph that owns its context and its scheduler, and keeps the tensor
/// stores it reads from alive, so it can be built once and computed many
/// times. (Each reusable graph has its own scheduler: a scheduler that
/// allocated other graphs in between may have reallocated its compute buffer,
/// leaving this graph's tensors pointing at freed memory.)
pub struct OwnedGraph {
    sched: Scheduler,
    /// Set once the scheduler has split and allocated the graph: later
    /// computes reuse that (inputs are rewritten every time).
    allocated: bool,
    graph: NonNull<sys::ggml_cgraph>,
    ctx: Context,
    _stores: Vec<std::sync::Arc<TensorStore>>,
    _backend: std::sync::Arc<Backend>,
}

unsafe impl Send for OwnedGraph {}

impl OwnedGraph {
    /// Builds a graph of at most `max_nodes` nodes for `backend`: `build`
    /// creates the inputs (named, so they can be found again) and returns the
    /// outputs.
    pub fn build<F>(
        backend: &std::sync::Arc<Backend>,
        max_nodes: usize,
        stores: Vec<std::sync::Arc<TensorStore>>,
        build: F,
    ) -> Self
    where
        F: for<'a> FnOnce(&'a Context, &'a [std::sync::Arc<TensorStore>]) -> Vec<Tensor<'a>>,
    {
        let ctx = Context::new(max_nodes * 2, max_nodes);
        let graph = {
            let outputs = build(&ctx, &stores);
            for t in &outputs {
                t.set_output();
            }
            let g = ctx.build_graph(&outputs, max_nodes);
            g.ptr
        };
        Self {
            sched: Scheduler::new(&[backend], max_nodes * 2),
            allocated: false,
            graph,
            ctx,
            _stores: stores,
            _backend: backend.clone(),
        }
    }

    /// A named tensor of the graph (an input to fill or an output to read).
    pub fn tensor(&self, name: &str) -> Tensor<'_> {
        self.ctx
            .get_tensor(name)
            .unwrap_or_else(|| panic!("graph has no tensor named '{name}'"))
    }

    pub fn graph(&self) -> Graph<'_> {
        Graph {
            ptr: self.graph,
            _ctx: PhantomData,
        }
    }

    /// Allocates the graph (the first time), lets `set_inputs` fill its
    /// inputs, computes it.
    pub fn compute(&mut self, set_inputs: impl FnOnce(&OwnedGraph)) -> Result<(), String> {
        let g = Graph {
            ptr: self.graph,
            _ctx: PhantomData,
        };
        if !self.allocated {
            self.sched.alloc_graph(&g)?;
            self.allocated = true;
        }
        set_inputs(self);
        self.sched.compute(&g)
    }
}
