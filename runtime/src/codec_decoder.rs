//! The speech-tokenizer decoder (vocoder): 16 codes per 80 ms frame → 1920
//! samples at 24 kHz (the reference's `Qwen3TTSTokenizerV2Decoder`; see
//! docs/architecture.md).
//!
//! RVQ dequantisation → causal pre-conv → sliding-window transformer →
//! 2 × (transposed conv + ConvNeXt) → conv → 4 decoder blocks (SnakeBeta,
//! transposed conv, 3 dilated residual units) → SnakeBeta → conv → clamp.
//!
//! Every layer is causal, so the decoder runs as a stream: each call decodes
//! the next few frames and keeps, per layer, the left context the next call
//! needs (conv input tails, the transformer's KV cache). Decoding frames one
//! call at a time or all at once gives the same samples. The reference
//! decodes an utterance in stateless chunks of 300 frames, each seeing only 25
//! frames of left context; [`DecodeStream`] reproduces that by restarting
//! the state at every chunk boundary and replaying those 25 frames.
//!
//! [`CodecDecoder`] is the loaded model (shared); a [`DecoderSession`] holds
//! one stream's state and graphs.

use std::path::Path;
use std::sync::Arc;

use crate::config::CodecDecoderConfig;
use crate::error::{Error, Result};
use crate::ggml::device::DeviceInfo;
use crate::ggml::{
    Backend, ConvKernel, GgmlType, OwnedGraph, Slot, StoredTensor, TapsKernel, TensorStore,
};
use crate::gguf_schema::tensors::{self, codec_decoder as names};
use crate::gguf_schema::ARCH_TOKENIZER;
use crate::layers::{
    decoder_block, linear, rms_norm, sum, BlockKind, BlockWeights, CausalContext, CausalConv,
    CausalTransposedConv, ConvNext, DepthwiseConv, KvCache, Snake, StreamStateLayout,
};
use crate::model_file::GgufFile;
use crate::weights::{kernel_dims, load_weights_with, permute3, Linear, Prepared, WeightSource};

/// Frames per stateless chunk of the reference's decode.
pub const CHUNK_FRAMES: usize = 300;
/// Frames of left context each later chunk is decoded with.
pub const CHUNK_CONTEXT: usize = 25;
/// Default frames per graph call (bounds the activation memory).
pub const DEFAULT_TILE_FRAMES: usize = 25;

/// Residual-unit dilations of each decoder block.
const DILATIONS: [usize; 3] = [1, 3, 9];

/// Rearranges a stored tensor into the layout the graph computes with:
/// conv kernels `[k, c_in, c_out]` → the layout `conv_layout` chooses (see
/// [`CausalConv::prepare_kernel`]), transposed-conv
/// kernels `[k, c_out, c_in]` → `[c_in, c_out, k]`, depthwise kernels
/// `[k, 1, c]` → `[c, k]`, and SnakeBeta's log-scale α, β folded to
/// `exp(α)` and `1 / (exp(β) + 1e-9)`.
fn prepare(
    file: &GgufFile,
    name: &str,
    bytes: &[u8],
    options: DecoderOptions,
) -> Result<Option<Prepared>> {
    let info = file.tensor_info(name)?;
    let ty = file.tensor_type(name)?;
    if name.ends_with(".alpha") || name.ends_with(".beta") {
        let v = file.tensor_f32(name)?;
        let folded: Vec<f32> = if name.ends_with(".alpha") {
            v.iter().map(|a| a.exp()).collect()
        } else {
            v.iter().map(|b| 1.0 / (b.exp() + 1e-9)).collect()
        };
        return Ok(Some(Prepared {
            ty: GgmlType::F32,
            ne: info.ne.clone(),
            bytes: crate::ggml::as_bytes(&folded).to_vec(),
        }));
    }
    let is_kernel = name.ends_with(".conv.weight") || name.ends_with(".output_proj.weight");
    if !is_kernel || name.starts_with(names::TFM_PREFIX) {
        return Ok(None);
    }
    let bad = |reason: String| Error::Tensor {
        path: file.path().to_path_buf(),
        name: name.to_string(),
        reason,
    };
    if !matches!(ty, GgmlType::F32 | GgmlType::F16 | GgmlType::BF16) {
        return Err(bad(format!(
            "convolution kernels must be F32/F16, found {ty:?}"
        )));
    }
    let ne = kernel_dims(file, name)?;
    if name.contains(".dwconv.") {
        if ne[1] != 1 {
            return Err(bad(format!("depthwise kernel with shape {:?}", info.ne)));
        }
        // Applied with elementwise products, which want F32 (and it is tiny).
        let v = file.tensor_f32(name)?;
        return Ok(Some(Prepared {
            ty: GgmlType::F32,
            ne: vec![ne[2] as i64, ne[0] as i64],
            bytes: permute3(crate::ggml::as_bytes(&v), 4, ne, [2, 0, 1]),
        }));
    }
    if !name.ends_with(".conv.weight") {
        return Ok(None); // the RVQ projections (1×1)
    }
    // With the fast convolution every conv kernel is held in F32: on an
    // AVX2 CPU ggml's F16 product converts both operands in its inner loop
    // (the direct decode runs ~15 % slower from an F16 file than from an F32
    // one), and the transformed and one-tap kernels are made from F32 values.
    let transposed = names::is_transposed_conv(name);
    let layout = conv_layout(ne, options);
    let from_bytes = transposed || matches!(layout, ConvKernel::Unfolded { .. });
    let upcast;
    let (ty, bytes) = match options.fast_convolution && ty != GgmlType::F32 && from_bytes {
        true => {
            upcast = crate::ggml::as_bytes(&file.tensor_f32(name)?).to_vec();
            (GgmlType::F32, &upcast[..])
        }
        false => (ty, bytes),
    };
    if transposed {
        let layout = taps_layout(ne, options);
        return Ok(Some(CausalTransposedConv::prepare_kernel(
            layout, ty, bytes, ne,
        )));
    }
    CausalConv::prepare_kernel(layout, ty, bytes, || file.tensor_f32(name), ne).map(Some)
}

