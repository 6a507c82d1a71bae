//! The two sides of a fail-fast group, on a real clock: two sources fetched in parallel under a
//! 1 s deadline, then the same group when one source fails and the other is cancelled.
//!
//! Run with: cargo run -p basic

use std::error::Error;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use muster::{CancelToken, Deadline, Fetcher, Group, fetcher_fn};
use tokio::time::sleep;

#[tokio::main]
async fn main() -> Result<(), Box<dyn Error>> {
    success().await?;
    println!();
    fail_fast().await
}

/// Both sources succeed; they run in parallel, so the group takes as long as the slower one.
async fn success() -> Result<(), Box<dyn Error>> {
    println!("== success: profile (40 ms) and transactions (60 ms) under a 1 s deadline");
    let profile = fetcher_fn(|user_id: &u64| {
        let user_id = *user_id;
        async move {
            sleep(Duration::from_millis(40)).await;
            Ok::<_, std::io::Error>(format!(r#"{{"id": {user_id}, "name": "Ada", "kyc": "verified"}}"#))
        }
    });
    let transactions = fetcher_fn(|_: &u64| async {
        sleep(Duration::from_millis(60)).await;
        Ok::<_, std::io::Error>(String::from(r#"[{"amount": -12.50, "to": "Bakery"}]"#))
    });

    let user_id = 42;
    let started = Instant::now();
    let mut group = Group::with_options(Deadline(Duration::from_secs(1)))?;
    let token = group.token();
    group.spawn("profile", profile.fetch(&user_id))?;
    group.spawn("transactions", transactions.fetch(&user_id))?;
    let outputs = group.wait().await?;

    // Merged the way the dashboard will answer: one JSON object keyed by source name.
    let merged: Vec<String> = outputs.into_iter().map(|(name, body)| format!(r#""{name}": {body}"#)).collect();
    println!("merged: {{{}}}", merged.join(", "));
    println!("elapsed: {:?} (not 100 ms: the sources ran in parallel)", started.elapsed());
    if let Some(cause) = token.cause() {
        println!("token after success: {cause}");
    }
    Ok(())
}

/// `profile` fails after 30 ms; `transactions` would take 10 s, and is dropped at once.
async fn fail_fast() -> Result<(), Box<dyn Error>> {
    println!("== fail-fast: profile fails after 30 ms, transactions would take 10 s");
    let dropped = Arc::new(AtomicBool::new(false));
    let started = Instant::now();
    let mut group = Group::with_options(Deadline(Duration::from_secs(1)))?;
    let token = group.token();

    group.spawn("profile", async {
        sleep(Duration::from_millis(30)).await;
        Err::<String, _>("profile service: 503 Service Unavailable")
    })?;
    let mut guard = DropGuard { name: "transactions", token, started, dropped: Arc::clone(&dropped), armed: true };
    group.spawn("transactions", async move {
        sleep(Duration::from_secs(10)).await;
        guard.disarm();
        Ok::<_, &str>(String::from("[...]"))
    })?;

    let Err(error) = group.wait().await else {
        return Err("the group succeeded although `profile` failed".into());
    };
    println!("wait returned after {:?}", started.elapsed());
    println!("error: {error}");
    if let Some(source) = error.source() {
        println!("  caused by: {source}");
    }
    println!("kind: {}", error.kind());
    println!("source_name: {:?}", error.source_name());
    println!("cancelled: {:?}", error.cancelled());
    println!("transactions dropped before wait returned: {}", dropped.load(Ordering::SeqCst));
    Ok(())
}

/// Reports, when the future holding it is dropped before finishing, that it was cancelled and
/// why, as read from the group's token.
struct DropGuard {
    name: &'static str,
    token: CancelToken,
    started: Instant,
    dropped: Arc<AtomicBool>,
    armed: bool,
}

impl DropGuard {
    /// The work finished: dropping the guard now is not a cancellation.
    fn disarm(&mut self) {
        self.armed = false;
    }
}

impl Drop for DropGuard {
    fn drop(&mut self) {
        if !self.armed {
            return;
        }
        self.dropped.store(true, Ordering::SeqCst);
        let cause = self.token.cause().map_or_else(|| String::from("no cause yet"), ToString::to_string);
        println!("  [{}] dropped after {:?}; token cause: {cause}", self.name, self.started.elapsed());
    }
}
