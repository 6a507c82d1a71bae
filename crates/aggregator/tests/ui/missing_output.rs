// Three sources, two outputs taken: the tuple has one element per source.
use muster::{Aggregator, fetcher_fn};

async fn handler() -> Result<(), Box<dyn std::error::Error>> {
    let profile = fetcher_fn(|_: &u64| async { Ok::<_, std::io::Error>(String::from("Ada")) });
    let balance = fetcher_fn(|_: &u64| async { Ok::<_, std::io::Error>(1250_u64) });
    let offers = fetcher_fn(|_: &u64| async { Ok::<_, std::io::Error>(vec![1_u32]) });
    let aggregator = Aggregator::builder()
        .source("profile", profile)
        .source("balance", balance)
        .source("offers", offers)
        .build()?;
    let (profile, balance) = aggregator.aggregate(&7).await?.outputs;
    let _ = (profile, balance);
    Ok(())
}

fn main() {
    let _ = handler();
}
