// There is no fourth source.
use muster::{Aggregator, fetcher_fn};

async fn handler() -> Result<(), Box<dyn std::error::Error>> {
    let source = fetcher_fn(|_: &u64| async { Ok::<_, std::io::Error>(1_u8) });
    let aggregator = Aggregator::builder().source("a", source).source("b", source).source("c", source).build()?;
    let outputs = aggregator.aggregate(&7).await?.outputs;
    let _ = outputs.3;
    Ok(())
}

fn main() {
    let _ = handler();
}
