//! Hugging Face Qwen3-TTS checkpoint → two GGUF files:
//! `tts-<type>.gguf` (talker, code predictor, speaker encoder, text tokenizer,
//! all config values) and `tokenizer-<type>.gguf` (speech tokenizer: codec
//! encoder + decoder). Tensor names and precision rules come from
//! [`qwen3_tts::gguf_schema`].

pub mod error;
pub mod metadata;
#[cfg(feature = "python")]
mod python;
pub mod source;

use std::collections::BTreeMap;
use std::io::{Read, Write};
use std::path::{Path, PathBuf};

use crate::error::{bail, Context};
use qwen3_tts::ggml::gguf::Value;
use qwen3_tts::ggml::{quantize, GgmlType, MAX_NAME};
use qwen3_tts::gguf_schema::{self as schema, keys, Fallback};
use qwen3_tts::model_file::{
    check_output, write_gguf, FileSummary, Overwrite, PendingFile, TensorPlan, WriteProgress,
};
use serde_json::Value as Json;

pub use error::{Error, Result};
pub use source::{MemorySource, Safetensors, SourceDType, SourceTensor, TensorSource};

/// Which of the two files to write.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Parts {
    Both,
    TtsOnly,
    TokenizerOnly,
}

/// Everything `qwen3-tts-convert` needs.
#[derive(Clone, Debug)]
pub struct Options {
    pub input: PathBuf,
    pub outdir: PathBuf,
    /// Type of the TTS model file.
    pub ty: GgmlType,
    /// Type of the speech-tokenizer file (F16 by default).
    pub tokenizer_ty: GgmlType,
    pub overwrite: Overwrite,
    pub parts: Parts,
}

/// How one output tensor is made from the checkpoint.
#[derive(Clone, Debug)]
enum Recipe {
    Copy {
        hf: String,
    },
    /// EMA codebook: `embed_sum / max(cluster_usage, eps)` row by row.
    Codebook {
        embed_sum: String,
        cluster_usage: String,
    },
}

/// A file to write: metadata and the tensors with their recipes.
pub struct FilePlan {
    pub path: PathBuf,
    pub metadata: Vec<(String, Value)>,
    pub tensors: Vec<TensorPlan>,
    /// Tensors whose rows do not fit the type the rules want for them.
    pub fallbacks: Vec<Fallback>,
    recipes: Vec<Recipe>,
}

const TTS_MODEL_TYPE: &str = "qwen3_tts";
const TOKENIZER_MODEL_TYPE: &str = "qwen3_tts_tokenizer_12hz";

/// Elements converted per chunk (keeps peak memory small on huge tensors).
const CHUNK_ELEMENTS: usize = 1 << 22;

fn model_type(config: &Json) -> &str {
    config["model_type"].as_str().unwrap_or("")
}

/// Reads `dir/config.json`, explaining what a checkpoint dir must contain.
fn read_config(dir: &Path, what: &str) -> Result<(String, Json)> {
    if !dir.is_dir() {
        bail!(
            "{}: not a directory (expected a Hugging Face {what} checkpoint directory)",
            dir.display()
        );
    }
    let path = dir.join("config.json");
    if !path.is_file() {
        bail!(
            "{}: not found; {} is not a Hugging Face {what} checkpoint directory \
             (expected config.json, model.safetensors{})",
            path.display(),
            dir.display(),
            if what == "Qwen3-TTS" {
                ", vocab.json, merges.txt, speech_tokenizer/"
            } else {
                ""
            }
        );
    }
    metadata::read_json(&path)
}

fn optional_json(dir: &Path, file: &str) -> Result<Option<(String, Json)>> {
    let path = dir.join(file);
    if path.is_file() {
        Ok(Some(metadata::read_json(&path)?))
    } else {
        Ok(None)
    }
}

