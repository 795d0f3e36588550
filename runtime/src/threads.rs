//! How many threads to compute with: all physical cores on an idle machine,
//! fewer when other processes keep cores busy.
//!
//! ggml's worker threads wait for each other at every barrier by spinning.
//! When a machine has fewer free cores than threads, a spinning worker holds
//! a core that the thread it waits for needs, and a 50-frame utterance that
//! takes 3 s alone takes 11 s next to one busy process (5 s on one thread).
//! [`ThreadGovernor`] watches how much CPU the *other* processes use (from
//! `/proc/stat` and `/proc/self/stat`) and keeps the thread count at the
//! cores left free.

use std::time::{Duration, Instant};

/// The most CPU threads a backend takes (ggml's own limit).
pub const MAX_THREADS: usize = 512;

/// The default thread count: physical cores. Decoding streams weights from
/// memory and the vocoder fills the FMA units; a core's second hardware
/// thread adds nothing to either, and ggml's spinning workers slow down
/// badly when they outnumber the cores that run them.
pub fn default_threads() -> usize {
    num_cpus::get_physical().max(1)
}

/// How often the governor looks at the machine.
const INTERVAL: Duration = Duration::from_millis(250);

/// CPU time counters: all CPUs' busy time and this process's, in clock ticks.
#[derive(Clone, Copy, Debug)]
struct Sample {
    at: Instant,
    busy_all: u64,
    busy_own: u64,
}

/// Busy ticks of all CPUs: the `cpu` line of `/proc/stat` minus idle and iowait.
fn busy_all_ticks() -> Option<u64> {
    let stat = std::fs::read_to_string("/proc/stat").ok()?;
    let line = stat.lines().next()?.strip_prefix("cpu ")?;
    let v: Vec<u64> = line
        .split_whitespace()
        .filter_map(|x| x.parse().ok())
        .collect();
    // user nice system idle iowait irq softirq steal …
    let total: u64 = v.iter().take(8).sum();
    Some(total - v.get(3)? - v.get(4).copied().unwrap_or(0))
}

/// This process's busy ticks: utime + stime of `/proc/self/stat`.
fn busy_own_ticks() -> Option<u64> {
    let stat = std::fs::read_to_string("/proc/self/stat").ok()?;
    // Fields after the parenthesised command name (which may hold spaces).
    let rest = &stat[stat.rfind(')')? + 2..];
    let f: Vec<&str> = rest.split_whitespace().collect();
    // rest[0] is field 3 (state); utime and stime are fields 14 and 15.
    Some(f.get(11)?.parse::<u64>().ok()? + f.get(12)?.parse::<u64>().ok()?)
}

fn sample() -> Option<Sample> {
    Some(Sample {
        at: Instant::now(),
        busy_all: busy_all_ticks()?,
        busy_own: busy_own_ticks()?,
    })
}

/// Cores other processes kept busy between two samples (`ticks_per_second`
/// clock ticks per CPU-second).
fn others_busy_cores(a: Sample, b: Sample, ticks_per_second: f64) -> f64 {
    let seconds = (b.at - a.at).as_secs_f64().max(1e-3);
    let all = b.busy_all.saturating_sub(a.busy_all) as f64;
    let own = b.busy_own.saturating_sub(a.busy_own) as f64;
    ((all - own) / ticks_per_second / seconds).max(0.0)
}

/// Threads for `max` wanted on `cores` CPUs of which `others` are busy:
/// the free cores, rounded to the nearest, at least one.
pub fn threads_for(max: usize, cores: usize, others: f64) -> usize {
    let free = cores as f64 - others;
    (free + 0.5).floor().clamp(1.0, max as f64) as usize
}

/// Picks the thread count as the machine's load changes (Linux; elsewhere,
/// or when `/proc` cannot be read, it keeps the maximum).
#[derive(Debug)]
pub struct ThreadGovernor {
    max: usize,
    cores: usize,
    last: Option<Sample>,
    current: usize,
}

impl ThreadGovernor {
    /// At most `max` threads.
    pub fn new(max: usize) -> Self {
        Self {
            max: max.max(1),
            cores: num_cpus::get().max(1),
            last: sample(),
            current: max.max(1),
        }
    }

    /// The most threads it will use.
    pub fn max(&self) -> usize {
        self.max
    }

    /// The thread count to use now: re-evaluated at most every 250 ms.
    pub fn poll(&mut self) -> usize {
        let Some(last) = self.last else {
            return self.current;
        };
        if last.at.elapsed() < INTERVAL {
            return self.current;
        }
        if let Some(now) = sample() {
            // Linux reports /proc/stat in USER_HZ, 100 on every platform it runs on.
            let others = others_busy_cores(last, now, 100.0);
            self.current = threads_for(self.max, self.cores, others);
            self.last = Some(now);
        }
        self.current
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn free_cores_decide_the_thread_count() {
        assert_eq!(threads_for(2, 2, 0.0), 2);
        assert_eq!(threads_for(2, 2, 0.3), 2);
        // one busy process on two cores: one thread
        assert_eq!(threads_for(2, 2, 1.0), 1);
        assert_eq!(threads_for(2, 2, 0.6), 1);
        // never fewer than one, never more than asked
        assert_eq!(threads_for(2, 2, 3.0), 1);
        assert_eq!(threads_for(4, 16, 0.0), 4);
        assert_eq!(threads_for(4, 4, 2.2), 2);
    }

    #[test]
    fn others_exclude_this_process() {
        let t = Instant::now();
        let a = Sample {
            at: t,
            busy_all: 1000,
            busy_own: 100,
        };
        let b = Sample {
            at: t + Duration::from_secs(1),
            busy_all: 1150, // 1.5 cores busy in all
            busy_own: 200,  // 1 of them ours
        };
        assert!((others_busy_cores(a, b, 100.0) - 0.5).abs() < 1e-9);
    }

    #[test]
    fn reads_this_machines_counters() {
        if std::path::Path::new("/proc/self/stat").exists() {
            let s = sample().expect("counters readable on Linux");
            // burn a little CPU: our own counter must not go backwards
            let mut x = 0u64;
            for i in 0..10_000_000u64 {
                x = x.wrapping_mul(31).wrapping_add(i);
            }
            std::hint::black_box(x);
            let t = sample().unwrap();
            assert!(t.busy_own >= s.busy_own && t.busy_all >= s.busy_all);
        }
    }
}
