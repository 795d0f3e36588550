//! `qwen3-tts-run`: text → 24 kHz WAV with a converted Qwen3-TTS model.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::{Duration, Instant};

use anyhow::{bail, Context as _, Result};
use clap::{Parser, ValueEnum};
use indicatif::{ProgressBar, ProgressStyle};
use qwen3_tts::audio;
use qwen3_tts::config::{ModelType, TtsConfig};
use qwen3_tts::model_file::Overwrite;
use qwen3_tts::pipeline::{GenerateOptions, Synthesizer, TtsModel, MAX_REFERENCE_SECONDS};
use qwen3_tts::prompt::{Request, Voice};
use qwen3_tts::voice::VoicePrompt;

#[derive(Clone, Copy, Debug, ValueEnum)]
enum SampleFormat {
    /// 16-bit PCM
    S16,
    /// 32-bit float
    F32,
}

#[derive(Clone, Copy, Debug, ValueEnum)]
enum TextLayout {
    /// The reference API's default for the mode
    Auto,
    /// Text fed alongside the generated frames
    Streaming,
    /// The whole text in the prompt
    NonStreaming,
}

/// Synthesise speech with a Qwen3-TTS model converted by qwen3-tts-convert.
#[derive(Parser, Debug)]
#[command(version, about)]
struct Args {
    /// TTS model file (tts-<type>.gguf)
    #[arg(short = 'm', long = "model")]
    model: PathBuf,
    /// Speech-tokenizer file (tokenizer-<type>.gguf)
    #[arg(short = 't', long = "tokenizer")]
    tokenizer: Option<PathBuf>,
    /// Text to speak
    #[arg(long, conflicts_with = "text_file")]
    text: Option<String>,
    /// Read the text to speak from a UTF-8 file
    #[arg(long)]
    text_file: Option<PathBuf>,
    /// Output WAV file, or "-" for standard output
    #[arg(short = 'o', long = "output", default_value = "out.wav")]
    output: PathBuf,
    /// Replace an existing output file
    #[arg(long)]
    force: bool,
    /// Sample format of the WAV file
    #[arg(long, value_enum, default_value = "s16")]
    format: SampleFormat,

    /// Preset speaker (CustomVoice models; see --list-voices)
    #[arg(long)]
    speaker: Option<String>,
    /// Language name, or "auto"
    #[arg(long, default_value = "auto")]
    language: String,
    /// Style instruction (1.7B CustomVoice, VoiceDesign)
    #[arg(long)]
    instruct: Option<String>,
    /// Reference recording to clone (Base models)
    #[arg(long)]
    ref_audio: Option<PathBuf>,
    /// Transcript of --ref-audio (in-context cloning)
    #[arg(long, requires = "ref_audio")]
    ref_text: Option<String>,
    /// Clone from the speaker embedding only, even with --ref-text / a voice with codes
    #[arg(long)]
    x_vector_only: bool,
    /// Use a voice saved with --save-voice (instead of --ref-audio)
    #[arg(long, conflicts_with = "ref_audio")]
    voice: Option<PathBuf>,
    /// Save the voice cloned from --ref-audio to this file (.qvoice) for --voice
    #[arg(long, requires = "ref_audio")]
    save_voice: Option<PathBuf>,
    /// How the text is laid out in the prompt
    #[arg(long, value_enum, default_value = "auto")]
    text_layout: TextLayout,
    /// Print the model's speakers and languages and exit
    #[arg(long)]
    list_voices: bool,