/// How a conv kernel stored `[k, c_in, c_out]` is laid out in memory.
fn conv_layout([k, _, c_out]: [usize; 3], options: DecoderOptions) -> ConvKernel {
    ConvKernel::choose(k, c_out, options.fast_convolution)
}

/// How a transposed conv kernel stored `[k, c_out, c_in]` is laid out.
fn taps_layout([k, c_out, _]: [usize; 3], options: DecoderOptions) -> TapsKernel {
    TapsKernel::choose(c_out, k, options.fast_convolution)
}

/// How each kernel of a file is laid out (by name), as `prepare` laid it out.
struct Layouts<'f> {
    file: &'f GgufFile,
    options: DecoderOptions,
}

impl Layouts<'_> {
    fn conv(&self, name: &str) -> Result<ConvKernel> {
        Ok(conv_layout(kernel_dims(self.file, name)?, self.options))
    }

    fn taps(&self, name: &str) -> Result<TapsKernel> {
        Ok(taps_layout(kernel_dims(self.file, name)?, self.options))
    }
}

/// How a decoder is loaded.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct DecoderOptions {
    /// Computes the kernel-7 convolutions by fast convolution (Winograd
    /// F(4, 7): 10 products per 4 outputs instead of 28) rather than
    /// directly. The waveform differs from the direct one by rounding only
    /// (SNR above 90 dB); on by default.
    pub fast_convolution: bool,
}

impl Default for DecoderOptions {
    fn default() -> Self {
        Self {
            fast_convolution: true,
        }
    }
}

/// A residual unit: `x + conv2(snake2(conv1(snake1(x))))`.
#[derive(Clone, Debug)]
pub struct ResidualUnit {
    pub act1: Snake,
    pub conv1: CausalConv,
    pub act2: Snake,
    pub conv2: CausalConv,
}

/// A waveform decoder block: SnakeBeta, upsampling transposed conv, three
/// dilated residual units.
#[derive(Clone, Debug)]
pub struct DecoderBlock {
    pub snake: Snake,
    pub upsample: CausalTransposedConv,
    pub units: Vec<ResidualUnit>,
}

/// An upsampling stage before the waveform decoder.
#[derive(Clone, Debug)]
pub struct UpsampleStage {
    pub conv: CausalTransposedConv,
    pub convnext: ConvNext,
}

/// The decoder's weights, and the layout of its streaming state.
#[derive(Clone, Debug)]
pub struct CodecDecoderWeights {
    /// RVQ codebooks `[dim, codebook_size]`, semantic first.
    pub codebooks: Vec<StoredTensor>,
    /// 1×1 output projections of the two RVQ branches, `[1, dim, c]`.
    pub rvq_first_proj: StoredTensor,
    pub rvq_rest_proj: StoredTensor,
    pub pre_conv: CausalConv,
    pub input_proj: Linear,
    pub blocks: Vec<BlockWeights>,
    pub output_norm: StoredTensor,
    pub output_proj: Linear,
    pub upsample: Vec<UpsampleStage>,
    pub first_conv: CausalConv,
    pub decoder_blocks: Vec<DecoderBlock>,
    pub last_snake: Snake,
    pub last_conv: CausalConv,
    /// The causal layers' left-context tensors.
    pub states: StreamStateLayout,
}

