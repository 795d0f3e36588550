//! Uploading GGUF tensors into backend memory, as stored or rearranged into
//! the layout a model part computes with.

use crate::error::Result;
use crate::ggml::Backend;
use crate::ggml::{GgmlType, TensorStore, TENSOR_ALIGNMENT};
use crate::model_file::GgufFile;

/// A tensor as it will live in backend memory.
pub struct Prepared {
    pub ty: GgmlType,
    pub ne: Vec<i64>,
    pub bytes: Vec<u8>,
}

/// Loads every tensor of `file` into one backend buffer (one upload).
pub fn load_weights(file: &GgufFile, backend: &Backend) -> Result<TensorStore> {
    load_weights_with(file, backend, |_| true, |_, _| Ok(None))
}

/// Loads the tensors whose names pass `keep`; `prepare` may return a
/// rearranged version of a tensor (given its name and stored bytes) to upload
/// instead of the stored one. Tensors used as stored stay in the mapped file
/// (no copy); those streamed every step are paged in now, so the first frame
/// does not pay for it, while lookup tables are left to page in by the row.
pub fn load_weights_with(
    file: &GgufFile,
    backend: &Backend,
    keep: impl Fn(&str) -> bool,
    prepare: impl Fn(&str, &[u8]) -> Result<Option<Prepared>>,
) -> Result<TensorStore> {
    let mut owned = Vec::new();
    let mut uploads = Vec::new();
    let mut mapped = Vec::new();
    for t in file.tensors().iter().filter(|t| keep(&t.name)) {
        let offset = file.tensor_offset(&t.name)?;
        match prepare(&t.name, file.tensor_bytes(&t.name)?)? {
            Some(p) => {
                owned.push((t.name.clone(), p.ty, p.ne));
                uploads.push(p.bytes);
            }
            None if offset % TENSOR_ALIGNMENT == 0 => {
                let ty = file.tensor_type(&t.name)?;
                if !is_lookup_table(&t.name) {
                    file.mapping().prefault(offset, t.size);
                }
                mapped.push(((t.name.clone(), ty, t.ne.clone()), offset));
            }
            None => {
                // an oddly aligned file: copy
                owned.push((t.name.clone(), file.tensor_type(&t.name)?, t.ne.clone()));
                uploads.push(file.tensor_bytes(&t.name)?.to_vec());
            }
        }
    }
    let store = TensorStore::with_mapped(backend, &owned, file.mapping(), &mapped);
    for ((name, _, _), bytes) in owned.iter().zip(uploads) {
        store.get(name).expect("just created").set_bytes(&bytes);
        // the source pages are not needed again
        file.release_tensor(name);
    }
    Ok(store)
}

/// Embedding tables and codebooks: read a row per token, never whole.
fn is_lookup_table(name: &str) -> bool {
    name.contains("_embd.") || name.contains("codebook")
}

/// A `prepare` step for [`load_weights_with`] that stores every tensor as
/// F32 (for small parts that run once per input, where rounding matters
/// more than memory: the speaker encoder and the codec encoder).
pub fn upcast_to_f32(file: &GgufFile, name: &str) -> Result<Option<Prepared>> {
    if file.tensor_type(name)? == GgmlType::F32 {
        return Ok(None);
    }
    let v = file.tensor_f32(name)?;
    Ok(Some(Prepared {
        ty: GgmlType::F32,
        ne: file.tensor_info(name)?.ne.clone(),
        bytes: crate::ggml::as_bytes(&v).to_vec(),
    }))
}

/// Reorders a 3-D array of `elem`-byte elements with dims `ne` (ggml order,
/// `ne[0]` fastest): output dim `i` is input dim `order[i]`.
pub fn permute3(bytes: &[u8], elem: usize, ne: [usize; 3], order: [usize; 3]) -> Vec<u8> {
    assert_eq!(bytes.len(), elem * ne[0] * ne[1] * ne[2]);
    let stride_in = [elem, elem * ne[0], elem * ne[0] * ne[1]];
    let (on, os) = (order.map(|d| ne[d]), order.map(|d| stride_in[d]));
    let mut out = Vec::with_capacity(bytes.len());
    for i2 in 0..on[2] {
        for i1 in 0..on[1] {
            for i0 in 0..on[0] {
                let at = i0 * os[0] + i1 * os[1] + i2 * os[2];
                out.extend_from_slice(&bytes[at..at + elem]);
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::permute3;

    #[test]
    fn permute3_moves_axes() {
        // ne [2, 3, 1]: element (i0, i1) = 10·i1 + i0
        let a: Vec<u8> = vec![0, 1, 10, 11, 20, 21];
        assert_eq!(
            permute3(&a, 1, [2, 3, 1], [1, 0, 2]),
            vec![0, 10, 20, 1, 11, 21]
        );
        assert_eq!(permute3(&a, 1, [2, 3, 1], [0, 1, 2]), a);
        // two-byte elements stay whole
        let b: Vec<u8> = vec![1, 2, 3, 4];
        assert_eq!(permute3(&b, 2, [2, 1, 1], [1, 0, 2]), b);
        assert_eq!(permute3(&b, 2, [1, 1, 2], [2, 1, 0]), b);
    }
}
