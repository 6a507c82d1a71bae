// A fallback takes the source's place: it must be of the source's output type.
use muster::{Aggregator, Fallback, fetcher_fn};

fn main() {
    let offers = fetcher_fn(|_: &u64| async { Ok::<_, std::io::Error>(vec![1_u32]) });
    let _ = Aggregator::builder().source_with("offers", offers, Fallback("no offers")).build();
}