impl CodecDecoderWeights {
    /// `layouts` tells how each conv kernel was prepared.
    fn load(src: &WeightSource, cfg: &CodecDecoderConfig, layouts: &Layouts) -> Result<Self> {
        let mut states = StreamStateLayout::default();
        let w = |stem: &str| src.kernel(&tensors::join(stem, tensors::CONV_WEIGHT));
        let b = |stem: &str| src.any(&tensors::join(stem, tensors::CONV_BIAS)).map(Some);
        let conv = |stem: &str, dilation: usize, states: &mut StreamStateLayout| {
            let kernel = layouts.conv(&tensors::join(stem, tensors::CONV_WEIGHT))?;
            Ok::<_, Error>(CausalConv::new(
                w(stem)?,
                kernel,
                b(stem)?,
                dilation,
                states,
            ))
        };
        let tconv = |stem: &str, stride: usize, states: &mut StreamStateLayout| {
            let kernel = layouts.taps(&tensors::join(stem, tensors::CONV_WEIGHT))?;
            CausalTransposedConv::new(w(stem)?, kernel, b(stem)?, stride, states).ok_or_else(|| {
                src.error(
                    &tensors::join(stem, tensors::CONV_WEIGHT),
                    format!("kernel size is not a multiple of the stride {stride}"),
                )
            })
        };
        let snake = |stem: &str| {
            Ok::<_, Error>(Snake {
                alpha: src.any(&tensors::join(stem, names::ALPHA))?,
                inv_beta: src.any(&tensors::join(stem, names::BETA))?,
            })
        };
        let codebooks = (0..cfg.num_quantizers)
            .map(|q| {
                let name = names::codebook(cfg.num_semantic_quantizers, q);
                let dim = src.any(&name)?.ne()[0] as usize;
                src.tensor(&name, &[dim, cfg.codebook_size])
            })
            .collect::<Result<_>>()?;
        let pre_conv = conv(names::PRE_CONV, 1, &mut states)?;
        let t = &cfg.transformer;
        let mut upsample = Vec::new();
        for (i, &s) in cfg.upsampling_ratios.iter().enumerate() {
            let conv = tconv(&names::upsample_conv(i), s, &mut states)?;
            let stem = names::upsample_convnext(i);
            let part = |p: &str| tensors::join(&stem, p);
            let dw = part(names::DWCONV);
            let dwconv = DepthwiseConv::new(w(&dw)?, b(&dw)?, &mut states);
            let norm = part(names::NORM);
            upsample.push(UpsampleStage {
                conv,
                convnext: ConvNext {
                    dwconv,
                    norm_weight: src.any(&tensors::join(&norm, tensors::WEIGHT))?,
                    norm_bias: src.any(&tensors::join(&norm, tensors::BIAS))?,
                    pwconv1: src.linear_any(&part(names::PWCONV1))?,
                    pwconv2: src.linear_any(&part(names::PWCONV2))?,
                    gamma: src.any(&part(names::GAMMA))?,
                },
            });
        }
        let first_conv = conv(&names::layer(0), 1, &mut states)?;
        let mut decoder_blocks = Vec::new();
        for (i, &rate) in cfg.upsample_rates.iter().enumerate() {
            let part = |p: usize| names::block_part(i + 1, p);
            let snake0 = snake(&part(0))?;
            let up = tconv(&part(1), rate, &mut states)?;
            let mut units = Vec::new();
            for (u, &d) in DILATIONS.iter().enumerate() {
                let unit = part(u + 2);
                let sub = |p: &str| tensors::join(&unit, p);
                units.push(ResidualUnit {
                    act1: snake(&sub(names::ACT1))?,
                    conv1: conv(&sub(names::CONV1), d, &mut states)?,
                    act2: snake(&sub(names::ACT2))?,
                    conv2: conv(&sub(names::CONV2), 1, &mut states)?,
                });
            }
            decoder_blocks.push(DecoderBlock {
                snake: snake0,
                upsample: up,
                units,
            });
        }
        let n = cfg.upsample_rates.len();
        let weights = Self {
            codebooks,
            rvq_first_proj: src.kernel(names::RVQ_FIRST_OUTPUT_PROJ)?,
            rvq_rest_proj: src.kernel(names::RVQ_REST_OUTPUT_PROJ)?,
            pre_conv,
            input_proj: src.linear_any(names::TFM_INPUT_PROJ)?,
            blocks: (0..t.layers)
                .map(|l| BlockWeights::load(src, &names::block(l), t, BlockKind::CodecDecoder))
                .collect::<Result<_>>()?,
            output_norm: src.tensor(names::TFM_OUTPUT_NORM, &[t.hidden])?,
            output_proj: src.linear_any(names::TFM_OUTPUT_PROJ)?,
            upsample,
            first_conv,
            decoder_blocks,
            last_snake: snake(&names::layer(n + 1))?,
            last_conv: conv(&names::layer(n + 2), 1, &mut states)?,
            states,
        };
        weights.check_channels(src, cfg)?;
        Ok(weights)
    }

