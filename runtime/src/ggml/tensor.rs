//! Contexts (ggml's tensor and graph metadata) and tensor handles.

use std::ffi::{CStr, CString};
use std::marker::PhantomData;
use std::ptr::NonNull;

use ggml_sys as sys;

use std::sync::atomic::{AtomicU64, Ordering};

use super::store::KeepAlive;
use super::{dequantize, init_logging, GgmlType, Graph, MAX_DIMS};

// ---------------------------------------------------------------------------
// Context and tensors

/// A ggml context holding tensor and graph metadata (never tensor data: all
/// contexts are created with `no_alloc`, data goes to backend buffers).
pub struct Context {
    pub(super) ptr: NonNull<sys::ggml_context>,
    /// Tells this context's tensors apart from others' (see [`Slot`]).
    id: u64,
    /// Stores whose tensors this context's graphs use (see `Context::stored`).
    pub(super) keep_alive: KeepAlive,
    /// See `Context::set_column_invariant`.
    pub(super) column_invariant: std::cell::Cell<bool>,
    /// See `Context::set_row_dots`.
    pub(super) row_dots: std::cell::Cell<bool>,
    /// Whether this context's graphs may use the ops layer's CPU kernels
    /// (custom ops); see `Backend::cpu_kernels`.
    pub(super) cpu_kernels: std::cell::Cell<bool>,
}

/// A tensor of one graph's context remembered without a borrow (typed graph
/// inputs and outputs): [`super::OwnedGraph::tensor`] turns it back into a
/// [`Tensor`], checking that it belongs to that graph.
#[derive(Clone, Copy, Debug)]
pub struct Slot {
    ptr: NonNull<sys::ggml_tensor>,
    context: u64,
}

// SAFETY: a slot is only dereferenced through the context it came from
// (checked by id), which the holder of that context borrows.
unsafe impl Send for Slot {}
unsafe impl Sync for Slot {}

static NEXT_CONTEXT_ID: AtomicU64 = AtomicU64::new(1);

// The context is only used from one thread at a time; ggml has no hidden
// thread affinity for contexts.
unsafe impl Send for Context {}

/// A handle to a tensor inside a [`Context`].
#[derive(Clone, Copy)]
pub struct Tensor<'ctx> {
    pub(super) ptr: NonNull<sys::ggml_tensor>,
    pub(super) _ctx: PhantomData<&'ctx Context>,
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
            id: NEXT_CONTEXT_ID.fetch_add(1, Ordering::Relaxed),
            keep_alive: Default::default(),
            column_invariant: Default::default(),
            cpu_kernels: std::cell::Cell::new(true),
            row_dots: Default::default(),
        }
    }

    pub(super) fn wrap(&self, ptr: *mut sys::ggml_tensor) -> Tensor<'_> {
        Tensor {
            ptr: NonNull::new(ptr).expect("ggml returned a NULL tensor"),
            _ctx: PhantomData,
        }
    }

    pub(super) fn raw(&self) -> *mut sys::ggml_context {
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

    /// The tensor of this context that `slot` remembers.
    pub fn slot_tensor(&self, slot: Slot) -> Tensor<'_> {
        assert_eq!(
            slot.context, self.id,
            "a slot used with another graph's context"
        );
        Tensor {
            ptr: slot.ptr,
            _ctx: PhantomData,
        }
    }

    /// Remembers `t` (a tensor of this context) as a [`Slot`].
    pub fn slot(&self, t: Tensor<'_>) -> Slot {
        Slot {
            ptr: t.ptr,
            context: self.id,
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
}

impl Drop for Context {
    fn drop(&mut self) {
        unsafe { sys::ggml_free(self.ptr.as_ptr()) };
    }
}

impl<'ctx> Tensor<'ctx> {
    pub(super) fn raw(&self) -> *mut sys::ggml_tensor {
        self.ptr.as_ptr()
    }
    pub(super) fn inner(&self) -> &sys::ggml_tensor {
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
    /// Whether the elements lie back to back in order (dims of size 1 aside),
    /// so that a reshape can stand in for a copy.
    pub fn is_contiguous(&self) -> bool {
        unsafe { sys::ggml_is_contiguous(self.raw()) }
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
    /// Reads `len` raw bytes from byte `offset` on.
    pub fn get_bytes_at(&self, offset: usize, len: usize) -> Vec<u8> {
        self.check_allocated();
        assert!(
            offset + len <= self.n_bytes(),
            "get_bytes_at out of range for '{}'",
            self.name()
        );
        let mut out = vec![0u8; len];
        unsafe { sys::ggml_backend_tensor_get(self.raw(), out.as_mut_ptr().cast(), offset, len) };
        out
    }
    /// Reads an I32 tensor back.
    pub fn get_i32(&self) -> Vec<i32> {
        assert_eq!(
            self.ty(),
            GgmlType::I32,
            "get_i32 on a {:?} tensor",
            self.ty()
        );
        self.get_bytes()
            .chunks_exact(4)
            .map(|b| i32::from_le_bytes([b[0], b[1], b[2], b[3]]))
            .collect()
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
