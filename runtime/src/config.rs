//! Model hyper-parameters and special ids, read from the GGUF metadata that
//! `qwen3-tts-convert` flattened from `config.json` / `generation_config.json`.
//! Nothing here has a built-in default that a released config carries.

use crate::error::{Error, Result};
use crate::ggml::gguf::Value;
use crate::gguf_schema::{keys, ARCH_TOKENIZER, ARCH_TTS};
use crate::model_file::GgufFile;

/// One Qwen3 decoder stack (talker or code predictor).
#[derive(Clone, Debug, PartialEq)]
pub struct TransformerConfig {
    pub hidden: usize,
    pub layers: usize,
    pub heads: usize,
    pub kv_heads: usize,
    pub head_dim: usize,
    pub intermediate: usize,
    pub rms_eps: f32,
    pub rope_theta: f32,
}

impl TransformerConfig {
    /// Query heads in whole groups per KV head, and an even head size (RoPE).
    pub fn has_valid_heads(&self) -> bool {
        self.kv_heads > 0
            && self.heads > 0
            && self.heads.is_multiple_of(self.kv_heads)
            && self.head_dim.is_multiple_of(2)
    }
}

/// The variant family member (`tts_model_type`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ModelType {
    Base,
    CustomVoice,
    VoiceDesign,
}

/// The model size (`tts_model_size`): it decides, as in the reference,
/// whether a CustomVoice model follows instructions (1.7B only).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ModelSize {
    /// `0b6`: 0.6B parameters.
    B0_6,
    /// `1b7`: 1.7B parameters.
    B1_7,
}

impl ModelSize {
    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "0b6" => Some(Self::B0_6),
            "1b7" => Some(Self::B1_7),
            _ => None,
        }
    }

    /// As the config spells it.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::B0_6 => "0b6",
            Self::B1_7 => "1b7",
        }
    }
}

impl std::fmt::Display for ModelSize {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Self::B0_6 => "0.6B",
            Self::B1_7 => "1.7B",
        })
    }
}

/// A preset speaker (CustomVoice): its codec row and optional dialect.
#[derive(Clone, Debug, PartialEq)]
pub struct Speaker {
    pub name: String,
    pub codec_id: u32,
    /// Language name whose id replaces the requested one for Chinese/auto.
    pub dialect: Option<String>,
}

/// Codec-vocabulary control ids of the talker.
#[derive(Clone, Debug, PartialEq)]
pub struct CodecIds {
    pub pad: u32,
    pub bos: u32,
    pub eos: u32,
    pub think: u32,
    pub nothink: u32,
    pub think_bos: u32,
    pub think_eos: u32,
}

/// Text-side special ids.
#[derive(Clone, Debug, PartialEq)]
pub struct TextIds {
    pub tts_pad: u32,
    pub tts_bos: u32,
    pub tts_eos: u32,
}

/// Sampling defaults from `generation_config.json` (the wrapper's hard
/// defaults fill keys the file lacks).
#[derive(Clone, Debug, PartialEq)]
pub struct GenerationDefaults {
    pub do_sample: bool,
    pub temperature: f32,
    pub top_k: usize,
    pub top_p: f32,
    pub repetition_penalty: f32,
    pub subtalker_do_sample: bool,
    pub subtalker_temperature: f32,
    pub subtalker_top_k: usize,
    pub subtalker_top_p: f32,
    pub max_new_tokens: usize,
}

/// Everything the talker and code predictor need.
#[derive(Clone, Debug)]
pub struct TtsConfig {
    pub model_type: ModelType,
    /// 0.6B CustomVoice ignores instructions, as the reference does.
    pub model_size: ModelSize,
    pub talker: TransformerConfig,
    pub code_predictor: TransformerConfig,
    /// Talker codec vocabulary (codebook size + 1024).
    pub codec_vocab: usize,
    /// Code-predictor vocabulary (the codebook size).
    pub codebook_size: usize,
    pub num_code_groups: usize,
    pub text_hidden: usize,
    pub codec: CodecIds,
    pub text: TextIds,
    /// Language name (lower case) → codec id, dialects included.
    pub languages: Vec<(String, u32)>,
    pub speakers: Vec<Speaker>,
    pub generation: GenerationDefaults,
}