    /// Follows the channels through the whole decoder as the graph will: every
    /// layer must take what the one before it gives (and its bias, norm and
    /// activation vectors must match), or a graph built from the file would
    /// abort inside ggml. The first mismatch names its tensor.
    fn check_channels(&self, src: &WeightSource, cfg: &CodecDecoderConfig) -> Result<()> {
        let want = |t: &StoredTensor, ne: &[usize]| src.tensor(&t.name(), ne).map(|_| ());
        let dim = |t: &StoredTensor, d: usize| t.ne()[d] as usize;
        let vector = |t: &StoredTensor, c: usize| want(t, &[c]);
        let bias = |b: &Option<StoredTensor>, c: usize| b.as_ref().map_or(Ok(()), |b| vector(b, c));
        let linear = |l: &Linear, c_in: usize, c_out: usize| {
            want(&l.weight, &[c_in, c_out])?;
            bias(&l.bias, c_out)
        };
        // Each returns the channels the layer gives for `c` in.
        let conv = |l: &CausalConv, c: usize| {
            let c_out = l.channels().1;
            want(&l.weight, &l.kernel.dims(c, c_out))?;
            bias(&l.bias, c_out).map(|_| c_out)
        };
        let tconv = |l: &CausalTransposedConv, c: usize| {
            let (_, c_out, k) = l.dims();
            want(&l.weight, &l.kernel.dims(c, c_out, k))?;
            bias(&l.bias, c_out).map(|_| c_out)
        };
        let snake = |l: &Snake, c: usize| {
            vector(&l.alpha, c)?;
            vector(&l.inv_beta, c)
        };

        // RVQ: each branch sums rows of one width, then a 1×1 projection;
        // both branches must land on the same channels.
        let cb = cfg.codebook_size;
        let ns = cfg.num_semantic_quantizers;
        let mut c = 0;
        for (books, proj) in [
            (&self.codebooks[..ns], &self.rvq_first_proj),
            (&self.codebooks[ns..], &self.rvq_rest_proj),
        ] {
            let width = dim(&books[0], 0);
            for b in books {
                want(b, &[width, cb])?;
            }
            if c == 0 {
                c = dim(proj, 2);
            }
            want(proj, &[1, width, c])?;
        }
        let c = conv(&self.pre_conv, c)?;
        let hidden = cfg.transformer.hidden;
        linear(&self.input_proj, c, hidden)?;
        let mut c = dim(&self.output_proj.weight, 1);
        linear(&self.output_proj, hidden, c)?;
        for stage in &self.upsample {
            c = tconv(&stage.conv, c)?;
            let n = &stage.convnext;
            let k = dim(&n.dwconv.weight, 1);
            want(&n.dwconv.weight, &[c, k])?;
            bias(&n.dwconv.bias, c)?;
            vector(&n.norm_weight, c)?;
            vector(&n.norm_bias, c)?;
            let inner = dim(&n.pwconv1.weight, 1);
            linear(&n.pwconv1, c, inner)?;
            linear(&n.pwconv2, inner, c)?;
            vector(&n.gamma, c)?;
        }
        c = conv(&self.first_conv, c)?;
        for block in &self.decoder_blocks {
            snake(&block.snake, c)?;
            c = tconv(&block.upsample, c)?;
            for unit in &block.units {
                snake(&unit.act1, c)?;
                let inner = conv(&unit.conv1, c)?;
                snake(&unit.act2, inner)?;
                // The unit's output is added to its input.
                let l = &unit.conv2;
                want(&l.weight, &l.kernel.dims(inner, c))?;
                bias(&l.bias, c)?;
            }
        }
        snake(&self.last_snake, c)?;
        // The waveform: one channel.
        let l = &self.last_conv;
        want(&l.weight, &l.kernel.dims(c, 1))?;
        bias(&l.bias, 1)
    }
}

/// The loaded speech-tokenizer decoder (shared by every session).
pub struct CodecDecoder {
    pub config: CodecDecoderConfig,
    pub weights: CodecDecoderWeights,
    store: TensorStore,
    device: Option<DeviceInfo>,
    /// Tells loaded decoders apart (warm state is per decoder).
    id: u64,
}

impl CodecDecoder {
    /// Opens the decoder of a `tokenizer-*.gguf` file written by `qwen3-tts-convert`.
    pub fn load(path: impl AsRef<Path>) -> Result<Self> {
        Self::load_with(path, DecoderOptions::default())
    }

    /// [`CodecDecoder::load`] with `options`.
    pub fn load_with(path: impl AsRef<Path>, options: DecoderOptions) -> Result<Self> {
        Self::load_on(path, options, None)
    }

    /// [`CodecDecoder::load_with`], its weights uploaded to `device` (`None`:
    /// the CPU) and its sessions computing there. Fast convolution is the
    /// CPU's: a GPU computes the direct convolutions.
    pub fn load_on(
        path: impl AsRef<Path>,
        mut options: DecoderOptions,
        device: Option<&DeviceInfo>,
    ) -> Result<Self> {
        if device.is_some() {
            options.fast_convolution = false;
        }
        let file = GgufFile::open_arch(path, ARCH_TOKENIZER)?;
        let config = CodecDecoderConfig::from_gguf(&file)?;
        let store = load_weights_with(
            &file,
            // The RVQ input projections serve only the encoding direction.
            |name| name.starts_with(names::PREFIX) && !names::is_rvq_input_proj(name),
            |name, bytes| prepare(&file, name, bytes, options),
        )?
        .upload_to(device);
        let layouts = Layouts {
            file: &file,
            options,
        };
        let src = WeightSource::new(&store, file.path());
        let weights = CodecDecoderWeights::load(&src, &config, &layouts)?;
        Ok(Self {
            config,
            weights,
            store,
            device: device.cloned(),
            id: crate::warm::next_model_id(),
        })
    }

