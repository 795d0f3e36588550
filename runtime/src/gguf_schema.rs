//! The one table of GGUF names: how Hugging Face tensor names map to the names
//! in our GGUF files, the metadata keys, and which storage type each tensor
//! gets for a requested quantisation. The converter, the quantizer and the
//! model loaders all go through this module. Documented in `docs/gguf.md`.

use crate::ggml::GgmlType;

/// `general.architecture` of the TTS model file (talker, code predictor,
/// speaker encoder, text tokenizer).
pub const ARCH_TTS: &str = "qwen3-tts";
/// `general.architecture` of the speech-tokenizer file (codec encoder + decoder).
pub const ARCH_TOKENIZER: &str = "qwen3-tts-tokenizer";

pub mod keys {
    pub const ARCHITECTURE: &str = "general.architecture";
    pub const NAME: &str = "general.name";
    pub const FILE_TYPE: &str = "general.file_type";
    pub const QUANT_VERSION: &str = "general.quantization_version";
    /// Version of the converter's layout (bump on incompatible changes).
    pub const FORMAT_VERSION: &str = "qwen3-tts.format_version";

    pub const TOKENIZER_MODEL: &str = "tokenizer.ggml.model";
    pub const TOKENIZER_PRE: &str = "tokenizer.ggml.pre";
    pub const TOKENIZER_TOKENS: &str = "tokenizer.ggml.tokens";
    pub const TOKENIZER_TOKEN_TYPE: &str = "tokenizer.ggml.token_type";
    pub const TOKENIZER_MERGES: &str = "tokenizer.ggml.merges";

    /// Prefix of the flattened `config.json` of a file's architecture:
    /// `<arch>.config.<json.path>` (see docs/gguf.md).
    pub fn config(arch: &str, path: &str) -> String {
        format!("{arch}.config.{path}")
    }
    /// Flattened `generation_config.json` values: `qwen3-tts.generation.<key>`.
    pub fn generation(key: &str) -> String {
        format!("qwen3-tts.generation.{key}")
    }
    /// The verbatim text of a source JSON file: `<arch>.json.<file stem>`.
    pub fn raw_json(arch: &str, file_stem: &str) -> String {
        format!("{arch}.json.{file_stem}")
    }

    // Convenience arrays derived from the talker config maps.
    pub const LANGUAGE_NAMES: &str = "qwen3-tts.languages.names";
    pub const LANGUAGE_IDS: &str = "qwen3-tts.languages.codec_ids";
    pub const SPEAKER_NAMES: &str = "qwen3-tts.speakers.names";
    pub const SPEAKER_IDS: &str = "qwen3-tts.speakers.codec_ids";
    /// Dialect language name per speaker, "" when the speaker has none.
    pub const SPEAKER_DIALECTS: &str = "qwen3-tts.speakers.dialects";
}

/// The tensor names of our GGUF files, per model part: the loaders resolve
/// their typed weights through these (and nothing else spells a name).
/// Per-layer names are `<stem>.<suffix>`; [`join`] puts them together.
pub mod tensors {
    /// `stem.suffix`.
    pub fn join(stem: &str, suffix: &str) -> String {
        format!("{stem}.{suffix}")
    }

    /// Suffixes of a transformer block's tensors (every stack of the family).
    pub mod block {
        pub const ATTN_NORM: &str = "attn_norm.weight";
        pub const ATTN_NORM_BIAS: &str = "attn_norm.bias";
        pub const ATTN_Q: &str = "attn_q.weight";
        pub const ATTN_K: &str = "attn_k.weight";
        pub const ATTN_V: &str = "attn_v.weight";
        pub const ATTN_O: &str = "attn_o.weight";
        pub const ATTN_Q_NORM: &str = "attn_q_norm.weight";
        pub const ATTN_K_NORM: &str = "attn_k_norm.weight";
        pub const ATTN_SCALE: &str = "attn_scale";
        pub const FFN_NORM: &str = "ffn_norm.weight";
        pub const FFN_NORM_BIAS: &str = "ffn_norm.bias";
        pub const FFN_GATE: &str = "ffn_gate.weight";
        pub const FFN_UP: &str = "ffn_up.weight";
        pub const FFN_DOWN: &str = "ffn_down.weight";
        pub const FFN_SCALE: &str = "ffn_scale";
    }

