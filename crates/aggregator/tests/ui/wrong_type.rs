// The balance source returns a `u64`, not a `String`.
use muster::{Aggregator, fetcher_fn};

async fn handler() -> Result<(), Box<dyn std::error::Error>> {
    let profile = fetcher_fn(|_: &u64| async { Ok::<_, std::io::Error>(String::from("Ada")) });
    let balance = fetcher_fn(|_: &u64| async { Ok::<_, std::io::Error>(1250_u64) });
    let aggregator = Aggregator::builder().source("profile", profile).source("balance", balance).build()?;
    let (profile, balance): (String, String) = aggregator.aggregate(&7).await?.outputs;
    let _ = (profile, balance);
    Ok(())
}

fn main() {
    let _ = handler();
}
