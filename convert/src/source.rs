//! Where checkpoint tensors come from: memory-mapped safetensors files (one or
//! several shards), or any other [`TensorSource`] (e.g. an in-memory state dict
//! handed over from Python).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use crate::error::{bail, Context, Result};
use qwen3_tts::ggml::mmap::MappedFile;
use safetensors::{Dtype, SafeTensors};

/// Element type of a source tensor.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SourceDType {
    F32,
    F16,
    BF16,
}

impl SourceDType {
    pub fn size(self) -> usize {
        match self {
            SourceDType::F32 => 4,
            SourceDType::F16 | SourceDType::BF16 => 2,
        }
    }
}

/// Name, PyTorch-order shape and element type of a source tensor.
#[derive(Clone, Debug)]
pub struct SourceTensor {
    pub name: String,
    pub shape: Vec<usize>,
    pub dtype: Option<SourceDType>,
}

impl SourceTensor {
    pub fn n_elements(&self) -> usize {
        self.shape.iter().product()
    }
}

/// A provider of checkpoint tensors, read as f32 in row-major order.
pub trait TensorSource {
    /// Every tensor the source holds, sorted by name.
    fn tensors(&self) -> Vec<SourceTensor>;
    /// Reads `out.len()` elements of `name` starting at element `start`.
    fn read_f32(&self, name: &str, start: usize, out: &mut [f32]) -> Result<()>;
    /// Hint that `name` will not be read again (lets mapped pages go).
    fn release(&self, _name: &str) {}
}

/// Converts raw little-endian values of `dtype` to f32.
pub fn decode_into(dtype: SourceDType, bytes: &[u8], out: &mut [f32]) {
    match dtype {
        SourceDType::F32 => {
            for (o, c) in out.iter_mut().zip(bytes.chunks_exact(4)) {
                *o = f32::from_le_bytes([c[0], c[1], c[2], c[3]]);
            }
        }
        SourceDType::F16 => {
            for (o, c) in out.iter_mut().zip(bytes.chunks_exact(2)) {
                *o = half::f16::from_le_bytes([c[0], c[1]]).to_f32();
            }
        }
        SourceDType::BF16 => {
            for (o, c) in out.iter_mut().zip(bytes.chunks_exact(2)) {
                *o = half::bf16::from_le_bytes([c[0], c[1]]).to_f32();
            }
        }
    }
}

/// A tensor's header entry: dtype, shape and absolute byte range in the file.
struct Entry {
    dtype: Dtype,
    shape: Vec<usize>,
    range: std::ops::Range<usize>,
}

struct Shard {
    path: PathBuf,
    map: MappedFile,
    entries: BTreeMap<String, Entry>,
}

/// One or more memory-mapped safetensors files.
pub struct Safetensors {
    shards: Vec<Shard>,
    /// name → shard index
    index: BTreeMap<String, usize>,
}

impl Safetensors {
    /// Opens `model.safetensors`, or the shards listed by
    /// `model.safetensors.index.json`, inside `dir`.
    pub fn open_dir(dir: &Path) -> Result<Self> {
        let single = dir.join("model.safetensors");
        let index = dir.join("model.safetensors.index.json");
        if single.is_file() {
            Self::open_files(&[single])
        } else if index.is_file() {
            let text = std::fs::read_to_string(&index)
                .with_context(|| format!("reading {}", index.display()))?;
            let json: serde_json::Value = serde_json::from_str(&text)
                .with_context(|| format!("{}: invalid JSON", index.display()))?;
            let map = json["weight_map"]
                .as_object()
                .with_context(|| format!("{}: no 'weight_map' object", index.display()))?;
            let mut files: Vec<PathBuf> = map
                .values()
                .filter_map(|v| v.as_str())
                .map(|f| dir.join(f))
                .collect();
            files.sort();
            files.dedup();
            Self::open_files(&files)
        } else {
            bail!(
                "{}: neither model.safetensors nor model.safetensors.index.json found",
                dir.display()
            )
        }
    }

