//! The Base models' speaker encoder: log-mel front end (host, spec/04 §2) and
//! ECAPA-TDNN on ggml (§3), turning 24 kHz reference audio into the x-vector
//! the talker takes as the speaker.
//!
//! Activations are `[time, channels]` (time fastest) here: the TDNN convs pad
//! by reflection and pool over time, which ggml does along `ne[0]`.

use std::sync::Arc;

use realfft::RealFftPlanner;

use crate::config::SpeakerEncoderConfig;
use crate::error::{Error, Result};
use crate::ggml::{Backend, Context, GgmlType, OwnedGraph, Tensor, TensorStore};
use crate::layers::{add_bias, concat_columns, conv1d_time_major, weight};
use crate::model_file::GgufFile;
use crate::weights::{load_weights_with, upcast_to_f32};

/// Mel front end (hard-coded in the reference).
pub const N_FFT: usize = 1024;
pub const HOP: usize = 256;
const FMAX: f64 = 12000.0;
/// Log floor: `ln(max(mel, 1e-5))`.
const MEL_FLOOR: f64 = 1e-5;
/// Frames the TDNN stack needs at least (its widest reflect padding is 4).
pub const MIN_FRAMES: usize = 9;

/// Slaney mel scale (librosa `hz_to_mel`, htk=False).
fn hz_to_mel(f: f64) -> f64 {
    let f_sp = 200.0 / 3.0;
    let min_log_mel = 1000.0 / f_sp;
    if f >= 1000.0 {
        min_log_mel + (f / 1000.0).ln() / (6.4f64.ln() / 27.0)
    } else {
        f / f_sp
    }
}

fn mel_to_hz(m: f64) -> f64 {
    let f_sp = 200.0 / 3.0;
    let min_log_mel = 1000.0 / f_sp;
    if m >= min_log_mel {
        1000.0 * ((m - min_log_mel) * (6.4f64.ln() / 27.0)).exp()
    } else {
        m * f_sp
    }
}

/// `librosa.filters.mel(sr, n_fft, n_mels, fmin=0, fmax)` with Slaney area
/// normalisation: `[n_mels, n_fft/2 + 1]`, row-major, computed in float64 and
/// rounded to f32 at the same two points as librosa.
pub fn mel_filterbank(sample_rate: u32, n_fft: usize, n_mels: usize, fmax: f64) -> Vec<f32> {
    let bins = n_fft / 2 + 1;
    let (lo, hi) = (hz_to_mel(0.0), hz_to_mel(fmax));
    let mel_f: Vec<f64> = (0..n_mels + 2)
        .map(|i| mel_to_hz(lo + (hi - lo) * i as f64 / (n_mels + 1) as f64))
        .collect();
    let fft_f: Vec<f64> = (0..bins)
        .map(|k| k as f64 * sample_rate as f64 / 2.0 / (bins - 1) as f64)
        .collect();
    let mut w = vec![0f32; n_mels * bins];
    for m in 0..n_mels {
        let enorm = 2.0 / (mel_f[m + 2] - mel_f[m]);
        for (k, &f) in fft_f.iter().enumerate() {
            let lower = (f - mel_f[m]) / (mel_f[m + 1] - mel_f[m]);
            let upper = (mel_f[m + 2] - f) / (mel_f[m + 2] - mel_f[m + 1]);
            let tri = lower.min(upper).max(0.0) as f32;
            w[m * bins + k] = (tri as f64 * enorm) as f32;
        }
    }
    w
}

