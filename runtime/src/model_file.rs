//! Our GGUF files on disk: a validating, memory-mapped reader and a streaming
//! writer that never leaves a partial file behind.

use std::collections::HashMap;
use std::io::{BufWriter, Write};
use std::path::{Path, PathBuf};

use crate::error::{Error, Result};
use crate::ggml::gguf::{GgufBuilder, GgufHeader, TensorInfo, Value};
use crate::ggml::mmap::MappedFile;
use crate::ggml::{dequantize, GgmlType};
use crate::gguf_schema::keys;
use std::sync::Arc;

const GGUF_MAGIC: &[u8; 4] = b"GGUF";

/// A GGUF file opened for reading: header parsed and checked, data mapped.
pub struct GgufFile {
    path: PathBuf,
    header: GgufHeader,
    map: Arc<MappedFile>,
    tensors: Vec<TensorInfo>,
    index: HashMap<String, usize>,
}

/// What a file of architecture `arch` is, in words (for error messages).
fn describe_arch(arch: &str) -> &'static str {
    match arch {
        crate::gguf_schema::ARCH_TTS => "a TTS model file, tts-<type>.gguf",
        crate::gguf_schema::ARCH_TOKENIZER => "a speech-tokenizer file, tokenizer-<type>.gguf",
        _ => "not a Qwen3-TTS file",
    }
}

impl GgufFile {
    /// Opens and validates `path`: magic, header, every tensor's type and
    /// extent inside the file.
    pub fn open(path: impl AsRef<Path>) -> Result<Self> {
        let path = path.as_ref().to_path_buf();
        let invalid = |reason: String| Error::InvalidGguf {
            path: path.clone(),
            reason,
        };
        let map = Arc::new(MappedFile::open(&path).map_err(|e| Error::io(&path, e))?);
        if map.len() < 4 || &map.bytes()[..4] != GGUF_MAGIC {
            return Err(invalid(
                "wrong magic (expected a file starting with 'GGUF')".into(),
            ));
        }
        let header = GgufHeader::read(&path)
            .map_err(|log| invalid(format!("header rejected by ggml: {log}")))?;
        let tensors = header.tensors();
        let data_start = header.data_offset();
        for t in &tensors {
            let ty = GgmlType::from_id(t.type_id).ok_or_else(|| {
                invalid(format!(
                    "tensor '{}' has unsupported ggml type id {}",
                    t.name, t.type_id
                ))
            })?;
            let n: i64 = t.ne.iter().product();
            if n <= 0 || !(t.ne[0] as usize).is_multiple_of(ty.block_size()) {
                return Err(invalid(format!(
                    "tensor '{}' has invalid shape {:?}",
                    t.name, t.ne
                )));
            }
            let end = data_start
                .checked_add(t.offset)
                .and_then(|o| o.checked_add(t.size))
                .ok_or_else(|| invalid(format!("tensor '{}' offset overflows", t.name)))?;
            if end > map.len() {
                return Err(invalid(format!(
                    "tensor '{}' spans bytes {}..{} but the file has {} bytes (truncated or corrupt offset)",
                    t.name,
                    data_start + t.offset,
                    end,
                    map.len()
                )));
            }
        }
        let index = tensors
            .iter()
            .enumerate()
            .map(|(i, t)| (t.name.clone(), i))
            .collect();
        Ok(Self {
            path,
            header,
            map,
            tensors,
            index,
        })
    }

