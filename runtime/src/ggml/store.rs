//! Tensors that live across graph executions: weights and persistent state
//! (KV caches, streaming context).

use std::ptr::NonNull;
use std::sync::Arc;

use ggml_sys as sys;

use super::device::DeviceInfo;
use super::{mmap, take_log, Backend, BackendBuffer, Context, GgmlType, Tensor, MAX_DIMS};

/// A tensor to create in a [`TensorStore`]: name, type, ggml-order dims.
pub type TensorSpec = (String, GgmlType, Vec<i64>);

/// Alignment ggml's CPU backend requires of tensor data.
pub const TENSOR_ALIGNMENT: usize = 32;

/// The memory of a store: metadata contexts plus the buffers holding the data.
pub(super) struct StoreMemory {
    // Field order: buffers are freed before the contexts, the mapping last.
    owned: Option<BackendBuffer>,
    mapped: Option<BackendBuffer>,
    contexts: Vec<Context>,
    mapping: Option<Arc<mmap::MappedFile>>,
    /// Weights a device cannot hold (over its buffer limits: e.g. the text
    /// embedding on a device with small storage buffers), left in the host
    /// store they came from; the scheduler runs their ops on the CPU.
    host: Option<TensorStore>,
}

// SAFETY: after creation the contexts' metadata is only read. Tensor data is
// written by graph computations and `StoredTensor::set_bytes_at`/`clear`;
// the runtime shares a weight store read-only between sessions, and a
// state store (KV cache, decoder context) belongs to one session, which
// computes its graphs one at a time.
unsafe impl Send for StoreMemory {}
unsafe impl Sync for StoreMemory {}

/// Tensors that live across graph executions (weights, KV caches). Weights
/// stored as the model computes with them can stay in the mapped model file
/// (no copy: the OS pages them in on first use, and a lookup table only costs
/// the rows actually read). Cloning shares the same tensors.
#[derive(Clone)]
pub struct TensorStore {
    memory: Arc<StoreMemory>,
}

/// A handle to one tensor of a [`TensorStore`], for use in any graph
/// ([`Context::stored`]); it keeps the store's memory alive, and so does every
/// graph that uses it.
#[derive(Clone)]
pub struct StoredTensor {
    ptr: NonNull<sys::ggml_tensor>,
    memory: Arc<StoreMemory>,
}

// SAFETY: the handle only reads the tensor's metadata (immutable after the
// store is created); data access goes through ggml's backend copy functions,
// under the store's contract above.
unsafe impl Send for StoredTensor {}
unsafe impl Sync for StoredTensor {}

impl std::fmt::Debug for StoredTensor {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "StoredTensor({} {:?} {:?})",
            self.name(),
            self.ty(),
            self.ne()
        )
    }
}

fn alloc_on_cpu(ctx: &Context) -> BackendBuffer {
    let p = unsafe {
        sys::ggml_backend_alloc_ctx_tensors_from_buft(
            ctx.raw(),
            sys::ggml_backend_cpu_buffer_type(),
        )
    };
    BackendBuffer {
        ptr: NonNull::new(p).expect("failed to allocate a CPU buffer for persistent tensors"),
    }
}

impl TensorStore {
    /// Creates tensors with `specs` in host memory (contents uninitialised
    /// until set).
    pub fn new(specs: &[TensorSpec]) -> Self {
        let memory = Self::owned_memory(specs);
        Self {
            memory: Arc::new(memory),
        }
    }

    fn owned_memory(specs: &[TensorSpec]) -> StoreMemory {
        let ctx = Context::new(specs.len().max(1), 0);
        for (name, ty, ne) in specs {
            ctx.new_tensor(*ty, ne).set_name(name);
        }
        StoreMemory {
            owned: (!specs.is_empty()).then(|| alloc_on_cpu(&ctx)),
            mapped: None,
            contexts: vec![ctx],
            mapping: None,
            host: None,
        }
    }