    /// Suffixes of convolution and other layer parts.
    pub const CONV_WEIGHT: &str = "conv.weight";
    pub const CONV_BIAS: &str = "conv.bias";
    pub const WEIGHT: &str = "weight";
    pub const BIAS: &str = "bias";

    pub mod talker {
        pub const TEXT_EMBD: &str = "talker.text_embd.weight";
        pub const CODEC_EMBD: &str = "talker.codec_embd.weight";
        pub const TEXT_PROJ_FC1: &str = "talker.text_proj.fc1";
        pub const TEXT_PROJ_FC2: &str = "talker.text_proj.fc2";
        pub const OUTPUT_NORM: &str = "talker.output_norm.weight";
        pub const CODEC_HEAD: &str = "talker.codec_head.weight";
        pub fn block(layer: usize) -> String {
            format!("talker.blk.{layer}")
        }
    }

    /// The code predictor ("sub-talker").
    pub mod code_predictor {
        pub const OUTPUT_NORM: &str = "cp.output_norm.weight";
        /// Talker width → predictor width (1.7B models only).
        pub const MTP_PROJ: &str = "cp.mtp_proj";
        pub fn block(layer: usize) -> String {
            format!("cp.blk.{layer}")
        }
        /// Embedding table of codebook `g + 1`.
        pub fn codec_embd(g: usize) -> String {
            format!("cp.codec_embd.{g}.weight")
        }
        /// Output head of codebook `g + 1`.
        pub fn head(g: usize) -> String {
            format!("cp.head.{g}.weight")
        }
    }

    /// The Base models' ECAPA-TDNN speaker encoder (stems; convs add
    /// `weight`/`bias`).
    pub mod speaker {
        pub const PREFIX: &str = "spk.";
        pub const FIRST_TDNN: &str = "spk.blocks.0.conv";
        pub fn block(b: usize) -> String {
            format!("spk.blocks.{b}")
        }
        pub const TDNN1: &str = "tdnn1.conv";
        pub const TDNN2: &str = "tdnn2.conv";
        pub const SE_CONV1: &str = "se_block.conv1";
        pub const SE_CONV2: &str = "se_block.conv2";
        pub fn res2net_conv(i: usize) -> String {
            format!("res2net_block.blocks.{i}.conv")
        }
        pub const MFA: &str = "spk.mfa.conv";
        pub const ASP_TDNN: &str = "spk.asp.tdnn.conv";
        pub const ASP_CONV: &str = "spk.asp.conv";
        pub const FC: &str = "spk.fc";
    }

    /// RVQ codebook `q` of a split quantizer under `first`/`rest`, the first
    /// `semantic` codebooks in the first.
    fn codebook(first: &str, rest: &str, semantic: usize, q: usize) -> String {
        if q < semantic {
            format!("{first}.blk.{q}.codebook.embed")
        } else {
            format!("{rest}.blk.{}.codebook.embed", q - semantic)
        }
    }

    /// The speech-tokenizer encoder (stems; convs add `conv.weight`/`conv.bias`).
    pub mod codec_encoder {
        pub const PREFIX: &str = "enc.";
        /// SEANet layer `i` (`enc.conv.{i}`) and its residual-block convs.
        pub fn seanet(i: usize) -> String {
            format!("enc.conv.{i}")
        }
        pub fn seanet_residual(i: usize, part: usize) -> String {
            format!("enc.conv.{i}.block.{part}")
        }
        pub fn block(layer: usize) -> String {
            format!("enc.tfm.blk.{layer}")
        }
        pub const DOWNSAMPLE: &str = "enc.downsample";
        pub const RVQ_FIRST_INPUT_PROJ: &str = "enc.rvq_first.input_proj.weight";
        pub const RVQ_REST_INPUT_PROJ: &str = "enc.rvq_rest.input_proj.weight";
        pub fn codebook(semantic: usize, q: usize) -> String {
            super::codebook("enc.rvq_first", "enc.rvq_rest", semantic, q)
        }
    }

