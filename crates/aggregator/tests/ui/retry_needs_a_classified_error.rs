// A retry asks the error whether to retry; this error cannot say.
use muster::{Aggregator, Retry, fetcher_fn};

#[derive(Debug)]
struct LedgerError;

impl std::fmt::Display for LedgerError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("ledger unavailable")
    }
}

impl std::error::Error for LedgerError {}

fn main() {
    let ledger = fetcher_fn(|_: &u64| async { Err::<u8, _>(LedgerError) });
    let _ = Aggregator::builder().source_with("ledger", ledger, Retry::attempts(3)).build();
}