    /// Like [`TensorStore::new`] for `owned`, plus `mapped` tensors whose
    /// data is used in place at the given byte offsets of `mapping` (each a
    /// multiple of [`TENSOR_ALIGNMENT`], holding the tensor's exact bytes).
    /// Mapped tensors are read-only: nothing may write to them.
    pub fn with_mapped(
        owned: &[TensorSpec],
        mapping: Arc<mmap::MappedFile>,
        mapped: &[(TensorSpec, usize)],
    ) -> Self {
        let mut memory = Self::owned_memory(owned);
        if !mapped.is_empty() {
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
                let status =
                    unsafe { sys::ggml_backend_tensor_alloc(buffer.ptr.as_ptr(), t.raw(), addr) };
                assert_eq!(
                    status,
                    sys::GGML_STATUS_SUCCESS,
                    "ggml_backend_tensor_alloc"
                );
            }
            drop(tensors);
            memory.mapped = Some(buffer);
            memory.contexts.push(ctx);
            memory.mapping = Some(mapping);
        }
        Self {
            memory: Arc::new(memory),
        }
    }

    /// A store of `specs` (contents uninitialised) in `backend`'s memory: a
    /// GPU's own buffers, or the CPU's for a CPU backend.
    pub fn new_on(specs: &[TensorSpec], backend: &Backend) -> Self {
        match backend.device() {
            Some(device) if !specs.is_empty() => Self::new_on_device(specs, device),
            _ => Self::new(specs),
        }
    }

    fn new_on_device(specs: &[TensorSpec], device: &DeviceInfo) -> Self {
        let ctx = Context::new(specs.len(), 0);
        for (name, ty, ne) in specs {
            ctx.new_tensor(*ty, ne).set_name(name);
        }
        let p = unsafe {
            sys::ggml_backend_alloc_ctx_tensors_from_buft(
                ctx.raw(),
                sys::ggml_backend_dev_buffer_type(device.raw()),
            )
        };
        let buffer = BackendBuffer {
            ptr: NonNull::new(p).unwrap_or_else(|| {
                panic!(
                    "failed to allocate {} tensors on {} ({})",
                    specs.len(),
                    device.name,
                    take_log()
                )
            }),
        };
        Self {
            memory: Arc::new(StoreMemory {
                owned: Some(buffer),
                mapped: None,
                contexts: vec![ctx],
                mapping: None,
                host: None,
            }),
        }
    }

    /// Every tensor of this store copied into `device`'s memory (weights
    /// uploaded once at load, marked as weights for ggml's scheduler); the
    /// store itself for the CPU (`None`). A tensor the device cannot hold
    /// (ggml's backend refuses it: larger than its buffers may be) stays in
    /// this store's host memory, and its ops run on the CPU.
    pub fn upload_to(&self, device: Option<&DeviceInfo>) -> Self {
        let Some(device) = device else {
            return self.clone();
        };
        let dev = device.raw();
        let mut specs = Vec::new();
        let mut kept = 0;
        for ctx in &self.memory.contexts {
            let mut t = unsafe { sys::ggml_get_first_tensor(ctx.raw()) };
            while let Some(ptr) = NonNull::new(t) {
                let tensor = Tensor {
                    ptr,
                    _ctx: std::marker::PhantomData,
                };
                // The backend's check of a leaf is its size limits.
                if unsafe { sys::ggml_backend_dev_supports_op(dev, tensor.raw()) } {
                    let ne = tensor.ne();
                    let dims = ne.iter().rposition(|&d| d != 1).map_or(1, |i| i + 1);
                    specs.push((tensor.name(), tensor.ty(), ne[..dims].to_vec()));
                } else {
                    kept += 1;
                }
                t = unsafe { sys::ggml_get_next_tensor(ctx.raw(), t) };
            }
        }
        if specs.is_empty() {
            return self.clone();
        }
        let mut on = Self::new_on_device(&specs, device);
        if kept > 0 {
            Arc::get_mut(&mut on.memory).expect("just created").host = Some(self.clone());
        }
        if let Some(b) = &on.memory.owned {
            unsafe {
                sys::ggml_backend_buffer_set_usage(
                    b.ptr.as_ptr(),
                    sys::GGML_BACKEND_BUFFER_USAGE_WEIGHTS,
                )
            };
        }
        for (name, ..) in &specs {
            let from = self.get(name).expect("listed above");
            on.get(name)
                .expect("just created")
                .set_bytes_at(0, &from.get_bytes());
        }
        on
    }

    /// The tensor called `name`, if any.
    pub fn get(&self, name: &str) -> Option<StoredTensor> {
        self.memory
            .contexts
            .iter()
            .find_map(|c| c.get_tensor(name))
            .map(|t| StoredTensor {
                ptr: t.ptr,
                memory: self.memory.clone(),
            })
            .or_else(|| self.memory.host.as_ref().and_then(|h| h.get(name)))
    }

    /// Whether the store's memory is the host's (a CPU buffer or the mapped
    /// file) rather than a device's.
    pub fn is_host(&self) -> bool {
        self.memory
            .owned
            .iter()
            .chain(&self.memory.mapped)
            .all(|b| unsafe { sys::ggml_backend_buffer_is_host(b.ptr.as_ptr()) })
    }

    /// Bytes of memory held (mapped file ranges included).
    pub fn size(&self) -> usize {
        self.memory
            .owned
            .iter()
            .chain(&self.memory.mapped)
            .map(BackendBuffer::size)
            .sum()
    }

    /// Fills every byte of every owned tensor with `value` (e.g. to clear a
    /// cache); mapped tensors are read-only and left alone.
    pub fn clear(&self, value: u8) {
        if let Some(b) = &self.memory.owned {
            unsafe { sys::ggml_backend_buffer_clear(b.ptr.as_ptr(), value) };
        }
    }
}