    /// Talker sampling temperature [model default]
    #[arg(long)]
    temperature: Option<f32>,
    /// Talker top-k (0 = off) [model default]
    #[arg(long)]
    top_k: Option<usize>,
    /// Talker top-p (1 = off) [model default]
    #[arg(long)]
    top_p: Option<f32>,
    /// Repetition penalty on codebook 0 (1 = off) [model default]
    #[arg(long)]
    repetition_penalty: Option<f32>,
    /// Greedy decoding for the talker and the sub-talker
    #[arg(long)]
    greedy: bool,
    /// Sub-talker (code predictor) temperature [model default]
    #[arg(long)]
    subtalker_temperature: Option<f32>,
    /// Sub-talker top-k [model default]
    #[arg(long)]
    subtalker_top_k: Option<usize>,
    /// Sub-talker top-p [model default]
    #[arg(long)]
    subtalker_top_p: Option<f32>,
    /// Greedy decoding for the sub-talker only
    #[arg(long)]
    subtalker_greedy: bool,
    /// Random seed [random; printed in the summary]
    #[arg(long)]
    seed: Option<u64>,
    /// Stop after this many frames (80 ms each) [model default]
    #[arg(long)]
    max_frames: Option<usize>,
    /// Do not stop before this many frames
    #[arg(long, default_value_t = 1)]
    min_frames: usize,
    /// CPU threads [physical cores]
    #[arg(long)]
    threads: Option<usize>,
    /// No progress bar or summary
    #[arg(short, long)]
    quiet: bool,
}

fn main() -> ExitCode {
    let args = Args::parse();
    match run(&args) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("qwen3-tts-run: error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

/// Where the WAV goes: a temporary file next to the output, renamed into
/// place only once it is complete, or standard output.
enum Sink {
    File {
        temp: tempfile::NamedTempFile,
        path: PathBuf,
    },
    Stdout,
}

impl Sink {
    /// Checks the output can be written before any work is done.
    fn open(path: &Path, force: bool) -> Result<Self> {
        if path == Path::new("-") {
            return Ok(Sink::Stdout);
        }
        if path.is_dir() {
            bail!("output {}: is a directory", path.display());
        }
        if path.exists() && !force {
            bail!(
                "output {} exists (pass --force to replace it)",
                path.display()
            );
        }
        let dir = match path.parent() {
            Some(d) if !d.as_os_str().is_empty() => d,
            _ => Path::new("."),
        };
        let mut builder = tempfile::Builder::new();
        builder.prefix(".qwen3-tts-run-").suffix(".wav.part");
        // A normal file once renamed (tempfile's default is owner-only).
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            builder.permissions(std::fs::Permissions::from_mode(0o644));
        }
        let temp = builder.tempfile_in(dir).with_context(|| {
            format!(
                "output {}: cannot write in {}",
                path.display(),
                dir.display()
            )
        })?;
        Ok(Sink::File {
            temp,
            path: path.to_path_buf(),
        })
    }

    fn finish(self, wav: &[u8], force: bool) -> Result<()> {
        match self {
            Sink::Stdout => {
                let mut out = std::io::stdout().lock();
                out.write_all(wav)
                    .and_then(|_| out.flush())
                    .context("writing to standard output")
            }
            Sink::File { mut temp, path } => {
                temp.write_all(wav)
                    .and_then(|_| temp.as_file().sync_all())
                    .with_context(|| format!("writing {}", path.display()))?;
                let persisted = if force {
                    temp.persist(&path).map(|_| ())
                } else {
                    temp.persist_noclobber(&path).map(|_| ())
                };
                persisted.map_err(|e| anyhow::anyhow!("output {}: {}", path.display(), e.error))
            }
        }
    }
}

fn wav_bytes(samples: &[f32], sample_rate: u32, format: SampleFormat) -> Result<Vec<u8>> {
    let (bits, sample_format) = match format {
        SampleFormat::S16 => (16, hound::SampleFormat::Int),
        SampleFormat::F32 => (32, hound::SampleFormat::Float),
    };
    let spec = hound::WavSpec {
        channels: 1,
        sample_rate,
        bits_per_sample: bits,
        sample_format,
    };
    let mut cursor = std::io::Cursor::new(Vec::new());
    {
        let mut w = hound::WavWriter::new(&mut cursor, spec)?;
        for &s in samples {
            match format {
                SampleFormat::S16 => {
                    w.write_sample((s.clamp(-1.0, 1.0) * 32767.0).round() as i16)?
                }
                SampleFormat::F32 => w.write_sample(s)?,
            }
        }
        w.finalize()?;
    }
    Ok(cursor.into_inner())
}

fn text(args: &Args) -> Result<String> {
    match (&args.text, &args.text_file) {
        (Some(t), None) => Ok(t.clone()),
        (None, Some(f)) => std::fs::read_to_string(f)
            .with_context(|| format!("--text-file {}", f.display()))
            .map(|t| t.trim_end_matches(['\n', '\r']).to_string()),
        _ => bail!("give the text with --text TEXT or --text-file FILE"),
    }
}

fn options(args: &Args, synth: &Synthesizer) -> Result<GenerateOptions> {
    let mut o = GenerateOptions::from_config(&synth.model.config);
    if let Some(v) = args.temperature {
        o.talker.temperature = v;
    }
    if let Some(v) = args.top_k {
        o.talker.top_k = v;
    }
    if let Some(v) = args.top_p {
        o.talker.top_p = v;
    }
    if let Some(v) = args.subtalker_temperature {
        o.subtalker.temperature = v;
    }
    if let Some(v) = args.subtalker_top_k {
        o.subtalker.top_k = v;
    }
    if let Some(v) = args.subtalker_top_p {
        o.subtalker.top_p = v;
    }
    if args.greedy {
        o = o.greedy();
    }
    if args.subtalker_greedy {
        o.subtalker.do_sample = false;
    }
    if let Some(v) = args.repetition_penalty {
        o.repetition_penalty = v;
    }
    // The talker samples one token more than it makes frames (the last one
    // is EOS or the cut-off), as in the reference.
    if let Some(f) = args.max_frames {
        if f == 0 {
            bail!("--max-frames must be at least 1");
        }
        o.max_new_tokens = f + 1;
    }
    o.min_new_tokens = (args.min_frames + 1).max(o.min_new_tokens);
    if o.min_new_tokens > o.max_new_tokens {
        bail!(
            "--min-frames {} is more than the {} frames allowed (--max-frames)",
            args.min_frames,
            o.max_new_tokens - 1
        );
    }
    o.seed = args.seed.unwrap_or_else(|| {
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos() as u64)
    });
    Ok(o)
}

