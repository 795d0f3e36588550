//! Tensor element types and (de)quantisation through ggml's own kernels.

use ggml_sys as sys;

/// The ggml tensor types this project reads or writes.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[allow(non_camel_case_types)]
pub enum GgmlType {
    F32,
    F16,
    BF16,
    Q8_0,
    Q6_K,
    Q5_K,
    Q4_K,
    I32,
}

impl GgmlType {
    pub const ALL: [GgmlType; 8] = [
        GgmlType::F32,
        GgmlType::F16,
        GgmlType::BF16,
        GgmlType::Q8_0,
        GgmlType::Q6_K,
        GgmlType::Q5_K,
        GgmlType::Q4_K,
        GgmlType::I32,
    ];

    pub(crate) fn raw(self) -> sys::ggml_type {
        match self {
            GgmlType::F32 => sys::GGML_TYPE_F32,
            GgmlType::F16 => sys::GGML_TYPE_F16,
            GgmlType::BF16 => sys::GGML_TYPE_BF16,
            GgmlType::Q8_0 => sys::GGML_TYPE_Q8_0,
            GgmlType::Q6_K => sys::GGML_TYPE_Q6_K,
            GgmlType::Q5_K => sys::GGML_TYPE_Q5_K,
            GgmlType::Q4_K => sys::GGML_TYPE_Q4_K,
            GgmlType::I32 => sys::GGML_TYPE_I32,
        }
    }

    pub(crate) fn from_raw(t: sys::ggml_type) -> Option<Self> {
        Self::ALL.into_iter().find(|x| x.raw() == t)
    }

    /// ggml's numeric id of the type (as stored in GGUF files).
    pub fn id(self) -> u32 {
        self.raw()
    }

    /// The type for ggml's numeric id, if this crate handles it.
    pub fn from_id(id: u32) -> Option<Self> {
        Self::ALL.into_iter().find(|x| x.id() == id)
    }

    /// Lower-case name as used on command lines and in file names (`q8_0`).
    pub fn name(self) -> &'static str {
        match self {
            GgmlType::F32 => "f32",
            GgmlType::F16 => "f16",
            GgmlType::BF16 => "bf16",
            GgmlType::Q8_0 => "q8_0",
            GgmlType::Q6_K => "q6_k",
            GgmlType::Q5_K => "q5_k",
            GgmlType::Q4_K => "q4_k",
            GgmlType::I32 => "i32",
        }
    }

    /// Parses a command-line name (`f32`, `f16`, `q8_0`, `q6_k`, `q5_k`, `q4_k`; case-insensitive).
    pub fn parse(s: &str) -> Option<Self> {
        let s = s.to_ascii_lowercase();
        Self::ALL.into_iter().find(|t| t.name() == s)
    }

    /// Elements per quantisation block (1 for plain types).
    pub fn block_size(self) -> usize {
        unsafe { sys::ggml_blck_size(self.raw()) as usize }
    }

    /// Bytes per block.
    pub fn type_size(self) -> usize {
        unsafe { sys::ggml_type_size(self.raw()) }
    }

    /// Bytes of a row of `n` elements (`n` must be a multiple of the block size).
    pub fn row_size(self, n: usize) -> usize {
        n / self.block_size() * self.type_size()
    }

    pub fn is_quantized(self) -> bool {
        matches!(
            self,
            GgmlType::Q8_0 | GgmlType::Q6_K | GgmlType::Q5_K | GgmlType::Q4_K
        )
    }

    /// A k-quant: 256-value super-blocks.
    pub fn is_k_quant(self) -> bool {
        matches!(self, GgmlType::Q6_K | GgmlType::Q5_K | GgmlType::Q4_K)
    }
}

