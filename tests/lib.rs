//! Helpers shared by the cross-crate tests (fixture paths, error measures).

use std::path::PathBuf;

pub mod fuzz;
pub mod fuzz_driver;

/// The five checkpoint shapes of the family, as committed tiny fixtures.
pub const VARIANTS: [&str; 5] = [
    "0.6B-Base",
    "0.6B-CustomVoice",
    "1.7B-Base",
    "1.7B-CustomVoice",
    "1.7B-VoiceDesign",
];

/// `tests/fixtures`.
pub fn fixtures() -> PathBuf {
    // A test binary carried to another machine (scripts/device_check.sh)
    // finds the fixtures in the checkout it runs from.
    if let Some(dir) = std::env::var_os("QWEN3_TTS_FIXTURES") {
        return PathBuf::from(dir);
    }
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("fixtures")
}

/// The tiny Hugging Face checkpoint dir of a variant.
pub fn tiny_checkpoint(variant: &str) -> PathBuf {
    fixtures().join(format!("tiny-{variant}"))
}

/// ‖got − want‖ / ‖want‖ (0 when both are zero).
pub fn rel_rms(got: &[f32], want: &[f32]) -> f64 {
    assert_eq!(got.len(), want.len());
    let num: f64 = got
        .iter()
        .zip(want)
        .map(|(g, w)| ((g - w) as f64).powi(2))
        .sum();
    let den: f64 = want.iter().map(|w| (*w as f64).powi(2)).sum();
    if den == 0.0 {
        if num == 0.0 {
            0.0
        } else {
            f64::INFINITY
        }
    } else {
        (num / den).sqrt()
    }
}

/// A reference dump: named tensors of one `.safetensors` file as f32 / i64.
pub struct Dump {
    pub bytes: Vec<u8>,
}

impl Dump {
    pub fn open(path: &std::path::Path) -> Self {
        Self {
            bytes: std::fs::read(path).unwrap_or_else(|e| panic!("{}: {e}", path.display())),
        }
    }
    fn view(&self, name: &str) -> Option<safetensors::tensor::TensorView<'_>> {
        safetensors::SafeTensors::deserialize(&self.bytes)
            .ok()?
            .tensor(name)
            .ok()
    }
    pub fn has(&self, name: &str) -> bool {
        self.view(name).is_some()
    }
    pub fn shape(&self, name: &str) -> Vec<usize> {
        self.view(name)
            .unwrap_or_else(|| panic!("dump has no '{name}'"))
            .shape()
            .to_vec()
    }
    pub fn f32(&self, name: &str) -> Vec<f32> {
        let v = self
            .view(name)
            .unwrap_or_else(|| panic!("dump has no '{name}'"));
        assert_eq!(v.dtype(), safetensors::Dtype::F32, "{name}");
        v.data()
            .chunks_exact(4)
            .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
            .collect()
    }
    pub fn i64(&self, name: &str) -> Vec<i64> {
        let v = self
            .view(name)
            .unwrap_or_else(|| panic!("dump has no '{name}'"));
        assert_eq!(v.dtype(), safetensors::Dtype::I64, "{name}");
        v.data()
            .chunks_exact(8)
            .map(|c| i64::from_le_bytes(c.try_into().unwrap()))
            .collect()
    }
}

/// max |a − b| / max |b|.
pub fn max_rel_diff(got: &[f32], want: &[f32]) -> f32 {
    assert_eq!(got.len(), want.len(), "length mismatch");
    let scale = want.iter().fold(0f32, |m, v| m.max(v.abs()));
    got.iter()
        .zip(want)
        .map(|(a, b)| (a - b).abs())
        .fold(0f32, f32::max)
        / scale
}

/// Cosine similarity.
pub fn cosine(a: &[f32], b: &[f32]) -> f64 {
    let dot: f64 = a.iter().zip(b).map(|(x, y)| *x as f64 * *y as f64).sum();
    let na: f64 = a.iter().map(|x| (*x as f64).powi(2)).sum::<f64>().sqrt();
    let nb: f64 = b.iter().map(|x| (*x as f64).powi(2)).sum::<f64>().sqrt();
    dot / (na * nb)
}

