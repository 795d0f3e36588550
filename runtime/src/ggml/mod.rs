//! Safe wrappers over the ggml FFI. This module (with its submodules) is the
//! only place in the project that uses `unsafe`.
//!
//! Ownership model: a [`Context`] owns ggml's tensor/graph metadata; every
//! [`Tensor`] borrows its context, so a tensor handle cannot outlive the
//! memory it points into. Tensors that outlive graphs (weights, KV caches)
//! live in a [`TensorStore`]; a [`StoredTensor`] handle keeps its store alive,
//! and so does every context whose graphs use it. Activation data lives in
//! the scheduler's buffers.
//!
//! Submodules: `tensor` (contexts, tensor handles), `ops` (graph operations
//! and custom kernels), `gemv` (the quantised matrix × vector kernel), `gemm` (products with
//! the weights outputs fastest), `rows` (SnakeBeta and ELU), `winograd` (fast convolution),
//! `graph` (reusable graphs), `store` (persistent tensors), `backend`
//! (backends, buffers, scheduler), `device` (the devices of this build, `--device`), `gguf` (GGUF headers), `mmap`, `quant`.

mod backend;
pub mod device;
mod gemm;
mod gemv;
pub mod gguf;
mod graph;
pub mod mmap;
mod ops;
pub mod quant;
mod rows;
mod store;
mod tensor;
mod winograd;

use std::ffi::CStr;
use std::sync::{Mutex, Once};

use ggml_sys as sys;

pub use backend::{Backend, BackendBuffer, Scheduler};
pub use gemv::MAX_ROW_DOT_VECTORS;
pub use graph::{Graph, OwnedGraph};
pub use ops::{ConvKernel, RowKernel, TapsKernel, Unfold};
pub use quant::{dequantize, quantize, GgmlType};
pub use store::{StoredTensor, TensorSpec, TensorStore, TENSOR_ALIGNMENT};
pub use tensor::{as_bytes, Context, Slot, Tensor};

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

extern "C" {
    fn _exit(status: std::os::raw::c_int) -> !;
}

/// Ends the process at once with `status`, without running exit handlers
/// or static destructors: what a signal handler must do while graphs may be
/// computing on other threads (`exit` would tear ggml's backend registry
/// down under them, and the process would crash on its way out).
pub fn exit_immediately(status: i32) -> ! {
    unsafe { _exit(status) }
}
