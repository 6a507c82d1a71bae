// An `Optional` source may be missing: its output is `Option<Vec<u32>>`.
use muster::{Aggregator, Optional, fetcher_fn};

async fn handler() -> Result<(), Box<dyn std::error::Error>> {
    let offers = fetcher_fn(|_: &u64| async { Ok::<_, std::io::Error>(vec![1_u32]) });
    let aggregator = Aggregator::builder().source_with("offers", offers, Optional).build()?;
    let (offers,) = aggregator.aggregate(&7).await?.outputs;
    let first: u32 = offers[0];
    let _ = first;
    Ok(())
}

fn main() {
    let _ = handler();
}