fn common_metadata(arch: &str, name: &str, ty: GgmlType) -> Vec<(String, Value)> {
    vec![
        (keys::ARCHITECTURE.into(), Value::Str(arch.into())),
        (keys::NAME.into(), Value::Str(name.into())),
        (keys::FILE_TYPE.into(), Value::U32(ty.id())),
        (keys::QUANT_VERSION.into(), Value::U32(2)),
        (
            keys::FORMAT_VERSION.into(),
            Value::U32(schema::FORMAT_VERSION),
        ),
    ]
}

fn dir_name(dir: &Path) -> String {
    std::fs::canonicalize(dir)
        .ok()
        .and_then(|p| p.file_name().map(|f| f.to_string_lossy().into_owned()))
        .unwrap_or_else(|| "qwen3-tts".into())
}

/// Plans the tensors of one file. `accept` says whether a checkpoint tensor
/// belongs in this file (others are an error), `skip` drops accepted tensors
/// that inference never reads.
fn plan_tensors(
    src: &dyn TensorSource,
    src_name: &str,
    requested: GgmlType,
    accept: impl Fn(&str) -> bool,
    skip: impl Fn(&str) -> bool,
) -> Result<(Vec<TensorPlan>, Vec<Recipe>, Vec<Fallback>)> {
    let all = src.tensors();
    let by_name: BTreeMap<&str, &SourceTensor> = all.iter().map(|t| (t.name.as_str(), t)).collect();
    let mut plans = Vec::new();
    let mut recipes = Vec::new();
    let mut fallbacks = Vec::new();
    for t in &all {
        if !accept(&t.name) {
            bail!(
                "{src_name}: unexpected tensor '{}' (not part of this model)",
                t.name
            );
        }
        if schema::is_dropped(&t.name) || skip(&t.name) {
            continue;
        }
        if t.dtype.is_none() {
            bail!("{src_name}: tensor '{}' is not F32/F16/BF16", t.name);
        }
        let (gguf, recipe) = match schema::codebook_source(&t.name) {
            Some(cb) => {
                let usage = by_name.get(cb.cluster_usage.as_str()).with_context(|| {
                    format!("{src_name}: '{}' has no '{}'", t.name, cb.cluster_usage)
                })?;
                if t.shape.len() != 2 || usage.shape != [t.shape[0]] {
                    bail!(
                        "{src_name}: codebook '{}' shape {:?} does not match its usage {:?}",
                        t.name,
                        t.shape,
                        usage.shape
                    );
                }
                (
                    cb.gguf,
                    Recipe::Codebook {
                        embed_sum: cb.embed_sum,
                        cluster_usage: cb.cluster_usage,
                    },
                )
            }
            None => (
                schema::gguf_name(&t.name),
                Recipe::Copy { hf: t.name.clone() },
            ),
        };
        if gguf.len() >= MAX_NAME {
            bail!("internal: GGUF name '{gguf}' for '{}' is too long", t.name);
        }
        let ne: Vec<i64> = t.shape.iter().rev().map(|&d| d as i64).collect();
        let ne = if ne.is_empty() { vec![1] } else { ne };
        let role = schema::role(&gguf, t.shape.len());
        let ty = schema::storage_type(role, requested, ne[0] as usize);
        fallbacks.extend(schema::fallback(&gguf, role, requested, ne[0] as usize, ty));
        plans.push(TensorPlan { name: gguf, ty, ne });
        recipes.push(recipe);
    }
    if plans.is_empty() {
        bail!("{src_name}: no tensors to convert");
    }
    Ok((plans, recipes, fallbacks))
}

/// Checks that the planned tensors include `required` (by GGUF name).
fn require(plan: &[TensorPlan], src_name: &str, required: &[&str]) -> Result<()> {
    for r in required {
        if !plan.iter().any(|t| t.name == *r) {
            bail!(
                "{src_name}: tensor for '{r}' is missing; is this a complete Qwen3-TTS checkpoint?"
            );
        }
    }
    Ok(())
}