/// `session` decodes the reference's codec fixtures (`decode_short`,
/// `decode_long`) within SNR 60 dB of `want_session` (the CPU path), and
/// streamed in pieces of 7 frames exactly as offline; `what` names the
/// session in messages.
pub fn check_vocoder_against(
    what: &str,
    session: &mut qwen3_tts::codec_decoder::DecoderSession,
    want_session: &mut qwen3_tts::codec_decoder::DecoderSession,
) {
    for name in ["decode_short", "decode_long"] {
        let dump = Dump::open(&fixtures().join(format!("reference/codec/{name}.safetensors")));
        let frames = frames_of(&dump.i64("codes"));
        let want = want_session.decode(&frames).unwrap();
        let got = session.decode(&frames).unwrap();
        let snr = snr_db(&got, &want);
        eprintln!("{name}: {what} SNR {snr:.1} dB");
        assert!(snr >= 60.0, "{name}: {what} SNR {snr:.1} dB < 60");

        let mut streamed = Vec::new();
        let mut stream = session.stream();
        for piece in frames.chunks(7) {
            streamed.extend(stream.push(piece).unwrap());
        }
        assert!(
            streamed == got,
            "{name}: {what}: streamed differs from offline"
        );
    }
}

/// `req` teacher-forced through `reference`'s frames, greedy: every frame's
/// codes (concatenated) and the talker's logits per step.
pub fn forced_run(
    s: &mut qwen3_tts::pipeline::Session,
    req: &qwen3_tts::prompt::Request,
    reference: &[Vec<u32>],
) -> (Vec<u32>, Vec<Vec<f32>>) {
    let prompt = s.prompt(req).unwrap();
    let mut opts = qwen3_tts::pipeline::GenerateOptions::from_config(&s.model().config).greedy();
    opts.set_max_new_tokens(reference.len() + 1);
    let (codes, trace) = s
        .predict_forced_traced(&prompt, &opts, reference, reference.len())
        .unwrap();
    (codes.concat(), trace.talker_logits)
}

/// How far two teacher-forced runs over the same frames agree: the lowest
/// cosine between their talker logits, and the share of code-predictor
/// picks (codes 1–15 of each 16-code frame; code 0 is the talker's) that
/// are the same.
pub fn forced_agreement(
    (codes, logits): (&[u32], &[Vec<f32>]),
    (want_codes, want_logits): (&[u32], &[Vec<f32>]),
) -> (f64, f64) {
    assert_eq!(logits.len(), want_logits.len(), "logits steps");
    assert_eq!(codes.len(), want_codes.len(), "codes");
    let min_cosine = logits
        .iter()
        .zip(want_logits)
        .map(|(a, b)| cosine(a, b))
        .fold(f64::INFINITY, f64::min);
    let same = codes
        .chunks(16)
        .zip(want_codes.chunks(16))
        .map(|(a, b)| a[1..].iter().zip(&b[1..]).filter(|(x, y)| x == y).count())
        .sum::<usize>();
    (min_cosine, same as f64 / (15 * codes.len() / 16) as f64)
}

/// Converts a tiny variant's TTS model to `ty` in `dir` (once per dir).
pub fn convert_tiny(
    variant: &str,
    ty: qwen3_tts::ggml::GgmlType,
    dir: &std::path::Path,
) -> PathBuf {
    let path = dir.join(format!("tts-{}.gguf", ty.name()));
    if !path.exists() {
        qwen3_tts_convert::convert(&qwen3_tts_convert::Options {
            input: tiny_checkpoint(variant),
            outdir: dir.to_path_buf(),
            ty,
            tokenizer_ty: qwen3_tts::ggml::GgmlType::F16,
            overwrite: qwen3_tts::model_file::Overwrite::Refuse,
            parts: qwen3_tts_convert::Parts::TtsOnly,
        })
        .unwrap_or_else(|e| panic!("converting {variant}: {e:#}"));
    }
    path
}

/// Converts the tiny speech tokenizer to `tokenizer-<ty>.gguf` in `dir` (once per dir).
pub fn convert_tiny_tokenizer(ty: qwen3_tts::ggml::GgmlType, dir: &std::path::Path) -> PathBuf {
    let path = dir.join(format!("tokenizer-{}.gguf", ty.name()));
    if !path.exists() {
        qwen3_tts_convert::convert(&qwen3_tts_convert::Options {
            input: tiny_checkpoint("0.6B-Base"),
            outdir: dir.to_path_buf(),
            ty: qwen3_tts::ggml::GgmlType::F32,
            tokenizer_ty: ty,
            overwrite: qwen3_tts::model_file::Overwrite::Refuse,
            parts: qwen3_tts_convert::Parts::TokenizerOnly,
        })
        .unwrap_or_else(|e| panic!("converting the tiny speech tokenizer: {e:#}"));
    }
    path
}

