//! What the three programs share: audio output as it is produced
//! ([`audio_out`]), progress bars for the converter's and
//! quantizer's [`WriteProgress`], and their summaries.

pub mod audio_out;

use std::collections::BTreeMap;
use std::io::IsTerminal;

use indicatif::{ProgressBar, ProgressStyle};
use qwen3_tts::gguf_schema::Fallback;
use qwen3_tts::model_file::{FileSummary, WriteProgress};

/// Turns [`WriteProgress`] events into an indicatif bar per file on stderr
/// (nothing when `quiet` or when stderr is not a terminal).
pub struct WriteBar {
    bar: Option<ProgressBar>,
}

impl WriteBar {
    pub fn new(quiet: bool) -> Self {
        let show = !quiet && std::io::stderr().is_terminal();
        WriteBar {
            bar: show.then(|| {
                let pb = ProgressBar::new(0);
                pb.set_style(
                    ProgressStyle::with_template(
                        "{prefix:24} [{bar:40}] {bytes}/{total_bytes} {bytes_per_sec} eta {eta} {msg}",
                    )
                    .unwrap_or_else(|_| ProgressStyle::default_bar())
                    .progress_chars("=> "),
                );
                pb
            }),
        }
    }

    /// Shows one event.
    pub fn update(&mut self, event: WriteProgress<'_>) {
        let Some(pb) = &self.bar else { return };
        match event {
            WriteProgress::FileStart { path, bytes } => {
                pb.reset();
                pb.set_length(bytes);
                pb.set_position(0);
                pb.set_prefix(
                    path.file_name()
                        .unwrap_or_default()
                        .to_string_lossy()
                        .into_owned(),
                );
                pb.set_message("");
            }
            WriteProgress::Tensor { name, done } => {
                pb.set_position(done);
                pb.set_message(name.to_string());
            }
            WriteProgress::FileDone { .. } => pb.set_message(""),
        }
    }

    pub fn finish(&self) {
        if let Some(pb) = &self.bar {
            pb.finish_and_clear();
        }
    }
}

/// One line per kind of fallback, e.g. "12 tensors stored as q8_0 instead
/// of q4_k: row length 64 is not a multiple of 256".
pub fn fallback_lines(fallbacks: &[Fallback]) -> Vec<String> {
    let mut groups: BTreeMap<(&str, &str, usize), (usize, &Fallback)> = BTreeMap::new();
    for f in fallbacks {
        groups
            .entry((f.used.name(), f.wanted.name(), f.row_len))
            .or_insert((0, f))
            .0 += 1;
    }
    groups
        .values()
        .map(|(n, f)| {
            format!(
                "{n} tensor{} stored as {} instead of {}: {}",
                if *n == 1 { "" } else { "s" },
                f.used.name(),
                f.wanted.name(),
                f.reason()
            )
        })
        .collect()
}

/// The summary of a written (or kept) file, with its fallbacks.
pub fn summary_text(s: &FileSummary) -> String {
    if s.kept {
        return format!("{} exists and is identical: kept\n", s.path.display());
    }
    let mut out = s.to_string();
    for line in fallback_lines(&s.fallbacks) {
        out.push_str("  note: ");
        out.push_str(&line);
        out.push('\n');
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use qwen3_tts::ggml::GgmlType::*;

    #[test]
    fn fallbacks_are_grouped_by_type_and_row_length() {
        let f = |name: &str, used, row_len| Fallback {
            name: name.into(),
            wanted: Q4_K,
            used,
            row_len,
        };
        let lines = fallback_lines(&[f("a", Q8_0, 64), f("b", Q8_0, 64), f("c", F16, 20)]);
        assert_eq!(
            lines,
            [
                "1 tensor stored as f16 instead of q4_k: row length 20 is not a multiple of 256",
                "2 tensors stored as q8_0 instead of q4_k: row length 64 is not a multiple of 256",
            ]
        );
    }
}