/// The largest layer size or count a config may give (far above any real
/// model's; it keeps products of sizes from overflowing).
pub const MAX_SIZE: usize = 1 << 24;

struct Reader<'a> {
    file: &'a GgufFile,
    arch: &'a str,
}

impl Reader<'_> {
    fn key(&self, path: &str) -> String {
        keys::config(self.arch, path)
    }
    fn ints(&self, path: &str) -> Result<Vec<usize>> {
        let k = self.key(path);
        self.file
            .get_int_array(&k)?
            .into_iter()
            .map(|v| usize::try_from(v).map_err(|_| self.bad(&k, format!("negative value {v}"))))
            .collect()
    }
    fn int(&self, path: &str) -> Result<usize> {
        let k = self.key(path);
        let v = self.file.get_int(&k)?;
        usize::try_from(v).map_err(|_| self.bad(&k, format!("negative value {v}")))
    }
    /// A layer size or count: at least `min`, at most [`MAX_SIZE`] (so that
    /// products of two sizes cannot overflow).
    fn size(&self, path: &str, min: usize) -> Result<usize> {
        let v = self.int(path)?;
        if v < min || v > MAX_SIZE {
            return Err(self.bad(
                &self.key(path),
                format!("{v} is out of range ({min}..={MAX_SIZE})"),
            ));
        }
        Ok(v)
    }
    /// Sizes (all in `min..=MAX_SIZE`), at least one.
    fn sizes(&self, path: &str, min: usize) -> Result<Vec<usize>> {
        let v = self.ints(path)?;
        if v.is_empty() || v.iter().any(|&x| x < min || x > MAX_SIZE) {
            return Err(self.bad(
                &self.key(path),
                format!("{v:?}: expected values in {min}..={MAX_SIZE}"),
            ));
        }
        Ok(v)
    }
    /// A float that must be finite and positive (norm epsilons, RoPE bases).
    fn positive(&self, path: &str) -> Result<f32> {
        let v = self.float(path)?;
        if !(v.is_finite() && v > 0.0) {
            return Err(self.bad(&self.key(path), format!("{v} is not a positive number")));
        }
        Ok(v)
    }
    fn id(&self, path: &str) -> Result<u32> {
        let v = self.int(path)?;
        u32::try_from(v).map_err(|_| self.bad(&self.key(path), format!("id {v} out of range")))
    }
    fn float(&self, path: &str) -> Result<f32> {
        let k = self.key(path);
        match self.file.get(&k) {
            Some(Value::I32(v)) => Ok(v as f32),
            Some(Value::I64(v)) => Ok(v as f32),
            _ => Ok(self.file.get_float(&k)? as f32),
        }
    }
    fn string(&self, path: &str) -> Result<String> {
        self.file.get_str(&self.key(path))
    }
    fn bad(&self, key: &str, reason: String) -> Error {
        Error::Metadata {
            path: self.file.path().to_path_buf(),
            key: key.to_string(),
            reason,
        }
    }
    fn transformer(&self, prefix: &str) -> Result<TransformerConfig> {
        self.transformer_with(prefix, "rms_norm_eps")
    }
    /// A decoder stack under `prefix` whose norm epsilon is `eps_key`; every
    /// value the graphs use is checked here, naming its key.
    fn transformer_with(&self, prefix: &str, eps_key: &str) -> Result<TransformerConfig> {
        let p = |k: &str| format!("{prefix}.{k}");
        let cfg = TransformerConfig {
            hidden: self.size(&p("hidden_size"), 1)?,
            layers: self.size(&p("num_hidden_layers"), 1)?,
            heads: self.size(&p("num_attention_heads"), 1)?,
            kv_heads: self.size(&p("num_key_value_heads"), 1)?,
            head_dim: self.size(&p("head_dim"), 2)?,
            intermediate: self.size(&p("intermediate_size"), 1)?,
            rms_eps: self.positive(&p(eps_key))?,
            rope_theta: self.positive(&p("rope_theta"))?,
        };
        if !cfg.heads.is_multiple_of(cfg.kv_heads) {
            return Err(self.bad(
                &self.key(&p("num_key_value_heads")),
                format!(
                    "{} query heads do not split into groups of {} key/value heads",
                    cfg.heads, cfg.kv_heads
                ),
            ));
        }
        if !cfg.head_dim.is_multiple_of(2) {
            return Err(self.bad(
                &self.key(&p("head_dim")),
                format!("{} is odd (RoPE rotates pairs)", cfg.head_dim),
            ));
        }
        Ok(cfg)
    }
    /// `generation_config.json` values; a missing key takes the reference
    /// wrapper's default, a key of the wrong type is an error.
    fn generation(&self) -> Result<GenerationDefaults> {
        let get = |k: &str| (keys::generation(k), self.file.get(&keys::generation(k)));
        let f = |k: &str, d: f32| match get(k) {
            (_, None) => Ok(d),
            (_, Some(Value::F64(v))) => Ok(v as f32),
            (_, Some(Value::F32(v))) => Ok(v),
            (_, Some(Value::I32(v))) => Ok(v as f32),
            (key, Some(other)) => {
                Err(self.bad(&key, format!("expected a number, found {other:?}")))
            }
        };
        let i = |k: &str, d: usize| match get(k) {
            (_, None) => Ok(d),
            (_, Some(Value::I32(v))) if v >= 0 => Ok(v as usize),
            (_, Some(Value::I64(v))) if v >= 0 => Ok(v as usize),
            (key, Some(other)) => Err(self.bad(
                &key,
                format!("expected a non-negative integer, found {other:?}"),
            )),
        };
        let b = |k: &str, d: bool| match get(k) {
            (_, None) => Ok(d),
            (_, Some(Value::Bool(v))) => Ok(v),
            (key, Some(other)) => {
                Err(self.bad(&key, format!("expected a boolean, found {other:?}")))
            }
        };
        // Fallbacks = `Qwen3TTSModel._merge_generate_kwargs` hard defaults.
        Ok(GenerationDefaults {
            do_sample: b("do_sample", true)?,
            temperature: f("temperature", 0.9)?,
            top_k: i("top_k", 50)?,
            top_p: f("top_p", 1.0)?,
            repetition_penalty: f("repetition_penalty", 1.05)?,
            subtalker_do_sample: b("subtalker_dosample", true)?,
            subtalker_temperature: f("subtalker_temperature", 0.9)?,
            subtalker_top_k: i("subtalker_top_k", 50)?,
            subtalker_top_p: f("subtalker_top_p", 1.0)?,
            max_new_tokens: i("max_new_tokens", 2048)?,
        })
    }
}

