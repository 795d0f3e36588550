//! Computation graphs, and graphs that own everything they need so that
//! they can be built once and computed many times.

use std::marker::PhantomData;
use std::ptr::NonNull;
use std::sync::Arc;

use ggml_sys as sys;

use super::{Backend, Context, Scheduler, Slot, Tensor};

/// A computation graph built in a [`Context`].
pub struct Graph<'ctx> {
    pub(super) ptr: NonNull<sys::ggml_cgraph>,
    pub(super) _ctx: PhantomData<&'ctx Context>,
}

impl Graph<'_> {}

/// A graph that owns its context and its scheduler (and through the context
/// the stores it reads from), so it can be built once and computed many
/// times. `IO` holds the graph's inputs and outputs as [`Slot`]s. (Each
/// reusable graph has its own scheduler: a scheduler that allocated other
/// graphs in between may have reallocated its compute buffer, leaving this
/// graph's tensors pointing at freed memory.)
pub struct OwnedGraph<IO = ()> {
    sched: Scheduler,
    /// Set once the scheduler has split and allocated the graph: later
    /// computes reuse that (inputs are rewritten every time).
    allocated: bool,
    graph: NonNull<sys::ggml_cgraph>,
    io: IO,
    ctx: Context,
    _backend: Arc<Backend>,
}

// SAFETY: the graph and its context are used by one thread at a time (every
// method that touches them takes `&mut self` or reads metadata only).
unsafe impl<IO: Send> Send for OwnedGraph<IO> {}

impl<IO> OwnedGraph<IO> {
    /// Builds a graph of at most `max_nodes` nodes for `backend`: `build`
    /// creates the inputs and returns the `IO` slots and the outputs.
    pub fn build<F>(backend: &Arc<Backend>, max_nodes: usize, build: F) -> Self
    where
        F: for<'a> FnOnce(&'a Context) -> (IO, Vec<Tensor<'a>>),
    {
        // Standard ops take more nodes than the CPU kernels (a product in
        // column blocks is six, an unfold one per tap).
        let max_nodes = match backend.cpu_kernels() {
            true => max_nodes,
            false => max_nodes * 4,
        };
        let ctx = Context::new(max_nodes * 2, max_nodes);
        ctx.cpu_kernels.set(backend.cpu_kernels());
        let (io, graph) = {
            let (io, outputs) = build(&ctx);
            for t in &outputs {
                t.set_output();
            }
            (io, ctx.build_graph(&outputs, max_nodes).ptr)
        };
        backend.note_graph(graph);
        // ggml's scheduler wants the CPU last: what a GPU cannot compute
        // falls back to it.
        let sched = match backend.cpu_fallback() {
            Some(cpu) => Scheduler::new(&[backend, cpu], max_nodes * 2),
            None => Scheduler::new(&[backend], max_nodes * 2),
        };
        Self {
            sched,
            allocated: false,
            graph,
            io,
            ctx,
            _backend: backend.clone(),
        }
    }

    /// The name of the backend the scheduler computes `slot`'s node on
    /// (once computed), e.g. "CPU" or "Vulkan0".
    pub fn backend_of(&self, slot: Slot) -> Option<String> {
        self.sched.backend_of(self.ctx.slot_tensor(slot))
    }

    /// The inputs and outputs.
    pub fn io(&self) -> &IO {
        &self.io
    }

    /// A tensor of this graph (an input to fill or an output to read).
    pub fn tensor(&self, slot: Slot) -> Tensor<'_> {
        self.ctx.slot_tensor(slot)
    }

    /// Allocates the graph (the first time), lets `set_inputs` fill its
    /// inputs, computes it.
    pub fn compute(&mut self, set_inputs: impl FnOnce(&Self)) -> crate::Result<()> {
        let g = Graph {
            ptr: self.graph,
            _ctx: PhantomData,
        };
        if !self.allocated {
            let gpu = self._backend.device().is_some().then_some(&*self._backend);
            self.sched
                .alloc_graph_on(&g, gpu)
                .map_err(crate::Error::Compute)?;
            self.allocated = true;
        }
        set_inputs(self);
        self.sched.compute(&g).map_err(crate::Error::Compute)
    }
}
