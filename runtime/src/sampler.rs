//! Logits processors and sampling for the talker (codebook 0) and the code
//! predictor (codebooks 1..15).
//!
//! The order and semantics follow Hugging Face transformers 4.57.3
//! (`generation/logits_process.py`):
//!
//! * talker: [`TalkerProcessors::apply`] (RepetitionPenalty → MinNewTokens(EOS)
//!   → SuppressTokens), then [`Sampler::sample`];
//! * code predictor: [`Sampler::sample`] only (no penalty, suppression or EOS).
//!
//! [`Sampler::sample`] is argmax in greedy mode, otherwise the HF warpers
//! Temperature → TopK → TopP (only if `top_p < 1`) followed by softmax and a
//! categorical draw. Torch's RNG cannot be reproduced, so sampled runs match
//! the reference only in distribution; with the same seed our own draws are
//! deterministic.

use rand::{RngExt, SeedableRng};
use rand_chacha::ChaCha8Rng;
use std::ops::Range;

/// Sampling settings of one stream (talker or code predictor).
#[derive(Clone, Debug, PartialEq)]
pub struct SamplingParams {
    /// `false` = greedy (argmax); the warpers below are then ignored.
    pub do_sample: bool,
    /// Logits are divided by this before top-k / top-p (must be > 0 when sampling).
    pub temperature: f32,
    /// Keep the `top_k` highest logits (ties with the k-th kept); `0` = off.
    pub top_k: usize,
    /// Nucleus threshold in (0, 1]; `1.0` = off.
    pub top_p: f32,
}

impl SamplingParams {
    /// Deterministic argmax decoding (temperature 1, no top-k, no top-p).
    pub fn greedy() -> Self {
        SamplingParams {
            do_sample: false,
            temperature: 1.0,
            top_k: 0,
            top_p: 1.0,
        }
    }

    /// Checks the values like HF's warper constructors do.
    ///
    /// `temperature` must be finite and > 0 when `do_sample` is set (it is
    /// unused in greedy mode); `top_p` must always lie in (0, 1].
    pub fn validate(&self) -> Result<(), String> {
        if self.do_sample && !(self.temperature.is_finite() && self.temperature > 0.0) {
            return Err(format!(
                "temperature must be a finite number > 0 when sampling, got {}",
                self.temperature
            ));
        }
        if !(self.top_p > 0.0 && self.top_p <= 1.0) {
            return Err(format!(
                "top_p must be in (0, 1] (1.0 disables it), got {}",
                self.top_p
            ));
        }
        Ok(())
    }
}

/// The talker's logits processors (applied in HF order before sampling).
#[derive(Clone, Debug, PartialEq)]
pub struct TalkerProcessors {
    /// HF `repetition_penalty` (1.05 in the released config; 1.0 = off).
    pub repetition_penalty: f32,
    /// Codec EOS id (2150 in the released config).
    pub eos_id: u32,
    /// EOS is blocked while fewer than this many tokens were generated (2).
    pub min_new_tokens: usize,
    /// Ids forced to −inf, except `eos_id`: `[V−1024, V)`.
    pub suppress: Range<u32>,
}

impl TalkerProcessors {
    /// Applies, in HF order, to the fp32 logits of one step:
    ///
    /// 1. repetition penalty over the *distinct* ids of `history` (the
    ///    previously generated code-0 tokens): `s < 0 → s·p`, else `s / p`;
    ///    a repeated id is penalised once (HF gather → where → scatter);
    ///    ids outside the logits are ignored;
    /// 2. `logits[eos_id] = −inf` while `history.len() < min_new_tokens`;
    /// 3. every id of `suppress` (clipped to the logits) except `eos_id` → −inf.
    ///
    /// This is applied in greedy mode too.
    pub fn apply(&self, logits: &mut [f32], history: &[u32]) {
        let n = logits.len();
        let p = self.repetition_penalty;
        if p != 1.0 && !history.is_empty() {
            let mut seen = vec![false; n];
            for &id in history {
                let i = id as usize;
                if i < n && !seen[i] {
                    seen[i] = true;
                    let s = logits[i];
                    logits[i] = if s < 0.0 { s * p } else { s / p };
                }
            }
        }
        let eos = self.eos_id as usize;
        if history.len() < self.min_new_tokens && eos < n {
            logits[eos] = f32::NEG_INFINITY;
        }
        let start = (self.suppress.start as usize).min(n);
        let end = (self.suppress.end as usize).min(n);
        for (i, s) in logits.iter_mut().enumerate().take(end).skip(start) {
            if i != eos {
                *s = f32::NEG_INFINITY;
            }
        }
    }
}

