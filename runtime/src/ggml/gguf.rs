//! GGUF metadata and tensor directory through ggml's own `gguf.h`.
//!
//! Reading parses only the header (`no_alloc`); tensor data is mapped from the
//! file by the caller. Writing builds the header here and lets the caller
//! stream tensor data after it, so no tensor has to be held in memory whole.

use std::ffi::{CStr, CString};
use std::path::Path;
use std::ptr::NonNull;

use ggml_sys as sys;

use super::{take_log, Context, GgmlType};

/// A metadata value as stored in a GGUF key/value pair.
#[derive(Clone, Debug, PartialEq)]
pub enum Value {
    U8(u8),
    I8(i8),
    U16(u16),
    I16(i16),
    U32(u32),
    I32(i32),
    U64(u64),
    I64(i64),
    F32(f32),
    F64(f64),
    Bool(bool),
    Str(String),
    ArrI32(Vec<i32>),
    ArrU32(Vec<u32>),
    ArrF32(Vec<f32>),
    ArrStr(Vec<String>),
    /// An array of another element type (kept opaque).
    ArrOther {
        elem_type: u32,
        len: usize,
    },
}

/// One tensor's entry in the GGUF directory.
#[derive(Clone, Debug)]
pub struct TensorInfo {
    pub name: String,
    /// ggml type id as stored (may be a type this crate does not handle).
    pub type_id: u32,
    /// Dimensions in ggml order, only the used ones.
    pub ne: Vec<i64>,
    /// Offset relative to the start of the data section.
    pub offset: usize,
    pub size: usize,
}

/// A parsed GGUF header.
pub struct GgufHeader {
    ptr: NonNull<sys::gguf_context>,
}

unsafe impl Send for GgufHeader {}
unsafe impl Sync for GgufHeader {}

/// `s` as a C string; `what` names it in the error (GGUF strings are
/// length-prefixed and may hold a NUL byte, which ggml's C API cannot take).
fn cstr(s: &str, what: &str) -> Result<CString, String> {
    CString::new(s).map_err(|_| format!("{what} {s:?} contains a NUL byte"))
}

impl GgufHeader {
    /// Parses the header of `path`. On failure returns ggml's own complaint.
    pub fn read(path: &Path) -> Result<Self, String> {
        super::init_logging();
        let _ = take_log();
        let c = cstr(&path.to_string_lossy(), "path")?;
        let params = sys::gguf_init_params {
            no_alloc: true,
            ctx: std::ptr::null_mut(),
        };
        let p = unsafe { sys::gguf_init_from_file(c.as_ptr(), params) };
        match NonNull::new(p) {
            Some(ptr) => Ok(Self { ptr }),
            None => {
                let log = take_log();
                Err(if log.is_empty() {
                    "ggml could not parse the GGUF header".into()
                } else {
                    log
                })
            }
        }
    }

    fn raw(&self) -> *const sys::gguf_context {
        self.ptr.as_ptr()
    }

    pub fn version(&self) -> u32 {
        unsafe { sys::gguf_get_version(self.raw()) }
    }
    pub fn alignment(&self) -> usize {
        unsafe { sys::gguf_get_alignment(self.raw()) }
    }
    /// Absolute file offset of the tensor data section.
    pub fn data_offset(&self) -> usize {
        unsafe { sys::gguf_get_data_offset(self.raw()) }
    }

    pub fn keys(&self) -> Vec<String> {
        let n = unsafe { sys::gguf_get_n_kv(self.raw()) };
        (0..n)
            .map(|i| {
                unsafe { CStr::from_ptr(sys::gguf_get_key(self.raw(), i)) }
                    .to_string_lossy()
                    .into_owned()
            })
            .collect()
    }

    fn find(&self, key: &str) -> Option<i64> {
        // A key with a NUL byte cannot be stored, so it is not there.
        let c = cstr(key, "key").ok()?;
        let id = unsafe { sys::gguf_find_key(self.raw(), c.as_ptr()) };
        (id >= 0).then_some(id)
    }