/// The speaker encoder's input: log-mel frames `[T, n_mels]` (row-major)
/// of mono 24 kHz `samples`, T = ⌊N / 256⌋.
pub fn log_mel_spectrogram(samples: &[f32], sample_rate: u32, n_mels: usize) -> Result<Vec<f32>> {
    let pad = (N_FFT - HOP) / 2;
    if samples.len() <= pad {
        return Err(Error::Other(format!(
            "reference audio of {} samples is too short for the mel front end (needs > {pad})",
            samples.len()
        )));
    }
    // Reflect padding without repeating the edge sample.
    let n = samples.len();
    let padded: Vec<f64> = (0..n + 2 * pad)
        .map(|i| {
            let j = i as isize - pad as isize;
            let j = if j < 0 {
                -j
            } else if j >= n as isize {
                2 * (n as isize - 1) - j
            } else {
                j
            };
            samples[j as usize] as f64
        })
        .collect();
    let frames = 1 + (padded.len() - N_FFT) / HOP;
    // Periodic Hann (torch.hann_window). The whole front end runs in f64: the
    // package's f32 result carries FFT rounding noise of up to 6e-4 (in log
    // units) near the log floor, which no other FFT reproduces.
    let window: Vec<f64> = (0..N_FFT)
        .map(|i| 0.5 - 0.5 * (2.0 * std::f64::consts::PI * i as f64 / N_FFT as f64).cos())
        .collect();
    let bins = N_FFT / 2 + 1;
    let fb = mel_filterbank(sample_rate, N_FFT, n_mels, FMAX);
    let fft = RealFftPlanner::<f64>::new().plan_fft_forward(N_FFT);
    let mut input = fft.make_input_vec();
    let mut spectrum = fft.make_output_vec();
    let mut magnitude = vec![0f64; bins];
    let mut out = vec![0f32; frames * n_mels];
    for t in 0..frames {
        let frame = &padded[t * HOP..t * HOP + N_FFT];
        for ((x, s), w) in input.iter_mut().zip(frame).zip(&window) {
            *x = s * w;
        }
        fft.process(&mut input, &mut spectrum)
            .map_err(|e| Error::Other(format!("FFT: {e}")))?;
        for (m, c) in magnitude.iter_mut().zip(&spectrum) {
            *m = (c.re * c.re + c.im * c.im + 1e-9).sqrt();
        }
        for (m, row) in fb.chunks(bins).enumerate() {
            let mel: f64 = row.iter().zip(&magnitude).map(|(w, s)| *w as f64 * s).sum();
            out[t * n_mels + m] = mel.max(MEL_FLOOR).ln() as f32;
        }
    }
    Ok(out)
}

/// TDNN: reflect-"same"-padded conv over `x` `[t, c_in]` → `[t, c_out]`,
/// then ReLU when `relu`. Kernel `[k, c_in, c_out]` (F32).
fn tdnn<'a>(
    ctx: &'a Context,
    w: &'a TensorStore,
    prefix: &str,
    x: Tensor<'a>,
    dilation: usize,
    relu: bool,
) -> Tensor<'a> {
    let kernel = weight(w, &format!("{prefix}.weight"));
    let k = kernel.ne()[0];
    let pad = dilation * (k as usize - 1);
    let xp = if pad > 0 {
        ctx.pad_reflect(x, (pad / 2) as i32, (pad - pad / 2) as i32)
    } else {
        x
    };
    let bias = weight(w, &format!("{prefix}.bias"));
    let y = conv1d_time_major(ctx, xp, kernel, Some(bias), 1, dilation);
    if relu {
        ctx.relu(y)
    } else {
        y
    }
}

/// A 1×1 conv applied to one vector `v` `[c_in, 1]` → `[c_out, 1]`.
fn pointwise<'a>(ctx: &'a Context, w: &'a TensorStore, prefix: &str, v: Tensor<'a>) -> Tensor<'a> {
    let kernel = weight(w, &format!("{prefix}.weight"));
    let [_, c_in, c_out, _] = kernel.ne();
    let y = ctx.mul_mat(ctx.reshape(kernel, &[c_in, c_out]), v);
    add_bias(ctx, y, Some(weight(w, &format!("{prefix}.bias"))))
}

/// `sqrt(max(v, 1e-12))`.
fn safe_sqrt<'a>(ctx: &'a Context, v: Tensor<'a>) -> Tensor<'a> {
    ctx.sqrt(ctx.clamp(v, 1e-12, f32::MAX))
}

