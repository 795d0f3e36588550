//! Backends, their buffers and the graph scheduler.

use std::ffi::CStr;
use std::ptr::NonNull;
use std::sync::atomic::{AtomicUsize, Ordering};

use ggml_sys as sys;

use super::device::DeviceInfo;
use super::{init_logging, take_log, Graph};

/// A compute backend (the CPU one here; GPU backends plug in the same way).
pub struct Backend {
    pub(super) ptr: NonNull<sys::ggml_backend>,
    threads: AtomicUsize,
    /// Whether graphs for this backend may use the ops layer's CPU kernels
    /// (custom ops); otherwise they hold standard ggml ops only, as every
    /// other backend needs.
    cpu_kernels: bool,
    /// Custom-op nodes in the graphs built for this backend so far.
    custom_ops: AtomicUsize,
    /// The GPU device it computes on; `None`: the CPU.
    device: Option<DeviceInfo>,
    /// A GPU backend's CPU backend, for what the GPU cannot compute.
    cpu: Option<Box<Backend>>,
}

// SAFETY: a backend holds its thread count and a work buffer; the runtime
// gives every session its own backend, and a session computes (or changes
// the thread count) from one thread at a time.
unsafe impl Send for Backend {}
unsafe impl Sync for Backend {}

impl Backend {
    /// A CPU backend of `n_threads` threads (1 to
    /// [`crate::threads::MAX_THREADS`]; counts outside are clamped).
    pub fn cpu(n_threads: usize) -> Self {
        Self::cpu_with(n_threads, true)
    }

    /// A CPU backend whose graphs hold standard ggml ops only, none of the
    /// ops layer's CPU kernels: the graphs a GPU backend gets, computed on
    /// the CPU (what tests check them against).
    pub fn cpu_standard_ops(n_threads: usize) -> Self {
        Self::cpu_with(n_threads, false)
    }

    fn cpu_with(n_threads: usize, cpu_kernels: bool) -> Self {
        init_logging();
        let p = unsafe { sys::ggml_backend_cpu_init() };
        let ptr = NonNull::new(p).expect("ggml_backend_cpu_init failed");
        let backend = Self {
            ptr,
            threads: AtomicUsize::new(1),
            cpu_kernels,
            custom_ops: AtomicUsize::new(0),
            device: None,
            cpu: None,
        };
        backend.set_threads(n_threads);
        backend
    }

    /// A backend on a GPU `device` (see [`super::device::resolve`]): its
    /// graphs hold standard ops only.
    pub fn gpu(device: &DeviceInfo) -> Result<Self, String> {
        init_logging();
        // ggml's Vulkan backend starts devices with process-wide state: one at a time.
        static STARTING: std::sync::Mutex<()> = std::sync::Mutex::new(());
        let _one = STARTING.lock().unwrap_or_else(|e| e.into_inner());
        let p = unsafe { sys::ggml_backend_dev_init(device.raw(), std::ptr::null()) };
        let ptr = NonNull::new(p).ok_or_else(|| {
            format!(
                "could not start the {} device {} ({}): {}",
                device.backend,
                device.name,
                device.description,
                take_log()
            )
        })?;
        let threads = crate::threads::default_threads();
        Ok(Self {
            ptr,
            threads: AtomicUsize::new(threads),
            cpu_kernels: false,
            custom_ops: AtomicUsize::new(0),
            device: Some(device.clone()),
            cpu: Some(Box::new(Self::cpu_standard_ops(threads))),
        })
    }

    /// A backend on `device` (see [`super::device::resolve`]; `None`: the
    /// CPU) computing on `n_threads` CPU threads.
    pub fn on(device: Option<&DeviceInfo>, n_threads: usize) -> Result<Self, String> {
        match device {
            None => Ok(Self::cpu(n_threads)),
            Some(d) => {
                let b = Self::gpu(d)?;
                b.set_threads(n_threads);
                Ok(b)
            }
        }
    }

    /// [`Backend::on`] for a device a model was loaded on (so it started
    /// before): another start there fails only with the driver, which is
    /// not recoverable for the session.
    pub fn on_loaded(device: Option<&DeviceInfo>, n_threads: usize) -> Self {
        Self::on(device, n_threads).unwrap_or_else(|e| panic!("{e}"))
    }

    /// A GPU backend's CPU backend for what the GPU cannot compute.
    pub(super) fn cpu_fallback(&self) -> Option<&Backend> {
        self.cpu.as_deref()
    }

    /// The GPU device this backend computes on (`None`: the CPU).
    pub fn device(&self) -> Option<&DeviceInfo> {
        self.device.as_ref()
    }

