// Every source of an aggregator fetches for the same request type.
use muster::{Aggregator, fetcher_fn};

fn main() {
    let profile = fetcher_fn(|_: &u64| async { Ok::<_, std::io::Error>(1_u8) });
    let by_name = fetcher_fn(|_: &String| async { Ok::<_, std::io::Error>(2_u8) });
    let _ = Aggregator::builder().source("profile", profile).source("by_name", by_name).build();
}
