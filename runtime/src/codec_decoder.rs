//! The speech-tokenizer decoder (vocoder): 16 codes per 80 ms frame → 1920
//! samples at 24 kHz (spec/06).
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

use std::path::Path;
use std::sync::Arc;

use crate::config::CodecDecoderConfig;
use crate::error::{Error, Result};
use crate::ggml::{Backend, Context, GgmlType, OwnedGraph, Tensor, TensorStore};
use crate::gguf_schema::ARCH_TOKENIZER;
use crate::layers::{
    block_weight_names, causal_conv1d, causal_transposed_conv1d, convnext_block, decoder_block,
    linear, rms_norm, snake, state_name, sum, weight, BlockWeights, CausalContext, KvCache,
};
use crate::model_file::GgufFile;
use crate::weights::{load_weights_with, permute3, Prepared};

/// Frames per stateless chunk of the reference's decode.
pub const CHUNK_FRAMES: usize = 300;
/// Frames of left context each later chunk is decoded with.
pub const CHUNK_CONTEXT: usize = 25;
/// Default frames per graph call (bounds the activation memory).
pub const DEFAULT_TILE_FRAMES: usize = 25;

const PREFIX: &str = "dec.";
/// Residual-unit dilations of each decoder block.
const DILATIONS: [usize; 3] = [1, 3, 9];

/// The decoder blocks' transposed convs are at `dec.dec.{1..=4}.block.1`;
/// the upsampling ones at `dec.upsample.{i}.0`.
fn is_transposed_conv(name: &str) -> bool {
    (name.starts_with("dec.upsample.") && name.contains(".0.conv."))
        || (name.starts_with("dec.dec.") && name.contains(".block.1.conv."))
}

/// Rearranges a stored tensor into the layout the graph computes with:
/// conv kernels `[k, c_in, c_out]` → `[c_in, k, c_out]`, transposed-conv
/// kernels `[k, c_out, c_in]` → `[c_in, c_out, k]`, depthwise kernels
/// `[k, 1, c]` → `[c, k]`, and SnakeBeta's log-scale α, β folded to
/// `exp(α)` and `1 / (exp(β) + 1e-9)`.
fn prepare(file: &GgufFile, name: &str, bytes: &[u8]) -> Result<Option<Prepared>> {
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
    if !is_kernel || name.starts_with("dec.pre_transformer.") {
        return Ok(None);
    }
    let bad = |reason: String| Error::Tensor {
        path: file.path().to_path_buf(),
        name: name.to_string(),
        reason,
    };
    let elem = match ty {
        GgmlType::F32 => 4,
        GgmlType::F16 | GgmlType::BF16 => 2,
        other => {
            return Err(bad(format!(
                "convolution kernels must be F32/F16, found {other:?}"
            )))
        }
    };
    // A conv with one output channel is stored 2-D.
    let ne: [usize; 3] = match info.ne[..] {
        [a, b] => [a as usize, b as usize, 1],
        [a, b, c] => [a as usize, b as usize, c as usize],
        _ => return Err(bad(format!("unexpected kernel shape {:?}", info.ne))),
    };
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
    if is_transposed_conv(name) {
        return Ok(Some(Prepared {
            ty,
            ne: vec![ne[2] as i64, ne[1] as i64, ne[0] as i64],
            bytes: permute3(bytes, elem, ne, [2, 1, 0]),
        }));
    }
    Ok(Some(Prepared {
        ty,
        ne: vec![ne[1] as i64, ne[0] as i64, ne[2] as i64],
        bytes: permute3(bytes, elem, ne, [1, 0, 2]),
    }))
}

