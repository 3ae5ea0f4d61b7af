//! Honouring `LoadRequest::threads` with Candle.
//!
//! Candle's CPU kernels (gemm's matrix products, softmax, norms) run their parallel
//! parts on the *current* rayon pool. A model loaded with an explicit thread count
//! therefore gets its own pool and runs every forward pass inside it (`install`); with 0
//! threads a pool shared by such models (one thread per core) is used. The
//! thread count changes which thread computes which block of a product, not the order of
//! any sum, so results do not depend on it.
//!
//! Two facts of Candle 0.11.1 on Linux shape this module:
//!
//! * Every CPU matrix product asks `candle_core::utils::get_num_threads()`, which, unless
//!   `RAYON_NUM_THREADS` is set, counts physical cores by parsing `/proc/cpuinfo` — on
//!   every call. For small models that is most of the run time (stories260K decodes
//!   six times faster without it). [`settle_candle_thread_count`] therefore sets
//!   `RAYON_NUM_THREADS` once, when the engine starts and only if the user has not, to
//!   the machine's available parallelism (what rayon uses anyway).
//! * Large element-wise operations (≥ 64K elements) and quantised matrix products run on
//!   a process-wide "barrier pool" that Candle sizes once from `CANDLE_NUM_THREADS` /
//!   `RAYON_NUM_THREADS`. A per-model thread count cannot reach it, so `threads` bounds
//!   the f32 matrix products, attention and normalisation of a model, while quantised
//!   GGUF matmuls use the process-wide count. Set `CANDLE_NUM_THREADS` to bound those.

use std::sync::OnceLock;

use runanywhere_plugin_api::EngineError;

/// Sets `RAYON_NUM_THREADS` (when unset) so that Candle stops re-counting cores on
/// every matrix product; see the module docs. Runs once per process.
pub(crate) fn settle_candle_thread_count() {
    static ONCE: std::sync::Once = std::sync::Once::new();
    ONCE.call_once(|| {
        if std::env::var_os("RAYON_NUM_THREADS").is_none() {
            let n = std::thread::available_parallelism().map_or(1, |n| n.get());
            // Called from engine initialisation, before any model runs; Candle reads the
            // variable from then on instead of /proc/cpuinfo.
            std::env::set_var("RAYON_NUM_THREADS", n.to_string());
            tracing::debug!(threads = n, "set RAYON_NUM_THREADS for Candle");
        }
    });
}

/// Where a model's forward passes run.
pub(crate) struct Threads {
    pool: Pool,
}

enum Pool {
    /// A pool of the requested size, for this model alone.
    Own(rayon::ThreadPool),
    /// The shared pool of models loaded with `threads = 0`.
    Shared(&'static rayon::ThreadPool),
}

/// The pool of models loaded with `threads = 0`: one thread per available core, built
/// on first use. Forward passes run *inside* a pool rather than being posted to one op
/// by op from the caller's thread: that is what keeps small models fast (every parallel
/// op of a forward pass would otherwise wake pool threads from outside).
fn shared_pool() -> Result<&'static rayon::ThreadPool, EngineError> {
    static POOL: OnceLock<Result<rayon::ThreadPool, String>> = OnceLock::new();
    POOL.get_or_init(|| {
        let n = std::thread::available_parallelism().map_or(1, |n| n.get());
        build(n).map_err(|e| e.message().to_string())
    })
    .as_ref()
    .map_err(|e| EngineError::internal(e.clone()))
}

fn build(threads: usize) -> Result<rayon::ThreadPool, EngineError> {
    rayon::ThreadPoolBuilder::new()
        .num_threads(threads)
        .thread_name(|i| format!("candle-{i}"))
        .build()
        .map_err(|e| EngineError::internal(format!("cannot start {threads} worker threads: {e}")))
}

impl Threads {
    /// A private pool of `requested` threads, or the shared one for 0.
    pub(crate) fn new(requested: u32) -> Result<Self, EngineError> {
        let pool = match requested {
            0 => Pool::Shared(shared_pool()?),
            n => Pool::Own(build(n as usize)?),
        };
        Ok(Threads { pool })
    }

    fn pool(&self) -> &rayon::ThreadPool {
        match &self.pool {
            Pool::Own(pool) => pool,
            Pool::Shared(pool) => pool,
        }
    }

    /// The number of threads forward passes use.
    pub(crate) fn count(&self) -> usize {
        self.pool().current_num_threads()
    }

    /// Runs `f` on this model's threads.
    pub(crate) fn run<R: Send>(&self, f: impl FnOnce() -> R + Send) -> R {
        self.pool().install(f)
    }
}
