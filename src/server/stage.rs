//! The worker thread of a pipeline stage (analysis, re-id, link) and its stop flag.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread::JoinHandle;

/// A named stage thread. `finish` waits for it to end on its own (its input closed); `stop`
/// raises the flag the thread polls and waits; dropping it stops it.
pub struct StageThread {
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

impl StageThread {
    /// Starts `body` on a thread called `name`; `body` gets the stop flag to poll.
    pub fn spawn(name: &str, body: impl FnOnce(Arc<AtomicBool>) + Send + 'static) -> StageThread {
        let stop = Arc::new(AtomicBool::new(false));
        let s = stop.clone();
        let thread = std::thread::Builder::new()
            .name(name.into())
            .spawn(move || body(s))
            .unwrap_or_else(|e| panic!("cannot start the {name} thread: {e}"));
        StageThread {
            stop,
            thread: Some(thread),
        }
    }

    /// Waits for the thread to end on its own.
    pub fn finish(&mut self) {
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }

    /// Asks the thread to stop and waits for it.
    pub fn stop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        self.finish();
    }
}

impl Drop for StageThread {
    fn drop(&mut self) {
        self.stop();
    }
}
