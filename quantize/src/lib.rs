//! Re-quantises one of our GGUF files to another type, applying the same
//! precision rules as the converter ([`qwen3_tts::gguf_schema`]) and copying
//! all metadata.

use std::path::Path;

use qwen3_tts::ggml::gguf::Value;
use qwen3_tts::ggml::{quantize, GgmlType};
use qwen3_tts::gguf_schema::{self as schema, keys};
use qwen3_tts::model_file::{
    write_gguf_with_base, FileSummary, GgufFile, Overwrite, TensorPlan, WriteProgress,
};
use qwen3_tts::{Error, Result};

/// Rows converted at a time, in elements (bounds peak memory).
const CHUNK_ELEMENTS: usize = 1 << 22;

/// Re-quantises `input` into `output` as file type `ty`.
pub fn requantize(
    input: &Path,
    output: &Path,
    ty: GgmlType,
    overwrite: Overwrite,
) -> Result<FileSummary> {
    requantize_with_progress(input, output, ty, overwrite, &mut |_| {})
}

/// [`requantize`], reporting the file and each tensor written to `progress`.
pub fn requantize_with_progress(
    input: &Path,
    output: &Path,
    ty: GgmlType,
    overwrite: Overwrite,
    progress: &mut dyn FnMut(WriteProgress<'_>),
) -> Result<FileSummary> {
    let src = GgufFile::open(input)?;
    let arch = src.architecture();
    if arch != schema::ARCH_TTS && arch != schema::ARCH_TOKENIZER {
        return Err(Error::WrongModel {
            path: input.to_path_buf(),
            reason: format!(
                "architecture '{arch}' is not a qwen3-tts file (expected '{}' or '{}')",
                schema::ARCH_TTS,
                schema::ARCH_TOKENIZER
            ),
        });
    }
    if input.canonicalize().ok() == output.canonicalize().ok() && output.exists() {
        return Err(Error::invalid(
            "output",
            format!(
                "{} is the input file; write to another path",
                output.display()
            ),
        ));
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
    let fallbacks = plan
        .iter()
        .filter_map(|t| schema::tensor_fallback(&t.name, &t.ne, ty, t.ty))
        .collect();
    let overrides = vec![(keys::FILE_TYPE.to_string(), Value::U32(ty.id()))];
    let total: u64 = plan.iter().map(|t| t.n_bytes() as u64).sum();
    progress(WriteProgress::FileStart {
        path: output,
        bytes: total,
    });
    let mut done = 0u64;
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
                    .map_err(|e| Error::io(output, e))?;
            }
            src.release_tensor(&t.name);
            done += t.n_bytes() as u64;
            progress(WriteProgress::Tensor {
                name: &t.name,
                done,
            });
            Ok(())
        },
    )?;
    progress(WriteProgress::FileDone { path: output });
    pending.commit()?;

    let mut summary = FileSummary::from_plan(output, &plan);
    summary.fallbacks = fallbacks;
    Ok(summary)
}
