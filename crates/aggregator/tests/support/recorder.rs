//! A `metrics` recorder that keeps every counter and histogram by `name{labels}`, for the tests
//! that read what muster records (through `#[path]`).

#![allow(dead_code, unreachable_pub, clippy::unwrap_used)] // reason: each test binary uses a different subset

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use metrics::{
    Counter, CounterFn, Gauge, GaugeFn, Histogram, HistogramFn, Key, KeyName, Metadata, Recorder, SharedString, Unit,
};

/// A metric's name and labels, rendered `name{a=1,b=2}` with the labels sorted.
fn render(key: &Key) -> String {
    let mut labels: Vec<String> = key.labels().map(|label| format!("{}={}", label.key(), label.value())).collect();
    labels.sort();
    format!("{}{{{}}}", key.name(), labels.join(","))
}

#[derive(Default)]
struct Count(AtomicU64);

impl CounterFn for Count {
    fn increment(&self, value: u64) {
        self.0.fetch_add(value, Ordering::Relaxed);
    }

    fn absolute(&self, value: u64) {
        self.0.store(value, Ordering::Relaxed);
    }
}

/// A gauge's last value, as `f64` bits.
#[derive(Default)]
struct Level(AtomicU64);

impl GaugeFn for Level {
    fn increment(&self, value: f64) {
        self.set(f64::from_bits(self.0.load(Ordering::Relaxed)) + value);
    }

    fn decrement(&self, value: f64) {
        self.set(f64::from_bits(self.0.load(Ordering::Relaxed)) - value);
    }

    fn set(&self, value: f64) {
        self.0.store(value.to_bits(), Ordering::Relaxed);
    }
}

#[derive(Default)]
struct Values(Mutex<Vec<f64>>);

impl HistogramFn for Values {
    fn record(&self, value: f64) {
        self.0.lock().unwrap().push(value);
    }
}

/// Keeps every counter and histogram by rendered key, and the descriptions.
#[derive(Default)]
pub struct TestRecorder {
    counters: Mutex<BTreeMap<String, Arc<Count>>>,
    histograms: Mutex<BTreeMap<String, Arc<Values>>>,
    gauges: Mutex<BTreeMap<String, Arc<Level>>>,
    pub described: Mutex<Vec<(String, Option<Unit>)>>,
}

impl TestRecorder {
    /// The counters, `name{labels}` => value.
    pub fn counters(&self) -> BTreeMap<String, u64> {
        let counters = self.counters.lock().unwrap();
        counters.iter().map(|(key, count)| (key.clone(), count.0.load(Ordering::Relaxed))).collect()
    }

    pub fn counter(&self, key: &str) -> u64 {
        self.counters().get(key).copied().unwrap_or_else(|| panic!("no counter {key} in {:#?}", self.counters()))
    }

    /// The counters named `name`, `labels` => value.
    pub fn counters_named(&self, name: &str) -> BTreeMap<String, u64> {
        let prefix = format!("{name}{{");
        (self.counters().into_iter())
            .filter_map(|(key, value)| Some((key.strip_prefix(&prefix)?.trim_end_matches('}').to_owned(), value)))
            .collect()
    }

    /// The gauge `key`'s last value, if it was registered.
    pub fn gauge(&self, key: &str) -> Option<f64> {
        self.gauges.lock().unwrap().get(key).map(|level| f64::from_bits(level.0.load(Ordering::Relaxed)))
    }

    /// The values recorded in the histogram `key`, in seconds.
    pub fn histogram(&self, key: &str) -> Vec<f64> {
        let histograms = self.histograms.lock().unwrap();
        let keys: Vec<&String> = histograms.keys().collect();
        histograms.get(key).unwrap_or_else(|| panic!("no histogram {key} in {keys:#?}")).0.lock().unwrap().clone()
    }
}

impl Recorder for TestRecorder {
    fn describe_counter(&self, key: KeyName, unit: Option<Unit>, _: SharedString) {
        self.described.lock().unwrap().push((key.as_str().to_owned(), unit));
    }

    fn describe_gauge(&self, key: KeyName, unit: Option<Unit>, _: SharedString) {
        self.described.lock().unwrap().push((key.as_str().to_owned(), unit));
    }

    fn describe_histogram(&self, key: KeyName, unit: Option<Unit>, _: SharedString) {
        self.described.lock().unwrap().push((key.as_str().to_owned(), unit));
    }

    fn register_counter(&self, key: &Key, _: &Metadata<'_>) -> Counter {
        let mut counters = self.counters.lock().unwrap();
        Counter::from_arc(Arc::clone(counters.entry(render(key)).or_default()))
    }

    fn register_gauge(&self, key: &Key, _: &Metadata<'_>) -> Gauge {
        let mut gauges = self.gauges.lock().unwrap();
        Gauge::from_arc(Arc::clone(gauges.entry(render(key)).or_default()))
    }

    fn register_histogram(&self, key: &Key, _: &Metadata<'_>) -> Histogram {
        let mut histograms = self.histograms.lock().unwrap();
        Histogram::from_arc(Arc::clone(histograms.entry(render(key)).or_default()))
    }
}