    /// Opens `path` and checks that it holds the architecture `arch`.
    pub fn open_arch(path: impl AsRef<Path>, arch: &str) -> Result<Self> {
        let file = Self::open(path)?;
        let found = file.architecture();
        if found != arch {
            return Err(Error::WrongModel {
                path: file.path.clone(),
                reason: format!(
                    "architecture is '{found}' ({}), expected '{arch}' ({})",
                    describe_arch(&found),
                    describe_arch(arch)
                ),
            });
        }
        Ok(file)
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    pub fn header(&self) -> &GgufHeader {
        &self.header
    }

    /// `general.architecture`, or "" when absent.
    pub fn architecture(&self) -> String {
        match self.header.get(keys::ARCHITECTURE) {
            Some(Value::Str(s)) => s,
            _ => String::new(),
        }
    }

    pub fn get(&self, key: &str) -> Option<Value> {
        self.header.get(key)
    }

    fn meta_err(&self, key: &str, reason: impl Into<String>) -> Error {
        Error::Metadata {
            path: self.path.clone(),
            key: key.to_string(),
            reason: reason.into(),
        }
    }

    /// A required integer value (any integer width).
    pub fn get_int(&self, key: &str) -> Result<i64> {
        match self.get(key) {
            Some(Value::U8(v)) => Ok(v as i64),
            Some(Value::I8(v)) => Ok(v as i64),
            Some(Value::U16(v)) => Ok(v as i64),
            Some(Value::I16(v)) => Ok(v as i64),
            Some(Value::U32(v)) => Ok(v as i64),
            Some(Value::I32(v)) => Ok(v as i64),
            Some(Value::U64(v)) => Ok(v as i64),
            Some(Value::I64(v)) => Ok(v),
            Some(other) => Err(self.meta_err(
                key,
                format!("expected an integer, found {}", value_kind(&other)),
            )),
            None => Err(self.meta_err(key, "missing")),
        }
    }

    /// A required float value (f32 or f64).
    pub fn get_float(&self, key: &str) -> Result<f64> {
        match self.get(key) {
            Some(Value::F32(v)) => Ok(v as f64),
            Some(Value::F64(v)) => Ok(v),
            Some(other) => Err(self.meta_err(
                key,
                format!("expected a float, found {}", value_kind(&other)),
            )),
            None => Err(self.meta_err(key, "missing")),
        }
    }

    /// A required string value.
    pub fn get_str(&self, key: &str) -> Result<String> {
        match self.get(key) {
            Some(Value::Str(s)) => Ok(s),
            Some(other) => Err(self.meta_err(
                key,
                format!("expected a string, found {}", value_kind(&other)),
            )),
            None => Err(self.meta_err(key, "missing")),
        }
    }

    /// A required string array.
    pub fn get_str_array(&self, key: &str) -> Result<Vec<String>> {
        match self.get(key) {
            Some(Value::ArrStr(v)) => Ok(v),
            Some(other) => Err(self.meta_err(
                key,
                format!("expected a string array, found {}", value_kind(&other)),
            )),
            None => Err(self.meta_err(key, "missing")),
        }
    }

    /// A required integer array (32-bit signed or unsigned elements).
    pub fn get_int_array(&self, key: &str) -> Result<Vec<i64>> {
        match self.get(key) {
            Some(Value::ArrI32(v)) => Ok(v.into_iter().map(i64::from).collect()),
            Some(Value::ArrU32(v)) => Ok(v.into_iter().map(i64::from).collect()),
            Some(other) => Err(self.meta_err(
                key,
                format!("expected an integer array, found {}", value_kind(&other)),
            )),
            None => Err(self.meta_err(key, "missing")),
        }
    }

    /// An optional string value: `None` when absent, an error when of another type.
    pub fn get_opt_str(&self, key: &str) -> Result<Option<String>> {
        match self.get(key) {
            None => Ok(None),
            Some(Value::Str(s)) => Ok(Some(s)),
            Some(other) => Err(self.meta_err(
                key,
                format!("expected a string, found {}", value_kind(&other)),
            )),
        }
    }

    pub fn tensors(&self) -> &[TensorInfo] {
        &self.tensors
    }

    pub fn tensor_info(&self, name: &str) -> Result<&TensorInfo> {
        self.index
            .get(name)
            .map(|&i| &self.tensors[i])
            .ok_or_else(|| Error::Tensor {
                path: self.path.clone(),
                name: name.to_string(),
                reason: "missing from the file".into(),
            })
    }

    pub fn tensor_type(&self, name: &str) -> Result<GgmlType> {
        // Types were validated in `open`.
        Ok(GgmlType::from_id(self.tensor_info(name)?.type_id).expect("validated type"))
    }

    /// The mapped file, for tensors used in place (see `TensorStore::with_mapped`).
    pub fn mapping(&self) -> Arc<MappedFile> {
        self.map.clone()
    }

    /// Where a tensor's bytes start in the file.
    pub fn tensor_offset(&self, name: &str) -> Result<usize> {
        Ok(self.header.data_offset() + self.tensor_info(name)?.offset)
    }

    /// The raw stored bytes of a tensor (a slice of the mapped file).
    pub fn tensor_bytes(&self, name: &str) -> Result<&[u8]> {
        let t = self.tensor_info(name)?;
        let start = self.header.data_offset() + t.offset;
        Ok(&self.map.bytes()[start..start + t.size])
    }

    /// A tensor converted to f32 (dequantised if needed).
    pub fn tensor_f32(&self, name: &str) -> Result<Vec<f32>> {
        let ty = self.tensor_type(name)?;
        let n: i64 = self.tensor_info(name)?.ne.iter().product();
        Ok(dequantize(ty, self.tensor_bytes(name)?, n as usize))
    }

    /// Lets the OS drop a tensor's pages from our resident set.
    pub fn release_tensor(&self, name: &str) {
        if let Ok(t) = self.tensor_info(name) {
            self.map
                .release(self.header.data_offset() + t.offset, t.size);
        }
    }
}

/// What kind of value `v` is, in words (for error messages).
pub fn value_kind(v: &Value) -> &'static str {
    match v {
        Value::U8(_)
        | Value::I8(_)
        | Value::U16(_)
        | Value::I16(_)
        | Value::U32(_)
        | Value::I32(_)
        | Value::U64(_)
        | Value::I64(_) => "an integer",
        Value::F32(_) | Value::F64(_) => "a float",
        Value::Bool(_) => "a bool",
        Value::Str(_) => "a string",
        Value::ArrI32(_) | Value::ArrU32(_) => "an integer array",
        Value::ArrF32(_) => "a float array",
        Value::ArrStr(_) => "a string array",
        Value::ArrOther { .. } => "an array of another type",
    }
}