/// SE-Res2Net block `b` (1..=3) with dilation `d`.
fn se_res2net<'a>(
    ctx: &'a Context,
    w: &'a TensorStore,
    cfg: &SpeakerEncoderConfig,
    b: usize,
    x: Tensor<'a>,
) -> Tensor<'a> {
    let p = format!("spk.blocks.{b}");
    let d = cfg.dilations[b];
    let u = tdnn(ctx, w, &format!("{p}.tdnn1.conv"), x, 1, true);
    let [t, c, ..] = u.ne();
    let width = c as usize / cfg.res2net_scale;
    let es = u.element_size();
    let chunk = |i: usize| {
        ctx.view(
            u,
            &[t, width as i64],
            &[t as usize * es],
            i * width * t as usize * es,
        )
    };
    let mut ys = vec![chunk(0)];
    for i in 1..cfg.res2net_scale {
        let input = if i == 1 {
            chunk(1)
        } else {
            ctx.add(chunk(i), ys[i - 1])
        };
        let name = format!("{p}.res2net_block.blocks.{}.conv", i - 1);
        ys.push(tdnn(ctx, w, &name, input, d, true));
    }
    let u = tdnn(
        ctx,
        w,
        &format!("{p}.tdnn2.conv"),
        concat_columns(ctx, &ys),
        1,
        true,
    );
    // Squeeze-excitation: a channel gate from the time average.
    let m = ctx.reshape(ctx.mean(u), &[c, 1]);
    let m = ctx.relu(pointwise(ctx, w, &format!("{p}.se_block.conv1"), m));
    let m = ctx.sigmoid(pointwise(ctx, w, &format!("{p}.se_block.conv2"), m));
    ctx.add(ctx.mul(u, ctx.reshape(m, &[1, c])), x)
}

/// Mean and standard deviation over time of `z` `[t, c]` with weights
/// `p` (`None`: uniform), each `[1, c]`.
fn statistics<'a>(
    ctx: &'a Context,
    z: Tensor<'a>,
    p: Option<Tensor<'a>>,
) -> (Tensor<'a>, Tensor<'a>) {
    match p {
        None => {
            let mu = ctx.mean(z);
            let var = ctx.mean(ctx.sqr(ctx.sub(z, mu)));
            (mu, safe_sqrt(ctx, var))
        }
        Some(p) => {
            let mu = ctx.sum_rows(ctx.mul(p, z));
            let var = ctx.sum_rows(ctx.mul(p, ctx.sqr(ctx.sub(z, mu))));
            (mu, safe_sqrt(ctx, var))
        }
    }
}

fn build<'a>(
    ctx: &'a Context,
    w: &'a TensorStore,
    cfg: &SpeakerEncoderConfig,
    frames: usize,
) -> Vec<Tensor<'a>> {
    let mel = ctx
        .new_tensor(GgmlType::F32, &[frames as i64, cfg.mel_dim as i64])
        .set_name("mel")
        .set_input();
    let mut h = tdnn(ctx, w, "spk.blocks.0.conv", mel, cfg.dilations[0], true);
    let mut outs = Vec::new();
    let blocks = cfg.channels.len() - 2;
    for b in 1..=blocks {
        h = se_res2net(ctx, w, cfg, b, h);
        outs.push(h);
    }
    let mfa_dilation = cfg.dilations[blocks + 1];
    let z = tdnn(
        ctx,
        w,
        "spk.mfa.conv",
        concat_columns(ctx, &outs),
        mfa_dilation,
        true,
    );

    // Attentive statistics pooling.
    let (mu, sd) = statistics(ctx, z, None);
    let a = concat_columns(ctx, &[z, ctx.repeat(mu, z), ctx.repeat(sd, z)]);
    let a = ctx.tanh(tdnn(ctx, w, "spk.asp.tdnn.conv", a, 1, true));
    let a = tdnn(ctx, w, "spk.asp.conv", a, 1, false);
    let attention = ctx.soft_max_ext(a, None, 1.0); // over time, per channel
    let (mu, sd) = statistics(ctx, z, Some(attention));
    let c = mu.ne()[1];
    let pooled = ctx.concat(ctx.reshape(mu, &[c, 1]), ctx.reshape(sd, &[c, 1]), 0); // [2c, 1]
    let xvec = pointwise(ctx, w, "spk.fc", pooled).set_name("xvector");
    vec![xvec]
}