    /// The speech-tokenizer decoder (vocoder).
    pub mod codec_decoder {
        pub const PREFIX: &str = "dec.";
        pub fn codebook(semantic: usize, q: usize) -> String {
            super::codebook("dec.rvq_first", "dec.rvq_rest", semantic, q)
        }
        pub const RVQ_FIRST_OUTPUT_PROJ: &str = "dec.rvq_first.output_proj.weight";
        pub const RVQ_REST_OUTPUT_PROJ: &str = "dec.rvq_rest.output_proj.weight";
        /// Encoder-direction projections the decoder file also holds (unused).
        pub fn is_rvq_input_proj(name: &str) -> bool {
            name.starts_with("dec.rvq_") && name.ends_with(".input_proj.weight")
        }
        pub const PRE_CONV: &str = "dec.pre_conv";
        pub const TFM_INPUT_PROJ: &str = "dec.pre_transformer.input_proj";
        pub const TFM_OUTPUT_NORM: &str = "dec.pre_transformer.output_norm.weight";
        pub const TFM_OUTPUT_PROJ: &str = "dec.pre_transformer.output_proj";
        pub const TFM_PREFIX: &str = "dec.pre_transformer.";
        pub fn block(layer: usize) -> String {
            format!("dec.pre_transformer.blk.{layer}")
        }
        /// Upsampling stage `i`: transposed conv, then a ConvNeXt block.
        pub fn upsample_conv(i: usize) -> String {
            format!("dec.upsample.{i}.0")
        }
        pub fn upsample_convnext(i: usize) -> String {
            format!("dec.upsample.{i}.1")
        }
        /// ConvNeXt parts (suffixes of the block stem).
        pub const DWCONV: &str = "dwconv";
        pub const NORM: &str = "norm";
        pub const PWCONV1: &str = "pwconv1";
        pub const PWCONV2: &str = "pwconv2";
        pub const GAMMA: &str = "gamma";
        /// Vocoder layer `i` of `dec.dec`: 0 the input conv, 1..=n the decoder
        /// blocks, n + 1 the last SnakeBeta, n + 2 the output conv.
        pub fn layer(i: usize) -> String {
            format!("dec.dec.{i}")
        }
        /// Part `p` of decoder block `b`: 0 SnakeBeta, 1 transposed conv,
        /// 2.. residual units.
        pub fn block_part(b: usize, p: usize) -> String {
            format!("dec.dec.{b}.block.{p}")
        }
        pub const ACT1: &str = "act1";
        pub const CONV1: &str = "conv1";
        pub const ACT2: &str = "act2";
        pub const CONV2: &str = "conv2";
        pub const ALPHA: &str = "alpha";
        pub const BETA: &str = "beta";
        /// Transposed-conv kernels (stored `[k, c_out, c_in]`).
        pub fn is_transposed_conv(name: &str) -> bool {
            (name.starts_with("dec.upsample.") && name.contains(".0.conv."))
                || (name.starts_with("dec.dec.") && name.contains(".block.1.conv."))
        }
    }

    /// Embedding tables and codebooks: read a row per token, never whole.
    pub fn is_lookup_table(name: &str) -> bool {
        name.contains("_embd.") || name.contains("codebook")
    }
}

/// Layout version written into every file.
pub const FORMAT_VERSION: u32 = 1;