    /// The GPU its weights are on (`None`: the CPU).
    pub fn device(&self) -> Option<&DeviceInfo> {
        self.device.as_ref()
    }

    /// Unique among the decoders this process loaded.
    pub fn id(&self) -> u64 {
        self.id
    }

    /// Bytes of weights held in memory.
    pub fn weights_size(&self) -> usize {
        self.store.size()
    }

    /// Output samples per frame (1920).
    pub fn samples_per_frame(&self) -> usize {
        self.config.samples_per_frame
    }

    pub fn sample_rate(&self) -> u32 {
        self.config.sample_rate
    }

    /// A decoding session on its own `threads`-thread backend.
    pub fn session(self: &Arc<Self>, threads: usize) -> DecoderSession {
        DecoderSession::new(
            self.clone(),
            Arc::new(Backend::on_loaded(self.device(), threads)),
        )
    }
}

/// Inputs and output of a decode graph.
#[derive(Clone, Copy)]
struct TileIo {
    codes: Slot,
    pos: Slot,
    mask: Slot,
    wav: Slot,
}

/// One stream's persistent state: per causal layer its left context, and the
/// transformer's KV cache for one chunk.
struct StreamState {
    store: TensorStore,
    context: Vec<StoredTensor>,
    k: Vec<StoredTensor>,
    v: Vec<StoredTensor>,
}

impl StreamState {
    fn new(cfg: &CodecDecoderConfig, layout: &StreamStateLayout, backend: &Backend) -> Self {
        let mut specs: Vec<_> = layout
            .shapes
            .iter()
            .enumerate()
            .map(|(i, &[c, n])| (format!("ctx{i}"), GgmlType::F32, vec![c as i64, n as i64]))
            .collect();
        let t = &cfg.transformer;
        let kv_shape = vec![
            (t.head_dim * t.kv_heads) as i64,
            (CHUNK_FRAMES + CHUNK_CONTEXT) as i64,
        ];
        for l in 0..t.layers {
            for kv in ["k", "v"] {
                specs.push((format!("{kv}{l}"), GgmlType::F32, kv_shape.clone()));
            }
        }
        let store = TensorStore::new_on(&specs, backend);
        let get = |n: String| store.get(&n).expect("just created");
        Self {
            context: (0..layout.shapes.len())
                .map(|i| get(format!("ctx{i}")))
                .collect(),
            k: (0..t.layers).map(|l| get(format!("k{l}"))).collect(),
            v: (0..t.layers).map(|l| get(format!("v{l}"))).collect(),
            store,
        }
    }
}

/// The graph decoding `n` frames from the stream state.
fn build_graph(
    dec: &CodecDecoder,
    state: &StreamState,
    backend: &Arc<Backend>,
    n: usize,
) -> OwnedGraph<TileIo> {
    let (cfg, w) = (&dec.config, &dec.weights);
    let nodes = 4096 + cfg.transformer.layers * 64;
    OwnedGraph::build(backend, nodes, |ctx| {
        // A stream decoded in pieces of any size must equal the whole.
        ctx.set_column_invariant(true);
        let states = state.context.iter().map(|s| ctx.stored(s)).collect();
        let cc = CausalContext::streaming(states, n);
        let nq = cfg.num_quantizers;
        let codes = ctx
            .new_tensor(GgmlType::I32, &[n as i64, nq as i64])
            .set_input();
        let pos = ctx.new_tensor(GgmlType::I32, &[n as i64]).set_input();
        let capacity = (CHUNK_FRAMES + CHUNK_CONTEXT) as i64;
        let mask = ctx
            .new_tensor(GgmlType::F32, &[capacity, n as i64])
            .set_input();

        // RVQ: per branch, the codebook rows summed in layer order, then the
        // branch's 1×1 output projection.
        let branch = |range: std::ops::Range<usize>, proj: &StoredTensor| {
            let rows = sum(
                ctx,
                range.map(|q| {
                    let ids = ctx.view(codes, &[n as i64], &[], q * n * 4);
                    ctx.get_rows(ctx.stored(&w.codebooks[q]), ids)
                }),
            );
            let p = ctx.stored(proj);
            let [_, c_in, c_out, _] = p.ne(); // a 1×1 conv kernel
            ctx.mul_mat(ctx.reshape(p, &[c_in, c_out]), rows)
        };
        let ns = cfg.num_semantic_quantizers;
        let x = ctx.add(
            branch(0..ns, &w.rvq_first_proj),
            branch(ns..nq, &w.rvq_rest_proj),
        );
        let x = w.pre_conv.forward(ctx, &cc, x);

        // Sliding-window transformer over the frames.
        let t = &cfg.transformer;
        let mut h = linear(ctx, x, &w.input_proj);
        for (l, bw) in w.blocks.iter().enumerate() {
            let kv = KvCache::Persistent {
                k: ctx.stored(&state.k[l]),
                v: ctx.stored(&state.v[l]),
                rows: pos,
                n_kv: capacity as usize,
            };
            h = decoder_block(ctx, t, bw, h, pos, kv, Some(mask)).out;
        }
        let h = rms_norm(ctx, h, ctx.stored(&w.output_norm), t.rms_eps);
        let mut x = linear(ctx, h, &w.output_proj);

        for stage in &w.upsample {
            x = stage.conv.forward(ctx, &cc, x);
            x = stage.convnext.forward(ctx, &cc, x);
        }
        x = w.first_conv.forward(ctx, &cc, x);
        for block in &w.decoder_blocks {
            x = block.snake.forward(ctx, x);
            x = block.upsample.forward(ctx, &cc, x);
            for unit in &block.units {
                let y = unit.act1.forward(ctx, x);
                let y = unit.conv1.forward(ctx, &cc, y);
                let y = unit.act2.forward(ctx, y);
                let y = unit.conv2.forward(ctx, &cc, y);
                x = ctx.add(x, y);
            }
        }
        x = w.last_snake.forward(ctx, x);
        x = w.last_conv.forward(ctx, &cc, x);
        let wav = ctx.clamp(x, -1.0, 1.0);
        let io = TileIo {
            codes: ctx.slot(codes),
            pos: ctx.slot(pos),
            mask: ctx.slot(mask),
            wav: ctx.slot(wav),
        };
        let mut outputs = vec![wav];
        outputs.extend(cc.into_updates());
        (io, outputs)
    })
}