/// GGUF names the speaker encoder reads.
pub fn weight_names(cfg: &SpeakerEncoderConfig) -> Vec<String> {
    let mut stems = vec!["spk.blocks.0.conv".to_string()];
    for b in 1..cfg.channels.len() - 1 {
        let p = format!("spk.blocks.{b}");
        stems.push(format!("{p}.tdnn1.conv"));
        stems.push(format!("{p}.tdnn2.conv"));
        stems.push(format!("{p}.se_block.conv1"));
        stems.push(format!("{p}.se_block.conv2"));
        for i in 0..cfg.res2net_scale - 1 {
            stems.push(format!("{p}.res2net_block.blocks.{i}.conv"));
        }
    }
    for s in [
        "spk.mfa.conv",
        "spk.asp.tdnn.conv",
        "spk.asp.conv",
        "spk.fc",
    ] {
        stems.push(s.to_string());
    }
    stems
        .iter()
        .flat_map(|s| [format!("{s}.weight"), format!("{s}.bias")])
        .collect()
}

/// The loaded speaker encoder.
pub struct SpeakerEncoder {
    weights: Arc<TensorStore>,
    pub config: SpeakerEncoderConfig,
    backend: Arc<Backend>,
}

impl SpeakerEncoder {
    /// Loads the `spk.*` tensors of a Base model file (`None` for models
    /// without a speaker encoder).
    pub fn from_file(file: &GgufFile, backend: Arc<Backend>) -> Result<Option<Self>> {
        let Some(config) = SpeakerEncoderConfig::from_gguf(file)? else {
            return Ok(None);
        };
        for name in weight_names(&config) {
            file.tensor_info(&name)?;
        }
        let weights = load_weights_with(
            file,
            &backend,
            |name| name.starts_with("spk."),
            |name, _| upcast_to_f32(file, name),
        )?;
        Ok(Some(Self {
            weights: Arc::new(weights),
            config,
            backend,
        }))
    }

    /// Log-mel frames of `samples` (mono, at the encoder's sample rate).
    pub fn mel(&self, samples: &[f32]) -> Result<Vec<f32>> {
        log_mel_spectrogram(samples, self.config.sample_rate, self.config.mel_dim)
    }

    /// The x-vector of a reference clip (mono, at the encoder's sample rate).
    pub fn embed(&self, samples: &[f32]) -> Result<Vec<f32>> {
        let mel = self.mel(samples)?;
        self.embed_mel(&mel)
    }

    /// The x-vector from log-mel frames `[T, mel_dim]` (row-major).
    pub fn embed_mel(&self, mel: &[f32]) -> Result<Vec<f32>> {
        let n_mels = self.config.mel_dim;
        let frames = mel.len() / n_mels;
        if frames < MIN_FRAMES || !mel.len().is_multiple_of(n_mels) {
            return Err(Error::Other(format!(
                "speaker encoder: {frames} mel frames; at least {MIN_FRAMES} needed"
            )));
        }
        // The graph takes time fastest: transpose [T, mel] → [mel, T] rows.
        let mut by_channel = vec![0f32; mel.len()];
        for t in 0..frames {
            for m in 0..n_mels {
                by_channel[m * frames + t] = mel[t * n_mels + m];
            }
        }
        let cfg = self.config.clone();
        let nodes = 1024 + cfg.res2net_scale * 64;
        let mut graph = OwnedGraph::build(
            &self.backend,
            nodes,
            vec![self.weights.clone()],
            move |ctx, stores| build(ctx, &stores[0], &cfg, frames),
        );
        graph
            .compute(|g| g.tensor("mel").set_f32(&by_channel))
            .map_err(|e| Error::Other(format!("speaker encoder graph: {e}")))?;
        Ok(graph.tensor("xvector").get_f32())
    }
}