/// Plans `tts-<type>.gguf` from a model directory.
pub fn plan_tts(
    dir: &Path,
    src: &dyn TensorSource,
    ty: GgmlType,
    outdir: &Path,
) -> Result<FilePlan> {
    let (config_text, config) = read_config(dir, "Qwen3-TTS")?;
    let mut md = common_metadata(schema::ARCH_TTS, &dir_name(dir), ty);
    metadata::flatten(&format!("{}.config", schema::ARCH_TTS), &config, &mut md);
    md.push((
        keys::raw_json(schema::ARCH_TTS, "config"),
        Value::Str(config_text),
    ));
    if let Some((text, gen)) = optional_json(dir, "generation_config.json")? {
        metadata::flatten("qwen3-tts.generation", &gen, &mut md);
        md.push((
            keys::raw_json(schema::ARCH_TTS, "generation_config"),
            Value::Str(text),
        ));
    }
    let (tok_text, tok_config) = optional_json(dir, "tokenizer_config.json")?.with_context(|| {
        format!("{}: tokenizer_config.json not found (needed for the text tokenizer's added tokens)", dir.display())
    })?;
    md.push((
        keys::raw_json(schema::ARCH_TTS, "tokenizer_config"),
        Value::Str(tok_text),
    ));
    if let Some((text, _)) = optional_json(dir, "preprocessor_config.json")? {
        md.push((
            keys::raw_json(schema::ARCH_TTS, "preprocessor_config"),
            Value::Str(text),
        ));
    }
    md.extend(metadata::speaker_and_language_arrays(&config)?);
    md.extend(metadata::text_tokenizer(dir, &tok_config)?);

    let src_name = format!("{}/model.safetensors", dir.display());
    let (tensors, recipes, fallbacks) = plan_tensors(
        src,
        &src_name,
        ty,
        |n| n.starts_with("talker.") || n.starts_with("speaker_encoder."),
        |_| false,
    )?;
    require(
        &tensors,
        &src_name,
        &[
            "talker.text_embd.weight",
            "talker.codec_embd.weight",
            "talker.codec_head.weight",
            "cp.output_norm.weight",
        ],
    )?;
    if config["tts_model_type"] == "base" {
        require(&tensors, &src_name, &["spk.fc.weight"])?;
    }
    Ok(FilePlan {
        path: outdir.join(format!("tts-{}.gguf", ty.name())),
        metadata: md,
        tensors,
        fallbacks,
        recipes,
    })
}

/// Plans `tokenizer-<type>.gguf` from a speech-tokenizer directory.
pub fn plan_tokenizer(
    dir: &Path,
    src: &dyn TensorSource,
    ty: GgmlType,
    outdir: &Path,
) -> Result<FilePlan> {
    let (config_text, config) = read_config(dir, "Qwen3-TTS speech-tokenizer")?;
    if model_type(&config) != TOKENIZER_MODEL_TYPE {
        bail!(
            "{}/config.json: model_type is '{}', expected '{TOKENIZER_MODEL_TYPE}'",
            dir.display(),
            model_type(&config)
        );
    }
    let mut md = common_metadata(schema::ARCH_TOKENIZER, &dir_name(dir), ty);
    metadata::flatten(
        &format!("{}.config", schema::ARCH_TOKENIZER),
        &config,
        &mut md,
    );
    md.push((
        keys::raw_json(schema::ARCH_TOKENIZER, "config"),
        Value::Str(config_text),
    ));
    if let Some((text, _)) = optional_json(dir, "preprocessor_config.json")? {
        md.push((
            keys::raw_json(schema::ARCH_TOKENIZER, "preprocessor_config"),
            Value::Str(text),
        ));
    }
    // Only the first `encoder_valid_num_quantizers` encoder codebooks are used
    // (1 semantic + the first valid−1 acoustic ones).
    let valid = config["encoder_valid_num_quantizers"]
        .as_u64()
        .unwrap_or(16) as usize;
    let acoustic = "encoder.quantizer.acoustic_residual_vector_quantizer.layers.";
    let skip = move |n: &str| {
        n.strip_prefix(acoustic)
            .and_then(|rest| rest.split('.').next())
            .and_then(|i| i.parse::<usize>().ok())
            .is_some_and(|i| i + 1 >= valid)
    };
    let src_name = format!("{}/model.safetensors", dir.display());
    let (tensors, recipes, fallbacks) = plan_tensors(
        src,
        &src_name,
        ty,
        |n| n.starts_with("encoder.") || n.starts_with("decoder."),
        skip,
    )?;
    require(
        &tensors,
        &src_name,
        &[
            "dec.pre_conv.conv.weight",
            "dec.rvq_first.blk.0.codebook.embed",
        ],
    )?;
    Ok(FilePlan {
        path: outdir.join(format!("tokenizer-{}.gguf", ty.name())),
        metadata: md,
        tensors,
        fallbacks,
        recipes,
    })
}

