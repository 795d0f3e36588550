//! `qwen3-tts-run`: text → 24 kHz WAV with a converted Qwen3-TTS model.

use std::io::{IsTerminal, Write};
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use anyhow::{anyhow, bail, Context as _, Result};
use clap::{Parser, ValueEnum};
use indicatif::{ProgressBar, ProgressStyle};
use qwen3_tts::audio;
use qwen3_tts::config::{ModelType, TtsConfig};
use qwen3_tts::ggml::device::{self, DeviceChoice};
use qwen3_tts::gguf_schema::ARCH_TTS;
use qwen3_tts::long_text::{split_text, LongEvent, TextPart, DEFAULT_MAX_PART};
use qwen3_tts::model_file::{GgufFile, Overwrite};
use qwen3_tts::pipeline::{
    GenerateOptions, Progress, Stop, StreamOptions, Synthesizer, Timings, FRAMES_PER_SECOND,
    MAX_REFERENCE_SECONDS,
};
use qwen3_tts::prompt::{Request, Voice};
use qwen3_tts::threads::MAX_THREADS;
use qwen3_tts::voice::VoicePrompt;
use qwen3_tts_cli::audio_out::{self, AudioWriter, Encoding};

#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
enum OutputFormat {
    /// 16-bit PCM WAV
    S16,
    /// 32-bit float WAV
    F32,
    /// Raw 16-bit little-endian PCM, no header (24 kHz mono)
    Pcm,
}

