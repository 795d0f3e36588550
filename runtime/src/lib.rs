//! Qwen3-TTS (12 Hz family) runtime on ggml.
//!
//! Module map: [`ggml`] holds the only `unsafe` code (FFI wrappers);
//! [`gguf_schema`] is the one table of GGUF tensor names and metadata keys
//! shared by the converter and the loaders; [`model_file`] reads and writes
//! our GGUF files.

pub mod error;
pub mod ggml;
pub mod gguf_schema;
pub mod model_file;
pub mod sampler;
pub mod text_tokenizer;

pub use error::{Error, Result};
