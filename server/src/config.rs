//! Command-line flags of `qwen3-tts-server`.

use std::path::PathBuf;

use qwen3_tts::ggml::device::{self, DeviceChoice};

use clap::Parser;

/// Longest `--request-timeout` (a week).
pub const MAX_REQUEST_TIMEOUT: u64 = 7 * 24 * 3600;
/// Largest `--voice-cache-mb` (1 TiB: keeps the byte count in range).
pub const MAX_VOICE_CACHE_MB: usize = 1 << 20;

/// OpenAI-compatible speech server for Qwen3-TTS models converted by qwen3-tts-convert.
#[derive(Parser, Debug, Clone)]
#[command(version, about)]
pub struct Args {
    /// TTS model file (tts-<type>.gguf)
    #[arg(short = 'm', long = "model", required_unless_present = "list_devices")]
    pub model: Option<PathBuf>,
    /// Speech-tokenizer file (tokenizer-<type>.gguf)
    #[arg(
        short = 't',
        long = "tokenizer",
        required_unless_present = "list_devices"
    )]
    pub tokenizer: Option<PathBuf>,
    /// Compute device: auto, cpu, vulkan[:N], cuda[:N] or metal (auto: a
    /// hardware GPU when this build has a GPU backend and the machine one,
    /// else the CPU)
    #[arg(long, default_value = "auto", value_parser = parse_device)]
    pub device: DeviceChoice,
    /// Print the devices this build and machine offer and exit
    #[arg(long)]
    pub list_devices: bool,
    /// Address to listen on (loopback unless told otherwise)
    #[arg(long, default_value = "127.0.0.1")]
    pub host: String,
    /// Port to listen on (0: any free port; the bound address is printed)
    #[arg(long, default_value_t = 8000)]
    pub port: u16,
    /// Where stored voices (.qvoice) live; created if missing
    #[arg(long, default_value = "voices")]
    pub voices_dir: PathBuf,
    /// Require `Authorization: Bearer KEY` on every endpoint but /health
    #[arg(long)]
    pub api_key: Option<String>,
    /// CPU threads of the engine [physical cores, fewer while other processes keep cores busy]
    #[arg(long)]
    pub threads: Option<usize>,
    /// Requests decoded together (continuous batching; each as if alone), 1 to 32
    #[arg(long, default_value_t = 4)]
    pub max_batch: usize,
    /// Requests that may wait for the engine (beyond the ones it runs); more get 429
    #[arg(long, default_value_t = 8)]
    pub max_queue: usize,
    /// Longest `input` accepted, in characters
    #[arg(long, default_value_t = 4096)]
    pub max_input_chars: usize,
    /// A longer `input` is spoken in parts, cut at sentence ends (characters;
    /// a CJK character counts 3; 0: never cut)
    #[arg(long, default_value_t = qwen3_tts::long_text::DEFAULT_MAX_PART)]
    pub max_part_chars: usize,
    /// Talker KV cache type: f32 or f16 [f32; f16 halves the cache's memory]
    #[arg(long, value_parser = qwen3_tts::talker::parse_kv_type)]
    pub kv_cache: Option<qwen3_tts::ggml::GgmlType>,
    /// Time limit of one request (queueing and generation), in seconds
    #[arg(long, default_value_t = 300)]
    pub request_timeout: u64,
    /// Memory for voices' warm state, in MiB (the talker's prompt prefix per
    /// voice and language; for ICL voices the vocoder's state after the
    /// reference, ~10 MiB a voice); least recently used out; 0: none kept
    #[arg(long, default_value_t = 256)]
    pub voice_cache_mb: usize,
    /// Do not serve the page at `/` (a browser page to try voices through this API)
    #[arg(long)]
    pub no_ui: bool,
    /// Also serve the Wyoming protocol (Home Assistant) on this TCP port, on --host (0: any free port; no API key)
    #[arg(long)]
    pub wyoming_port: Option<u16>,
}

fn parse_device(s: &str) -> Result<DeviceChoice, String> {
    s.parse()
}

impl Args {
    /// `-m` (clap requires it unless `--list-devices`).
    pub fn model(&self) -> &std::path::Path {
        self.model.as_deref().expect("clap requires -m")
    }

    /// `-t` (clap requires it unless `--list-devices`).
    pub fn tokenizer(&self) -> &std::path::Path {
        self.tokenizer.as_deref().expect("clap requires -t")
    }

    /// The device `--device` names on this machine (`None`: the CPU).
    pub fn resolved_device(&self) -> Result<Option<device::DeviceInfo>, String> {
        device::resolve(self.device)
    }

    /// Checks the flags that clap cannot.
    pub fn validate(&self) -> Result<(), String> {
        self.resolved_device()?;
        if let Some(n) = self.threads {
            let max = qwen3_tts::threads::MAX_THREADS;
            if !(1..=max).contains(&n) {
                return Err(format!("--threads must be 1 to {max}, got {n}"));
            }
        }
        if !(1..=qwen3_tts::batch::MAX_BATCH).contains(&self.max_batch) {
            return Err(format!(
                "--max-batch must be 1 to {}",
                qwen3_tts::batch::MAX_BATCH
            ));
        }
        if self.voice_cache_mb > MAX_VOICE_CACHE_MB {
            return Err(format!(
                "--voice-cache-mb must be at most {MAX_VOICE_CACHE_MB} (1 TiB)"
            ));
        }
        if self.max_input_chars == 0 {
            return Err("--max-input-chars must be at least 1".into());
        }
        if !(1..=MAX_REQUEST_TIMEOUT).contains(&self.request_timeout) {
            return Err(format!(
                "--request-timeout must be 1 to {MAX_REQUEST_TIMEOUT} seconds"
            ));
        }
        if let Some(k) = &self.api_key {
            if k.is_empty() {
                return Err("--api-key must not be empty".into());
            }
        }
        Ok(())
    }
}
