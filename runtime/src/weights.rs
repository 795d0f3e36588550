//! Loading GGUF tensors into memory, as stored or rearranged into the layout
//! a model part computes with, and resolving them into typed weights.

use std::path::Path;

use crate::error::{Error, Result};
use crate::ggml::{GgmlType, StoredTensor, TensorStore, TENSOR_ALIGNMENT};
use crate::gguf_schema::tensors;
use crate::model_file::GgufFile;

/// A tensor as it will live in backend memory.
pub struct Prepared {
    pub ty: GgmlType,
    pub ne: Vec<i64>,
    pub bytes: Vec<u8>,
}

/// Loads the tensors whose names pass `keep`; `prepare` may return a
/// rearranged version of a tensor (given its name and stored bytes) to keep
/// instead of the stored one. Tensors used as stored stay in the mapped file
/// (no copy); those streamed every step are paged in now, so the first frame
/// does not pay for it, while lookup tables are left to page in by the row.
/// Vectors (norms, biases, scales) stored in another type than F32 (as
/// other writers may) are converted to F32: the graphs' elementwise ops take
/// them in F32 only.
pub fn load_weights_with(
    file: &GgufFile,
    keep: impl Fn(&str) -> bool,
    prepare: impl Fn(&str, &[u8]) -> Result<Option<Prepared>>,
) -> Result<TensorStore> {
    let mut owned = Vec::new();
    let mut uploads = Vec::new();
    let mut mapped = Vec::new();
    for t in file.tensors().iter().filter(|t| keep(&t.name)) {
        let offset = file.tensor_offset(&t.name)?;
        let prepared = match prepare(&t.name, file.tensor_bytes(&t.name)?)? {
            None if significant(&t.ne).len() == 1 => upcast_to_f32(file, &t.name)?,
            p => p,
        };
        match prepared {
            Some(p) => {
                owned.push((t.name.clone(), p.ty, p.ne));
                uploads.push(p.bytes);
            }
            None if offset % TENSOR_ALIGNMENT == 0 => {
                let ty = file.tensor_type(&t.name)?;
                if !tensors::is_lookup_table(&t.name) {
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
    let store = TensorStore::with_mapped(&owned, file.mapping(), &mapped);
    for ((name, _, _), bytes) in owned.iter().zip(uploads) {
        store
            .get(name)
            .expect("just created")
            .set_bytes_at(0, &bytes);
        // the source pages are not needed again
        file.release_tensor(name);
    }
    Ok(store)
}

/// Resolves a model part's tensors from its loaded store into typed fields,
/// checking each one's shape: a missing or mis-shaped tensor is a load error
/// naming it (never a panic while a graph is built).
pub struct WeightSource<'a> {
    store: &'a TensorStore,
    path: &'a Path,
}

/// Dims in ggml order without trailing ones (how GGUF and ggml may differ).
fn significant(ne: &[i64]) -> &[i64] {
    let rank = ne.iter().rposition(|&d| d != 1).map_or(1, |p| p + 1);
    &ne[..rank.min(ne.len())]
}

impl<'a> WeightSource<'a> {
    pub fn new(store: &'a TensorStore, path: &'a Path) -> Self {
        Self { store, path }
    }

    /// An error about the tensor `name` of this file.
    pub fn error(&self, name: &str, reason: String) -> Error {
        Error::Tensor {
            path: self.path.to_path_buf(),
            name: name.to_string(),
            reason,
        }
    }

    /// The tensor `name` of any shape.
    pub fn any(&self, name: &str) -> Result<StoredTensor> {
        self.store
            .get(name)
            .ok_or_else(|| self.error(name, "missing from the file".into()))
    }

    /// The tensor `name` with dims `ne` (ggml order, trailing ones ignored).
    pub fn tensor(&self, name: &str, ne: &[usize]) -> Result<StoredTensor> {
        let t = self.any(name)?;
        let want: Vec<i64> = ne.iter().map(|&d| d as i64).collect();
        let got = t.ne();
        if significant(&got) != significant(&want) {
            return Err(self.error(
                name,
                format!(
                    "shape {:?} does not match the model's config (expected {:?})",
                    significant(&got),
                    significant(&want)
                ),
            ));
        }
        Ok(t)
    }

    /// Like [`WeightSource::tensor`] for a tensor only some models have.
    pub fn optional(&self, name: &str, ne: &[usize]) -> Result<Option<StoredTensor>> {
        match self.store.get(name) {
            Some(_) => self.tensor(name, ne).map(Some),
            None => Ok(None),
        }
    }

    /// A kernel of rank ≤ 3 whose layout decides the layer's sizes.
    pub fn kernel(&self, name: &str) -> Result<StoredTensor> {
        let t = self.any(name)?;
        if significant(&t.ne()).len() > 3 {
            return Err(self.error(name, format!("unexpected kernel shape {:?}", t.ne())));
        }
        Ok(t)
    }

    /// `stem.weight` (`[c_in, c_out]`) and, when `bias`, `stem.bias` (`[c_out]`).
    pub fn linear(&self, stem: &str, c_in: usize, c_out: usize, bias: bool) -> Result<Linear> {
        Ok(Linear {
            weight: self.tensor(&tensors::join(stem, tensors::WEIGHT), &[c_in, c_out])?,
            bias: match bias {
                true => Some(self.tensor(&tensors::join(stem, tensors::BIAS), &[c_out])?),
                false => None,
            },
        })
    }
}

impl WeightSource<'_> {
    /// `stem.weight` (any `[c_in, c_out]`) and `stem.bias` (`[c_out]`): a
    /// linear layer whose sizes the config does not give.
    pub fn linear_any(&self, stem: &str) -> Result<Linear> {
        let name = tensors::join(stem, tensors::WEIGHT);
        let weight = self.any(&name)?;
        let ne = weight.ne();
        if significant(&ne).len() != 2 {
            return Err(self.error(&name, format!("expected a matrix, found shape {ne:?}")));
        }
        let bias = self.tensor(&tensors::join(stem, tensors::BIAS), &[ne[1] as usize])?;
        Ok(Linear {
            weight,
            bias: Some(bias),
        })
    }
}

/// A linear layer `x Wᵀ (+ b)`.
#[derive(Clone, Debug)]
pub struct Linear {
    pub weight: StoredTensor,
    pub bias: Option<StoredTensor>,
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

/// The dims of the conv kernel `name` as `[k, c_in, c_out]` (ggml order):
/// a conv with one output channel is stored 2-D.
pub fn kernel_dims(file: &GgufFile, name: &str) -> Result<[usize; 3]> {
    match file.tensor_info(name)?.ne[..] {
        [a, b] => Ok([a as usize, b as usize, 1]),
        [a, b, c] => Ok([a as usize, b as usize, c as usize]),
        ref other => Err(Error::Tensor {
            path: file.path().to_path_buf(),
            name: name.to_string(),
            reason: format!("unexpected kernel shape {other:?}"),
        }),
    }
}

/// Reorders a 3-D array of `elem`-byte elements with dims `ne` (ggml order,
/// `ne[0]` fastest): output dim `i` is input dim `order[i]`.
pub fn permute3(bytes: &[u8], elem: usize, ne: [usize; 3], order: [usize; 3]) -> Vec<u8> {
    assert_eq!(bytes.len(), elem * ne[0] * ne[1] * ne[2]);
    // Fixed-size element copies (a call to memcpy per element made the
    // vocoder's kernels a fifth of a model load).
    match elem {
        2 => permute3_fixed::<2>(bytes, ne, order),
        4 => permute3_fixed::<4>(bytes, ne, order),
        _ => permute3_any(bytes, elem, ne, order),
    }
}

fn permute3_fixed<const E: usize>(bytes: &[u8], ne: [usize; 3], order: [usize; 3]) -> Vec<u8> {
    let stride_in = [E, E * ne[0], E * ne[0] * ne[1]];
    let (on, os) = (order.map(|d| ne[d]), order.map(|d| stride_in[d]));
    let mut out = vec![0u8; bytes.len()];
    let mut chunks = out.chunks_exact_mut(E);
    for i2 in 0..on[2] {
        for i1 in 0..on[1] {
            let base = i1 * os[1] + i2 * os[2];
            for (i0, dst) in (0..on[0]).zip(&mut chunks) {
                let at = base + i0 * os[0];
                let src: &[u8; E] = bytes[at..at + E].try_into().expect("E bytes");
                dst.copy_from_slice(src);
            }
        }
    }
    out
}

fn permute3_any(bytes: &[u8], elem: usize, ne: [usize; 3], order: [usize; 3]) -> Vec<u8> {
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

    /// The fixed-size copies give what the byte-by-element loop gives, for
    /// every order.
    #[test]
    fn permute3_fixed_sizes_match_the_general_loop() {
        let ne = [3, 4, 5];
        for elem in [2, 4] {
            let a: Vec<u8> = (0..elem * 60).map(|i| (i * 7 % 251) as u8).collect();
            for order in [
                [0, 1, 2],
                [0, 2, 1],
                [1, 0, 2],
                [1, 2, 0],
                [2, 0, 1],
                [2, 1, 0],
            ] {
                let want = super::permute3_any(&a, elem, ne, order);
                assert_eq!(permute3(&a, elem, ne, order), want, "{elem} {order:?}");
            }
        }
    }
}