/// Quantises (or converts) `src`, made of rows of `n_per_row` floats, to `ty`.
pub fn quantize(ty: GgmlType, src: &[f32], n_per_row: usize) -> Vec<u8> {
    assert!(
        n_per_row > 0 && src.len().is_multiple_of(n_per_row),
        "quantize: ragged rows"
    );
    assert!(
        n_per_row.is_multiple_of(ty.block_size()),
        "quantize: row length {n_per_row} not a multiple of the {} block size {}",
        ty.name(),
        ty.block_size()
    );
    let nrows = src.len() / n_per_row;
    let mut out = vec![0u8; nrows * ty.row_size(n_per_row)];
    match ty {
        GgmlType::F32 => out.copy_from_slice(super::as_bytes(src)),
        GgmlType::I32 => panic!("quantize: I32 is not a float type"),
        _ => {
            let written = unsafe {
                sys::ggml_quantize_chunk(
                    ty.raw(),
                    src.as_ptr(),
                    out.as_mut_ptr().cast(),
                    0,
                    nrows as i64,
                    n_per_row as i64,
                    std::ptr::null(),
                )
            };
            assert_eq!(
                written,
                out.len(),
                "ggml_quantize_chunk wrote an unexpected size"
            );
        }
    }
    out
}

/// Converts `n` elements of `ty` stored in `data` to f32.
pub fn dequantize(ty: GgmlType, data: &[u8], n: usize) -> Vec<f32> {
    assert!(
        n.is_multiple_of(ty.block_size()),
        "dequantize: {n} not a multiple of the block size"
    );
    assert_eq!(
        data.len(),
        ty.row_size(n),
        "dequantize: {} bytes for {n} {} values",
        data.len(),
        ty.name()
    );
    let mut out = vec![0f32; n];
    match ty {
        GgmlType::F32 => {
            for (o, c) in out.iter_mut().zip(data.chunks_exact(4)) {
                *o = f32::from_le_bytes([c[0], c[1], c[2], c[3]]);
            }
        }
        GgmlType::I32 => {
            for (o, c) in out.iter_mut().zip(data.chunks_exact(4)) {
                *o = i32::from_le_bytes([c[0], c[1], c[2], c[3]]) as f32;
            }
        }
        GgmlType::F16 => {
            // Exact either way; the half crate converts eight at a time
            // (F16C), ggml's row converter one by one (most of loading the
            // codec encoder, which upcasts F16 files to F32).
            use half::slice::HalfFloatSliceExt;
            const CHUNK: usize = 1024;
            let mut halves = [half::f16::ZERO; CHUNK];
            for (o, c) in out.chunks_mut(CHUNK).zip(data.chunks(2 * CHUNK)) {
                for (h, b) in halves.iter_mut().zip(c.chunks_exact(2)) {
                    *h = half::f16::from_le_bytes([b[0], b[1]]);
                }
                halves[..o.len()].convert_to_f32_slice(o);
            }
        }
        _ => {
            let traits = unsafe { &*sys::ggml_get_type_traits(ty.raw()) };
            let to_float = traits.to_float.expect("type without to_float");
            unsafe { to_float(data.as_ptr().cast(), out.as_mut_ptr(), n as i64) };
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    /// F16 → F32 through the half crate (eight at a time) gives ggml's row
    /// converter's results bit for bit, for every f16 value.
    #[test]
    fn f16_dequantize_equals_ggml_for_every_value() {
        let bytes: Vec<u8> = (0..=u16::MAX).flat_map(|h| h.to_le_bytes()).collect();
        let n = 1 << 16;
        let ours = dequantize(GgmlType::F16, &bytes, n);
        let mut ggml = vec![0f32; n];
        let traits = unsafe { &*sys::ggml_get_type_traits(GgmlType::F16.raw()) };
        let to_float = traits.to_float.expect("F16 has to_float");
        unsafe { to_float(bytes.as_ptr().cast(), ggml.as_mut_ptr(), n as i64) };
        for (h, (a, b)) in ours.iter().zip(&ggml).enumerate() {
            assert_eq!(a.to_bits(), b.to_bits(), "f16 bits {h:#06x}: {a} vs {b}");
        }
    }
}