impl TtsConfig {
    /// Reads the configuration of a `qwen3-tts` GGUF file.
    pub fn from_gguf(file: &GgufFile) -> Result<Self> {
        let r = Reader {
            file,
            arch: ARCH_TTS,
        };
        let model_type = match r.string("tts_model_type")?.as_str() {
            "base" => ModelType::Base,
            "custom_voice" => ModelType::CustomVoice,
            "voice_design" => ModelType::VoiceDesign,
            other => {
                return Err(r.bad(
                    &r.key("tts_model_type"),
                    format!("unknown model type '{other}'"),
                ));
            }
        };
        let talker = r.transformer("talker_config")?;
        let code_predictor = r.transformer("talker_config.code_predictor_config")?;
        let lang_names = file.get_str_array(keys::LANGUAGE_NAMES)?;
        let ids = |key: &str| -> Result<Vec<u32>> {
            file.get_int_array(key)?
                .into_iter()
                .map(|v| u32::try_from(v).map_err(|_| r.bad(key, format!("negative id {v}"))))
                .collect()
        };
        let lang_ids = ids(keys::LANGUAGE_IDS)?;
        let spk_names = file.get_str_array(keys::SPEAKER_NAMES)?;
        let spk_ids = ids(keys::SPEAKER_IDS)?;
        let spk_dialects = file.get_str_array(keys::SPEAKER_DIALECTS)?;
        if lang_names.len() != lang_ids.len()
            || spk_names.len() != spk_ids.len()
            || spk_names.len() != spk_dialects.len()
        {
            return Err(r.bad(
                keys::SPEAKER_NAMES,
                "language/speaker arrays differ in length".into(),
            ));
        }
        let cfg = TtsConfig {
            model_type,
            model_size: {
                let size = r.string("tts_model_size")?;
                ModelSize::parse(&size).ok_or_else(|| {
                    r.bad(
                        &r.key("tts_model_size"),
                        format!("unknown model size '{size}' (expected 0b6 or 1b7)"),
                    )
                })?
            },
            codec_vocab: r.size("talker_config.vocab_size", 1)?,
            codebook_size: r.size("talker_config.code_predictor_config.vocab_size", 1)?,
            num_code_groups: r.size("talker_config.num_code_groups", 2)?,
            text_hidden: r.size("talker_config.text_hidden_size", 1)?,
            codec: CodecIds {
                pad: r.id("talker_config.codec_pad_id")?,
                bos: r.id("talker_config.codec_bos_id")?,
                eos: r.id("talker_config.codec_eos_token_id")?,
                think: r.id("talker_config.codec_think_id")?,
                nothink: r.id("talker_config.codec_nothink_id")?,
                think_bos: r.id("talker_config.codec_think_bos_id")?,
                think_eos: r.id("talker_config.codec_think_eos_id")?,
            },
            text: TextIds {
                tts_pad: r.id("tts_pad_token_id")?,
                tts_bos: r.id("tts_bos_token_id")?,
                tts_eos: r.id("tts_eos_token_id")?,
            },
            languages: lang_names.into_iter().zip(lang_ids).collect(),
            speakers: spk_names
                .into_iter()
                .zip(spk_ids)
                .zip(spk_dialects)
                .map(|((name, id), dialect)| Speaker {
                    name,
                    codec_id: id,
                    dialect: (!dialect.is_empty()).then_some(dialect),
                })
                .collect(),
            generation: r.generation()?,
            talker,
            code_predictor,
        };
        cfg.validate(file)?;
        cfg.validate_ids(&r)?;
        Ok(cfg)
    }

