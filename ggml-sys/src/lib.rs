//! Raw, unsafe bindings to ggml (ggml.h, ggml-alloc.h, ggml-backend.h,
//! ggml-cpu.h, gguf.h). Use the safe wrappers in the `qwen3-tts` runtime crate.
#![allow(non_upper_case_globals, non_camel_case_types, non_snake_case)]
#![allow(clippy::all, rustdoc::all)]

include!(concat!(env!("OUT_DIR"), "/bindings.rs"));