/// One tensor to be written: name, storage type and ggml-order dimensions.
#[derive(Clone, Debug)]
pub struct TensorPlan {
    pub name: String,
    pub ty: GgmlType,
    pub ne: Vec<i64>,
}

impl TensorPlan {
    pub fn n_elements(&self) -> usize {
        self.ne.iter().product::<i64>() as usize
    }
    pub fn row_len(&self) -> usize {
        self.ne[0] as usize
    }
    pub fn n_bytes(&self) -> usize {
        self.ty.row_size(self.row_len()) * (self.n_elements() / self.row_len())
    }
}

/// What to do when the output file exists already.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Overwrite {
    Refuse,
    Replace,
}

/// Fails early (before any work) if `path` exists and overwriting is refused.
pub fn check_output(path: &Path, overwrite: Overwrite) -> Result<()> {
    if overwrite == Overwrite::Refuse && path.exists() {
        return Err(Error::OutputExists {
            path: path.to_path_buf(),
        });
    }
    Ok(())
}

/// A fully written GGUF file still under its temporary name. Dropping it
/// deletes it; [`PendingFile::commit`] renames it into place.
pub struct PendingFile {
    tmp: tempfile::NamedTempFile,
    path: PathBuf,
    overwrite: Overwrite,
}

impl PendingFile {
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Where the file is until [`PendingFile::commit`] (to check it first).
    pub fn temp_path(&self) -> &Path {
        self.tmp.path()
    }

    /// Moves the file to its final name.
    pub fn commit(self) -> Result<()> {
        let path = self.path;
        let result = match self.overwrite {
            Overwrite::Replace => self.tmp.persist(&path).map(|_| ()),
            Overwrite::Refuse => self.tmp.persist_noclobber(&path).map(|_| ()),
        };
        result.map_err(|e| Error::io(&path, e.error))
    }
}

/// Writes a GGUF file: `metadata`, then each tensor of `plan` whose data the
/// callback `produce(i, plan, out)` streams into `out` (exactly
/// `plan.n_bytes()` bytes). The file is written under a temporary name in the
/// same directory; the returned [`PendingFile`] is renamed into place by
/// `commit`, and on any error (or drop) nothing is left behind.
pub fn write_gguf<F>(
    path: &Path,
    metadata: &[(String, Value)],
    plan: &[TensorPlan],
    overwrite: Overwrite,
    produce: F,
) -> Result<PendingFile>
where
    F: FnMut(usize, &TensorPlan, &mut dyn Write) -> Result<()>,
{
    write_gguf_with_base(path, None, metadata, plan, overwrite, produce)
}