/// Signal-to-noise ratio of `got` against `want` in dB.
pub fn snr_db(got: &[f32], want: &[f32]) -> f64 {
    assert_eq!(got.len(), want.len(), "lengths differ");
    let signal: f64 = want.iter().map(|w| (*w as f64).powi(2)).sum();
    let noise: f64 = got
        .iter()
        .zip(want)
        .map(|(g, w)| (*g as f64 - *w as f64).powi(2))
        .sum();
    10.0 * (signal / noise.max(1e-300)).log10()
}

/// Largest absolute difference.
pub fn max_abs_diff(got: &[f32], want: &[f32]) -> f32 {
    assert_eq!(got.len(), want.len(), "lengths differ");
    got.iter()
        .zip(want)
        .map(|(g, w)| (g - w).abs())
        .fold(0.0, f32::max)
}

/// Frames of 16 codes from a `[frames, 16]` I64 dump tensor.
pub fn frames_of(codes: &[i64]) -> Vec<Vec<u32>> {
    codes
        .chunks(16)
        .map(|f| f.iter().map(|&c| c as u32).collect())
        .collect()
}

/// `n` frames of `nq` codes below `codebook_size`, from a fixed xorshift
/// sequence (benchmarks whose cost does not depend on the codes).
pub fn random_frames(n: usize, nq: usize, codebook_size: usize) -> Vec<Vec<u32>> {
    let mut seed = 0x9e37_79b9_7f4a_7c15u64;
    let mut code = || {
        seed ^= seed << 13;
        seed ^= seed >> 7;
        seed ^= seed << 17;
        (seed % codebook_size as u64) as u32
    };
    (0..n).map(|_| (0..nq).map(|_| code()).collect()).collect()
}

/// Serialises compute-heavy tests within one test binary: ggml's CPU threads
/// spin at barriers, so two graphs computing at once on a small machine
/// slow each other down by orders of magnitude.
pub fn serial() -> std::sync::MutexGuard<'static, ()> {
    static LOCK: std::sync::Mutex<()> = std::sync::Mutex::new(());
    LOCK.lock().unwrap_or_else(|e| e.into_inner())
}

/// The request a reference case made, rebuilt from its JSON and dump.
pub fn request(case: &serde_json::Value, dump: &Dump) -> qwen3_tts::prompt::Request {
    use qwen3_tts::prompt::{Request, Voice};
    let kw = &case["api_kwargs"];
    let s = |k: &str| kw[k].as_str().map(str::to_string);
    let voice = match case["api"].as_str().unwrap() {
        "Qwen3TTSModel.generate_voice_clone" => {
            let x_vector = dump.f32("x_vector");
            if kw["x_vector_only_mode"].as_bool().unwrap_or(false) {
                Voice::XVector(x_vector)
            } else {
                let codes = dump.i64("ref_codes");
                let ref_codes = codes
                    .chunks(16)
                    .map(|f| f.iter().map(|&c| c as u32).collect())
                    .collect();
                Voice::Icl {
                    x_vector,
                    ref_codes,
                    ref_text: s("ref_text").unwrap(),
                }
            }
        }
        "Qwen3TTSModel.generate_custom_voice" => Voice::Speaker(s("speaker").unwrap_or_default()),
        _ => Voice::None,
    };
    Request {
        text: s("text").unwrap(),
        language: s("language").unwrap_or_else(|| "auto".into()),
        voice,
        instruct: s("instruct"),
        non_streaming: kw["non_streaming_mode"].as_bool(),
    }
}

/// `--name value` flags of the benchmark examples.
pub struct ExampleArgs(Vec<String>);

impl ExampleArgs {
    /// The process's arguments.
    pub fn from_env() -> Self {
        Self(std::env::args().collect())
    }