impl From<OutputFormat> for Encoding {
    fn from(f: OutputFormat) -> Self {
        match f {
            OutputFormat::S16 => Encoding::Wav(audio::SampleFormat::S16),
            OutputFormat::F32 => Encoding::Wav(audio::SampleFormat::F32),
            OutputFormat::Pcm => Encoding::RawS16,
        }
    }
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

const EXAMPLES: &str = "\
Which flags go with which model type:
  CustomVoice  a preset speaker: --speaker NAME (see --list-voices); 1.7B also takes --instruct
  Base         a cloned voice: --ref-audio FILE [--ref-text TRANSCRIPT] [--x-vector-only], or --voice FILE.qvoice
  VoiceDesign  a described voice: --instruct DESCRIPTION

Examples:
  qwen3-tts-run -m models/tts-q8_0.gguf --list-voices
  qwen3-tts-run -m models/tts-q8_0.gguf -t models/tokenizer-f16.gguf \\
      --speaker ryan --language english --text \"Hello there!\" -o out.wav
  qwen3-tts-run -m tts-0.6b-base-q8_0.gguf -t tokenizer-f16.gguf \\
      --ref-audio me.wav --ref-text \"What I say in me.wav.\" --text \"Something new.\" -o new.wav
  qwen3-tts-run -m tts-0.6b-base-q8_0.gguf -t tokenizer-f16.gguf --voice me.qvoice --text \"Hi.\" -o hi.wav
  qwen3-tts-run -m tts-1.7b-voicedesign.gguf -t tokenizer-f16.gguf \\
      --instruct \"A warm, calm narrator\" --text-file story.txt -o - > story.wav
  qwen3-tts-run -m models/tts-q8_0.gguf -t models/tokenizer-f16.gguf --speaker ryan \\
      --text \"Hello there!\" --stream --format pcm -o - | aplay -f S16_LE -r 24000 -c 1";

/// Synthesise speech with a Qwen3-TTS model converted by qwen3-tts-convert.
#[derive(Parser, Debug)]
#[command(version, about, after_help = EXAMPLES)]
struct Args {
    /// TTS model file (tts-<type>.gguf)
    #[arg(short = 'm', long = "model", required_unless_present = "list_devices")]
    model: Option<PathBuf>,
    /// Speech-tokenizer file (tokenizer-<type>.gguf)
    #[arg(short = 't', long = "tokenizer")]
    tokenizer: Option<PathBuf>,
    /// Text to speak
    #[arg(long, conflicts_with = "text_file")]
    text: Option<String>,
    /// Read the text to speak from a UTF-8 file
    #[arg(long)]
    text_file: Option<PathBuf>,
    /// Output file, or "-" for standard output (not a terminal)
    #[arg(short = 'o', long = "output", default_value = "out.wav")]
    output: PathBuf,
    /// Replace an existing output file
    #[arg(long)]
    force: bool,
    /// Output format: a WAV file of 16-bit or float samples, or raw PCM
    #[arg(long, value_enum, default_value = "s16")]
    format: OutputFormat,
    /// Write the audio while it is generated (to standard output: an
    /// open-ended WAV header, or raw PCM with --format pcm)
    #[arg(long)]
    stream: bool,
    /// Frames (80 ms each) before the first streamed chunk
    #[arg(long, requires = "stream", default_value_t = StreamOptions::default().first_chunk_frames)]
    first_chunk_frames: usize,
    /// Frames per later streamed chunk
    #[arg(long, requires = "stream", default_value_t = StreamOptions::default().chunk_frames)]
    chunk_frames: usize,
    /// Streaming: run the vocoder on its own N threads, concurrently with
    /// generation (0: interleaved on the generation's threads) [0]
    #[arg(long, requires = "stream")]
    vocoder_threads: Option<usize>,

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
    /// Compute device: auto, cpu, vulkan[:N], cuda[:N] or metal (auto: a
    /// hardware GPU when this build has a GPU backend and the machine one,
    /// else the CPU)
    #[arg(long, default_value = "auto", value_parser = parse_device)]
    device: DeviceChoice,
    /// Print the devices this build and machine offer and exit
    #[arg(long)]
    list_devices: bool,

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
    /// A text longer than this is spoken in parts, cut at sentence ends
    /// (characters; a CJK character counts 3; 0: never cut)
    #[arg(long, default_value_t = DEFAULT_MAX_PART)]
    max_part_chars: usize,
    /// Stop after this many frames (80 ms each; for each part of a long
    /// text) [the model's limit, and the runaway guard's bound for the
    /// text: 5 s + 1 s per text token]
    #[arg(long)]
    max_frames: Option<usize>,
    /// Do not stop before this many frames
    #[arg(long, default_value_t = 1)]
    min_frames: usize,
    /// CPU threads [physical cores, fewer while other processes keep cores busy]
    #[arg(long)]
    threads: Option<usize>,
    /// Talker KV cache type: f32 or f16 (half the cache's memory) [f32]
    #[arg(long, value_parser = qwen3_tts::talker::parse_kv_type)]
    kv_cache: Option<qwen3_tts::ggml::GgmlType>,
    /// No progress bar or summary
    #[arg(short, long)]
    quiet: bool,
}

/// The temporary output file, removed by the Ctrl-C / SIGTERM handler.
static TEMP_OUTPUT: Mutex<Option<PathBuf>> = Mutex::new(None);

/// Exit status after an interrupt (128 + SIGINT), as shells report it.
const INTERRUPTED: i32 = 130;

fn main() -> ExitCode {
    let process_start = Instant::now();
    let args = Args::parse();
    let handler = ctrlc::set_handler(|| {
        // Holding the lock also waits for a rename in progress to finish.
        let temp = TEMP_OUTPUT.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(path) = temp.as_ref() {
            let _ = std::fs::remove_file(path);
        }
        eprintln!("\nqwen3-tts-run: interrupted");
        // Not `process::exit`: other threads may be inside ggml.
        qwen3_tts::ggml::exit_immediately(INTERRUPTED);
    });
    if let Err(e) = handler {
        eprintln!(
            "qwen3-tts-run: warning: no interrupt handler ({e}); Ctrl-C may leave a temporary file"
        );
    }
    match run(&args, process_start) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("qwen3-tts-run: error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

/// Where the audio goes: a temporary file next to the output, renamed into
/// place only once it is complete, or standard output.
enum Sink {
    File {
        temp: tempfile::NamedTempFile,
        path: PathBuf,
    },
    Stdout,
}

impl Sink {
    /// Checks the output can be written before any work is done; binary
    /// audio is not written to a terminal.
    fn open(path: &Path, force: bool, encoding: Encoding) -> Result<Self> {
        if path == Path::new("-") {
            if std::io::stdout().is_terminal() {
                bail!(
                    "-o -: standard output is a terminal, and the audio is binary; \
                     write it to a file (-o FILE) or pipe it to a program (-o - | aplay, ffplay -, …)"
                );
            }
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
        builder.prefix(".qwen3-tts-run-").suffix(match encoding {
            Encoding::Wav(_) => ".wav.part",
            Encoding::RawS16 => ".pcm.part",
        });
        // A normal file once renamed (tempfile's default is owner-only).
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            builder.permissions(std::fs::Permissions::from_mode(0o644));
        }
        let mut registered = TEMP_OUTPUT.lock().unwrap_or_else(|e| e.into_inner());
        let temp = builder.tempfile_in(dir).with_context(|| {
            format!(
                "output {}: cannot write in {}",
                path.display(),
                dir.display()
            )
        })?;
        *registered = Some(temp.path().to_path_buf());
        Ok(Sink::File {
            temp,
            path: path.to_path_buf(),
        })
    }

    /// Writes the whole of `bytes` and finishes.
    fn finish(self, bytes: &[u8], force: bool) -> Result<()> {
        match self {
            Sink::Stdout => {
                let mut out = std::io::stdout().lock();
                out.write_all(bytes)
                    .and_then(|_| out.flush())
                    .context("writing to standard output")
            }
            Sink::File { mut temp, path } => {
                temp.write_all(bytes)
                    .with_context(|| format!("writing {}", path.display()))?;
                persist(temp, &path, force)
            }
        }
    }

    /// Starts writing a stream of audio (a WAV header with sizes to come,
    /// or nothing for raw PCM).
    fn start_stream(self, sample_rate: u32, encoding: Encoding) -> Result<StreamSink> {
        Ok(match self {
            Sink::Stdout => StreamSink::Stdout(
                AudioWriter::new(std::io::stdout().lock(), sample_rate, encoding)
                    .context("writing to standard output")?,
            ),
            Sink::File { temp, path } => StreamSink::File {
                writer: AudioWriter::new(temp, sample_rate, encoding)
                    .with_context(|| format!("writing {}", path.display()))?,
                path,
            },
        })
    }
}

/// Syncs the complete temporary file and renames it to `path`.
fn persist(temp: tempfile::NamedTempFile, path: &Path, force: bool) -> Result<()> {
    temp.as_file()
        .sync_all()
        .with_context(|| format!("writing {}", path.display()))?;
    let mut registered = TEMP_OUTPUT.lock().unwrap_or_else(|e| e.into_inner());
    let persisted = if force {
        temp.persist(path).map(|_| ())
    } else {
        temp.persist_noclobber(path).map(|_| ())
    };
    // Renamed, or removed when the error drops the temporary file.
    *registered = None;
    persisted.map_err(|e| anyhow::anyhow!("output {}: {}", path.display(), e.error))
}

/// A [`Sink`] that audio is being streamed to.
enum StreamSink {
    File {
        writer: AudioWriter<tempfile::NamedTempFile>,
        path: PathBuf,
    },
    /// An open-ended WAV or raw PCM, flushed after every chunk.
    Stdout(AudioWriter<std::io::StdoutLock<'static>>),
}

impl StreamSink {
    fn write(&mut self, samples: &[f32]) -> qwen3_tts::Result<()> {
        match self {
            StreamSink::File { writer, path } => writer
                .write(samples)
                .map_err(|e| qwen3_tts::Error::io(path.clone(), e)),
            StreamSink::Stdout(w) => w
                .write(samples)
                .and_then(|_| w.flush())
                .map_err(|e| qwen3_tts::Error::io("standard output", e)),
        }
    }

    /// Patches the WAV sizes in and renames the file into place.
    fn finish(self, force: bool) -> Result<()> {
        match self {
            StreamSink::File { writer, path } => {
                let temp = writer
                    .finish()
                    .with_context(|| format!("writing {}", path.display()))?;
                persist(temp, &path, force)
            }
            StreamSink::Stdout(mut w) => w.flush().context("writing to standard output"),
        }
    }
}

/// No output may replace one of the run's input files, not even with
/// --force (a model or a recording is not something to lose to a typo).
fn refuse_outputs_over_inputs(args: &Args, tokenizer: &Path, only_save: bool) -> Result<()> {
    let inputs = [
        ("-m", args.model.as_deref()),
        ("-t", Some(tokenizer)),
        ("--text-file", args.text_file.as_deref()),
        ("--ref-audio", args.ref_audio.as_deref()),
        ("--voice", args.voice.as_deref()),
    ];
    let output = (!only_save && args.output != Path::new("-")).then_some(args.output.as_path());
    let outputs = [("-o", output), ("--save-voice", args.save_voice.as_deref())];
    for (out_flag, out) in outputs {
        // Only an existing file can be one of the inputs.
        let Some(out_real) = out.and_then(|p| std::fs::canonicalize(p).ok()) else {
            continue;
        };
        for (in_flag, input) in inputs {
            let same = input
                .and_then(|p| std::fs::canonicalize(p).ok())
                .is_some_and(|p| p == out_real);
            if same {
                bail!(
                    "{out_flag} {} is the file given with {in_flag}: refusing to overwrite an input",
                    out.expect("canonicalized").display()
                );
            }
        }
    }
    Ok(())
}

/// The text to speak; text with nothing to say (empty, whitespace, only
/// control or invisible format characters) is refused.
fn text(args: &Args) -> Result<String> {
    let text = match (&args.text, &args.text_file) {
        (Some(t), None) => t.clone(),
        (None, Some(f)) => std::fs::read_to_string(f)
            .with_context(|| format!("--text-file {}", f.display()))
            .map(|t| t.trim_end_matches(['\n', '\r']).to_string())?,
        _ => bail!("give the text with --text TEXT or --text-file FILE"),
    };
    if !qwen3_tts::prompt::has_speech(&text) {
        match &args.text_file {
            Some(f) => bail!(
                "--text-file {}: there is no text to speak (empty, or only whitespace and control characters)",
                f.display()
            ),
            None => bail!(
                "--text: there is no text to speak (empty, or only whitespace and control characters)"
            ),
        }
    }
    Ok(text)
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
        o.set_max_new_tokens(f + 1);
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

fn request(
    args: &Args,
    text: String,
    synth: &Synthesizer,
    cloned: Option<&VoicePrompt>,
) -> Result<Request> {
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
        text,
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

/// `-m` (clap requires it unless `--list-devices`).
fn model_path(args: &Args) -> &Path {
    args.model.as_deref().expect("clap requires -m")
}

fn parse_device(s: &str) -> std::result::Result<DeviceChoice, String> {
    s.parse()
}

fn run(args: &Args, process_start: Instant) -> Result<()> {
    if args.list_devices {
        print!("{}", device::listing());
        return Ok(());
    }
    let device = device::resolve(args.device).map_err(|e| anyhow!(e))?;
    // 0 asks the library for adaptive threading (see qwen3_tts::threads).
    let threads = args.threads.unwrap_or(0);
    if let Some(n) = args.threads {
        if !(1..=MAX_THREADS).contains(&n) {
            bail!("--threads must be 1 to {MAX_THREADS}, got {n}");
        }
    }
    if args.first_chunk_frames == 0 {
        bail!("--first-chunk-frames must be at least 1");
    }
    if args.chunk_frames == 0 {
        bail!("--chunk-frames must be at least 1");
    }
    if args.list_voices {
        // The metadata is enough: no weights are loaded.
        let file = GgufFile::open_arch(model_path(args), ARCH_TTS)?;
        list_voices(&TtsConfig::from_gguf(&file)?);
        return Ok(());
    }
    let Some(tokenizer) = &args.tokenizer else {
        bail!("the speech tokenizer is needed: -t tokenizer-<type>.gguf");
    };
    // `--save-voice` without a text only makes the voice file.
    let only_save = args.save_voice.is_some() && args.text.is_none() && args.text_file.is_none();
    // Fail on the outputs before the slow part.
    refuse_outputs_over_inputs(args, tokenizer, only_save)?;
    if let Some(v) = &args.save_voice {
        if v.exists() && !args.force {
            bail!(
                "--save-voice {} exists (pass --force to replace it)",
                v.display()
            );
        }
    }
    // The text is checked before the model is loaded.
    let text = if only_save { None } else { Some(text(args)?) };
    let sink = if only_save {
        None
    } else {
        Some(Sink::open(&args.output, args.force, args.format.into())?)
    };
    let status = Status::new(args.quiet);
    status.stage("loading…");
    let started = Instant::now();
    let mut synth = Synthesizer::load_on(model_path(args), tokenizer, threads, device.as_ref())?;
    if let Some(ty) = args.kv_cache {
        synth.session().set_kv_type(ty)?;
    }
    if let Some(n) = args.vocoder_threads {
        synth.set_vocoder_threads(n);
    }
    let load_s = started.elapsed().as_secs_f64();
    let cloned = cloned_voice(args, &mut synth)?;
    let Some(sink) = sink else {
        if !args.quiet {
            let v = args.save_voice.as_ref().expect("only_save");
            eprintln!("saved the voice to {}", v.display());
        }
        return Ok(());
    };
    let req = request(args, text.expect("not only_save"), &synth, cloned.as_ref())?;
    let opts = options(args, &synth)?;
    let parts = split_text(&req.text, args.max_part_chars);
    if args.stream || parts.len() > 1 {
        let t = Times {
            process_start,
            started,
            load_s,
        };
        return write_as_it_comes(args, &mut synth, &req, &opts, &parts, sink, &status, t);
    }

    status.stage("generating…");
    let gen_start = Instant::now();
    let mut frames = 0;
    let result = synth.synthesize(&req, &opts, |p| match p {
        Progress::Frames(n) => {
            frames = n;
            status.frames(n, gen_start.elapsed().as_secs_f64());
        }
        Progress::Vocoding => {
            status.done_line(&format!(
                "generated {frames} frames in {:.2} s",
                gen_start.elapsed().as_secs_f64()
            ));
            status.stage("vocoding…");
        }
    });
    status.finish();
    let out = result?;
    let bytes = match args.format.into() {
        Encoding::Wav(f) => audio::encode_wav(&out.samples, out.sample_rate, f)?,
        e @ Encoding::RawS16 => {
            audio_out::encode(&out.samples, out.sample_rate, e).context("encoding the audio")?
        }
    };
    sink.finish(&bytes, args.force)?;
    warn_if_runaway(out.stop, out.frames.len());
    if !args.quiet {
        let wall = started.elapsed().as_secs_f64();
        eprintln!(
            "{}",
            summary_line(
                args,
                &Figures {
                    audio: out.seconds(),
                    frames: out.frames.len(),
                    wall,
                    load_s,
                    timings: out.timings,
                    first_audio: None,
                    seed: opts.seed,
                    device: synth.device(),
                }
            )
        );
    }
    Ok(())
}

/// A generation the runaway guard stopped is shown even with --quiet: the
/// audio likely ends in babble or silence.
fn warn_if_runaway(stop: Stop, frames: usize) {
    if stop == Stop::RunawayGuard {
        eprintln!(
            "qwen3-tts-run: warning: the model did not end its speech; stopped at {frames} frames \
             ({:.1} s), the most this text should take (--max-frames sets another limit)",
            frames as f64 / FRAMES_PER_SECOND
        );
    }
}

/// When the run started, and how long loading took.
struct Times {
    process_start: Instant,
    /// Just before loading.
    started: Instant,
    load_s: f64,
}

/// `--stream`, or a text of several parts: the audio is written as it
/// comes (each chunk when streaming, each part otherwise), so that memory
/// stays that of one part however long the text.
#[allow(clippy::too_many_arguments)]
fn write_as_it_comes(
    args: &Args,
    synth: &mut Synthesizer,
    req: &Request,
    opts: &GenerateOptions,
    parts: &[TextPart],
    sink: Sink,
    status: &Status,
    t: Times,
) -> Result<()> {
    let chunks = StreamOptions {
        first_chunk_frames: args.first_chunk_frames,
        chunk_frames: args.chunk_frames,
    };
    let stream = args.stream.then_some(&chunks);
    let rate = synth.vocoder.sample_rate();
    let mut out = sink.start_stream(rate, args.format.into())?;
    status.stage(if args.stream {
        "generating (streaming)…"
    } else {
        "generating…"
    });
    let call = Instant::now();
    let mut written = 0;
    let mut part_start = call;
    let result = synth.synthesize_long(req, opts, parts, stream, |event| {
        match event {
            LongEvent::Part { index, count, text } if count > 1 => {
                part_start = Instant::now();
                status.done_line(&format!(
                    "part {}/{count}: {}",
                    index + 1,
                    excerpt(text, 60)
                ));
            }
            LongEvent::Part { .. } => {}
            LongEvent::Frames(n) => status.frames(n, part_start.elapsed().as_secs_f64()),
            LongEvent::Audio(chunk) => {
                out.write(chunk.samples)?;
                if written == 0 && !chunk.samples.is_empty() && args.stream {
                    status.done_line(&format!(
                        "first audio after {:.2} s ({:.2} s from start)",
                        call.elapsed().as_secs_f64(),
                        t.process_start.elapsed().as_secs_f64()
                    ));
                }
                written += chunk.samples.len();
                status.streamed(
                    chunk.frames,
                    written as f64 / rate as f64,
                    part_start.elapsed().as_secs_f64(),
                );
            }
        }
        Ok(())
    });
    status.finish();
    let summary = result?;
    out.finish(args.force)?;
    for (i, part) in summary.parts.iter().enumerate() {
        if part.stop == Stop::RunawayGuard && summary.parts.len() > 1 {
            eprint!("part {}/{}: ", i + 1, summary.parts.len());
        }
        warn_if_runaway(part.stop, part.frames);
    }
    if !args.quiet {
        let wall = t.started.elapsed().as_secs_f64();
        let first = summary.first_audio;
        let parts = match summary.parts.len() {
            1 => String::new(),
            n => format!(" in {n} parts"),
        };
        eprintln!(
            "{}{parts}",
            summary_line(
                args,
                &Figures {
                    audio: summary.samples as f64 / summary.sample_rate as f64,
                    frames: summary.frames(),
                    wall,
                    load_s: t.load_s,
                    timings: summary.timings,
                    first_audio: args
                        .stream
                        .then(|| (first, (call - t.process_start).as_secs_f64() + first)),
                    seed: opts.seed,
                    device: synth.device(),
                }
            )
        );
    }
    Ok(())
}

/// The start of `text`, at most `n` characters, for a progress line.
fn excerpt(text: &str, n: usize) -> String {
    match text.char_indices().nth(n) {
        Some((cut, _)) => format!("{}…", &text[..cut]),
        None => text.to_string(),
    }
}

/// What the summary line reports.
struct Figures {
    /// Seconds of audio.
    audio: f64,
    frames: usize,
    wall: f64,
    load_s: f64,
    timings: Timings,
    /// Streaming: seconds to the first audio from the request and from the
    /// start of the process.
    first_audio: Option<(f64, f64)>,
    seed: u64,
    device: String,
}

fn summary_line(args: &Args, f: &Figures) -> String {
    let synth_s = f.wall - f.load_s;
    let t = f.timings;
    let first = match f.first_audio {
        Some((req, start)) => {
            format!("first audio after {req:.2} s ({start:.2} s from start); ")
        }
        None => String::new(),
    };
    format!(
        "{}: {:.2} s of audio ({} frames) in {:.2} s wall (load {:.2} s, \
         prompt {:.2} s, generate {:.2} s = {:.1} frames/s, vocoder {:.2} s); \
         {first}RTF {:.3} ({:.3} without load); seed {}; device {}",
        if args.output == Path::new("-") {
            "stdout".to_string()
        } else {
            args.output.display().to_string()
        },
        f.audio,
        f.frames,
        f.wall,
        f.load_s,
        t.prompt,
        t.generate,
        f.frames as f64 / t.generate.max(1e-9),
        t.vocode,
        f.wall / f.audio.max(1e-9),
        synth_s / f.audio.max(1e-9),
        f.seed,
        f.device
    )
}

/// What the run is doing, on stderr: a spinner with the stage and the frame
/// rate on a terminal, otherwise one plain line per stage.
struct Status {
    bar: Option<ProgressBar>,
    quiet: bool,
}

impl Status {
    fn new(quiet: bool) -> Self {
        let bar = (!quiet && std::io::stderr().is_terminal()).then(|| {
            let b = ProgressBar::new_spinner();
            b.set_style(
                ProgressStyle::with_template("{spinner} {msg} {elapsed}").expect("valid template"),
            );
            b.enable_steady_tick(Duration::from_millis(200));
            b
        });
        Status { bar, quiet }
    }

    /// A new stage ("loading…", "generating…", "vocoding…").
    fn stage(&self, what: &str) {
        match &self.bar {
            Some(b) => b.set_message(what.to_string()),
            None if !self.quiet => eprintln!("{what}"),
            None => {}
        }
    }

    /// `n` frames generated in `secs` (only shown on a terminal).
    fn frames(&self, n: usize, secs: f64) {
        if let Some(b) = &self.bar {
            b.set_message(format!(
                "generating: {n} frames ({:.1} frames/s, {:.2} s of audio)",
                n as f64 / secs.max(1e-9),
                n as f64 * 0.08
            ));
        }
    }

    /// Streaming: `frames` generated and `audio` seconds written in `secs`
    /// (only shown on a terminal).
    fn streamed(&self, frames: usize, audio: f64, secs: f64) {
        if let Some(b) = &self.bar {
            b.set_message(format!(
                "streaming: {frames} frames ({:.1} frames/s), {audio:.2} s of audio written",
                frames as f64 / secs.max(1e-9),
            ));
        }
    }

    /// A line that stays (above the spinner on a terminal).
    fn done_line(&self, line: &str) {
        match &self.bar {
            Some(b) => b.println(line),
            None if !self.quiet => eprintln!("{line}"),
            None => {}
        }
    }

    fn finish(&self) {
        if let Some(b) = &self.bar {
            b.finish_and_clear();
        }
    }
}