/// Streams one planned tensor's converted bytes into `out`.
fn produce_tensor(
    src: &dyn TensorSource,
    plan: &TensorPlan,
    recipe: &Recipe,
    out: &mut dyn Write,
) -> Result<()> {
    let row = plan.row_len();
    let rows = plan.n_elements() / row;
    let rows_per_chunk = (CHUNK_ELEMENTS / row).max(1);
    let mut buf = Vec::new();
    let usage = match recipe {
        Recipe::Codebook { cluster_usage, .. } => {
            let mut u = vec![0f32; rows];
            src.read_f32(cluster_usage, 0, &mut u)?;
            Some(u)
        }
        Recipe::Copy { .. } => None,
    };
    let name = match recipe {
        Recipe::Copy { hf } => hf,
        Recipe::Codebook { embed_sum, .. } => embed_sum,
    };
    let mut r0 = 0;
    while r0 < rows {
        let n = rows_per_chunk.min(rows - r0);
        buf.resize(n * row, 0.0);
        src.read_f32(name, r0 * row, &mut buf)?;
        if let Some(u) = &usage {
            for (i, chunk) in buf.chunks_mut(row).enumerate() {
                let d = u[r0 + i].max(schema::CODEBOOK_EPS);
                chunk.iter_mut().for_each(|v| *v /= d);
            }
        }
        if let Some(bad) = buf.iter().position(|v| !v.is_finite()) {
            bail!(
                "tensor '{name}': non-finite value at element {}",
                r0 * row + bad
            );
        }
        out.write_all(&quantize(plan.ty, &buf, row))
            .with_context(|| format!("writing tensor '{}'", plan.name))?;
        r0 += n;
    }
    src.release(name);
    Ok(())
}