/// Substring rewrites from Hugging Face names to GGUF names, applied in order.
/// (GGUF names are limited to 63 bytes, and the HF speech-tokenizer names are
/// longer than that.)
const RENAMES: &[(&str, &str)] = &[
    // TTS model
    (
        "talker.code_predictor.model.codec_embedding.",
        "cp.codec_embd.",
    ),
    ("talker.code_predictor.model.", "cp."),
    ("talker.code_predictor.lm_head.", "cp.head."),
    (
        "talker.code_predictor.small_to_mtp_projection.",
        "cp.mtp_proj.",
    ),
    (
        "talker.model.codec_embedding.weight",
        "talker.codec_embd.weight",
    ),
    (
        "talker.model.text_embedding.weight",
        "talker.text_embd.weight",
    ),
    ("talker.model.", "talker."),
    ("talker.text_projection.linear_fc", "talker.text_proj.fc"),
    ("speaker_encoder.", "spk."),
    // speech tokenizer
    ("encoder.encoder_transformer.", "enc.tfm."),
    ("encoder.encoder.layers.", "enc.conv."),
    ("encoder.downsample.", "enc.downsample."),
    (
        "encoder.quantizer.semantic_residual_vector_quantizer.",
        "enc.rvq_first.",
    ),
    (
        "encoder.quantizer.acoustic_residual_vector_quantizer.",
        "enc.rvq_rest.",
    ),
    ("decoder.quantizer.rvq_first.vq.", "dec.rvq_first."),
    ("decoder.quantizer.rvq_rest.vq.", "dec.rvq_rest."),
    ("decoder.quantizer.", "dec."),
    ("decoder.", "dec."),
    // shared transformer-layer parts
    (".norm.weight", ".output_norm.weight"),
    (".layers.", ".blk."),
    (".self_attn.q_proj.", ".attn_q."),
    (".self_attn.k_proj.", ".attn_k."),
    (".self_attn.v_proj.", ".attn_v."),
    (".self_attn.o_proj.", ".attn_o."),
    (".self_attn.q_norm.", ".attn_q_norm."),
    (".self_attn.k_norm.", ".attn_k_norm."),
    (".input_layernorm.", ".attn_norm."),
    (".post_attention_layernorm.", ".ffn_norm."),
    (".mlp.gate_proj.", ".ffn_gate."),
    (".mlp.up_proj.", ".ffn_up."),
    (".mlp.down_proj.", ".ffn_down."),
    (".mlp.fc1.", ".ffn_up."),
    (".mlp.fc2.", ".ffn_down."),
    (".self_attn_layer_scale.scale", ".attn_scale"),
    (".mlp_layer_scale.scale", ".ffn_scale"),
    ("._codebook.", ".codebook."),
];

/// The GGUF name for a Hugging Face tensor name (before codebook resolution).
pub fn gguf_name(hf_name: &str) -> String {
    let mut name = hf_name.to_string();
    for (from, to) in RENAMES {
        // ".norm.weight" only means a model's final norm when it is the whole
        // suffix after the model prefix, not e.g. "upsample.0.1.norm.weight".
        if *from == ".norm.weight" {
            if let Some(stem) = name.strip_suffix(from) {
                if stem == "talker" || stem == "cp" || stem == "dec.pre_transformer" {
                    name = format!("{stem}{to}");
                }
            }
            continue;
        }
        name = name.replace(from, to);
    }
    name
}

/// An EMA codebook stored as `embed_sum` + `cluster_usage` in the checkpoint;
/// the converter writes `embed_sum / max(usage, CODEBOOK_EPS)` under one name.
#[derive(Clone, Debug, PartialEq)]
pub struct CodebookSource {
    pub gguf: String,
    pub embed_sum: String,
    pub cluster_usage: String,
}

/// Floor of the EMA cluster usage (reference: eps 1e-5, encoder and decoder).
pub const CODEBOOK_EPS: f32 = 1e-5;

/// If `hf_name` is the `embed_sum` half of an EMA codebook, its description.
pub fn codebook_source(hf_name: &str) -> Option<CodebookSource> {
    let (stem, usage_field) = if let Some(stem) = hf_name.strip_suffix(".embed_sum") {
        (stem, "cluster_usage")
    } else if let Some(stem) = hf_name.strip_suffix(".embedding_sum") {
        (stem, "cluster_usage")
    } else {
        return None;
    };
    Some(CodebookSource {
        gguf: gguf_name(&format!("{stem}.embed")),
        embed_sum: hf_name.to_string(),
        cluster_usage: format!("{stem}.{usage_field}"),
    })
}

/// Checkpoint tensors that carry no weights for inference and are not stored.
pub fn is_dropped(hf_name: &str) -> bool {
    hf_name.ends_with(".codebook.initialized") || hf_name.ends_with(".cluster_usage")
    // folded into the codebook
}