/// Index of the first maximum (like `torch.argmax` on ties). Returns 0 for an
/// empty slice or when every value is NaN.
pub fn argmax(logits: &[f32]) -> u32 {
    let mut best = 0usize;
    let mut best_v = f32::NEG_INFINITY;
    let mut found = false;
    for (i, &v) in logits.iter().enumerate() {
        if v.is_nan() {
            continue;
        }
        if !found || v > best_v {
            best = i;
            best_v = v;
            found = true;
        }
    }
    best as u32
}

/// HF `TemperatureLogitsWarper`: divides every logit by `temperature`.
pub fn apply_temperature(logits: &mut [f32], temperature: f32) {
    if temperature != 1.0 {
        for s in logits.iter_mut() {
            *s /= temperature;
        }
    }
}

/// HF `TopKLogitsWarper` (min_tokens_to_keep 1): every logit strictly below
/// the k-th largest becomes −inf, so ties with the k-th value are kept.
/// `top_k == 0` is a no-op (HF does not add the warper).
pub fn apply_top_k(logits: &mut [f32], top_k: usize) {
    let n = logits.len();
    if top_k == 0 || n == 0 {
        return;
    }
    let k = top_k.max(1).min(n);
    if k == n {
        return;
    }
    let mut sorted = logits.to_vec();
    // Descending, so index k−1 is the k-th largest.
    let (_, kth, _) = sorted.select_nth_unstable_by(k - 1, |a, b| b.total_cmp(a));
    let kth = *kth;
    for s in logits.iter_mut() {
        if *s < kth {
            *s = f32::NEG_INFINITY;
        }
    }
}

/// HF `TopPLogitsWarper` (min_tokens_to_keep 1): sort ascending (stable, so
/// equal logits keep index order), take the cumulative softmax, and set to
/// −inf every token whose cumulative probability is `≤ 1 − top_p`; the
/// highest token is always kept. `top_p >= 1` is a no-op (HF only adds the
/// warper for `top_p < 1`).
///
/// Numerics follow torch on CPU: softmax probabilities stored as f32, the
/// cumulative sum accumulated in f64 and rounded to f32 per element, and the
/// threshold `1 − top_p` compared as an f32.
pub fn apply_top_p(logits: &mut [f32], top_p: f32) {
    let n = logits.len();
    if top_p >= 1.0 || n == 0 {
        return;
    }
    let mut order: Vec<usize> = (0..n).collect();
    order.sort_by(|&a, &b| logits[a].total_cmp(&logits[b]));
    let probs = softmax_f32(logits);
    let threshold = 1.0f32 - top_p;
    let mut cum = 0.0f64;
    // The last (largest) element is always kept.
    for &i in &order[..n - 1] {
        cum += f64::from(probs[i]);
        if cum as f32 <= threshold {
            logits[i] = f32::NEG_INFINITY;
        } else {
            break; // the cumulative sum only grows
        }
    }
}

/// Softmax with f64 accumulation, probabilities returned as f32.
fn softmax_f32(logits: &[f32]) -> Vec<f32> {
    let w = softmax_weights(logits);
    let total: f64 = w.iter().sum();
    w.iter().map(|&x| (x / total) as f32).collect()
}

/// Unnormalised softmax weights `exp(s − max)` in f64 (−inf → 0).
fn softmax_weights(logits: &[f32]) -> Vec<f64> {
    let max = logits
        .iter()
        .copied()
        .filter(|v| !v.is_nan())
        .fold(f32::NEG_INFINITY, f32::max);
    if max == f32::NEG_INFINITY {
        return vec![0.0; logits.len()];
    }
    logits
        .iter()
        .map(|&s| {
            if s.is_nan() {
                0.0
            } else {
                (f64::from(s) - f64::from(max)).exp()
            }
        })
        .collect()
}

