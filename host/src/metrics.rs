//! Per-run metrics: what every `run` prints and `bench` aggregates.

use runanywhere_plugin_api::GenerationStats;
use serde::Serialize;

/// Metrics of one generation.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct RunMetrics {
    /// Model load time (ms).
    pub load_ms: f64,
    /// Prompt length in tokens.
    pub prompt_tokens: usize,
    /// Time to first token (ms), from the start of `generate`.
    pub ttft_ms: f64,
    /// Prompt tokens per second of prefill.
    pub prefill_tok_s: f64,
    /// Generated tokens per second after the first one.
    pub decode_tok_s: f64,
    /// Tokens generated.
    pub generated_tokens: u32,
    /// Peak resident set size of the process (bytes), where the OS tells.
    pub peak_rss_bytes: Option<u64>,
}

impl RunMetrics {
    /// Metrics from an engine's stats and the host-measured load time.
    pub fn new(load_ms: f64, stats: &GenerationStats) -> RunMetrics {
        let per_s = |n: f64, us: u64| if us == 0 { 0.0 } else { n * 1e6 / us as f64 };
        RunMetrics {
            load_ms,
            prompt_tokens: stats.prompt_ids.len(),
            ttft_ms: stats.first_token_us as f64 / 1000.0,
            prefill_tok_s: per_s(stats.prompt_ids.len() as f64, stats.prefill_us),
            decode_tok_s: per_s(
                stats.generated_tokens.saturating_sub(1) as f64,
                stats.decode_us,
            ),
            generated_tokens: stats.generated_tokens,
            peak_rss_bytes: peak_rss_bytes(),
        }
    }

    /// One human line, for stderr.
    pub fn summary(&self) -> String {
        let rss = self
            .peak_rss_bytes
            .map(|b| format!("{:.1} MiB", b as f64 / (1024.0 * 1024.0)))
            .unwrap_or_else(|| "n/a".into());
        format!(
            "load {:.1} ms | prompt {} tok, prefill {:.1} tok/s | ttft {:.2} ms | \
             generated {} tok, decode {:.1} tok/s | peak RSS {rss}",
            self.load_ms,
            self.prompt_tokens,
            self.prefill_tok_s,
            self.ttft_ms,
            self.generated_tokens,
            self.decode_tok_s,
        )
    }
}

/// Peak resident set size of this process (`VmHWM`), on Linux.
pub fn peak_rss_bytes() -> Option<u64> {
    peak_rss_in("/proc/self/status")
}

/// Peak resident set size of process `pid` (a worker), on Linux.
pub fn peak_rss_bytes_of(pid: u32) -> Option<u64> {
    peak_rss_in(&format!("/proc/{pid}/status"))
}

fn peak_rss_in(status: &str) -> Option<u64> {
    let status = std::fs::read_to_string(status).ok()?;
    let line = status.lines().find(|l| l.starts_with("VmHWM:"))?;
    let kb: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kb * 1024)
}

/// Resets this process's peak-RSS mark to its current RSS (Linux: `5` to
/// `/proc/self/clear_refs`), so that the next [`peak_rss_bytes`] covers only what
/// happens after. Best effort: where it cannot, the peak stays the process's whole-life
/// one (a benchmark row then over-reports, never under-reports).
pub fn reset_peak_rss() {
    if let Err(e) = std::fs::write("/proc/self/clear_refs", b"5") {
        tracing::debug!("cannot reset the peak RSS mark: {e}");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rates_come_from_engine_timings() {
        let stats = GenerationStats {
            prompt_ids: vec![1, 2, 3, 4].into(),
            generated_tokens: 11,
            prefill_us: 2_000,
            first_token_us: 2_500,
            decode_us: 10_000,
            stop_reason: 1,
        };
        let m = RunMetrics::new(5.0, &stats);
        assert_eq!(m.prompt_tokens, 4);
        assert_eq!(m.prefill_tok_s, 2000.0);
        assert_eq!(m.decode_tok_s, 1000.0);
        assert_eq!(m.ttft_ms, 2.5);
        if cfg!(target_os = "linux") {
            assert!(m.peak_rss_bytes.unwrap() > 0);
        }
    }
}