/// The cloned voice of --ref-audio or --voice, if any (saving it when asked).
fn cloned_voice(args: &Args, synth: &mut Synthesizer) -> Result<Option<VoicePrompt>> {
    if let Some(path) = &args.voice {
        let v = VoicePrompt::load(path)?;
        v.check_model(&synth.model.config, path)?;
        return Ok(Some(v));
    }
    let Some(path) = &args.ref_audio else {
        return Ok(None);
    };
    if args.speaker.is_some() {
        bail!("--speaker and --ref-audio exclude each other (presets or a cloned voice)");
    }
    let rate = match &synth.model.speaker_encoder {
        Some(e) => e.config.sample_rate,
        None => bail!(
            "--ref-audio: this {:?} model cannot clone voices (use a Base model)",
            synth.model.config.model_type
        ),
    };
    // Decoding stops at the limit, so a long file costs no more memory.
    let audio = audio::load_resampled_with_limit(path, rate, MAX_REFERENCE_SECONDS)?;
    let ref_text = if args.x_vector_only {
        None
    } else {
        args.ref_text.as_deref()
    };
    let voice = synth
        .clone_voice(&audio.samples, ref_text)
        .with_context(|| format!("--ref-audio {}", path.display()))?;
    if let Some(out) = &args.save_voice {
        let overwrite = if args.force {
            Overwrite::Replace
        } else {
            Overwrite::Refuse
        };
        voice.save(out, overwrite)?;
    }
    Ok(Some(voice))
}

fn request(args: &Args, synth: &Synthesizer, cloned: Option<&VoicePrompt>) -> Result<Request> {
    let cfg = &synth.model.config;
    let voice = match (&args.speaker, cfg.model_type) {
        _ if cloned.is_some() => cloned.expect("checked").voice(args.x_vector_only),
        (Some(s), _) => Voice::Speaker(s.clone()),
        (None, ModelType::CustomVoice) => {
            let names: Vec<&str> = cfg.speakers.iter().map(|s| s.name.as_str()).collect();
            bail!(
                "this CustomVoice model needs --speaker (one of: {})",
                names.join(", ")
            );
        }
        (None, ModelType::Base) => {
            bail!("this Base model clones a voice: give --ref-audio FILE (and --ref-text) or --voice FILE")
        }
        (None, ModelType::VoiceDesign) => Voice::None,
    };
    Ok(Request {
        text: text(args)?,
        language: args.language.clone(),
        voice,
        instruct: args.instruct.clone(),
        non_streaming: match args.text_layout {
            TextLayout::Auto => None,
            TextLayout::Streaming => Some(false),
            TextLayout::NonStreaming => Some(true),
        },
    })
}