    /// The value after `--{name}`, if given.
    pub fn get(&self, name: &str) -> Option<String> {
        let flag = format!("--{name}");
        self.0
            .iter()
            .position(|a| *a == flag)
            .and_then(|i| self.0.get(i + 1).cloned())
    }

    /// Whether the switch `--{name}` is given.
    pub fn flag(&self, name: &str) -> bool {
        let flag = format!("--{name}");
        self.0.contains(&flag)
    }

    /// `--{name}` as a number, `default` when absent.
    pub fn num(&self, name: &str, default: usize) -> usize {
        self.get(name).map_or(default, |v| {
            v.parse().unwrap_or_else(|_| panic!("--{name} {v}"))
        })
    }

    /// `--device` resolved as `qwen3-tts-run` resolves it (default `cpu`:
    /// `None`), and its name for the benches' JSON.
    pub fn device(&self) -> (Option<qwen3_tts::ggml::device::DeviceInfo>, String) {
        device_arg(self.get("device").as_deref())
    }
}

/// A benchmark's `--device` value resolved as `qwen3-tts-run` resolves it
/// (absent: the CPU, `None`), with its name for the JSON; panics naming the flag.
pub fn device_arg(value: Option<&str>) -> (Option<qwen3_tts::ggml::device::DeviceInfo>, String) {
    use qwen3_tts::ggml::device::{self, DeviceChoice};
    let choice = value.map_or(DeviceChoice::Cpu, |d| {
        d.parse().unwrap_or_else(|e| panic!("--device: {e}"))
    });
    let info = device::resolve(choice).unwrap_or_else(|e| panic!("--device: {e}"));
    let name = info.as_ref().map_or("cpu".to_string(), |d| d.name.clone());
    (info, name)
}

/// The process's peak resident set (Linux VmHWM) in MB; NaN where unknown.
pub fn peak_rss_mb() -> f64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<f64>().ok())
        .map_or(f64::NAN, |kb| kb / 1024.0)
}

/// A copy of the F32 model file `src` whose codec head gives the end code
/// a zero logit whatever the hidden state: with thousands of random logits
/// beside it, a greedy generation never ends by itself (runaway guard tests).
pub fn model_without_end(src: &std::path::Path, out: PathBuf) -> PathBuf {
    use qwen3_tts::gguf_schema::tensors::talker::CODEC_HEAD;
    use qwen3_tts::model_file::{write_gguf_with_base, GgufFile, Overwrite, TensorPlan};
    let eos = qwen3_tts::pipeline::TtsModel::load(src)
        .unwrap()
        .config
        .codec
        .eos as usize;
    let file = GgufFile::open(src).unwrap();
    let plan: Vec<TensorPlan> = file
        .tensors()
        .iter()
        .map(|t| TensorPlan {
            name: t.name.clone(),
            ty: file.tensor_type(&t.name).unwrap(),
            ne: t.ne.clone(),
        })
        .collect();
    let written = write_gguf_with_base(
        &out,
        Some(file.header()),
        &[],
        &plan,
        Overwrite::Refuse,
        |_, t, w| {
            let mut bytes = file.tensor_bytes(&t.name)?.to_vec();
            if t.name == CODEC_HEAD {
                assert_eq!(t.ty, qwen3_tts::ggml::GgmlType::F32, "an F32 model");
                let row = t.ne[0] as usize * 4;
                bytes[eos * row..(eos + 1) * row].fill(0);
            }
            w.write_all(&bytes)
                .map_err(|e| qwen3_tts::Error::io(&t.name, e))
        },
    );
    written.unwrap().commit().unwrap();
    out
}

/// Writes a copy of the GGUF file `src` to `out` with `metadata` overriding
/// its keys and the tensor `reshape.0` given dims `reshape.1` (its bytes cut
/// or zero-padded to the new size): the model files of the robustness tests.
pub fn rewrite_gguf(
    src: &qwen3_tts::model_file::GgufFile,
    out: &std::path::Path,
    metadata: &[(String, qwen3_tts::ggml::gguf::Value)],
    reshape: Option<(&str, &[i64])>,
) -> qwen3_tts::Result<()> {
    use qwen3_tts::model_file::{write_gguf_with_base, Overwrite, TensorPlan};
    let plan = src
        .tensors()
        .iter()
        .map(|t| {
            Ok(TensorPlan {
                name: t.name.clone(),
                ty: src.tensor_type(&t.name)?,
                ne: match reshape {
                    Some((name, ne)) if name == t.name => ne.to_vec(),
                    _ => t.ne.clone(),
                },
            })
        })
        .collect::<qwen3_tts::Result<Vec<_>>>()?;
    write_gguf_with_base(
        out,
        Some(src.header()),
        metadata,
        &plan,
        Overwrite::Replace,
        |_, t, w| {
            let mut bytes = src.tensor_bytes(&t.name)?.to_vec();
            bytes.resize(t.n_bytes(), 0);
            w.write_all(&bytes)
                .map_err(|e| qwen3_tts::Error::io(out, e))
        },
    )?
    .commit()
}