/// How a tensor is used, which decides its storage type.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Role {
    /// Norm weights, biases, layer scales, Snake α/β: always F32.
    Vector,
    /// Convolution kernels (speaker encoder, codec): F16 unless F32 requested.
    Conv,
    /// RVQ codebooks: F16 unless F32 requested.
    Codebook,
    /// Embedding tables and output heads: at least Q8_0.
    EmbeddingOrHead,
    /// The talker's codec embedding and codec head: small (2 × 3072 rows)
    /// and their precision decides code 0, so F16 unless F32 requested.
    CodecTable,
    /// Linear-layer weights: the requested type where the row length allows.
    Matrix,
}

/// The role of a tensor from its GGUF name and its rank.
pub fn role(gguf_name: &str, rank: usize) -> Role {
    if rank <= 1 {
        Role::Vector
    } else if gguf_name.starts_with("talker.codec_embd.")
        || gguf_name.starts_with("talker.codec_head.")
    {
        Role::CodecTable
    } else if gguf_name.contains(".codebook.") || gguf_name.ends_with(".embed") {
        Role::Codebook
    } else if rank >= 3 || gguf_name.contains(".conv.") {
        // (A conv with one output channel, e.g. the vocoder's last one, looks
        // 2-D once ggml drops its trailing unit dimension.)
        Role::Conv
    } else if gguf_name.contains("_embd")
        || gguf_name.contains(".head.")
        || gguf_name.starts_with("talker.codec_head")
    {
        Role::EmbeddingOrHead
    } else {
        Role::Matrix
    }
}

/// The storage type of a tensor with `role` and row length `row_len` when the
/// file type `requested` is asked for. Fallbacks when a row length does not fit
/// a block size: a k-quant (Q6_K, Q5_K, Q4_K) → Q8_0 → F16 (documented in
/// docs/gguf.md).
pub fn storage_type(role: Role, requested: GgmlType, row_len: usize) -> GgmlType {
    use GgmlType::*;
    let fits = |t: GgmlType| row_len.is_multiple_of(t.block_size());
    let at_most = |t: GgmlType| -> GgmlType {
        if fits(t) {
            t
        } else if t.is_k_quant() && fits(Q8_0) {
            Q8_0
        } else {
            F16
        }
    };
    match (role, requested) {
        (Role::Vector, _) | (_, F32) => F32,
        (_, F16) | (_, BF16) => F16,
        (Role::Conv | Role::Codebook | Role::CodecTable, _) => F16,
        (Role::EmbeddingOrHead, _) => at_most(Q8_0),
        (Role::Matrix, t) => at_most(t),
    }
}

/// The storage type of the tensor `gguf_name` with ggml dims `ne` in a file of
/// the requested type (the one rule the converter and the quantizer share).
pub fn tensor_storage_type(gguf_name: &str, ne: &[i64], requested: GgmlType) -> GgmlType {
    let rank = ne.iter().rposition(|&d| d != 1).map_or(1, |p| p + 1);
    storage_type(role(gguf_name, rank), requested, ne[0] as usize)
}

/// The file types a user can request.
pub const FILE_TYPES: [GgmlType; 6] = [
    GgmlType::F32,
    GgmlType::F16,
    GgmlType::Q8_0,
    GgmlType::Q6_K,
    GgmlType::Q5_K,
    GgmlType::Q4_K,
];

