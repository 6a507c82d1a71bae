// A dependent source names its input by position among the sources declared before it.
use muster::{Aggregator, builder::Input, fetcher_fn};

fn main() {
    let profile = fetcher_fn(|_: &u64| async { Ok::<_, std::io::Error>(String::from("gold")) });
    let offers = fetcher_fn(|tier: &String| {
        let tier = tier.clone();
        async move { Ok::<_, std::io::Error>(tier) }
    });
    let _ = Aggregator::builder()
        .source("profile", profile)
        .then("offers", Input::<1>, |_: &u64, tier: &String| tier.clone(), offers)
        .build();
}
