//! Re-quantises one of our GGUF files to another type, applying the same
//! precision rules as the converter ([`qwen3_tts::gguf_schema`]) and copying
//! all metadata.

use std::path::Path;

use anyhow::{bail, Context, Result};
use qwen3_tts::ggml::gguf::Value;
use qwen3_tts::ggml::{quantize, GgmlType};
use qwen3_tts::gguf_schema::{self as schema, keys};
use qwen3_tts::model_file::{write_gguf_with_base, FileSummary, GgufFile, Overwrite, TensorPlan};

/// Rows converted at a time, in elements (bounds peak memory).
const CHUNK_ELEMENTS: usize = 1 << 22;

/// Re-quantises `input` into `output` as file type `ty`.
pub fn requantize(
    input: &Path,
    output: &Path,
    ty: GgmlType,
    overwrite: Overwrite,
    progress: bool,
) -> Result<FileSummary> {
    let src = GgufFile::open(input)?;
    let arch = src.architecture();
    if arch != schema::ARCH_TTS && arch != schema::ARCH_TOKENIZER {
        bail!(
            "{}: architecture '{arch}' is not a qwen3-tts file (expected '{}' or '{}')",
            input.display(),
            schema::ARCH_TTS,
            schema::ARCH_TOKENIZER
        );
    }
    if input.canonicalize().ok() == output.canonicalize().ok() && output.exists() {
        bail!(
            "{}: output is the input file; write to another path",
            output.display()
        );
    }
    let plan: Vec<TensorPlan> = src
        .tensors()
        .iter()
        .map(|t| TensorPlan {
            name: t.name.clone(),
            ty: schema::tensor_storage_type(&t.name, &t.ne, ty),
            ne: t.ne.clone(),
        })
        .collect();
    let overrides = vec![(keys::FILE_TYPE.to_string(), Value::U32(ty.id()))];
    let total: u64 = plan.iter().map(|t| t.n_bytes() as u64).sum();
    let pb = if progress {
        indicatif::ProgressBar::new(total)
    } else {
        indicatif::ProgressBar::hidden()
    };
    let pending = write_gguf_with_base(
        output,
        Some(src.header()),
        &overrides,
        &plan,
        overwrite,
        |_, t, out| {
            let from = src.tensor_type(&t.name)?;
            let bytes = src.tensor_bytes(&t.name)?;
            let row = t.row_len();
            let rows = t.n_elements() / row;
            let in_row = from.row_size(row);
            let step = (CHUNK_ELEMENTS / row).max(1);
            for r0 in (0..rows).step_by(step) {
                let n = step.min(rows - r0);
                let values = qwen3_tts::ggml::dequantize(
                    from,
                    &bytes[r0 * in_row..(r0 + n) * in_row],
                    n * row,
                );
                out.write_all(&quantize(t.ty, &values, row))
                    .map_err(|e| qwen3_tts::Error::io(output, e))?;
            }
            src.release_tensor(&t.name);
            pb.inc(t.n_bytes() as u64);
            Ok(())
        },
    )
    .with_context(|| format!("writing {}", output.display()))?;
    pb.finish_and_clear();
    pending.commit()?;

    Ok(FileSummary::from_plan(output, &plan))
}