    /// Every codec id the prompt or the sampler uses is a row of the codec
    /// vocabulary (an id past it would index outside the embedding table).
    fn validate_ids(&self, r: &Reader) -> Result<()> {
        let vocab = self.codec_vocab;
        let c = &self.codec;
        for (name, id) in [
            ("codec_pad_id", c.pad),
            ("codec_bos_id", c.bos),
            ("codec_eos_token_id", c.eos),
            ("codec_think_id", c.think),
            ("codec_nothink_id", c.nothink),
            ("codec_think_bos_id", c.think_bos),
            ("codec_think_eos_id", c.think_eos),
        ] {
            if id as usize >= vocab {
                return Err(r.bad(
                    &r.key(&format!("talker_config.{name}")),
                    format!("id {id} is outside the codec vocabulary of {vocab}"),
                ));
            }
        }
        let outside = |key: &str, mut ids: std::vec::IntoIter<u32>| match ids
            .find(|&id| id as usize >= vocab)
        {
            Some(id) => Err(r.bad(
                key,
                format!("id {id} is outside the codec vocabulary of {vocab}"),
            )),
            None => Ok(()),
        };
        let language_ids: Vec<u32> = self.languages.iter().map(|l| l.1).collect();
        outside(keys::LANGUAGE_IDS, language_ids.into_iter())?;
        let speaker_ids: Vec<u32> = self.speakers.iter().map(|s| s.codec_id).collect();
        outside(keys::SPEAKER_IDS, speaker_ids.into_iter())?;
        // A dialect names a language whose id replaces the requested one.
        for s in &self.speakers {
            if let Some(d) = &s.dialect {
                if !self.languages.iter().any(|(n, _)| n == d) {
                    return Err(r.bad(
                        keys::SPEAKER_DIALECTS,
                        format!("speaker '{}' has the unknown dialect '{d}'", s.name),
                    ));
                }
            }
        }
        // Sampling defaults a request then inherits (0 temperature: greedy).
        let g = &self.generation;
        for (name, v, min_excluded) in [
            ("temperature", g.temperature, false),
            ("subtalker_temperature", g.subtalker_temperature, false),
            ("repetition_penalty", g.repetition_penalty, true),
        ] {
            if !v.is_finite() || v < 0.0 || (min_excluded && v == 0.0) {
                return Err(r.bad(&keys::generation(name), format!("{v} is out of range")));
            }
        }
        for (name, v) in [("top_p", g.top_p), ("subtalker_top_p", g.subtalker_top_p)] {
            if !(v > 0.0 && v <= 1.0) {
                return Err(r.bad(&keys::generation(name), format!("{v} is not in (0, 1]")));
            }
        }
        Ok(())
    }