/// Writes a planned file under a temporary name (committed by the caller),
/// reporting each tensor to `progress`.
pub fn write_plan(
    plan: &FilePlan,
    src: &dyn TensorSource,
    overwrite: Overwrite,
    progress: &mut dyn FnMut(WriteProgress<'_>),
) -> Result<PendingFile> {
    write_plan_to(plan, &plan.path, src, overwrite, progress)
}

/// [`write_plan`] to another path than the plan's (progress names the plan's).
fn write_plan_to(
    plan: &FilePlan,
    path: &Path,
    src: &dyn TensorSource,
    overwrite: Overwrite,
    progress: &mut dyn FnMut(WriteProgress<'_>),
) -> Result<PendingFile> {
    let bytes = plan.tensors.iter().map(|t| t.n_bytes() as u64).sum();
    progress(WriteProgress::FileStart {
        path: &plan.path,
        bytes,
    });
    let mut done = 0u64;
    let pending = write_gguf(
        path,
        &plan.metadata,
        &plan.tensors,
        overwrite,
        |i, t, out| {
            produce_tensor(src, t, &plan.recipes[i], out)
                .map_err(|e| qwen3_tts::Error::Internal(format!("{e:#}")))?;
            done += t.n_bytes() as u64;
            progress(WriteProgress::Tensor {
                name: &t.name,
                done,
            });
            Ok(())
        },
    )?;
    check_loads(plan, &pending)?;
    progress(WriteProgress::FileDone { path: &plan.path });
    Ok(pending)
}

/// Loads the written file as the runtime will (every config value and
/// tensor shape checked), before it takes its name: a config.json whose
/// values the runtime would refuse is refused here, naming the key.
fn check_loads(plan: &FilePlan, pending: &PendingFile) -> Result<()> {
    let tmp = pending.temp_path();
    let tokenizer = plan.metadata.iter().any(|(k, v)| {
        k == keys::ARCHITECTURE && matches!(v, Value::Str(a) if a == schema::ARCH_TOKENIZER)
    });
    let loaded = if tokenizer {
        qwen3_tts::codec_decoder::CodecDecoder::load(tmp)
            .and_then(|_| qwen3_tts::codec_encoder::CodecEncoder::load(tmp, 1))
            .map(drop)
    } else {
        qwen3_tts::pipeline::TtsModel::load(tmp).map(drop)
    };
    // The runtime's message names the temporary file: name the output instead.
    loaded.map_err(|e| {
        let msg = e
            .to_string()
            .replace(&tmp.display().to_string(), &plan.path.display().to_string());
        Error::msg(format!("the converted file would not load: {msg}"))
    })
}

/// Summarises a written plan (counts and bytes per storage type, fallbacks).
pub fn summarize(plan: &FilePlan) -> FileSummary {
    let mut s = FileSummary::from_plan(&plan.path, &plan.tensors);
    s.fallbacks = plan.fallbacks.clone();
    s
}

/// Whether two files have the same bytes.
fn same_bytes(a: &Path, b: &Path) -> std::io::Result<bool> {
    let len = std::fs::metadata(a)?.len();
    if std::fs::metadata(b)?.len() != len {
        return Ok(false);
    }
    let (mut fa, mut fb) = (std::fs::File::open(a)?, std::fs::File::open(b)?);
    let (mut ba, mut bb) = (vec![0u8; 1 << 20], vec![0u8; 1 << 20]);
    let mut left = len;
    while left > 0 {
        let n = left.min(ba.len() as u64) as usize;
        fa.read_exact(&mut ba[..n])?;
        fb.read_exact(&mut bb[..n])?;
        if ba[..n] != bb[..n] {
            return Ok(false);
        }
        left -= n as u64;
    }
    Ok(true)
}

/// Whether the existing `plan.path` holds exactly what `plan` writes: the
/// plan is written to a temporary directory next to it and compared.
fn identical_to_existing(
    plan: &FilePlan,
    src: &dyn TensorSource,
    progress: &mut dyn FnMut(WriteProgress<'_>),
) -> Result<bool> {
    let dir = match plan.path.parent() {
        Some(d) if !d.as_os_str().is_empty() => d,
        _ => Path::new("."),
    };
    let tmp = tempfile::Builder::new()
        .prefix(".qwen3-tts-convert-")
        .suffix(".partial")
        .tempdir_in(dir)
        .with_context(|| format!("{}: cannot write a temporary file", dir.display()))?;
    let probe = tmp.path().join(plan.path.file_name().unwrap_or_default());
    write_plan_to(plan, &probe, src, Overwrite::Refuse, progress)?.commit()?;
    same_bytes(&probe, &plan.path)
        .with_context(|| format!("comparing with {}", plan.path.display()))
}

/// Converts a checkpoint directory. Nothing is written unless every requested
/// file converts; existing outputs are only replaced with `Overwrite::Replace`.
///
/// The speech-tokenizer file is the same for every TTS type: when it exists
/// with exactly the contents this conversion gives, it is kept (its summary
/// says `kept`) instead of refused.
pub fn convert(opts: &Options) -> Result<Vec<FileSummary>> {
    convert_with_progress(opts, &mut |_| {})
}

/// [`convert`], reporting the files and tensors written to `progress`.
pub fn convert_with_progress(
    opts: &Options,
    progress: &mut dyn FnMut(WriteProgress<'_>),
) -> Result<Vec<FileSummary>> {
    let dir = &opts.input;
    let (_, config) = read_config(dir, "Qwen3-TTS")?;
    match model_type(&config) {
        TTS_MODEL_TYPE => {}
        TOKENIZER_MODEL_TYPE => bail!(
            "{}: this is a speech-tokenizer directory (model_type '{TOKENIZER_MODEL_TYPE}'); pass the Qwen3-TTS \
             model directory that contains it as speech_tokenizer/",
            dir.display()
        ),
        other => bail!(
            "{}/config.json: model_type is '{other}', expected '{TTS_MODEL_TYPE}' (a Qwen3-TTS checkpoint)",
            dir.display()
        ),
    }
    if !opts.outdir.is_dir() {
        std::fs::create_dir_all(&opts.outdir).with_context(|| {
            format!("{}: cannot create output directory", opts.outdir.display())
        })?;
    }

    // Plan everything (reads only headers and JSON) before writing anything.
    let mut jobs: Vec<(FilePlan, Safetensors)> = Vec::new();
    if opts.parts != Parts::TokenizerOnly {
        let src = Safetensors::open_dir(dir)?;
        jobs.push((plan_tts(dir, &src, opts.ty, &opts.outdir)?, src));
    }
    if opts.parts != Parts::TtsOnly {
        let tok_dir = dir.join("speech_tokenizer");
        if !tok_dir.is_dir() {
            bail!(
                "{}: not found; the checkpoint must contain the speech tokenizer (or pass --tts-only)",
                tok_dir.display()
            );
        }
        let src = Safetensors::open_dir(&tok_dir)?;
        jobs.push((
            plan_tokenizer(&tok_dir, &src, opts.tokenizer_ty, &opts.outdir)?,
            src,
        ));
    }
    // An existing tokenizer file may be the one this conversion gives.
    let is_tokenizer = |plan: &FilePlan| {
        plan.metadata.iter().any(|(k, v)| {
            k == keys::ARCHITECTURE && matches!(v, Value::Str(a) if a == schema::ARCH_TOKENIZER)
        })
    };
    let compare = |plan: &FilePlan| {
        is_tokenizer(plan) && opts.overwrite == Overwrite::Refuse && plan.path.exists()
    };
    for (plan, _) in &jobs {
        if !compare(plan) {
            check_output(&plan.path, opts.overwrite)?;
        }
    }
    let mut kept = vec![false; jobs.len()];
    for (i, (plan, src)) in jobs.iter().enumerate() {
        if compare(plan) {
            if !identical_to_existing(plan, src, progress)? {
                bail!(
                    "{}: already exists with other contents (use --force to overwrite)",
                    plan.path.display()
                );
            }
            kept[i] = true;
        }
    }

    let mut pending = Vec::new();
    for (i, (plan, src)) in jobs.iter().enumerate() {
        if !kept[i] {
            pending.push(write_plan(plan, src, opts.overwrite, progress)?);
        }
    }
    for p in pending {
        p.commit()?;
    }
    Ok(jobs
        .iter()
        .zip(kept)
        .map(|((plan, _), kept)| FileSummary {
            kept,
            ..summarize(plan)
        })
        .collect())
}

/// Which file a tensor source holds.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FileKind {
    /// `tts-<type>.gguf`: JSON files and vocab from a model directory.
    Tts,
    /// `tokenizer-<type>.gguf`: JSON files from a speech-tokenizer directory.
    Tokenizer,
}

/// Converts tensors from any source (e.g. an in-memory state dict), taking the
/// JSON / vocabulary files from `config_dir`. Returns the written file.
pub fn convert_source(
    kind: FileKind,
    config_dir: &Path,
    src: &dyn TensorSource,
    ty: GgmlType,
    outdir: &Path,
    overwrite: Overwrite,
) -> Result<FileSummary> {
    std::fs::create_dir_all(outdir)
        .with_context(|| format!("{}: cannot create output directory", outdir.display()))?;
    let plan = match kind {
        FileKind::Tts => plan_tts(config_dir, src, ty, outdir)?,
        FileKind::Tokenizer => plan_tokenizer(config_dir, src, ty, outdir)?,
    };
    check_output(&plan.path, overwrite)?;
    write_plan(&plan, src, overwrite, &mut |_| {})?.commit()?;
    Ok(summarize(&plan))
}
