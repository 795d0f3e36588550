//! Qwen3-TTS (12 Hz family) runtime on ggml.
//!
//! Module map (more in docs/architecture.md): [`ggml`] holds the only
//! `unsafe` code (FFI wrappers); [`gguf_schema`] is the one table of GGUF
//! tensor names and metadata keys shared by the converter and the loaders;
//! [`model_file`] reads and writes our GGUF files; [`weights`] resolves a
//! file's tensors into each model part's typed weights. [`pipeline`] holds the
//! shared models ([`pipeline::TtsModel`], [`codec_decoder::CodecDecoder`]) and
//! the per-utterance sessions over them.

#![deny(unsafe_code)]

pub mod audio;
pub mod batch;
pub mod code_predictor;
pub mod codec_decoder;
pub mod codec_encoder;
pub mod config;
pub mod error;
#[allow(unsafe_code)] // the FFI wrappers: the one place that needs it
pub mod ggml;
pub mod gguf_schema;
pub mod layers;
pub mod long_text;
pub mod model_file;
pub mod pipeline;
pub mod prompt;
pub mod sampler;
pub mod speaker_encoder;
pub mod talker;
pub mod text_tokenizer;
pub mod threads;
pub mod voice;
pub mod warm;
pub mod weights;

pub use error::{Error, Result};