    /// The value stored under `key`, if any.
    pub fn get(&self, key: &str) -> Option<Value> {
        let id = self.find(key)?;
        let ctx = self.raw();
        let ty = unsafe { sys::gguf_get_kv_type(ctx, id) };
        Some(unsafe {
            match ty {
                sys::GGUF_TYPE_UINT8 => Value::U8(sys::gguf_get_val_u8(ctx, id)),
                sys::GGUF_TYPE_INT8 => Value::I8(sys::gguf_get_val_i8(ctx, id)),
                sys::GGUF_TYPE_UINT16 => Value::U16(sys::gguf_get_val_u16(ctx, id)),
                sys::GGUF_TYPE_INT16 => Value::I16(sys::gguf_get_val_i16(ctx, id)),
                sys::GGUF_TYPE_UINT32 => Value::U32(sys::gguf_get_val_u32(ctx, id)),
                sys::GGUF_TYPE_INT32 => Value::I32(sys::gguf_get_val_i32(ctx, id)),
                sys::GGUF_TYPE_UINT64 => Value::U64(sys::gguf_get_val_u64(ctx, id)),
                sys::GGUF_TYPE_INT64 => Value::I64(sys::gguf_get_val_i64(ctx, id)),
                sys::GGUF_TYPE_FLOAT32 => Value::F32(sys::gguf_get_val_f32(ctx, id)),
                sys::GGUF_TYPE_FLOAT64 => Value::F64(sys::gguf_get_val_f64(ctx, id)),
                sys::GGUF_TYPE_BOOL => Value::Bool(sys::gguf_get_val_bool(ctx, id)),
                sys::GGUF_TYPE_STRING => Value::Str(
                    CStr::from_ptr(sys::gguf_get_val_str(ctx, id))
                        .to_string_lossy()
                        .into_owned(),
                ),
                sys::GGUF_TYPE_ARRAY => {
                    let elem = sys::gguf_get_arr_type(ctx, id);
                    let n = sys::gguf_get_arr_n(ctx, id);
                    match elem {
                        sys::GGUF_TYPE_STRING => Value::ArrStr(
                            (0..n)
                                .map(|i| {
                                    CStr::from_ptr(sys::gguf_get_arr_str(ctx, id, i))
                                        .to_string_lossy()
                                        .into_owned()
                                })
                                .collect(),
                        ),
                        sys::GGUF_TYPE_INT32 => {
                            let p = sys::gguf_get_arr_data(ctx, id) as *const i32;
                            Value::ArrI32(if n == 0 || p.is_null() {
                                Vec::new()
                            } else {
                                std::slice::from_raw_parts(p, n).to_vec()
                            })
                        }
                        sys::GGUF_TYPE_UINT32 => {
                            let p = sys::gguf_get_arr_data(ctx, id) as *const u32;
                            Value::ArrU32(if n == 0 || p.is_null() {
                                Vec::new()
                            } else {
                                std::slice::from_raw_parts(p, n).to_vec()
                            })
                        }
                        sys::GGUF_TYPE_FLOAT32 => {
                            let p = sys::gguf_get_arr_data(ctx, id) as *const f32;
                            Value::ArrF32(if n == 0 || p.is_null() {
                                Vec::new()
                            } else {
                                std::slice::from_raw_parts(p, n).to_vec()
                            })
                        }
                        other => Value::ArrOther {
                            elem_type: other,
                            len: n,
                        },
                    }
                }
                other => Value::ArrOther {
                    elem_type: other,
                    len: 0,
                },
            }
        })
    }

    pub fn tensors(&self) -> Vec<TensorInfo> {
        let ctx = self.raw();
        let n = unsafe { sys::gguf_get_n_tensors(ctx) };
        (0..n)
            .map(|i| unsafe {
                let name = CStr::from_ptr(sys::gguf_get_tensor_name(ctx, i))
                    .to_string_lossy()
                    .into_owned();
                let ne_ptr = sys::gguf_get_tensor_ne(ctx, i);
                let ne_all = std::slice::from_raw_parts(ne_ptr, super::MAX_DIMS);
                let rank = ne_all.iter().rposition(|&d| d != 1).map_or(1, |p| p + 1);
                TensorInfo {
                    name,
                    type_id: sys::gguf_get_tensor_type(ctx, i) as u32,
                    ne: ne_all[..rank].to_vec(),
                    offset: sys::gguf_get_tensor_offset(ctx, i),
                    size: sys::gguf_get_tensor_size(ctx, i),
                }
            })
            .collect()
    }
}

impl Drop for GgufHeader {
    fn drop(&mut self) {
        unsafe { sys::gguf_free(self.ptr.as_ptr()) };
    }
}

/// Builds a GGUF header: metadata plus the tensor directory. The caller writes
/// [`GgufBuilder::header_bytes`] and then each tensor's data at its offset.
pub struct GgufBuilder {
    ptr: NonNull<sys::gguf_context>,
    // Holds the tensor descriptors handed to gguf (gguf copies them, but keep
    // the context alive for the builder's lifetime to be safe).
    tensor_ctx: Context,
    n_tensors: usize,
    capacity: usize,
}

unsafe impl Send for GgufBuilder {}

impl GgufBuilder {
    /// A new, empty header with room for `max_tensors` tensors.
    pub fn new(max_tensors: usize) -> Self {
        super::init_logging();
        let p = unsafe { sys::gguf_init_empty() };
        Self {
            ptr: NonNull::new(p).expect("gguf_init_empty failed"),
            tensor_ctx: Context::new(max_tensors, 0),
            n_tensors: 0,
            capacity: max_tensors,
        }
    }

    fn raw(&self) -> *mut sys::gguf_context {
        self.ptr.as_ptr()
    }