fn list_voices(cfg: &TtsConfig) {
    println!("model type: {:?} ({})", cfg.model_type, cfg.model_size);
    println!("languages: {}", cfg.supported_languages().join(", "));
    for s in &cfg.speakers {
        match &s.dialect {
            Some(d) => println!("speaker: {} (dialect: {d})", s.name),
            None => println!("speaker: {}", s.name),
        }
    }
}

fn run(args: &Args) -> Result<()> {
    let threads = args
        .threads
        .unwrap_or_else(qwen3_tts::pipeline::default_threads);
    if threads == 0 {
        bail!("--threads must be at least 1");
    }
    if args.list_voices {
        let model = TtsModel::load(&args.model)?;
        list_voices(&model.config);
        return Ok(());
    }
    let Some(tokenizer) = &args.tokenizer else {
        bail!("the speech tokenizer is needed: -t tokenizer-<type>.gguf");
    };
    // `--save-voice` without a text only makes the voice file.
    let only_save = args.save_voice.is_some() && args.text.is_none() && args.text_file.is_none();
    // Fail on the outputs before the slow part.
    if let Some(v) = &args.save_voice {
        if v.exists() && !args.force {
            bail!(
                "--save-voice {} exists (pass --force to replace it)",
                v.display()
            );
        }
    }
    let sink = if only_save {
        None
    } else {
        Some(Sink::open(&args.output, args.force)?)
    };
    let started = Instant::now();
    let mut synth = Synthesizer::load(&args.model, tokenizer, threads)?;
    let load_s = started.elapsed().as_secs_f64();
    let cloned = cloned_voice(args, &mut synth)?;
    let Some(sink) = sink else {
        if !args.quiet {
            let v = args.save_voice.as_ref().expect("only_save");
            eprintln!("saved the voice to {}", v.display());
        }
        return Ok(());
    };
    let req = request(args, &synth, cloned.as_ref())?;
    let opts = options(args, &synth)?;

    let bar = if args.quiet {
        ProgressBar::hidden()
    } else {
        let b = ProgressBar::new_spinner();
        b.set_style(
            ProgressStyle::with_template("{spinner} {pos} frames ({msg}) {elapsed}")
                .expect("valid template"),
        );
        b.enable_steady_tick(Duration::from_millis(200));
        b
    };
    let gen_start = Instant::now();
    let result = synth.synthesize(&req, &opts, |p| {
        let qwen3_tts::pipeline::Progress::Frames(n) = p else {
            bar.set_message("vocoding");
            return;
        };
        let secs = gen_start.elapsed().as_secs_f64();
        bar.set_position(n as u64);
        bar.set_message(format!(
            "{:.1} frames/s, {:.2} s of audio",
            n as f64 / secs.max(1e-9),
            n as f64 * 0.08
        ));
    });
    bar.finish_and_clear();
    let out = result?;
    let wav = wav_bytes(&out.samples, out.sample_rate, args.format)?;
    sink.finish(&wav, args.force)?;
    if !args.quiet {
        let wall = started.elapsed().as_secs_f64();
        let synth_s = wall - load_s;
        let audio = out.seconds();
        let t = out.timings;
        eprintln!(
            "{}: {audio:.2} s of audio ({} frames) in {wall:.2} s wall (load {load_s:.2} s, \
             prompt {:.2} s, generate {:.2} s = {:.1} frames/s, vocoder {:.2} s); \
             RTF {:.3} ({:.3} without load); seed {}",
            if args.output == Path::new("-") {
                "stdout".to_string()
            } else {
                args.output.display().to_string()
            },
            out.frames.len(),
            t.prompt,
            t.generate,
            out.frames.len() as f64 / t.generate.max(1e-9),
            t.vocode,
            wall / audio.max(1e-9),
            synth_s / audio.max(1e-9),
            opts.seed
        );
    }
    Ok(())
}
