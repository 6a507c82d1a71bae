//! Tracing: every task runs in a `source` span inside the caller's span.
//!
//! Alone in its test binary: tracing caches per-callsite interest process-wide, so a test
//! installing a thread-local subscriber races with other tests' threads.

mod support;

use std::sync::{Arc, Mutex};

use muster_core::Group;
use muster_options::ParentSpan;
use support::SourceError;

/// Every task runs in a `source` span inside the caller's span, whatever span is current when
/// `wait` polls it.
#[tokio::test(start_paused = true)]
async fn tasks_run_in_a_source_span_inside_the_callers_span() {
    let lines = Arc::new(Mutex::new(Vec::<u8>::new()));
    let writer = Arc::clone(&lines);
    let subscriber = tracing_subscriber::fmt()
        .with_writer(move || Capture(Arc::clone(&writer)))
        .with_target(false)
        .without_time()
        .finish();
    let _default = tracing::subscriber::set_default(subscriber);

    let request_span = tracing::info_span!("dashboard", user_id = 42);
    let mut group = Group::with_options(ParentSpan(request_span)).unwrap();
    group.spawn("profile", log_fetching()).unwrap();
    let contextual = tracing::info_span!("handler", request_id = "r-1");
    let mut second = Group::new();
    contextual.in_scope(|| second.spawn("transactions", log_fetching())).unwrap();
    tracing::info_span!("elsewhere").in_scope(|| ()); // a different current span at wait time
    group.wait().await.unwrap();
    second.wait().await.unwrap();

    let output = String::from_utf8(lines.lock().unwrap().clone()).unwrap();
    assert!(output.contains("dashboard{user_id=42}:source{source=profile}: fetching"), "{output}");
    assert!(output.contains("handler{request_id=\"r-1\"}:source{source=transactions}: fetching"), "{output}");
}

async fn log_fetching() -> Result<(), SourceError> {
    tracing::info!("fetching");
    Ok(())
}

struct Capture(Arc<Mutex<Vec<u8>>>);

impl std::io::Write for Capture {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap_or_else(std::sync::PoisonError::into_inner).extend_from_slice(buf);
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}