/// A seeded sampler: same seed → same draws.
#[derive(Clone, Debug)]
pub struct Sampler {
    rng: ChaCha8Rng,
}

impl Sampler {
    /// A sampler whose draws are fully determined by `seed` (ChaCha8).
    pub fn new(seed: u64) -> Self {
        Sampler {
            rng: ChaCha8Rng::seed_from_u64(seed),
        }
    }

    /// `n` standard Gumbel draws `−ln(−ln u)`: adding them to logits and
    /// taking the argmax samples from their softmax (used for in-graph
    /// sampling in the code predictor).
    pub fn gumbel_noise(&mut self, n: usize) -> Vec<f32> {
        (0..n)
            .map(|_| {
                let u = self.rng.random::<f64>().max(f64::MIN_POSITIVE);
                (-(-u.ln()).ln()) as f32
            })
            .collect()
    }

    /// Picks one token id from `logits` (which are modified in place by the
    /// warpers).
    ///
    /// Greedy: [`argmax`] (first maximum on ties). Sampling: Temperature →
    /// TopK → TopP (only if `top_p < 1`) → softmax → categorical draw. The
    /// softmax weights `exp(s − max)` and their cumulative sum are computed
    /// in f64; one uniform f64 in [0, 1) from the seeded RNG picks the first
    /// index whose cumulative weight exceeds `u · total`. Tokens at −inf have
    /// weight 0 and are never drawn. If no token has positive weight (all
    /// −inf), falls back to argmax.
    pub fn sample(&mut self, logits: &mut [f32], params: &SamplingParams) -> u32 {
        if !params.do_sample {
            return argmax(logits);
        }
        apply_temperature(logits, params.temperature);
        apply_top_k(logits, params.top_k);
        apply_top_p(logits, params.top_p);
        let w = softmax_weights(logits);
        let total: f64 = w.iter().sum();
        if !(total.is_finite() && total > 0.0) {
            return argmax(logits);
        }
        let target = self.rng.random::<f64>() * total;
        let mut cum = 0.0f64;
        let mut last_positive = 0usize;
        for (i, &x) in w.iter().enumerate() {
            if x > 0.0 {
                cum += x;
                last_positive = i;
                if cum > target {
                    return i as u32;
                }
            }
        }
        // Rounding left `target` at or above the final sum.
        last_positive as u32
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const NEG: f32 = f32::NEG_INFINITY;

    fn sampling(temperature: f32, top_k: usize, top_p: f32) -> SamplingParams {
        SamplingParams {
            do_sample: true,
            temperature,
            top_k,
            top_p,
        }
    }

    fn talker(v: u32) -> TalkerProcessors {
        TalkerProcessors {
            repetition_penalty: 1.05,
            eos_id: v - 1024 + 102,
            min_new_tokens: 2,
            suppress: v - 1024..v,
        }
    }

    /// A processor with nothing but the repetition penalty active.
    fn penalty_only(p: f32) -> TalkerProcessors {
        TalkerProcessors {
            repetition_penalty: p,
            eos_id: 1000,
            min_new_tokens: 0,
            suppress: 0..0,
        }
    }

    #[test]
    fn repetition_penalty_positive_and_negative() {
        let mut s = vec![2.1f32, -2.1, 0.0, 3.0, -1.0];
        penalty_only(1.05).apply(&mut s, &[0, 1, 2]);
        assert_eq!(s[0], 2.1f32 / 1.05f32);
        assert_eq!(s[1], -2.1f32 * 1.05f32);
        assert_eq!(s[2], 0.0);
        assert_eq!(s[3], 3.0);
        assert_eq!(s[4], -1.0);
        assert!((s[0] - 2.0).abs() < 1e-6);
        assert!((s[1] + 2.205).abs() < 1e-6);
    }

    #[test]
    fn repetition_penalty_duplicates_once() {
        let mut s = vec![4.0f32, -4.0, 1.0];
        penalty_only(2.0).apply(&mut s, &[0, 1, 0, 0, 1, 1]);
        assert_eq!(s, vec![2.0, -8.0, 1.0]);
        // Out-of-range ids are ignored.
        let mut s = vec![4.0f32];
        penalty_only(2.0).apply(&mut s, &[7]);
        assert_eq!(s, vec![4.0]);
    }

    #[test]
    fn repetition_penalty_one_is_noop() {
        let mut s = vec![4.0f32, -4.0];
        penalty_only(1.0).apply(&mut s, &[0, 1]);
        assert_eq!(s, vec![4.0, -4.0]);
    }

    #[test]
    fn eos_masked_for_first_two_steps_only() {
        let v = 3072u32;
        let proc = talker(v);
        let eos = proc.eos_id as usize;
        assert_eq!(eos, 2150);
        for (history, blocked) in [
            (vec![], true),
            (vec![5u32], true),
            (vec![5, 6], false),
            (vec![5, 6, 7], false),
        ] {
            let mut s = vec![0.5f32; v as usize];
            proc.apply(&mut s, &history);
            if blocked {
                assert_eq!(s[eos], NEG, "history {history:?}");
            } else {
                assert_eq!(s[eos], 0.5, "history {history:?}");
            }
        }
    }

    #[test]
    fn suppress_range_keeps_eos() {
        let v = 3072u32;
        let proc = talker(v);
        let mut s = vec![1.0f32; v as usize];
        proc.apply(&mut s, &[10, 11]);
        for (i, &x) in s.iter().enumerate() {
            if i < 2048 {
                // 10 and 11 are penalised, the rest untouched.
                let want = if i == 10 || i == 11 { 1.0 / 1.05 } else { 1.0 };
                assert_eq!(x, want, "id {i}");
            } else if i == 2150 {
                assert_eq!(x, 1.0);
            } else {
                assert_eq!(x, NEG, "id {i}");
            }
        }
    }

    #[test]
    fn talker_processor_order_penalty_then_masks() {
        // Greedy after the processors: the penalised favourite loses.
        let mut s = vec![1.0f32, 1.02, 0.0, 5.0];
        let proc = TalkerProcessors {
            repetition_penalty: 1.05,
            eos_id: 2,
            min_new_tokens: 2,
            suppress: 2..4,
        };
        proc.apply(&mut s, &[1]);
        assert_eq!(s[2], NEG); // EOS blocked (1 < 2)
        assert_eq!(s[3], NEG); // suppressed
        assert_eq!(argmax(&s), 0); // 1.02/1.05 < 1.0
        let mut sampler = Sampler::new(0);
        assert_eq!(sampler.sample(&mut s, &SamplingParams::greedy()), 0);
    }

    #[test]
    fn greedy_tie_takes_lowest_index() {
        let mut s = vec![0.0f32, 3.0, -1.0, 3.0, 3.0];
        let mut sampler = Sampler::new(1);
        assert_eq!(sampler.sample(&mut s, &SamplingParams::greedy()), 1);
        assert_eq!(argmax(&[NEG, NEG, 2.0, 2.0]), 2);
        assert_eq!(argmax(&[NEG, NEG]), 0);
        // Greedy leaves the logits untouched even with warpers configured.
        let mut s2 = s.clone();
        let params = SamplingParams {
            do_sample: false,
            temperature: 0.5,
            top_k: 1,
            top_p: 0.1,
        };
        assert_eq!(sampler.sample(&mut s2, &params), 1);
        assert_eq!(s2, s);
    }

    #[test]
    fn top_k_keeps_ties() {
        let mut s = vec![1.0f32, 5.0, 5.0, 0.5, 5.0, 2.0];
        apply_top_k(&mut s, 2);
        assert_eq!(s, vec![NEG, 5.0, 5.0, NEG, 5.0, NEG]);

        let mut s = vec![1.0f32, 4.0, 3.0, 3.0, 0.0];
        apply_top_k(&mut s, 2);
        assert_eq!(s, vec![NEG, 4.0, 3.0, 3.0, NEG]);

        let mut s = vec![1.0f32, 4.0, 3.0];
        apply_top_k(&mut s, 1);
        assert_eq!(s, vec![NEG, 4.0, NEG]);

        // k = 0 (off) and k >= len keep everything.
        let orig = vec![1.0f32, 4.0, 3.0];
        let mut s = orig.clone();
        apply_top_k(&mut s, 0);
        assert_eq!(s, orig);
        apply_top_k(&mut s, 3);
        assert_eq!(s, orig);
        apply_top_k(&mut s, 50);
        assert_eq!(s, orig);
    }

    #[test]
    fn top_k_sampling_never_draws_filtered() {
        let mut sampler = Sampler::new(7);
        let base = vec![0.0f32, 1.0, 2.0, 3.0, 4.0, 4.0];
        let mut counts = [0usize; 6];
        for _ in 0..2000 {
            let mut s = base.clone();
            counts[sampler.sample(&mut s, &sampling(1.0, 2, 1.0)) as usize] += 1;
        }
        assert_eq!(&counts[..4], &[0, 0, 0, 0]);
        assert!(counts[4] > 800 && counts[5] > 800, "{counts:?}");
    }

    #[test]
    fn top_p_one_keeps_all() {
        let orig = vec![-30.0f32, 0.0, 1.0, 10.0];
        let mut s = orig.clone();
        apply_top_p(&mut s, 1.0);
        assert_eq!(s, orig);
    }

    #[test]
    fn top_p_exact_boundary_removes_equal() {
        // Four equal logits: probabilities exactly 0.25, ascending cumulative
        // sums exactly 0.25, 0.5, 0.75, 1.0. With top_p = 0.5 the threshold is
        // exactly 0.5, and "cum <= threshold" removes the first two in
        // (stable) ascending order.
        let mut s = vec![0.0f32; 4];
        apply_top_p(&mut s, 0.5);
        assert_eq!(s, vec![NEG, NEG, 0.0, 0.0]);

        // top_p = 0.75 → threshold 0.25: exactly one removed.
        let mut s = vec![0.0f32; 4];
        apply_top_p(&mut s, 0.75);
        assert_eq!(s, vec![NEG, 0.0, 0.0, 0.0]);

        // Slightly above 0.5 → threshold slightly below 0.5: three kept.
        let mut s = vec![0.0f32; 4];
        apply_top_p(&mut s, 0.5001);
        assert_eq!(s, vec![NEG, 0.0, 0.0, 0.0]);
    }

    #[test]
    fn top_p_distinct_and_keeps_highest() {
        // Probabilities 0.1, 0.2, 0.3, 0.4 (index order shuffled).
        let p = [0.3f32, 0.1, 0.4, 0.2];
        let base: Vec<f32> = p.iter().map(|x| x.ln()).collect();
        // top_p 0.8 → threshold 0.2: ascending cum 0.1, 0.3, 0.6, 1.0 → drop 0.1.
        let mut s = base.clone();
        apply_top_p(&mut s, 0.8);
        assert_eq!(s[1], NEG);
        assert_eq!([s[0], s[2], s[3]], [base[0], base[2], base[3]]);
        // top_p 0.6 → threshold 0.4: drop 0.1 and 0.2 (cum 0.3 ≤ 0.4).
        let mut s = base.clone();
        apply_top_p(&mut s, 0.6);
        assert_eq!([s[1], s[3]], [NEG, NEG]);
        assert_eq!([s[0], s[2]], [base[0], base[2]]);
        // Tiny top_p keeps only the highest.
        let mut s = base.clone();
        apply_top_p(&mut s, 1e-6);
        assert_eq!(s, vec![NEG, NEG, base[2], NEG]);
        // Sampling with tiny top_p is deterministic.
        let mut sampler = Sampler::new(3);
        for _ in 0..100 {
            let mut s = base.clone();
            assert_eq!(sampler.sample(&mut s, &sampling(1.0, 0, 1e-6)), 2);
        }
    }

    #[test]
    fn temperature_scales_logits_and_sharpens() {
        let mut s = vec![1.0f32, -2.0, 0.9];
        apply_temperature(&mut s, 0.5);
        assert_eq!(s, vec![2.0, -4.0, 1.8]);
        let mut s = vec![1.0f32, 2.0];
        apply_temperature(&mut s, 1.0);
        assert_eq!(s, vec![1.0, 2.0]);

        // logits ln(0.75), ln(0.25): T=1 → P(0)=0.75; T=0.5 → 0.9; T=2 → ~0.634.
        let base = [0.75f32.ln(), 0.25f32.ln()];
        for (t, want) in [(1.0f32, 0.75f64), (0.5, 0.9), (2.0, 0.633975)] {
            let mut sampler = Sampler::new(11);
            let n = 20_000;
            let mut zeros = 0;
            for _ in 0..n {
                let mut s = base.to_vec();
                if sampler.sample(&mut s, &sampling(t, 0, 1.0)) == 0 {
                    zeros += 1;
                }
            }
            let f = zeros as f64 / n as f64;
            assert!((f - want).abs() < 0.02, "T={t}: {f} vs {want}");
        }
    }

    #[test]
    fn same_seed_same_draws_different_seed_differs() {
        let base: Vec<f32> = (0..64).map(|i| (i as f32 * 0.37).sin()).collect();
        let params = sampling(0.9, 50, 1.0);
        let run = |seed: u64| -> Vec<u32> {
            let mut sampler = Sampler::new(seed);
            (0..1000)
                .map(|_| {
                    let mut s = base.clone();
                    sampler.sample(&mut s, &params)
                })
                .collect()
        };
        let a = run(42);
        assert_eq!(a, run(42));
        let b = run(43);
        assert_ne!(a, b);
        // Not degenerate: many distinct tokens are drawn.
        let mut distinct = a.clone();
        distinct.sort_unstable();
        distinct.dedup();
        assert!(distinct.len() > 20, "{}", distinct.len());
        assert!(a.iter().all(|&t| t < 64));
        // A cloned sampler continues identically.
        let mut s1 = Sampler::new(5);
        let mut s2 = s1.clone();
        for _ in 0..10 {
            let (mut x, mut y) = (base.clone(), base.clone());
            assert_eq!(s1.sample(&mut x, &params), s2.sample(&mut y, &params));
        }
    }

    #[test]
    fn empirical_frequencies_match_softmax() {
        let probs = [0.1f64, 0.2, 0.3, 0.4];
        let base: Vec<f32> = probs.iter().map(|p| (*p as f32).ln() + 3.0).collect();
        let mut sampler = Sampler::new(2024);
        let n = 20_000;
        let mut counts = [0usize; 4];
        for _ in 0..n {
            let mut s = base.clone();
            counts[sampler.sample(&mut s, &sampling(1.0, 0, 1.0)) as usize] += 1;
        }
        for (c, p) in counts.iter().zip(probs) {
            let f = *c as f64 / n as f64;
            assert!((f - p).abs() < 0.02, "{counts:?}");
        }
    }

    #[test]
    fn all_neg_inf_falls_back_to_argmax() {
        let mut sampler = Sampler::new(0);
        let mut s = vec![NEG; 5];
        assert_eq!(sampler.sample(&mut s, &sampling(0.9, 50, 0.9)), 0);
        let mut s = vec![NEG, NEG, 0.0, NEG];
        assert_eq!(sampler.sample(&mut s, &sampling(0.9, 50, 0.9)), 2);
    }

    #[test]
    fn validate_names_the_field() {
        assert_eq!(SamplingParams::greedy().validate(), Ok(()));
        assert_eq!(sampling(0.9, 50, 1.0).validate(), Ok(()));
        for t in [0.0f32, -1.0, f32::NAN, f32::INFINITY] {
            let e = sampling(t, 50, 1.0).validate().unwrap_err();
            assert!(e.contains("temperature"), "{e}");
        }
        // Greedy ignores the temperature.
        let mut g = SamplingParams::greedy();
        g.temperature = 0.0;
        assert_eq!(g.validate(), Ok(()));
        for p in [0.0f32, -0.1, 1.5, f32::NAN] {
            let e = sampling(0.9, 50, p).validate().unwrap_err();
            assert!(e.contains("top_p"), "{e}");
        }
    }
}
