//! Builds ggml through the workspace's top-level CMakeLists.txt and generates
//! bindings for the headers the runtime uses.
//!
//! Where the ggml sources come from, in order:
//! 1. `GGML_SRC_DIR`: a local ggml checkout (the dir holding ggml's CMakeLists.txt).
//! 2. The `llama-cpp-sys-2` crate pinned in this package's manifest (never compiled,
//!    only downloaded), located through `cargo metadata --locked`.

use std::env;
use std::path::{Path, PathBuf};
use std::process::Command;

const SOURCE_CRATE: &str = "llama-cpp-sys-2";

fn main() {
    println!("cargo:rerun-if-env-changed=GGML_SRC_DIR");
    println!("cargo:rerun-if-env-changed=VULKAN_SDK");
    println!("cargo:rerun-if-changed=build.rs");
    println!("cargo:rerun-if-changed=wrapper.h");

    let manifest_dir = PathBuf::from(env::var("CARGO_MANIFEST_DIR").unwrap());
    let workspace_root = manifest_dir.parent().unwrap().to_path_buf();
    println!(
        "cargo:rerun-if-changed={}",
        workspace_root.join("CMakeLists.txt").display()
    );

    let ggml_dir = match env::var_os("GGML_SRC_DIR") {
        Some(dir) => PathBuf::from(dir),
        None => locate_crate_ggml(&manifest_dir),
    };
    if !ggml_dir.join("CMakeLists.txt").is_file() || !ggml_dir.join("include/ggml.h").is_file() {
        panic!(
            "ggml sources not found at {} (expected CMakeLists.txt and include/ggml.h); \
             set GGML_SRC_DIR to a ggml checkout",
            ggml_dir.display()
        );
    }

    build_ggml(&workspace_root, &ggml_dir);
    generate_bindings(&manifest_dir, &ggml_dir.join("include"));
}

/// Finds the unpacked source of the pinned source crate and returns its `ggml/` dir.
fn locate_crate_ggml(manifest_dir: &Path) -> PathBuf {
    let cargo = env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let output = Command::new(cargo)
        .args([
            "metadata",
            "--locked",
            "--format-version",
            "1",
            "--manifest-path",
        ])
        .arg(manifest_dir.join("Cargo.toml"))
        .output()
        .expect("failed to run `cargo metadata` to locate the ggml sources");
    if !output.status.success() {
        panic!(
            "`cargo metadata` failed while locating the ggml sources:\n{}",
            String::from_utf8_lossy(&output.stderr)
        );
    }
    let meta: serde_json::Value =
        serde_json::from_slice(&output.stdout).expect("`cargo metadata` printed invalid JSON");
    let manifest_path = meta["packages"]
        .as_array()
        .into_iter()
        .flatten()
        .find(|p| p["name"] == SOURCE_CRATE)
        .and_then(|p| p["manifest_path"].as_str())
        .unwrap_or_else(|| {
            panic!("{SOURCE_CRATE} not found in `cargo metadata`; run `cargo fetch`")
        });
    Path::new(manifest_path)
        .parent()
        .unwrap()
        .join("llama.cpp")
        .join("ggml")
}

fn feature(name: &str) -> bool {
    env::var_os(format!("CARGO_FEATURE_{}", name.to_uppercase())).is_some()
}

fn on_off(b: bool) -> &'static str {
    if b {
        "ON"
    } else {
        "OFF"
    }
}

fn build_ggml(workspace_root: &Path, ggml_dir: &Path) {
    let mut cfg = cmake::Config::new(workspace_root);
    // ggml is always built optimised: a debug ggml makes every test crawl.
    cfg.profile("Release")
        .define("GGML_SOURCE_DIR", ggml_dir)
        .define("QWEN3_TTS_NATIVE", on_off(feature("native")))
        .define("GGML_OPENMP", on_off(feature("openmp")))
        .define("GGML_CUDA", on_off(feature("cuda")))
        .define("GGML_VULKAN", on_off(feature("vulkan")))
        .define("GGML_METAL", on_off(feature("metal")))
        .define("CMAKE_POSITION_INDEPENDENT_CODE", "ON");
    let out = cfg.build();

    // Link every static library the build produced (ggml, ggml-base, ggml-cpu,
    // and any enabled GPU backend), wherever the install put it.
    let mut libs = Vec::new();
    collect_static_libs(&out, &mut libs);
    let mut seen_dirs = Vec::new();
    // Order matters for static linking: frontends before ggml-base.
    libs.sort_by_key(|(_, name)| match name.as_str() {
        "ggml" => 0,
        "ggml-base" => 2,
        _ => 1,
    });
    let mut seen_names = Vec::new();
    for (dir, name) in &libs {
        if seen_names.contains(name) {
            continue;
        }
        seen_names.push(name.clone());
        if !seen_dirs.contains(dir) {
            println!("cargo:rustc-link-search=native={}", dir.display());
            seen_dirs.push(dir.clone());
        }
        println!("cargo:rustc-link-lib=static={name}");
    }
    if !seen_names.iter().any(|n| n == "ggml-base") {
        panic!(
            "ggml build produced no libggml-base.a under {}",
            out.display()
        );
    }

    let target_os = env::var("CARGO_CFG_TARGET_OS").unwrap_or_default();
    if target_os == "macos" {
        println!("cargo:rustc-link-lib=c++");
        if feature("metal") {
            for fw in ["Foundation", "Metal", "MetalKit"] {
                println!("cargo:rustc-link-lib=framework={fw}");
            }
        }
    } else {
        println!("cargo:rustc-link-lib=stdc++");
    }
    if feature("openmp") {
        println!("cargo:rustc-link-lib=gomp");
    }
    if feature("cuda") {
        for lib in ["cudart", "cublas", "cublasLt", "cuda"] {
            println!("cargo:rustc-link-lib={lib}");
        }
    }
    if feature("vulkan") {
        // The loader under $VULKAN_SDK/lib where it is not a system library
        // (scripts/vulkan_sdk.sh).
        if let Some(sdk) = env::var_os("VULKAN_SDK") {
            println!(
                "cargo:rustc-link-search=native={}",
                Path::new(&sdk).join("lib").display()
            );
        }
        println!("cargo:rustc-link-lib=vulkan");
    }
}

fn collect_static_libs(dir: &Path, out: &mut Vec<(PathBuf, String)>) {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return;
    };
    for entry in entries.flatten() {
        let path = entry.path();
        if path.is_dir() {
            collect_static_libs(&path, out);
        } else if let Some(file) = path.file_name().and_then(|f| f.to_str()) {
            if let Some(name) = file.strip_prefix("lib").and_then(|f| f.strip_suffix(".a")) {
                if name.starts_with("ggml") {
                    out.push((dir.to_path_buf(), name.to_string()));
                }
            }
        }
    }
}

fn generate_bindings(manifest_dir: &Path, include_dir: &Path) {
    let bindings = bindgen::Builder::default()
        .header(manifest_dir.join("wrapper.h").to_string_lossy())
        .clang_arg(format!("-I{}", include_dir.display()))
        .allowlist_function("ggml_.*|gguf_.*")
        .allowlist_type("ggml_.*|gguf_.*")
        .allowlist_var("GGML_.*|GGUF_.*")
        .derive_default(true)
        .prepend_enum_name(false)
        .layout_tests(false)
        .generate()
        .expect("bindgen failed on ggml headers");
    let out = PathBuf::from(env::var("OUT_DIR").unwrap()).join("bindings.rs");
    bindings.write_to_file(out).expect("writing bindings");
}