impl StoredTensor {
    fn tensor(&self) -> Tensor<'_> {
        // Alive as long as `self.memory`, which `self` holds.
        Tensor {
            ptr: self.ptr,
            _ctx: std::marker::PhantomData,
        }
    }
    /// Dimensions in ggml order.
    pub fn ne(&self) -> [i64; MAX_DIMS] {
        self.tensor().ne()
    }
    pub fn ty(&self) -> GgmlType {
        self.tensor().ty()
    }
    pub fn name(&self) -> String {
        self.tensor().name()
    }
    pub fn n_bytes(&self) -> usize {
        self.tensor().n_bytes()
    }
    /// Copies raw bytes into the tensor starting at byte `offset`.
    pub fn set_bytes_at(&self, offset: usize, data: &[u8]) {
        self.tensor().set_bytes_at(offset, data)
    }
    /// Reads the whole tensor back as raw bytes.
    pub fn get_bytes(&self) -> Vec<u8> {
        self.tensor().get_bytes()
    }
    /// Reads `len` raw bytes from byte `offset` on.
    pub fn get_bytes_at(&self, offset: usize, len: usize) -> Vec<u8> {
        self.tensor().get_bytes_at(offset, len)
    }
    /// Whether the tensor is in host memory (not a device's).
    pub fn is_host(&self) -> bool {
        let buffer = unsafe { (*self.ptr.as_ptr()).buffer };
        !buffer.is_null() && unsafe { sys::ggml_backend_buffer_is_host(buffer) }
    }
}

impl Context {
    /// `stored` as a tensor of this context's graphs; the context keeps its
    /// store alive.
    pub fn stored(&self, stored: &StoredTensor) -> Tensor<'_> {
        let mut keep = self.keep_alive.borrow_mut();
        if !keep.iter().any(|m| Arc::ptr_eq(m, &stored.memory)) {
            keep.push(stored.memory.clone());
        }
        Tensor {
            ptr: stored.ptr,
            _ctx: std::marker::PhantomData,
        }
    }
}

/// The stores a context's graphs read from, kept alive with it.
pub(super) type KeepAlive = std::cell::RefCell<Vec<Arc<StoreMemory>>>;
