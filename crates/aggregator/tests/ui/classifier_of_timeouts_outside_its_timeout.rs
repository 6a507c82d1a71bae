// A tuple lists its policies outermost first. Written in 0.2's order (inside first), a retry
// whose classifier takes the timeout's error would sit inside the timeout, where the error is
// the source's own: the closure's type no longer fits, and the message says which error it gets.
use std::time::Duration;

use muster::{Aggregator, Retry, Timeout, policy::TimeoutError, fetcher_fn};

fn main() {
    let ledger = fetcher_fn(|_: &u64| async { Ok::<u32, std::io::Error>(1) });
    let timeouts = Retry::attempts(3).retry_if(|error: &TimeoutError<std::io::Error>| error.is_elapsed());
    let _ = Aggregator::builder().source_with("ledger", ledger, (Timeout(Duration::from_millis(50)), timeouts)).build();
}