    /// Opens the given safetensors files (their tensor names must not overlap).
    pub fn open_files(paths: &[PathBuf]) -> Result<Self> {
        let mut shards = Vec::new();
        let mut index = BTreeMap::new();
        for path in paths {
            let map =
                MappedFile::open(path).with_context(|| format!("opening {}", path.display()))?;
            let (header_len, meta) =
                SafeTensors::read_metadata(map.bytes()).map_err(|e| match e {
                    safetensors::SafeTensorError::MetadataIncompleteBuffer
                    | safetensors::SafeTensorError::HeaderTooSmall => {
                        crate::error::Error::msg(format!(
                        "{}: truncated safetensors file ({} bytes; its header describes more data)",
                        path.display(),
                        map.len()
                    ))
                    }
                    other => crate::error::Error::msg(format!(
                        "{}: not a valid safetensors file: {other:?}",
                        path.display()
                    )),
                })?;
            let data_start = 8 + header_len;
            let mut entries = BTreeMap::new();
            for (name, info) in meta.tensors() {
                let (b, e) = info.data_offsets;
                let range = data_start + b..data_start + e;
                if range.end > map.len() {
                    bail!(
                        "{}: tensor '{name}' ends at byte {} but the file has {} bytes (truncated?)",
                        path.display(),
                        range.end,
                        map.len()
                    );
                }
                if index.insert(name.clone(), shards.len()).is_some() {
                    bail!(
                        "{}: tensor '{name}' appears in more than one shard",
                        path.display()
                    );
                }
                entries.insert(
                    name.clone(),
                    Entry {
                        dtype: info.dtype,
                        shape: info.shape.clone(),
                        range,
                    },
                );
            }
            shards.push(Shard {
                path: path.clone(),
                map,
                entries,
            });
        }
        Ok(Self { shards, index })
    }

    fn entry(&self, name: &str) -> Result<(&Shard, &Entry)> {
        let &i = self
            .index
            .get(name)
            .with_context(|| format!("tensor '{name}' not in the checkpoint"))?;
        let shard = &self.shards[i];
        Ok((shard, &shard.entries[name]))
    }
}

fn map_dtype(d: Dtype) -> Option<SourceDType> {
    match d {
        Dtype::F32 => Some(SourceDType::F32),
        Dtype::F16 => Some(SourceDType::F16),
        Dtype::BF16 => Some(SourceDType::BF16),
        _ => None,
    }
}

impl TensorSource for Safetensors {
    fn tensors(&self) -> Vec<SourceTensor> {
        self.index
            .keys()
            .map(|name| {
                let (_, e) = self.entry(name).expect("indexed");
                SourceTensor {
                    name: name.clone(),
                    shape: e.shape.clone(),
                    dtype: map_dtype(e.dtype),
                }
            })
            .collect()
    }

    fn read_f32(&self, name: &str, start: usize, out: &mut [f32]) -> Result<()> {
        let (shard, Entry { dtype, range, .. }) = self.entry(name)?;
        let dt = map_dtype(*dtype).with_context(|| {
            format!(
                "{}: tensor '{name}' has unsupported dtype {dtype:?}",
                shard.path.display()
            )
        })?;
        let size = dt.size();
        let b = range.start + start * size;
        let e = b + out.len() * size;
        if e > range.end {
            bail!(
                "{}: read past the end of tensor '{name}'",
                shard.path.display()
            );
        }
        decode_into(dt, &shard.map.bytes()[b..e], out);
        Ok(())
    }

    fn release(&self, name: &str) {
        if let Ok((shard, Entry { range, .. })) = self.entry(name) {
            shard.map.release(range.start, range.len());
        }
    }
}

/// Tensors held in memory (e.g. a state dict handed over from Python).
#[derive(Default)]
pub struct MemorySource {
    tensors: BTreeMap<String, (Vec<usize>, Vec<f32>)>,
}

impl MemorySource {
    pub fn new() -> Self {
        Self::default()
    }

    /// Adds a tensor with PyTorch-order `shape` and row-major `data`.
    pub fn insert(&mut self, name: &str, shape: Vec<usize>, data: Vec<f32>) -> Result<()> {
        let n: usize = shape.iter().product();
        if n != data.len() {
            bail!(
                "tensor '{name}': shape {shape:?} needs {n} values, got {}",
                data.len()
            );
        }
        if self
            .tensors
            .insert(name.to_string(), (shape, data))
            .is_some()
        {
            bail!("tensor '{name}' given twice");
        }
        Ok(())
    }
}

impl TensorSource for MemorySource {
    fn tensors(&self) -> Vec<SourceTensor> {
        self.tensors
            .iter()
            .map(|(name, (shape, _))| SourceTensor {
                name: name.clone(),
                shape: shape.clone(),
                dtype: Some(SourceDType::F32),
            })
            .collect()
    }

    fn read_f32(&self, name: &str, start: usize, out: &mut [f32]) -> Result<()> {
        let (_, data) = self
            .tensors
            .get(name)
            .with_context(|| format!("tensor '{name}' not given"))?;
        let src = data
            .get(start..start + out.len())
            .with_context(|| format!("read past the end of tensor '{name}'"))?;
        out.copy_from_slice(src);
        Ok(())
    }
}