/// GGUF names the decoder reads.
pub fn weight_names(cfg: &CodecDecoderConfig) -> Vec<String> {
    let mut names = vec![
        "dec.rvq_first.output_proj.weight".to_string(),
        "dec.rvq_rest.output_proj.weight".to_string(),
    ];
    for q in 0..cfg.num_quantizers {
        names.push(codebook_name(cfg, q));
    }
    let conv = |names: &mut Vec<String>, p: &str| {
        names.push(format!("{p}.conv.weight"));
        names.push(format!("{p}.conv.bias"));
    };
    conv(&mut names, "dec.pre_conv");
    let t = "dec.pre_transformer";
    for s in ["input_proj.weight", "input_proj.bias", "output_norm.weight"] {
        names.push(format!("{t}.{s}"));
    }
    names.push(format!("{t}.output_proj.weight"));
    names.push(format!("{t}.output_proj.bias"));
    for l in 0..cfg.transformer.layers {
        let p = format!("{t}.blk.{l}");
        names.extend(
            block_weight_names(&p)
                .into_iter()
                .filter(|n| !n.contains("_q_norm") && !n.contains("_k_norm")),
        );
        names.push(format!("{p}.attn_scale"));
        names.push(format!("{p}.ffn_scale"));
    }
    for i in 0..cfg.upsampling_ratios.len() {
        conv(&mut names, &format!("dec.upsample.{i}.0"));
        let p = format!("dec.upsample.{i}.1");
        conv(&mut names, &format!("{p}.dwconv"));
        for s in ["norm.weight", "norm.bias", "pwconv1.weight", "pwconv1.bias"] {
            names.push(format!("{p}.{s}"));
        }
        for s in ["pwconv2.weight", "pwconv2.bias", "gamma"] {
            names.push(format!("{p}.{s}"));
        }
    }
    let blocks = cfg.upsample_rates.len();
    conv(&mut names, "dec.dec.0");
    let snake_names = |names: &mut Vec<String>, p: &str| {
        names.push(format!("{p}.alpha"));
        names.push(format!("{p}.beta"));
    };
    for b in 1..=blocks {
        snake_names(&mut names, &format!("dec.dec.{b}.block.0"));
        conv(&mut names, &format!("dec.dec.{b}.block.1"));
        for u in 0..DILATIONS.len() {
            let p = format!("dec.dec.{b}.block.{}", u + 2);
            snake_names(&mut names, &format!("{p}.act1"));
            conv(&mut names, &format!("{p}.conv1"));
            snake_names(&mut names, &format!("{p}.act2"));
            conv(&mut names, &format!("{p}.conv2"));
        }
    }
    snake_names(&mut names, &format!("dec.dec.{}", blocks + 1));
    conv(&mut names, &format!("dec.dec.{}", blocks + 2));
    names
}

fn codebook_name(cfg: &CodecDecoderConfig, q: usize) -> String {
    if q < cfg.num_semantic_quantizers {
        format!("dec.rvq_first.blk.{q}.codebook.embed")
    } else {
        format!(
            "dec.rvq_rest.blk.{}.codebook.embed",
            q - cfg.num_semantic_quantizers
        )
    }
}

/// Graph pieces shared by the builders below.
struct Builder<'a> {
    ctx: &'a Context,
    w: &'a TensorStore,
    cc: CausalContext<'a>,
}