/// Like [`write_gguf`], but first copies every metadata pair of `base` (the
/// pairs in `metadata` then override them).
pub fn write_gguf_with_base<F>(
    path: &Path,
    base: Option<&GgufHeader>,
    metadata: &[(String, Value)],
    plan: &[TensorPlan],
    overwrite: Overwrite,
    mut produce: F,
) -> Result<PendingFile>
where
    F: FnMut(usize, &TensorPlan, &mut dyn Write) -> Result<()>,
{
    check_output(path, overwrite)?;
    let mut builder = GgufBuilder::new(plan.len().max(1));
    if let Some(base) = base {
        builder.copy_metadata_from(base);
    }
    for (k, v) in metadata {
        builder.set(k, v).map_err(|reason| Error::Metadata {
            path: path.to_path_buf(),
            key: k.clone(),
            reason,
        })?;
    }
    for t in plan {
        builder
            .add_tensor(&t.name, t.ty, &t.ne)
            .map_err(|reason| Error::Tensor {
                path: path.to_path_buf(),
                name: t.name.clone(),
                reason,
            })?;
    }
    let header = builder.header_bytes();
    let offsets = builder.tensor_offsets();

    let dir = match path.parent() {
        Some(p) if !p.as_os_str().is_empty() => p.to_path_buf(),
        _ => PathBuf::from("."),
    };
    let tmp = tempfile::Builder::new()
        .prefix(".qwen3-tts-")
        .suffix(".partial")
        .tempfile_in(&dir)
        .map_err(|e| Error::io(&dir, e))?;
    {
        let mut out = CountingWriter {
            inner: BufWriter::with_capacity(1 << 20, tmp.as_file()),
            written: 0,
        };
        let io = |e| Error::io(path, e);
        out.write_all(&header).map_err(io)?;
        let data_start = header.len() as u64;
        for (i, t) in plan.iter().enumerate() {
            let target = data_start + offsets[i] as u64;
            if out.written > target {
                return Err(Error::Internal(format!(
                    "tensor '{}' overlaps its predecessor",
                    t.name
                )));
            }
            let pad = (target - out.written) as usize;
            out.write_all(&vec![0u8; pad]).map_err(io)?;
            let before = out.written;
            produce(i, t, &mut out)?;
            let got = (out.written - before) as usize;
            if got != t.n_bytes() {
                return Err(Error::Internal(format!(
                    "tensor '{}' produced {got} bytes, expected {}",
                    t.name,
                    t.n_bytes()
                )));
            }
        }
        out.flush().map_err(io)?;
    }
    tmp.as_file().sync_all().map_err(|e| Error::io(path, e))?;
    // Temporary files are created private (0600); a model file is not secret.
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let _ = tmp
            .as_file()
            .set_permissions(std::fs::Permissions::from_mode(0o644));
    }
    Ok(PendingFile {
        tmp,
        path: path.to_path_buf(),
        overwrite,
    })
}

struct CountingWriter<W: Write> {
    inner: W,
    written: u64,
}

impl<W: Write> Write for CountingWriter<W> {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        let n = self.inner.write(buf)?;
        self.written += n as u64;
        Ok(n)
    }
    fn flush(&mut self) -> std::io::Result<()> {
        self.inner.flush()
    }
}

/// What was written: tensor counts and bytes per storage type.
#[derive(Clone, Debug, Default)]
pub struct FileSummary {
    pub path: PathBuf,
    pub file_bytes: u64,
    pub by_type: std::collections::BTreeMap<&'static str, (usize, usize)>,
    /// Tensors stored in another type than asked for (rows that do not fit).
    pub fallbacks: Vec<crate::gguf_schema::Fallback>,
    /// The file existed with identical contents and was kept as it was.
    pub kept: bool,
}

impl FileSummary {
    /// Summarises the tensors of `plan` written to `path`.
    pub fn from_plan(path: &Path, plan: &[TensorPlan]) -> Self {
        let mut s = FileSummary {
            path: path.to_path_buf(),
            file_bytes: std::fs::metadata(path).map(|m| m.len()).unwrap_or(0),
            ..Default::default()
        };
        for t in plan {
            let e = s.by_type.entry(t.ty.name()).or_default();
            e.0 += 1;
            e.1 += t.n_bytes();
        }
        s
    }
}

impl std::fmt::Display for FileSummary {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        writeln!(
            f,
            "{} ({:.1} MB)",
            self.path.display(),
            self.file_bytes as f64 / 1e6
        )?;
        for (ty, (count, bytes)) in &self.by_type {
            writeln!(
                f,
                "  {ty:>5}: {count:4} tensors, {:10.1} MB",
                *bytes as f64 / 1e6
            )?;
        }
        Ok(())
    }
}

/// Progress of writing a GGUF file (converter, quantizer), for a display.
#[derive(Clone, Copy, Debug)]
pub enum WriteProgress<'a> {
    /// A file starts: its final path and the bytes of tensor data to write.
    FileStart { path: &'a Path, bytes: u64 },
    /// Tensor `name` is written; `done` bytes of this file's tensor data so far.
    Tensor { name: &'a str, done: u64 },
    /// All tensors of the file are written (it still has its temporary name).
    FileDone { path: &'a Path },
}