/// One decoding stream's state and graphs over a shared [`CodecDecoder`].
pub struct DecoderSession {
    // Drop order: graphs before the state.
    /// Graphs by frames per call (the tile size and the last odd size).
    graphs: Vec<(usize, OwnedGraph<TileIo>)>,
    state: StreamState,
    decoder: Arc<CodecDecoder>,
    backend: Arc<Backend>,
    /// Frames decoded since the state was last reset.
    position: usize,
    /// Frames per graph call.
    tile_frames: usize,
}

impl DecoderSession {
    /// A session computing on `backend`.
    pub fn new(decoder: Arc<CodecDecoder>, backend: Arc<Backend>) -> Self {
        let state = StreamState::new(&decoder.config, &decoder.weights.states, &backend);
        let mut s = Self {
            graphs: Vec::new(),
            state,
            decoder,
            backend,
            position: 0,
            tile_frames: DEFAULT_TILE_FRAMES,
        };
        s.reset();
        s
    }

    /// The model this session decodes with.
    pub fn decoder(&self) -> &Arc<CodecDecoder> {
        &self.decoder
    }

    pub fn set_threads(&self, threads: usize) {
        self.backend.set_threads(threads);
    }

    /// Frames per graph call (memory ∝ this; results do not depend on it).
    pub fn set_tile_frames(&mut self, frames: usize) {
        self.tile_frames = frames.max(1);
        self.graphs.clear();
    }

    /// Output samples per frame (1920).
    pub fn samples_per_frame(&self) -> usize {
        self.decoder.samples_per_frame()
    }

    pub fn sample_rate(&self) -> u32 {
        self.decoder.sample_rate()
    }

    /// Starts from silence: zero left context, transformer positions from 0.
    fn reset(&mut self) {
        self.state.store.clear(0);
        self.position = 0;
    }

    /// Checks a frame's code count and ranges.
    fn check(&self, index: usize, frame: &[u32]) -> Result<()> {
        let c = &self.decoder.config;
        if frame.len() != c.num_quantizers {
            return Err(Error::invalid(
                "frames",
                format!(
                    "frame {index} has {} codes, the decoder needs {}",
                    frame.len(),
                    c.num_quantizers
                ),
            ));
        }
        if let Some(bad) = frame.iter().find(|&&v| v as usize >= c.codebook_size) {
            return Err(Error::invalid(
                "frames",
                format!(
                    "frame {index}: code {bad} outside the codebook (size {})",
                    c.codebook_size
                ),
            ));
        }
        Ok(())
    }

    /// Decodes `frames` continuing the current state; returns their samples.
    fn run(&mut self, frames: &[Vec<u32>]) -> Result<Vec<f32>> {
        let mut out = Vec::with_capacity(frames.len() * self.samples_per_frame());
        for tile in frames.chunks(self.tile_frames) {
            out.extend(self.run_tile(tile)?);
        }
        Ok(out)
    }