    fn validate(&self, file: &GgufFile) -> Result<()> {
        let bad = |reason: String| Error::WrongModel {
            path: file.path().to_path_buf(),
            reason,
        };
        for (name, t) in [
            ("talker", &self.talker),
            ("code predictor", &self.code_predictor),
        ] {
            if !t.has_valid_heads() {
                return Err(bad(format!("{name}: unsupported head layout {t:?}")));
            }
        }
        if self.codec_vocab != self.codebook_size + 1024 {
            return Err(bad(format!(
                "codec vocabulary {} is not codebook size {} + 1024",
                self.codec_vocab, self.codebook_size
            )));
        }
        if self.num_code_groups < 2 {
            return Err(bad(format!("num_code_groups {} < 2", self.num_code_groups)));
        }
        Ok(())
    }

    /// Codec id of a language name (case-insensitive), `None` for "auto".
    pub fn language_id(&self, language: &str) -> Option<Option<u32>> {
        let l = language.to_lowercase();
        if l == "auto" {
            return Some(None);
        }
        self.languages
            .iter()
            .find(|(n, _)| *n == l)
            .map(|(_, id)| Some(*id))
    }

    /// Languages a user may ask for: "auto" plus every non-dialect name.
    pub fn supported_languages(&self) -> Vec<String> {
        std::iter::once("auto".to_string())
            .chain(
                self.languages
                    .iter()
                    .map(|(n, _)| n.clone())
                    .filter(|n| !n.contains("dialect")),
            )
            .collect()
    }

    pub fn speaker(&self, name: &str) -> Option<&Speaker> {
        let n = name.to_lowercase();
        self.speakers.iter().find(|s| s.name == n)
    }

    /// The range of codec ids generation never samples (except EOS).
    pub fn suppressed_ids(&self) -> std::ops::Range<u32> {
        (self.codec_vocab - 1024) as u32..self.codec_vocab as u32
    }
}

/// The speech-tokenizer decoder (vocoder), from `decoder_config`.
#[derive(Clone, Debug, PartialEq)]
pub struct CodecDecoderConfig {
    /// Codebooks per frame (semantic first).
    pub num_quantizers: usize,
    pub num_semantic_quantizers: usize,
    pub codebook_size: usize,
    /// The sliding-window pre-transformer (no q/k norm, LayerScale).
    pub transformer: TransformerConfig,
    /// Attention window of the pre-transformer: a frame sees itself and the
    /// `sliding_window − 1` frames before it.
    pub sliding_window: usize,
    /// Strides of the transposed convs before the ConvNeXt blocks.
    pub upsampling_ratios: Vec<usize>,
    /// Strides of the waveform decoder blocks.
    pub upsample_rates: Vec<usize>,
    /// Output samples per frame (product of all strides).
    pub samples_per_frame: usize,
    pub sample_rate: u32,
}