/// Writes a copy of the GGUF file `src` to `out` with each tensor named in
/// `retyped` stored in the given type (its values converted): a file another
/// converter could write.
pub fn retype_gguf(
    src: &qwen3_tts::model_file::GgufFile,
    out: &std::path::Path,
    retyped: &[(&str, qwen3_tts::ggml::GgmlType)],
) -> qwen3_tts::Result<()> {
    use qwen3_tts::ggml::{dequantize, quantize};
    use qwen3_tts::model_file::{write_gguf_with_base, Overwrite, TensorPlan};
    let plan = src
        .tensors()
        .iter()
        .map(|t| {
            let ty = match retyped.iter().find(|(n, _)| *n == t.name) {
                Some(&(_, ty)) => ty,
                None => src.tensor_type(&t.name)?,
            };
            Ok(TensorPlan {
                name: t.name.clone(),
                ty,
                ne: t.ne.clone(),
            })
        })
        .collect::<qwen3_tts::Result<Vec<_>>>()?;
    write_gguf_with_base(
        out,
        Some(src.header()),
        &[],
        &plan,
        Overwrite::Replace,
        |_, t, w| {
            let from = src.tensor_type(&t.name)?;
            let mut bytes = src.tensor_bytes(&t.name)?.to_vec();
            if t.ty != from {
                let values = dequantize(from, &bytes, t.n_elements());
                bytes = quantize(t.ty, &values, t.ne[0] as usize);
            }
            w.write_all(&bytes)
                .map_err(|e| qwen3_tts::Error::io(out, e))
        },
    )?
    .commit()
}

/// A copy of the TTS model file `src` at `out` with its text vocabulary cut
/// to its first 512 tokens (and the merges among them): building the real
/// one takes about a second per load, which sweeps of thousands of loads
/// (mutation tests, fuzzing) cannot afford.
pub fn slim_tts(src: &std::path::Path, out: &std::path::Path) -> PathBuf {
    use qwen3_tts::ggml::gguf::Value;
    use qwen3_tts::gguf_schema::keys;
    use qwen3_tts::model_file::GgufFile;
    use std::collections::HashSet;
    const TOKENS: usize = 512;
    let src = GgufFile::open(src).unwrap();
    let tokens = src.get_str_array(keys::TOKENIZER_TOKENS).unwrap();
    let kept: HashSet<&str> = tokens[..TOKENS].iter().map(String::as_str).collect();
    let types = match src.get(keys::TOKENIZER_TOKEN_TYPE) {
        Some(Value::ArrI32(t)) => Value::ArrI32(t[..TOKENS].to_vec()),
        Some(Value::ArrU32(t)) => Value::ArrU32(t[..TOKENS].to_vec()),
        other => panic!("token types: {other:?}"),
    };
    let merges: Vec<String> = src
        .get_str_array(keys::TOKENIZER_MERGES)
        .unwrap()
        .into_iter()
        .filter(|m| {
            m.split_once(' ').is_some_and(|(a, b)| {
                kept.contains(a) && kept.contains(b) && kept.contains(format!("{a}{b}").as_str())
            })
        })
        .collect();
    assert!(!merges.is_empty());
    let metadata = [
        (
            keys::TOKENIZER_TOKENS.to_string(),
            Value::ArrStr(tokens[..TOKENS].to_vec()),
        ),
        (keys::TOKENIZER_TOKEN_TYPE.to_string(), types),
        (keys::TOKENIZER_MERGES.to_string(), Value::ArrStr(merges)),
    ];
    rewrite_gguf(&src, out, &metadata, None).unwrap();
    out.to_path_buf()
}