impl<'a> Builder<'a> {
    fn w(&self, name: &str) -> Tensor<'a> {
        weight(self.w, name)
    }
    fn conv(&self, prefix: &str, x: Tensor<'a>, dilation: usize) -> Tensor<'a> {
        let (w, b) = (
            self.w(&format!("{prefix}.conv.weight")),
            self.w(&format!("{prefix}.conv.bias")),
        );
        causal_conv1d(self.ctx, &self.cc, prefix, x, w, Some(b), dilation)
    }
    fn transposed_conv(&self, prefix: &str, x: Tensor<'a>, stride: usize) -> Tensor<'a> {
        let (w, b) = (
            self.w(&format!("{prefix}.conv.weight")),
            self.w(&format!("{prefix}.conv.bias")),
        );
        causal_transposed_conv1d(self.ctx, &self.cc, prefix, x, w, Some(b), stride)
    }
    fn snake(&self, prefix: &str, x: Tensor<'a>) -> Tensor<'a> {
        snake(
            self.ctx,
            x,
            self.w(&format!("{prefix}.alpha")),
            self.w(&format!("{prefix}.beta")),
        )
    }
}

/// Persistent state of a decode stream: per causal layer its left context,
/// and the transformer's KV cache for one chunk.
fn state_specs(cfg: &CodecDecoderConfig, w: &TensorStore) -> Vec<(String, GgmlType, Vec<i64>)> {
    let mut specs = Vec::new();
    let f32_state = |specs: &mut Vec<_>, layer: &str, channels: i64, pad: usize| {
        if pad > 0 {
            specs.push((state_name(layer), GgmlType::F32, vec![channels, pad as i64]));
        }
    };
    // conv kernel `[c_in, k, c_out]`: context (k − 1)·dilation
    let conv = |specs: &mut Vec<_>, layer: &str, dilation: usize| {
        let ne = weight(w, &format!("{layer}.conv.weight")).ne();
        f32_state(specs, layer, ne[0], (ne[1] as usize - 1) * dilation);
    };
    // transposed kernel `[c_in, c_out, k]`: context k/stride − 1 input frames
    let tconv = |specs: &mut Vec<_>, layer: &str, stride: usize| {
        let ne = weight(w, &format!("{layer}.conv.weight")).ne();
        f32_state(specs, layer, ne[0], ne[2] as usize / stride - 1);
    };
    conv(&mut specs, "dec.pre_conv", 1);
    let t = &cfg.transformer;
    for l in 0..t.layers {
        for kv in ["k", "v"] {
            specs.push((
                kv_name(kv, l),
                GgmlType::F32,
                vec![
                    (t.head_dim * t.kv_heads) as i64,
                    (CHUNK_FRAMES + CHUNK_CONTEXT) as i64,
                ],
            ));
        }
    }
    for (i, &s) in cfg.upsampling_ratios.iter().enumerate() {
        tconv(&mut specs, &format!("dec.upsample.{i}.0"), s);
        let dw = format!("dec.upsample.{i}.1.dwconv");
        let ne = weight(w, &format!("{dw}.conv.weight")).ne();
        f32_state(&mut specs, &dw, ne[0], ne[1] as usize - 1);
    }
    conv(&mut specs, "dec.dec.0", 1);
    for (b, &rate) in cfg.upsample_rates.iter().enumerate() {
        let b = b + 1;
        tconv(&mut specs, &format!("dec.dec.{b}.block.1"), rate);
        for (u, &d) in DILATIONS.iter().enumerate() {
            let p = format!("dec.dec.{b}.block.{}", u + 2);
            conv(&mut specs, &format!("{p}.conv1"), d);
            conv(&mut specs, &format!("{p}.conv2"), 1);
        }
    }
    conv(
        &mut specs,
        &format!("dec.dec.{}", cfg.upsample_rates.len() + 2),
        1,
    );
    specs
}

fn kv_name(kv: &str, layer: usize) -> String {
    format!("dec.pre_transformer.cache.{kv}{layer}")
}

/// The graph decoding `n` frames from the stream state.
fn build_graph(
    cfg: &CodecDecoderConfig,
    backend: &Arc<Backend>,
    weights: Arc<TensorStore>,
    state: Arc<TensorStore>,
    n: usize,
) -> OwnedGraph {
    let cfg = cfg.clone();
    let nodes = 4096 + cfg.transformer.layers * 64;
    OwnedGraph::build(backend, nodes, vec![weights, state], move |ctx, stores| {
        let b = Builder {
            ctx,
            w: &stores[0],
            cc: CausalContext::streaming(&stores[1]),
        };
        let nq = cfg.num_quantizers;
        let codes = ctx
            .new_tensor(GgmlType::I32, &[n as i64, nq as i64])
            .set_name("codes")
            .set_input();
        let pos = ctx
            .new_tensor(GgmlType::I32, &[n as i64])
            .set_name("pos")
            .set_input();
        let capacity = (CHUNK_FRAMES + CHUNK_CONTEXT) as i64;
        let mask = ctx
            .new_tensor(GgmlType::F32, &[capacity, n as i64])
            .set_name("mask")
            .set_input();

        // RVQ: per branch, the codebook rows summed in layer order, then the
        // branch's 1×1 output projection (spec/06 §1).
        let branch = |range: std::ops::Range<usize>, proj: &str| {
            let rows = sum(
                ctx,
                range.map(|q| {
                    let ids = ctx.view(codes, &[n as i64], &[], q * n * 4);
                    ctx.get_rows(b.w(&codebook_name(&cfg, q)), ids)
                }),
            );
            let w = b.w(proj);
            let [_, c_in, c_out, _] = w.ne(); // a 1×1 conv kernel
            ctx.mul_mat(ctx.reshape(w, &[c_in, c_out]), rows)
        };
        let ns = cfg.num_semantic_quantizers;
        let x = ctx.add(
            branch(0..ns, "dec.rvq_first.output_proj.weight"),
            branch(ns..nq, "dec.rvq_rest.output_proj.weight"),
        );
        let x = b.conv("dec.pre_conv", x, 1);

        // Sliding-window transformer over the frames.
        let t = &cfg.transformer;
        let p = "dec.pre_transformer";
        let mut h = linear(
            ctx,
            x,
            b.w(&format!("{p}.input_proj.weight")),
            Some(b.w(&format!("{p}.input_proj.bias"))),
        );
        for l in 0..t.layers {
            let bw = BlockWeights::new(b.w, &format!("{p}.blk.{l}"));
            let kv = KvCache::Persistent {
                k: weight(&stores[1], &kv_name("k", l)),
                v: weight(&stores[1], &kv_name("v", l)),
                rows: pos,
                n_kv: capacity as usize,
            };
            h = decoder_block(ctx, t, &bw, h, pos, kv, Some(mask)).out;
        }
        let h = rms_norm(ctx, h, b.w(&format!("{p}.output_norm.weight")), t.rms_eps);
        let mut x = linear(
            ctx,
            h,
            b.w(&format!("{p}.output_proj.weight")),
            Some(b.w(&format!("{p}.output_proj.bias"))),
        );

        for (i, &s) in cfg.upsampling_ratios.iter().enumerate() {
            x = b.transposed_conv(&format!("dec.upsample.{i}.0"), x, s);
            x = convnext_block(ctx, &b.cc, b.w, &format!("dec.upsample.{i}.1"), x);
        }
        x = b.conv("dec.dec.0", x, 1);
        for (i, &rate) in cfg.upsample_rates.iter().enumerate() {
            let blk = format!("dec.dec.{}.block", i + 1);
            x = b.snake(&format!("{blk}.0"), x);
            x = b.transposed_conv(&format!("{blk}.1"), x, rate);
            for (u, &d) in DILATIONS.iter().enumerate() {
                let unit = format!("{blk}.{}", u + 2);
                let y = b.snake(&format!("{unit}.act1"), x);
                let y = b.conv(&format!("{unit}.conv1"), y, d);
                let y = b.snake(&format!("{unit}.act2"), y);
                let y = b.conv(&format!("{unit}.conv2"), y, 1);
                x = ctx.add(x, y);
            }
        }
        let blocks = cfg.upsample_rates.len();
        x = b.snake(&format!("dec.dec.{}", blocks + 1), x);
        x = b.conv(&format!("dec.dec.{}", blocks + 2), x, 1);
        let wav = ctx.clamp(x, -1.0, 1.0).set_name("wav");
        let mut outputs = vec![wav];
        outputs.extend(b.cc.into_updates());
        outputs
    })
}

/// The loaded decoder with the state of one stream.
pub struct CodecDecoder {
    // Drop order: graphs before the stores and the backend.
    /// Graphs by frames per call (the tile size and the last odd size).
    graphs: Vec<(usize, OwnedGraph)>,
    state: Arc<TensorStore>,
    weights: Arc<TensorStore>,
    pub config: CodecDecoderConfig,
    backend: Arc<Backend>,
    /// Frames decoded since the state was last reset.
    position: usize,
    /// Frames per graph call.
    tile_frames: usize,
}

impl CodecDecoder {
    /// Opens the decoder of a `tokenizer-*.gguf` file written by `qwen3-tts-convert`.
    pub fn load(path: impl AsRef<Path>, threads: usize) -> Result<Self> {
        let file = GgufFile::open_arch(path, ARCH_TOKENIZER)?;
        let config = CodecDecoderConfig::from_gguf(&file)?;
        for name in weight_names(&config) {
            file.tensor_info(&name)?;
        }
        for q in 0..config.num_quantizers {
            let name = codebook_name(&config, q);
            let ne = &file.tensor_info(&name)?.ne;
            if ne.get(1) != Some(&(config.codebook_size as i64)) {
                return Err(Error::Tensor {
                    path: file.path().to_path_buf(),
                    name,
                    reason: format!("shape {ne:?}: expected {} entries", config.codebook_size),
                });
            }
        }
        let backend = Arc::new(Backend::cpu(threads));
        let weights = load_weights_with(
            &file,
            &backend,
            // The RVQ input projections serve only the encoding direction.
            |name| {
                name.starts_with(PREFIX)
                    && !(name.starts_with("dec.rvq_") && name.ends_with(".input_proj.weight"))
            },
            |name, bytes| prepare(&file, name, bytes),
        )?;
        let weights = Arc::new(weights);
        let state = Arc::new(TensorStore::new(&backend, &state_specs(&config, &weights)));
        let mut dec = Self {
            graphs: Vec::new(),
            state,
            weights,
            config,
            backend,
            position: 0,
            tile_frames: DEFAULT_TILE_FRAMES,
        };
        dec.reset();
        Ok(dec)
    }

    pub fn set_threads(&self, threads: usize) {
        self.backend.set_threads(threads);
    }

    /// Frames per graph call (memory ∝ this; results do not depend on it).
    pub fn set_tile_frames(&mut self, frames: usize) {
        self.tile_frames = frames.max(1);
        self.graphs.clear();
    }

    /// Bytes of weights held in backend memory.
    pub fn weights_size(&self) -> usize {
        self.weights.size()
    }

    /// Output samples per frame (1920).
    pub fn samples_per_frame(&self) -> usize {
        self.config.samples_per_frame
    }

    pub fn sample_rate(&self) -> u32 {
        self.config.sample_rate
    }

    /// Starts from silence: zero left context, transformer positions from 0.
    fn reset(&mut self) {
        self.state.clear(0);
        self.position = 0;
    }

    /// Checks a frame's code count and ranges.
    fn check(&self, index: usize, frame: &[u32]) -> Result<()> {
        let c = &self.config;
        if frame.len() != c.num_quantizers {
            return Err(Error::Other(format!(
                "frame {index} has {} codes, the decoder needs {}",
                frame.len(),
                c.num_quantizers
            )));
        }
        if let Some(bad) = frame.iter().find(|&&v| v as usize >= c.codebook_size) {
            return Err(Error::Other(format!(
                "frame {index}: code {bad} outside the codebook (size {})",
                c.codebook_size
            )));
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
        if self.position + n > capacity {
            return Err(Error::Other(format!(
                "decoder: {} frames since the last chunk start exceed {capacity}",
                self.position + n
            )));
        }
        let nq = self.config.num_quantizers;
        let mut codes = vec![0i32; n * nq];
        for (t, f) in frames.iter().enumerate() {
            for q in 0..nq {
                codes[q * n + t] = f[q] as i32;
            }
        }
        let start = self.position;
        let pos: Vec<i32> = (start..start + n).map(|p| p as i32).collect();
        // Frame t sees frames (t − window, t] (sliding-window causal mask).
        let window = self.config.sliding_window;
        let mut mask = vec![f32::NEG_INFINITY; capacity * n];
        for i in 0..n {
            let t = start + i;
            let first = (t + 1).saturating_sub(window);
            mask[i * capacity + first..i * capacity + t + 1].fill(0.0);
        }
        if !self.graphs.iter().any(|(k, _)| *k == n) {
            if self.graphs.len() >= 2 {
                self.graphs.remove(0);
            }
            let g = build_graph(
                &self.config,
                &self.backend,
                self.weights.clone(),
                self.state.clone(),
                n,
            );
            self.graphs.push((n, g));
        }
        let graph = &mut self
            .graphs
            .iter_mut()
            .find(|(k, _)| *k == n)
            .expect("just built")
            .1;
        graph
            .compute(|g| {
                g.tensor("codes").set_i32(&codes);
                g.tensor("pos").set_i32(&pos);
                g.tensor("mask").set_f32(&mask);
            })
            .map_err(|e| Error::Other(format!("decoder graph: {e}")))?;
        self.position += n;
        Ok(graph.tensor("wav").get_f32())
    }

    /// Decodes a whole utterance as the reference does (stateless 300-frame
    /// chunks with 25 frames of left context).
    pub fn decode(&mut self, frames: &[Vec<u32>]) -> Result<Vec<f32>> {
        let mut stream = self.stream();
        stream.push(frames)
    }

    /// Starts a stream: frames in as they are generated, samples out.
    pub fn stream(&mut self) -> DecodeStream<'_> {
        self.reset();
        DecodeStream {
            decoder: self,
            frames: 0,
            recent: Vec::new(),
        }
    }
}

/// Incremental decoding whose concatenated output equals
/// [`CodecDecoder::decode`] of all the frames pushed.
pub struct DecodeStream<'a> {
    decoder: &'a mut CodecDecoder,
    /// Frames pushed so far.
    frames: usize,
    /// The last [`CHUNK_CONTEXT`] frames (replayed at a chunk start).
    recent: Vec<Vec<u32>>,
}

impl DecodeStream<'_> {
    /// Frames decoded so far.
    pub fn frames(&self) -> usize {
        self.frames
    }

    /// Decodes the next frames; returns their samples (1920 per frame).
    pub fn push(&mut self, frames: &[Vec<u32>]) -> Result<Vec<f32>> {
        for (i, f) in frames.iter().enumerate() {
            self.decoder.check(self.frames + i, f)?;
        }
        let mut out = Vec::with_capacity(frames.len() * self.decoder.samples_per_frame());
        let mut rest = frames;
        while !rest.is_empty() {
            if self.frames > 0
                && self.frames.is_multiple_of(CHUNK_FRAMES)
                && self.decoder.position >= CHUNK_FRAMES
            {
                // A new reference chunk: fresh state, primed with the left context.
                self.decoder.reset();
                let context = self.recent.clone();
                self.decoder.run(&context)?;
            }
            let room = CHUNK_FRAMES - self.frames % CHUNK_FRAMES;
            let (now, later) = rest.split_at(room.min(rest.len()));
            out.extend(self.decoder.run(now)?);
            self.frames += now.len();
            self.recent.extend(now.iter().cloned());
            let excess = self.recent.len().saturating_sub(CHUNK_CONTEXT);
            self.recent.drain(..excess);
            rest = later;
        }
        Ok(out)
    }
}
