//! Qwen3-TTS (12 Hz family) runtime on ggml.
//!
//! Module map: [`ggml`] holds the only `unsafe` code (FFI wrappers);
//! [`gguf_schema`] is the one table of GGUF tensor names and metadata keys
//! shared by the converter and the loaders; [`model_file`] reads and writes
//! our GGUF files.

// `Arc` shares weights, caches and the backend between the parts of one
// model (shared ownership, one thread at a time), not across threads.
#![allow(clippy::arc_with_non_send_sync)]

pub mod audio;
pub mod code_predictor;
pub mod codec_decoder;
pub mod codec_encoder;
pub mod config;
pub mod error;
pub mod ggml;
pub mod gguf_schema;
pub mod layers;
pub mod model_file;
pub mod pipeline;
pub mod prompt;
pub mod sampler;
pub mod speaker_encoder;
pub mod talker;
pub mod text_tokenizer;
pub mod voice;
pub mod weights;

pub use error::{Error, Result};