/// Parses a `--type` argument, naming the allowed values on error.
pub fn parse_file_type(s: &str) -> Result<GgmlType, String> {
    GgmlType::parse(s)
        .filter(|t| FILE_TYPES.contains(t))
        .ok_or_else(|| {
            let names: Vec<_> = FILE_TYPES.iter().map(|t| t.name()).collect();
            format!("unknown type '{s}' (expected one of: {})", names.join(", "))
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renames_are_short_and_readable() {
        let cases = [
            (
                "talker.model.layers.3.self_attn.q_proj.weight",
                "talker.blk.3.attn_q.weight",
            ),
            ("talker.model.norm.weight", "talker.output_norm.weight"),
            (
                "talker.code_predictor.model.norm.weight",
                "cp.output_norm.weight",
            ),
            (
                "talker.code_predictor.model.layers.4.post_attention_layernorm.weight",
                "cp.blk.4.ffn_norm.weight",
            ),
            (
                "talker.code_predictor.model.codec_embedding.7.weight",
                "cp.codec_embd.7.weight",
            ),
            (
                "talker.code_predictor.lm_head.14.weight",
                "cp.head.14.weight",
            ),
            (
                "talker.code_predictor.small_to_mtp_projection.bias",
                "cp.mtp_proj.bias",
            ),
            (
                "talker.text_projection.linear_fc2.bias",
                "talker.text_proj.fc2.bias",
            ),
            ("talker.codec_head.weight", "talker.codec_head.weight"),
            (
                "speaker_encoder.blocks.3.res2net_block.blocks.6.conv.weight",
                "spk.blocks.3.res2net_block.blocks.6.conv.weight",
            ),
            (
                "decoder.upsample.1.1.norm.weight",
                "dec.upsample.1.1.norm.weight",
            ),
            (
                "decoder.pre_transformer.norm.weight",
                "dec.pre_transformer.output_norm.weight",
            ),
            (
                "decoder.pre_transformer.layers.7.mlp_layer_scale.scale",
                "dec.pre_transformer.blk.7.ffn_scale",
            ),
            (
                "encoder.encoder_transformer.layers.7.post_attention_layernorm.bias",
                "enc.tfm.blk.7.ffn_norm.bias",
            ),
            (
                "encoder.quantizer.acoustic_residual_vector_quantizer.input_proj.weight",
                "enc.rvq_rest.input_proj.weight",
            ),
        ];
        for (hf, want) in cases {
            assert_eq!(gguf_name(hf), want, "{hf}");
        }
    }

    #[test]
    fn codebooks_resolve_to_one_tensor() {
        let enc = codebook_source(
            "encoder.quantizer.acoustic_residual_vector_quantizer.layers.14.codebook.embed_sum",
        )
        .unwrap();
        assert_eq!(enc.gguf, "enc.rvq_rest.blk.14.codebook.embed");
        assert_eq!(
            enc.cluster_usage,
            "encoder.quantizer.acoustic_residual_vector_quantizer.layers.14.codebook.cluster_usage"
        );
        let dec =
            codebook_source("decoder.quantizer.rvq_first.vq.layers.0._codebook.embedding_sum")
                .unwrap();
        assert_eq!(dec.gguf, "dec.rvq_first.blk.0.codebook.embed");
        assert!(dec.gguf.len() < crate::ggml::MAX_NAME);
        assert!(codebook_source("decoder.pre_conv.conv.weight").is_none());
    }

    #[test]
    fn precision_rules() {
        use GgmlType::*;
        assert_eq!(role("talker.blk.0.attn_norm.weight", 1), Role::Vector);
        assert_eq!(role("talker.text_embd.weight", 2), Role::EmbeddingOrHead);
        assert_eq!(role("cp.head.3.weight", 2), Role::EmbeddingOrHead);
        assert_eq!(role("talker.codec_head.weight", 2), Role::CodecTable);
        assert_eq!(role("talker.codec_embd.weight", 2), Role::CodecTable);
        assert_eq!(storage_type(Role::CodecTable, Q4_K, 1024), F16);
        assert_eq!(storage_type(Role::CodecTable, F32, 1024), F32);
        assert_eq!(role("dec.decoder.1.block.1.conv.weight", 3), Role::Conv);
        assert_eq!(role("dec.decoder.6.conv.weight", 2), Role::Conv);
        assert_eq!(role("dec.rvq_rest.blk.2.codebook.embed", 2), Role::Codebook);
        assert_eq!(role("talker.blk.0.ffn_up.weight", 2), Role::Matrix);

        assert_eq!(storage_type(Role::Vector, Q4_K, 1024), F32);
        assert_eq!(storage_type(Role::Conv, Q8_0, 1024), F16);
        assert_eq!(storage_type(Role::Conv, F32, 1024), F32);
        assert_eq!(storage_type(Role::Codebook, Q4_K, 256), F16);
        assert_eq!(storage_type(Role::EmbeddingOrHead, Q4_K, 1024), Q8_0);
        assert_eq!(storage_type(Role::Matrix, Q4_K, 1024), Q4_K);
        assert_eq!(storage_type(Role::Matrix, Q4_K, 96), Q8_0);
        assert_eq!(storage_type(Role::Matrix, Q4_K, 20), F16);
        assert_eq!(storage_type(Role::Matrix, Q8_0, 20), F16);
        assert_eq!(storage_type(Role::Matrix, F16, 20), F16);
        for k in [Q6_K, Q5_K] {
            assert_eq!(storage_type(Role::Matrix, k, 1024), k);
            assert_eq!(storage_type(Role::Matrix, k, 96), Q8_0);
            assert_eq!(storage_type(Role::Matrix, k, 20), F16);
            assert_eq!(storage_type(Role::EmbeddingOrHead, k, 1024), Q8_0);
            assert_eq!(storage_type(Role::Conv, k, 1024), F16);
            assert_eq!(storage_type(Role::Vector, k, 1024), F32);
        }
    }

    #[test]
    fn file_type_parsing() {
        assert_eq!(parse_file_type("Q8_0"), Ok(GgmlType::Q8_0));
        assert_eq!(parse_file_type("q6_k"), Ok(GgmlType::Q6_K));
        assert_eq!(parse_file_type("Q5_K"), Ok(GgmlType::Q5_K));
        let e = parse_file_type("q3_k").unwrap_err();
        assert!(e.contains("q8_0, q6_k, q5_k, q4_k"), "{e}");
        assert!(parse_file_type("i32").is_err());
    }
}

/// A tensor stored in another type than the rules ask for with the requested
/// file type, because its rows do not fit that type's block size.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Fallback {
    /// GGUF tensor name.
    pub name: String,
    /// The type the rules give a tensor of this role whose rows fit.
    pub wanted: GgmlType,
    /// The type it is stored as.
    pub used: GgmlType,
    /// Its row length (ggml `ne[0]`).
    pub row_len: usize,
}

impl Fallback {
    /// Why the tensor fell back, e.g. "row length 64 is not a multiple of 256".
    pub fn reason(&self) -> String {
        format!(
            "row length {} is not a multiple of {}",
            self.row_len,
            self.wanted.block_size()
        )
    }
}

/// The fallback of a tensor of `role` with rows of `row_len` stored as `used`
/// when `requested` is asked for, if its rows do not fit the wanted type.
pub fn fallback(
    name: &str,
    role: Role,
    requested: GgmlType,
    row_len: usize,
    used: GgmlType,
) -> Option<Fallback> {
    // 256 is a multiple of every block size: the type a fitting row gets.
    let wanted = storage_type(role, requested, 256);
    (wanted != used).then(|| Fallback {
        name: name.to_string(),
        wanted,
        used,
        row_len,
    })
}

/// [`fallback`] for the tensor `gguf_name` with ggml dims `ne` (the role as
/// in [`tensor_storage_type`]).
pub fn tensor_fallback(
    gguf_name: &str,
    ne: &[i64],
    requested: GgmlType,
    used: GgmlType,
) -> Option<Fallback> {
    let rank = ne.iter().rposition(|&d| d != 1).map_or(1, |p| p + 1);
    fallback(
        gguf_name,
        role(gguf_name, rank),
        requested,
        ne[0] as usize,
        used,
    )
}

#[cfg(test)]
mod fallback_tests {
    use super::*;
    use GgmlType::*;

    #[test]
    fn fallbacks_name_the_wanted_type_and_the_row_length() {
        let f = tensor_fallback("talker.blk.0.attn_q.weight", &[64, 128], Q4_K, Q8_0).unwrap();
        assert_eq!((f.wanted, f.used, f.row_len), (Q4_K, Q8_0, 64));
        assert_eq!(f.reason(), "row length 64 is not a multiple of 256");
        // Rows that fit, and the fixed rules (norms, convs, Q8_0 heads), are no fallback.
        assert_eq!(
            tensor_fallback("talker.blk.0.attn_q.weight", &[512, 8], Q4_K, Q4_K),
            None
        );
        assert_eq!(
            tensor_fallback("talker.output_norm.weight", &[64], Q4_K, F32),
            None
        );
        assert_eq!(
            tensor_fallback("talker.text_embd.weight", &[512, 8], Q4_K, Q8_0),
            None
        );
        let f = tensor_fallback("talker.text_embd.weight", &[20, 8], Q8_0, F16).unwrap();
        assert_eq!((f.wanted, f.used), (Q8_0, F16));
    }
}
