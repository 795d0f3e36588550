//! Python bindings: convert an in-memory state dict (numpy arrays) to GGUF.
//!
//! ```python
//! import qwen3_tts_convert
//! sd = {k: v.float().numpy() for k, v in model.state_dict().items()}
//! qwen3_tts_convert.convert_state_dict(sd, "ckpt_dir", "models", kind="tts", type="q8_0")
//! ```

use std::path::PathBuf;

use numpy::{PyReadonlyArrayDyn, PyUntypedArrayMethods};
use pyo3::exceptions::{PyTypeError, PyValueError};
use pyo3::prelude::*;
use pyo3::types::PyDict;
use qwen3_tts::gguf_schema::parse_file_type;
use qwen3_tts::model_file::Overwrite;

use crate::{convert_source, FileKind, MemorySource};

/// Converts `state_dict` (name → float32 numpy array) to `tts-<type>.gguf`
/// (`kind="tts"`, JSON/vocab files from `config_dir`) or
/// `tokenizer-<type>.gguf` (`kind="tokenizer"`, `config_dir` = the speech
/// tokenizer dir). Returns the path of the written file.
#[pyfunction]
#[pyo3(signature = (state_dict, config_dir, out_dir, kind = "tts", r#type = "q8_0", force = false))]
fn convert_state_dict(
    state_dict: &Bound<'_, PyDict>,
    config_dir: PathBuf,
    out_dir: PathBuf,
    kind: &str,
    r#type: &str,
    force: bool,
) -> PyResult<String> {
    let ty = parse_file_type(r#type).map_err(PyValueError::new_err)?;
    let kind = match kind {
        "tts" => FileKind::Tts,
        "tokenizer" => FileKind::Tokenizer,
        other => {
            return Err(PyValueError::new_err(format!(
                "kind must be 'tts' or 'tokenizer', not '{other}'"
            )))
        }
    };
    let mut src = MemorySource::new();
    for (key, value) in state_dict.iter() {
        let name: String = key.extract()?;
        let array: PyReadonlyArrayDyn<'_, f32> = value.extract().map_err(|_| {
            PyTypeError::new_err(format!(
                "tensor '{name}': expected a float32 numpy array (use t.float().numpy())"
            ))
        })?;
        let shape = array.shape().to_vec();
        let data = array.as_array().iter().copied().collect();
        src.insert(&name, shape, data)
            .map_err(|e| PyValueError::new_err(format!("{e:#}")))?;
    }
    let overwrite = if force {
        Overwrite::Replace
    } else {
        Overwrite::Refuse
    };
    let summary = convert_source(kind, &config_dir, &src, ty, &out_dir, overwrite)
        .map_err(|e| PyValueError::new_err(format!("{e:#}")))?;
    Ok(summary.path.to_string_lossy().into_owned())
}

#[pymodule]
fn qwen3_tts_convert(m: &Bound<'_, PyModule>) -> PyResult<()> {
    m.add_function(wrap_pyfunction!(convert_state_dict, m)?)
}