impl CodecDecoderConfig {
    /// Reads the decoder configuration of a `qwen3-tts-tokenizer` GGUF file.
    pub fn from_gguf(file: &GgufFile) -> Result<Self> {
        let r = Reader {
            file,
            arch: ARCH_TOKENIZER,
        };
        let d = |k: &str| format!("decoder_config.{k}");
        let cfg = Self {
            num_quantizers: r.size(&d("num_quantizers"), 2)?,
            num_semantic_quantizers: r.size(&d("num_semantic_quantizers"), 1)?,
            codebook_size: r.size(&d("codebook_size"), 1)?,
            transformer: r.transformer("decoder_config")?,
            sliding_window: r.size(&d("sliding_window"), 1)?,
            upsampling_ratios: r.sizes(&d("upsampling_ratios"), 1)?,
            upsample_rates: r.sizes(&d("upsample_rates"), 1)?,
            samples_per_frame: r.size("decode_upsample_rate", 1)?,
            sample_rate: r.size("output_sample_rate", 1)? as u32,
        };
        // Checked: the strides are each at most MAX_SIZE, their product may not be.
        let strides = cfg
            .upsampling_ratios
            .iter()
            .chain(&cfg.upsample_rates)
            .try_fold(1usize, |p, &s| p.checked_mul(s))
            .unwrap_or(0);
        let bad = |reason: String| Error::WrongModel {
            path: file.path().to_path_buf(),
            reason,
        };
        if strides != cfg.samples_per_frame || strides == 0 {
            return Err(bad(format!(
                "decoder strides {:?} × {:?} do not give decode_upsample_rate {}",
                cfg.upsampling_ratios, cfg.upsample_rates, cfg.samples_per_frame
            )));
        }
        if cfg.num_semantic_quantizers == 0 || cfg.num_semantic_quantizers >= cfg.num_quantizers {
            return Err(bad(format!(
                "decoder: {} semantic of {} quantizers",
                cfg.num_semantic_quantizers, cfg.num_quantizers
            )));
        }
        let t = &cfg.transformer;
        if !t.has_valid_heads() {
            return Err(bad(format!("decoder: unsupported head layout {t:?}")));
        }
        Ok(cfg)
    }
}

/// The ECAPA-TDNN speaker encoder of the Base models. The released
/// configs carry only `enc_dim` and `sample_rate`; the rest are the
/// reference class's defaults, used when a key is absent.
#[derive(Clone, Debug, PartialEq)]
pub struct SpeakerEncoderConfig {
    pub mel_dim: usize,
    /// Output channels of blocks 0..3 and of the MFA layer.
    pub channels: Vec<usize>,
    pub kernel_sizes: Vec<usize>,
    pub dilations: Vec<usize>,
    pub attention_channels: usize,
    pub res2net_scale: usize,
    pub se_channels: usize,
    /// x-vector size.
    pub dim: usize,
    pub sample_rate: u32,
}

