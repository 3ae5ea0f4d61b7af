//! `/metrics`: Prometheus text exposition of what the server did (requests by route and
//! status, tokens, time-to-first-token and per-token latency histograms) and holds now
//! (queue depth, loaded models, memory). Hand-written: a handful of counters does not
//! need a metrics framework.

use std::collections::BTreeMap;
use std::fmt::Write;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;
use std::time::Duration;

use runanywhere::manager::LoadedInfo;

/// Upper bounds (seconds) of the latency histograms' buckets.
const BUCKETS: [f64; 14] = [
    0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0,
];

/// A cumulative histogram of durations.
#[derive(Debug, Default)]
struct Histogram {
    counts: [u64; BUCKETS.len()],
    count: u64,
    sum: f64,
}

impl Histogram {
    fn observe(&mut self, seconds: f64) {
        for (bound, count) in BUCKETS.iter().zip(self.counts.iter_mut()) {
            if seconds <= *bound {
                *count += 1;
            }
        }
        self.count += 1;
        self.sum += seconds;
    }

    fn write(&self, out: &mut String, name: &str, help: &str) {
        let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} histogram");
        for (bound, count) in BUCKETS.iter().zip(self.counts.iter()) {
            let _ = writeln!(out, "{name}_bucket{{le=\"{bound}\"}} {count}");
        }
        let _ = writeln!(out, "{name}_bucket{{le=\"+Inf\"}} {}", self.count);
        let _ = writeln!(out, "{name}_sum {}", self.sum);
        let _ = writeln!(out, "{name}_count {}", self.count);
    }
}

/// The server's counters.
#[derive(Debug, Default)]
pub struct Metrics {
    requests: Mutex<BTreeMap<(String, u16), u64>>,
    tokens_in: AtomicU64,
    tokens_out: AtomicU64,
    ttft: Mutex<Histogram>,
    per_token: Mutex<Histogram>,
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

impl Metrics {
    /// One request answered on `route` with `status`.
    pub fn request(&self, route: &str, status: u16) {
        *lock(&self.requests)
            .entry((route.to_string(), status))
            .or_insert(0) += 1;
    }

    /// A generation's prompt and generated token counts.
    pub fn tokens(&self, prompt: u64, generated: u64) {
        self.tokens_in.fetch_add(prompt, Ordering::Relaxed);
        self.tokens_out.fetch_add(generated, Ordering::Relaxed);
    }

    /// Time from a generation's start (queueing included) to its first token.
    pub fn first_token(&self, after: Duration) {
        lock(&self.ttft).observe(after.as_secs_f64());
    }

    /// Time between two generated tokens.
    pub fn token_gap(&self, gap: Duration) {
        lock(&self.per_token).observe(gap.as_secs_f64());
    }

    /// The text exposition, with the gauges of the moment: `loaded` models, requests
    /// `in_flight` (running or queued) and waiting (`queued`).
    pub fn render(&self, loaded: &[LoadedInfo], in_flight: usize) -> String {
        let mut out = String::new();
        out.push_str(
            "# HELP runanywhere_requests_total HTTP requests answered, by route and status.\n\
             # TYPE runanywhere_requests_total counter\n",
        );
        for ((route, status), n) in lock(&self.requests).iter() {
            let _ = writeln!(
                out,
                "runanywhere_requests_total{{route=\"{route}\",status=\"{status}\"}} {n}"
            );
        }
        let counter = |out: &mut String, name: &str, help: &str, value: u64| {
            let _ = writeln!(
                out,
                "# HELP {name} {help}\n# TYPE {name} counter\n{name} {value}"
            );
        };
        let gauge = |out: &mut String, name: &str, help: &str, value: u64| {
            let _ = writeln!(
                out,
                "# HELP {name} {help}\n# TYPE {name} gauge\n{name} {value}"
            );
        };
        counter(
            &mut out,
            "runanywhere_prompt_tokens_total",
            "Prompt tokens of finished generations.",
            self.tokens_in.load(Ordering::Relaxed),
        );
        counter(
            &mut out,
            "runanywhere_generated_tokens_total",
            "Tokens generated.",
            self.tokens_out.load(Ordering::Relaxed),
        );
        lock(&self.ttft).write(
            &mut out,
            "runanywhere_time_to_first_token_seconds",
            "From a generation's admission (queueing included) to its first token.",
        );
        lock(&self.per_token).write(
            &mut out,
            "runanywhere_token_latency_seconds",
            "Time between two generated tokens of one generation.",
        );
        let queued: usize = loaded.iter().map(|m| m.queued).sum();
        let busy = loaded.iter().filter(|m| m.busy).count();
        gauge(
            &mut out,
            "runanywhere_generations_in_flight",
            "Generations admitted and not finished (running or queued).",
            in_flight as u64,
        );
        gauge(
            &mut out,
            "runanywhere_queue_depth",
            "Generations waiting for a busy model.",
            queued as u64,
        );
        gauge(
            &mut out,
            "runanywhere_models_busy",
            "Loaded models generating now.",
            busy as u64,
        );
        gauge(
            &mut out,
            "runanywhere_models_loaded",
            "Models in memory.",
            loaded.len() as u64,
        );
        gauge(
            &mut out,
            "runanywhere_models_loaded_bytes",
            "Estimated memory of the loaded models.",
            loaded.iter().map(|m| m.bytes).sum(),
        );
        if let Some(rss) = runanywhere::metrics::peak_rss_bytes() {
            gauge(
                &mut out,
                "runanywhere_process_peak_rss_bytes",
                "Peak resident memory of the server process.",
                rss,
            );
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn histogram_buckets_are_cumulative() {
        let m = Metrics::default();
        m.first_token(Duration::from_millis(3));
        m.first_token(Duration::from_millis(700));
        m.request("/v1/models", 200);
        let text = m.render(&[], 0);
        assert!(
            text.contains("runanywhere_time_to_first_token_seconds_bucket{le=\"0.005\"} 1"),
            "{text}"
        );
        assert!(
            text.contains("runanywhere_time_to_first_token_seconds_bucket{le=\"1\"} 2"),
            "{text}"
        );
        assert!(
            text.contains("runanywhere_time_to_first_token_seconds_count 2"),
            "{text}"
        );
        assert!(text.contains("runanywhere_requests_total{route=\"/v1/models\",status=\"200\"} 1"));
        assert!(text.contains("runanywhere_generations_in_flight 0"));
    }
}