    /// Sets `key` to `value`; an error for a key or string with a NUL byte
    /// or an opaque array.
    pub fn set(&mut self, key: &str, value: &Value) -> Result<(), String> {
        let k = cstr(key, "the key")?;
        let what = "a string value";
        let ctx = self.raw();
        unsafe {
            match value {
                Value::U8(v) => sys::gguf_set_val_u8(ctx, k.as_ptr(), *v),
                Value::I8(v) => sys::gguf_set_val_i8(ctx, k.as_ptr(), *v),
                Value::U16(v) => sys::gguf_set_val_u16(ctx, k.as_ptr(), *v),
                Value::I16(v) => sys::gguf_set_val_i16(ctx, k.as_ptr(), *v),
                Value::U32(v) => sys::gguf_set_val_u32(ctx, k.as_ptr(), *v),
                Value::I32(v) => sys::gguf_set_val_i32(ctx, k.as_ptr(), *v),
                Value::U64(v) => sys::gguf_set_val_u64(ctx, k.as_ptr(), *v),
                Value::I64(v) => sys::gguf_set_val_i64(ctx, k.as_ptr(), *v),
                Value::F32(v) => sys::gguf_set_val_f32(ctx, k.as_ptr(), *v),
                Value::F64(v) => sys::gguf_set_val_f64(ctx, k.as_ptr(), *v),
                Value::Bool(v) => sys::gguf_set_val_bool(ctx, k.as_ptr(), *v),
                Value::Str(s) => {
                    let c = cstr(s, what)?;
                    sys::gguf_set_val_str(ctx, k.as_ptr(), c.as_ptr())
                }
                Value::ArrI32(v) => sys::gguf_set_arr_data(
                    ctx,
                    k.as_ptr(),
                    sys::GGUF_TYPE_INT32,
                    v.as_ptr().cast(),
                    v.len(),
                ),
                Value::ArrU32(v) => sys::gguf_set_arr_data(
                    ctx,
                    k.as_ptr(),
                    sys::GGUF_TYPE_UINT32,
                    v.as_ptr().cast(),
                    v.len(),
                ),
                Value::ArrF32(v) => sys::gguf_set_arr_data(
                    ctx,
                    k.as_ptr(),
                    sys::GGUF_TYPE_FLOAT32,
                    v.as_ptr().cast(),
                    v.len(),
                ),
                Value::ArrStr(v) => {
                    let owned: Vec<CString> =
                        v.iter().map(|s| cstr(s, what)).collect::<Result<_, _>>()?;
                    let mut ptrs: Vec<*const std::os::raw::c_char> =
                        owned.iter().map(|c| c.as_ptr()).collect();
                    sys::gguf_set_arr_str(ctx, k.as_ptr(), ptrs.as_mut_ptr(), ptrs.len())
                }
                Value::ArrOther { .. } => {
                    return Err("cannot write an array of another type".into())
                }
            }
        }
        Ok(())
    }

    /// Copies every key/value pair of `src` (used when re-quantising).
    pub fn copy_metadata_from(&mut self, src: &GgufHeader) {
        unsafe { sys::gguf_set_kv(self.raw(), src.raw()) };
    }

    /// Adds a tensor to the directory; returns an error for a name ggml cannot store.
    pub fn add_tensor(&mut self, name: &str, ty: GgmlType, ne: &[i64]) -> Result<(), String> {
        if name.contains('\0') {
            return Err(format!("tensor name {name:?} contains a NUL byte"));
        }
        if name.len() >= super::MAX_NAME {
            return Err(format!(
                "tensor name '{name}' is longer than ggml's {} byte limit",
                super::MAX_NAME - 1
            ));
        }
        if self.n_tensors >= self.capacity {
            return Err(format!("too many tensors (capacity {})", self.capacity));
        }
        let first = ne.first().copied().unwrap_or(1) as usize;
        if !first.is_multiple_of(ty.block_size()) {
            return Err(format!(
                "tensor '{name}': row length {first} is not a multiple of the {} block size",
                ty.name()
            ));
        }
        let t = self.tensor_ctx.new_tensor(ty, ne).set_name(name);
        unsafe { sys::gguf_add_tensor(self.raw(), t.raw()) };
        self.n_tensors += 1;
        Ok(())
    }

    /// The serialized header (metadata + tensor directory + padding), to which
    /// tensor data is appended.
    pub fn header_bytes(&self) -> Vec<u8> {
        let n = unsafe { sys::gguf_get_meta_size(self.raw()) };
        let mut buf = vec![0u8; n];
        unsafe { sys::gguf_get_meta_data(self.raw(), buf.as_mut_ptr().cast()) };
        buf
    }

    /// Offsets (relative to the data section) of all tensors, in directory order.
    pub fn tensor_offsets(&self) -> Vec<usize> {
        (0..self.n_tensors as i64)
            .map(|i| unsafe { sys::gguf_get_tensor_offset(self.raw(), i) })
            .collect()
    }

    pub fn alignment(&self) -> usize {
        unsafe { sys::gguf_get_alignment(self.raw()) }
    }
}

impl Drop for GgufBuilder {
    fn drop(&mut self) {
        unsafe { sys::gguf_free(self.ptr.as_ptr()) };
    }
}