impl SpeakerEncoderConfig {
    /// Reads `speaker_encoder_config` of a Base model file (`None` when the
    /// model has no speaker encoder).
    pub fn from_gguf(file: &GgufFile) -> Result<Option<Self>> {
        let r = Reader {
            file,
            arch: ARCH_TTS,
        };
        let k = |name: &str| format!("speaker_encoder_config.{name}");
        if file.get(&r.key(&k("enc_dim"))).is_none() {
            return Ok(None);
        }
        let int_or = |name: &str, default: usize| -> Result<usize> {
            if file.get(&r.key(&k(name))).is_some() {
                r.size(&k(name), 1)
            } else {
                Ok(default)
            }
        };
        let ints_or = |name: &str, default: &[usize]| -> Result<Vec<usize>> {
            if file.get(&r.key(&k(name))).is_some() {
                r.sizes(&k(name), 1)
            } else {
                Ok(default.to_vec())
            }
        };
        let cfg = Self {
            mel_dim: int_or("mel_dim", 128)?,
            channels: ints_or("enc_channels", &[512, 512, 512, 512, 1536])?,
            kernel_sizes: ints_or("enc_kernel_sizes", &[5, 3, 3, 3, 1])?,
            dilations: ints_or("enc_dilations", &[1, 2, 3, 4, 1])?,
            attention_channels: int_or("enc_attention_channels", 128)?,
            res2net_scale: int_or("enc_res2net_scale", 8)?,
            se_channels: int_or("enc_se_channels", 128)?,
            dim: r.size(&k("enc_dim"), 1)?,
            sample_rate: int_or("sample_rate", 24000)? as u32,
        };
        let n = cfg.channels.len();
        if n < 3 || cfg.kernel_sizes.len() != n || cfg.dilations.len() != n {
            return Err(r.bad(
                &r.key(&k("enc_channels")),
                format!(
                    "channels {:?}, kernels {:?}, dilations {:?} do not describe one stack",
                    cfg.channels, cfg.kernel_sizes, cfg.dilations
                ),
            ));
        }
        if cfg.res2net_scale == 0 || !cfg.channels[1].is_multiple_of(cfg.res2net_scale) {
            return Err(r.bad(
                &r.key(&k("enc_res2net_scale")),
                format!(
                    "{} channels do not split into {} groups",
                    cfg.channels[1], cfg.res2net_scale
                ),
            ));
        }
        Ok(Some(cfg))
    }
}

/// The speech-tokenizer encoder (Mimi-style), from `encoder_config`.
#[derive(Clone, Debug, PartialEq)]
pub struct CodecEncoderConfig {
    /// Strides of the SEANet downsampling convs, in order (4, 5, 6, 8).
    pub strides: Vec<usize>,
    /// The causal transformer at 25 Hz (LayerNorm eps in `rms_eps`).
    pub transformer: TransformerConfig,
    /// Codebooks the codes keep (`encoder_valid_num_quantizers`, 16).
    pub num_quantizers: usize,
    pub num_semantic_quantizers: usize,
    pub codebook_size: usize,
    /// Input samples per output frame (1920).
    pub samples_per_frame: usize,
    pub sample_rate: u32,
}

impl CodecEncoderConfig {
    pub fn from_gguf(file: &GgufFile) -> Result<Self> {
        let r = Reader {
            file,
            arch: ARCH_TOKENIZER,
        };
        let e = |k: &str| format!("encoder_config.{k}");
        let mut strides = r.sizes(&e("upsampling_ratios"), 1)?;
        strides.reverse();
        let cfg = Self {
            strides,
            transformer: r.transformer_with("encoder_config", "norm_eps")?,
            num_quantizers: r.size("encoder_valid_num_quantizers", 1)?,
            num_semantic_quantizers: r.size(&e("num_semantic_quantizers"), 1)?,
            codebook_size: r.size(&e("codebook_size"), 1)?,
            samples_per_frame: r.size("encode_downsample_rate", 1)?,
            sample_rate: r.size("input_sample_rate", 1)? as u32,
        };
        let residual_layers = r.int(&e("num_residual_layers"))?;
        let bad = |reason: String| Error::WrongModel {
            path: file.path().to_path_buf(),
            reason,
        };
        if residual_layers != 1 {
            return Err(bad(format!(
                "encoder: {residual_layers} residual layers per stage (1 supported)"
            )));
        }
        if !cfg.transformer.has_valid_heads() {
            return Err(bad(format!(
                "encoder: unsupported head layout {:?}",
                cfg.transformer
            )));
        }
        let seanet = cfg
            .strides
            .iter()
            .try_fold(2usize, |p, &s| p.checked_mul(s));
        if seanet != Some(cfg.samples_per_frame) {
            return Err(bad(format!(
                "encoder strides {:?} × 2 do not give encode_downsample_rate {}",
                cfg.strides, cfg.samples_per_frame
            )));
        }
        Ok(cfg)
    }
}
