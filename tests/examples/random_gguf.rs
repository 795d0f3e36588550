//! Real-size random model files without Python or a checkpoint: for
//! benchmarks on a machine that has neither (a lent GPU box).
//!
//!     random_gguf skeleton IN.gguf OUT.skel     # IN's header + each tensor's mean and std
//!     random_gguf fill SKEL OUT.gguf [--seed 1] # same metadata, tensors and storage types,
//!                                               # values drawn from N(mean, std) per tensor
//!
//! A skeleton is a GGUF header without its data section (a few MB: the text
//! tokenizer's vocabulary is most of it), carrying the metadata of IN, its
//! tensor directory and, under `random_gguf.stats`, the mean and standard
//! deviation of every tensor in directory order. `fill` draws each tensor
//! from those (its own seed per tensor name), stores it in its type (F32,
//! F16, Q8_0, K-quants through ggml's quantizer) and writes the file through
//! the runtime's GGUF writer, which the runtime then loads like any other.
//! Speed is all such a file is for: its audio is noise.

use std::io::Write;
use std::path::Path;

use qwen3_tts::ggml::gguf::{GgufBuilder, GgufHeader, Value};
use qwen3_tts::ggml::{quantize, GgmlType};
use qwen3_tts::model_file::{write_gguf_with_base, GgufFile, Overwrite, TensorPlan};

const STATS_KEY: &str = "random_gguf.stats";

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let result = match args.first().map(String::as_str) {
        Some("skeleton") if args.len() == 3 => skeleton(Path::new(&args[1]), Path::new(&args[2])),
        Some("fill") if args.len() == 3 || (args.len() == 5 && args[3] == "--seed") => {
            let seed = match args.get(4).map(|s| s.parse::<u64>()) {
                None => Ok(1),
                Some(Ok(s)) => Ok(s),
                Some(Err(_)) => Err(format!("--seed {:?}: not a number", args[4])),
            };
            seed.and_then(|seed| fill(Path::new(&args[1]), Path::new(&args[2]), seed))
        }
        _ => Err(
            "usage: random_gguf skeleton IN.gguf OUT.skel | fill SKEL OUT.gguf [--seed N]".into(),
        ),
    };
    if let Err(e) = result {
        eprintln!("random_gguf: {e}");
        std::process::exit(1);
    }
}

/// The tensor directory of a header as write plans (name, type, dims).
fn plans(header: &GgufHeader, path: &Path) -> Result<Vec<TensorPlan>, String> {
    header
        .tensors()
        .into_iter()
        .map(|t| {
            let ty = GgmlType::from_id(t.type_id).ok_or_else(|| {
                format!(
                    "{}: tensor {}: unsupported type {}",
                    path.display(),
                    t.name,
                    t.type_id
                )
            })?;
            Ok(TensorPlan {
                name: t.name,
                ty,
                ne: t.ne,
            })
        })
        .collect()
}

fn skeleton(input: &Path, output: &Path) -> Result<(), String> {
    let file = GgufFile::open(input).map_err(|e| e.to_string())?;
    let plans = plans(file.header(), input)?;
    let mut stats = Vec::with_capacity(2 * plans.len());
    for t in &plans {
        let v = file.tensor_f32(&t.name).map_err(|e| e.to_string())?;
        let n = v.len() as f64;
        let mean = v.iter().map(|&x| x as f64).sum::<f64>() / n;
        let var = v.iter().map(|&x| (x as f64 - mean).powi(2)).sum::<f64>() / n;
        stats.extend([mean as f32, var.sqrt() as f32]);
        file.release_tensor(&t.name);
    }
    let mut builder = GgufBuilder::new(plans.len().max(1));
    builder.copy_metadata_from(file.header());
    builder.set(STATS_KEY, &Value::ArrF32(stats))?;
    for t in &plans {
        builder.add_tensor(&t.name, t.ty, &t.ne)?;
    }
    std::fs::write(output, builder.header_bytes())
        .map_err(|e| format!("{}: {e}", output.display()))?;
    eprintln!(
        "random_gguf: {} tensors of {} -> {}",
        plans.len(),
        input.display(),
        output.display()
    );
    Ok(())
}

fn fill(skel: &Path, output: &Path, seed: u64) -> Result<(), String> {
    let header = GgufHeader::read(skel).map_err(|e| format!("{}: {e}", skel.display()))?;
    let plans = plans(&header, skel)?;
    let stats = match header.get(STATS_KEY) {
        Some(Value::ArrF32(s)) if s.len() == 2 * plans.len() => s,
        _ => {
            return Err(format!(
                "{}: no {STATS_KEY} (not a skeleton)",
                skel.display()
            ))
        }
    };
    let pending = write_gguf_with_base(
        output,
        Some(&header),
        &[],
        &plans,
        Overwrite::Replace,
        |i, t, out: &mut dyn Write| {
            let n = t.n_elements();
            let mut rng = SplitMix(seed ^ fnv1a(&t.name));
            let (mean, std) = (stats[2 * i], stats[2 * i + 1]);
            let values: Vec<f32> = (0..n).map(|_| mean + std * rng.normal()).collect();
            let bytes = quantize(t.ty, &values, t.row_len());
            out.write_all(&bytes)
                .map_err(|e| qwen3_tts::Error::io(output, e))
        },
    )
    .map_err(|e| e.to_string())?;
    pending.commit().map_err(|e| e.to_string())?;
    // The stats key came along with the base's metadata: harmless, but say
    // what was made.
    eprintln!(
        "random_gguf: {} tensors, seed {seed} -> {}",
        plans.len(),
        output.display()
    );
    Ok(())
}

fn fnv1a(s: &str) -> u64 {
    s.bytes().fold(0xcbf2_9ce4_8422_2325, |h, b| {
        (h ^ b as u64).wrapping_mul(0x0100_0000_01b3)
    })
}

/// SplitMix64 and Box–Muller: enough randomness for weights nobody listens to.
struct SplitMix(u64);

impl SplitMix {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    fn uniform(&mut self) -> f64 {
        ((self.next() >> 11) as f64 + 0.5) / (1u64 << 53) as f64
    }

    fn normal(&mut self) -> f32 {
        let (u, v) = (self.uniform(), self.uniform());
        ((-2.0 * u.ln()).sqrt() * (std::f64::consts::TAU * v).cos()) as f32
    }
}