    fn run_tile(&mut self, frames: &[Vec<u32>]) -> Result<Vec<f32>> {
        let n = frames.len();
        let capacity = CHUNK_FRAMES + CHUNK_CONTEXT;
        // DecodeStream restarts the state every chunk, so this cannot happen.
        assert!(
            self.position + n <= capacity,
            "decoder: {} frames since the last chunk start exceed {capacity}",
            self.position + n
        );
        let nq = self.decoder.config.num_quantizers;
        let mut codes = vec![0i32; n * nq];
        for (t, f) in frames.iter().enumerate() {
            for q in 0..nq {
                codes[q * n + t] = f[q] as i32;
            }
        }
        let start = self.position;
        let pos: Vec<i32> = (start..start + n).map(|p| p as i32).collect();
        // Frame t sees frames (t − window, t] (sliding-window causal mask).
        let window = self.decoder.config.sliding_window;
        let mut mask = vec![f32::NEG_INFINITY; capacity * n];
        for i in 0..n {
            let t = start + i;
            let first = (t + 1).saturating_sub(window);
            mask[i * capacity + first..i * capacity + t + 1].fill(0.0);
        }
        if !self.graphs.iter().any(|(k, _)| *k == n) {
            if self.graphs.len() >= 4 {
                self.graphs.remove(0);
            }
            let g = build_graph(&self.decoder, &self.state, &self.backend, n);
            self.graphs.push((n, g));
        }
        let graph = &mut self
            .graphs
            .iter_mut()
            .find(|(k, _)| *k == n)
            .expect("just built")
            .1;
        let io = *graph.io();
        graph.compute(|g| {
            g.tensor(io.codes).set_i32(&codes);
            g.tensor(io.pos).set_i32(&pos);
            g.tensor(io.mask).set_f32(&mask);
        })?;
        self.position += n;
        Ok(graph.tensor(io.wav).get_f32())
    }

    /// Decodes a whole utterance as the reference does (stateless 300-frame
    /// chunks with 25 frames of left context).
    pub fn decode(&mut self, frames: &[Vec<u32>]) -> Result<Vec<f32>> {
        let mut stream = self.stream();
        stream.push(frames)
    }

    /// Starts a stream: frames in as they are generated, samples out.
    pub fn stream(&mut self) -> DecodeStream<'_> {
        let cursor = self.start_stream();
        DecodeStream {
            decoder: self,
            cursor,
        }
    }

    /// Starts a stream whose position the caller keeps (a stream that owns
    /// its session): push with [`DecoderSession::push_stream`].
    pub fn start_stream(&mut self) -> StreamCursor {
        self.reset();
        StreamCursor::default()
    }

    /// Decodes the next frames of the stream at `cursor`; returns their
    /// samples (1920 per frame).
    pub fn push_stream(
        &mut self,
        cursor: &mut StreamCursor,
        frames: &[Vec<u32>],
    ) -> Result<Vec<f32>> {
        for (i, f) in frames.iter().enumerate() {
            self.check(cursor.frames + i, f)?;
        }
        let mut out = Vec::with_capacity(frames.len() * self.samples_per_frame());
        let mut rest = frames;
        while !rest.is_empty() {
            if cursor.frames > 0
                && cursor.frames.is_multiple_of(CHUNK_FRAMES)
                && self.position >= CHUNK_FRAMES
            {
                // A new reference chunk: fresh state, primed with the left context.
                self.reset();
                let context = cursor.recent.clone();
                self.run(&context)?;
            }
            let room = CHUNK_FRAMES - cursor.frames % CHUNK_FRAMES;
            let (now, later) = rest.split_at(room.min(rest.len()));
            out.extend(self.run(now)?);
            cursor.frames += now.len();
            cursor.recent.extend(now.iter().cloned());
            let excess = cursor.recent.len().saturating_sub(CHUNK_CONTEXT);
            cursor.recent.drain(..excess);
            rest = later;
        }
        Ok(out)
    }
}

/// A stream's decoder state kept outside the session, so that several
/// streams can share one session's graphs (and their compute buffers):
/// saved after a stream's push, restored before its next one. Only what the
/// stream has written is kept: the conv contexts, and the transformer's keys
/// and values of the positions decoded since the last chunk start (the rest
/// of its cache is zero, as after a reset).
#[derive(Clone, Debug, Default)]
pub struct SavedState {
    /// Every conv context's bytes, then each layer's keys and values of
    /// `position` frames, in the session's order.
    tensors: Vec<Vec<u8>>,
    position: usize,
}

impl SavedState {
    /// Bytes held.
    pub fn bytes(&self) -> usize {
        self.tensors.iter().map(Vec::len).sum()
    }
}

impl DecoderSession {
    /// Copies the current stream's state into `into`.
    pub fn save_state(&self, into: &mut SavedState) {
        let st = &self.state;
        into.tensors.clear();
        into.tensors
            .extend(st.context.iter().map(|t| t.get_bytes()));
        let written = |t: &StoredTensor| {
            let per_frame = t.n_bytes() / t.ne()[1] as usize;
            t.get_bytes_at(0, self.position * per_frame)
        };
        into.tensors.extend(st.k.iter().chain(&st.v).map(written));
        into.position = self.position;
    }