    /// Whether graphs for this backend may use the ops layer's CPU kernels.
    pub fn cpu_kernels(&self) -> bool {
        self.cpu_kernels
    }

    /// How many custom-op nodes (the ops layer's CPU kernels) the graphs
    /// built for this backend held: none may for a backend without
    /// [`Backend::cpu_kernels`], where they would bounce to the CPU.
    pub fn custom_ops_built(&self) -> usize {
        self.custom_ops.load(Ordering::Relaxed)
    }

    pub(super) fn note_graph(&self, graph: NonNull<sys::ggml_cgraph>) {
        let graph = graph.as_ptr();
        let custom = (0..unsafe { sys::ggml_graph_n_nodes(graph) })
            .filter(|&i| {
                let op = unsafe { (*sys::ggml_graph_node(graph, i)).op };
                matches!(
                    op,
                    sys::GGML_OP_CUSTOM
                        | sys::GGML_OP_MAP_CUSTOM1
                        | sys::GGML_OP_MAP_CUSTOM2
                        | sys::GGML_OP_MAP_CUSTOM3
                )
            })
            .count();
        self.custom_ops.fetch_add(custom, Ordering::Relaxed);
    }
    pub fn set_threads(&self, n_threads: usize) {
        let n = n_threads.clamp(1, crate::threads::MAX_THREADS);
        match &self.cpu {
            // a GPU's own threads are the driver's; its CPU fallback takes these
            Some(cpu) => cpu.set_threads(n),
            None => unsafe { sys::ggml_backend_cpu_set_n_threads(self.ptr.as_ptr(), n as i32) },
        }
        self.threads.store(n, Ordering::Relaxed);
    }
    /// The thread count CPU computations use (a GPU backend's: its fallback's).
    pub fn threads(&self) -> usize {
        self.threads.load(Ordering::Relaxed)
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
    pub(super) ptr: NonNull<sys::ggml_backend_buffer>,
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
    pub(super) ptr: NonNull<sys::ggml_backend_sched>,
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
        self.alloc_graph_on(graph, None)
    }

    /// [`Scheduler::alloc_graph`], with what `gpu` can compute placed on it.
    pub fn alloc_graph_on(
        &mut self,
        graph: &Graph<'_>,
        gpu: Option<&Backend>,
    ) -> Result<(), String> {
        unsafe { sys::ggml_backend_sched_reset(self.ptr.as_ptr()) };
        if let Some(gpu) = gpu {
            self.place_on(graph, gpu);
        }
        if unsafe { sys::ggml_backend_sched_alloc_graph(self.ptr.as_ptr(), graph.ptr.as_ptr()) } {
            Ok(())
        } else {
            Err(format!("failed to allocate compute graph: {}", take_log()))
        }
    }

    /// Places every node of `graph` that `backend` can compute and whose
    /// sources it can read on it (the rest, and the graph's inputs, stay
    /// with the CPU): ggml's scheduler otherwise follows the inputs, which
    /// live in CPU memory. A source already in a buffer the backend cannot
    /// read (weights in CPU memory) keeps its node on the CPU.
    pub(super) fn place_on(&mut self, graph: &Graph<'_>, backend: &Backend) {
        let g = graph.ptr.as_ptr();
        let b = backend.ptr.as_ptr();
        let readable = |t: *mut sys::ggml_tensor| unsafe {
            t.is_null()
                || (*t).buffer.is_null()
                || sys::ggml_backend_supports_buft(
                    b,
                    sys::ggml_backend_buffer_get_type((*t).buffer),
                )
        };
        for i in 0..unsafe { sys::ggml_graph_n_nodes(g) } {
            let node = unsafe { sys::ggml_graph_node(g, i) };
            let sources = unsafe { (*node).src };
            // A view lives where what it views lives: the scheduler places
            // it (a view of a CPU input placed here would hand the device
            // host memory).
            let is_view = unsafe { !(*node).view_src.is_null() };
            if !is_view
                && unsafe { sys::ggml_backend_supports_op(b, node) }
                && sources.into_iter().all(readable)
            {
                unsafe {
                    sys::ggml_backend_sched_set_tensor_backend(
                        self.ptr.as_ptr(),
                        node,
                        backend.ptr.as_ptr(),
                    )
                };
            }
        }
    }

    /// The name of the backend `t` is computed on (after allocation).
    pub(super) fn backend_of(&self, t: super::Tensor<'_>) -> Option<String> {
        let b = unsafe { sys::ggml_backend_sched_get_tensor_backend(self.ptr.as_ptr(), t.raw()) };
        (!b.is_null()).then(|| {
            unsafe { CStr::from_ptr(sys::ggml_backend_name(b)) }
                .to_string_lossy()
                .into_owned()
        })
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