    /// Makes `from` (saved by [`DecoderSession::save_state`] of a session of
    /// the same decoder; the default: a fresh stream) the current stream's
    /// state.
    pub fn restore_state(&mut self, from: &SavedState) {
        let st = &self.state;
        st.store.clear(0);
        for (t, bytes) in st
            .context
            .iter()
            .chain(&st.k)
            .chain(&st.v)
            .zip(&from.tensors)
        {
            t.set_bytes_at(0, bytes);
        }
        self.position = from.position;
    }

    /// Decodes `frames` from silence as the start of a stream and keeps the
    /// state after them: a voice's reference frames, which an ICL request
    /// decodes before its own (see [`DecoderContext`]).
    pub fn context(&mut self, frames: &[Vec<u32>]) -> Result<DecoderContext> {
        let mut context = DecoderContext::begin(frames.to_vec());
        while !context.is_complete() {
            context.extend(self, self.tile_frames)?;
        }
        Ok(context)
    }

    /// Continues the stream `context` ends: its state becomes the session's;
    /// returns the stream's cursor (push the next frames with it).
    pub fn resume(&mut self, context: &DecoderContext) -> StreamCursor {
        self.restore_state(&context.state);
        context.cursor.clone()
    }
}

/// A stream's state after given leading frames (an ICL voice's reference
/// frames): the decoder is causal, so what comes after them depends on them
/// only through this state. [`DecoderSession::resume`] continues from it,
/// and the samples are bit for bit those of decoding all frames at once.
/// It also keeps the leading frames' last [`DecoderContext::tail`] samples:
/// the reference's ICL cut sometimes keeps the last one.
#[derive(Clone, Debug)]
pub struct DecoderContext {
    frames: Vec<Vec<u32>>,
    state: SavedState,
    cursor: StreamCursor,
    tail: Vec<f32>,
}

impl DecoderContext {
    /// The context of `frames` before any is decoded; [`DecoderContext::extend`]
    /// decodes them a few at a time (a context is only used complete).
    pub(crate) fn begin(frames: Vec<Vec<u32>>) -> Self {
        Self {
            frames,
            state: SavedState::default(),
            cursor: StreamCursor::default(),
            tail: Vec::new(),
        }
    }

    /// Whether every leading frame is decoded.
    pub(crate) fn is_complete(&self) -> bool {
        self.cursor.frames >= self.frames.len()
    }

    /// Decodes up to `n` more of the leading frames on `session`, whose
    /// stream state it replaces.
    pub(crate) fn extend(&mut self, session: &mut DecoderSession, n: usize) -> Result<()> {
        let done = self.cursor.frames;
        let end = done.saturating_add(n.max(1)).min(self.frames.len());
        session.restore_state(&self.state);
        let samples = session.push_stream(&mut self.cursor, &self.frames[done..end])?;
        session.save_state(&mut self.state);
        // The last frame's worth of samples.
        self.tail.extend_from_slice(&samples);
        let excess = self.tail.len().saturating_sub(session.samples_per_frame());
        self.tail.drain(..excess);
        Ok(())
    }

    /// The leading frames.
    pub fn frames(&self) -> &[Vec<u32>] {
        &self.frames
    }

    /// The decoder state after the leading frames.
    pub fn state(&self) -> &SavedState {
        &self.state
    }

    /// The stream's cursor after the leading frames.
    pub fn cursor(&self) -> &StreamCursor {
        &self.cursor
    }

    /// The leading frames' last samples (one frame's worth).
    pub fn tail(&self) -> &[f32] {
        &self.tail
    }

    /// Bytes held.
    pub fn bytes(&self) -> usize {
        self.state.bytes()
            + self.tail.len() * 4
            + (self.frames.len() + self.cursor.recent.len())
                * self.frames.first().map_or(0, |f| f.len() * 4)
    }
}

/// Where a stream is: frames pushed so far and the last [`CHUNK_CONTEXT`]
/// of them (replayed at a chunk start).
#[derive(Clone, Debug, Default)]
pub struct StreamCursor {
    frames: usize,
    recent: Vec<Vec<u32>>,
}

impl StreamCursor {
    /// Frames decoded so far.
    pub fn frames(&self) -> usize {
        self.frames
    }
}

/// Incremental decoding whose concatenated output equals
/// [`DecoderSession::decode`] of all the frames pushed.
pub struct DecodeStream<'a> {
    decoder: &'a mut DecoderSession,
    cursor: StreamCursor,
}

impl DecodeStream<'_> {
    /// Frames decoded so far.
    pub fn frames(&self) -> usize {
        self.cursor.frames
    }

    /// Decodes the next frames; returns their samples (1920 per frame).
    pub fn push(&mut self, frames: &[Vec<u32>]) -> Result<Vec<f32>> {
        self.decoder.push_stream(&mut self.cursor, frames)
    }
}
