//! The `Cache` policy's Redis tier (issue 20, item 3), against a real `redis-server` that each
//! test starts on a free port and kills (by the PID it started) when done. A machine without
//! `redis-server` fails these tests; `.ci/run` installs it.
//!
//! Real IO, so the real clock: the assertions bound the time from above, with room to spare,
//! and never sleep to wait for something that can be polled.

use std::net::{TcpListener, TcpStream};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use muster::policy::{Cache, RedisTier, RedisTierError};
use muster::{Aggregator, ErrorKind, fetcher_fn};
use muster_adapters::mock::{MockFetcher, Step};
use tracing_subscriber::layer::SubscriberExt as _;

#[path = "support/capture.rs"]
mod capture;

/// The environment variable that turns `a_second_process_reads` into the reader of
/// `a_value_written_by_one_instance_is_read_by_another_process`: the URL of its Redis.
const READER: &str = "MUSTER_TEST_REDIS_READER";

fn ms(millis: u64) -> Duration {
    Duration::from_millis(millis)
}

/// A `redis-server` of the test's own, killed when dropped.
struct RedisServer {
    child: Child,
    port: u16,
}

impl RedisServer {
    fn start() -> Self {
        let port =
            TcpListener::bind("127.0.0.1:0").and_then(|listener| listener.local_addr()).expect("a free port").port();
        let child = Command::new("redis-server")
            .args(["--port", &port.to_string(), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap_or_else(|error| {
                panic!("cannot start `redis-server` ({error}): install it (`apt-get install -y redis-server`; `.ci/run` does)")
            });
        let server = Self { child, port };
        let started = Instant::now();
        while TcpStream::connect(("127.0.0.1", port)).is_err() {
            assert!(started.elapsed() < Duration::from_secs(10), "redis-server did not listen on {port} within 10 s");
            std::thread::sleep(ms(10));
        }
        server
    }

    fn url(&self) -> String {
        format!("redis://127.0.0.1:{}", self.port)
    }

    /// Sends `signal` (`STOP`, `CONT`) to the server, by the PID this test started.
    fn signal(&self, signal: &str) {
        let status = Command::new("kill").args([&format!("-{signal}"), &self.child.id().to_string()]).status();
        assert!(status.is_ok_and(|status| status.success()), "kill -{signal} failed");
    }

    fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// A plain connection, to look at what the tier wrote.
    fn connection(&self) -> redis::Connection {
        redis::Client::open(self.url())
            .and_then(|client| client.get_connection())
            .expect("a connection to the test's redis")
    }

    /// Waits until `key` exists (the tier writes in the background).
    fn wait_for(&self, pattern: &str) -> Vec<String> {
        let mut connection = self.connection();
        let started = Instant::now();
        loop {
            let keys: Vec<String> = redis::cmd("KEYS").arg(pattern).query(&mut connection).expect("KEYS");
            if !keys.is_empty() {
                return keys;
            }
            assert!(started.elapsed() < Duration::from_secs(5), "nothing matching `{pattern}` was written within 5 s");
            std::thread::sleep(ms(5));
        }
    }
}

impl Drop for RedisServer {
    fn drop(&mut self) {
        self.kill();
    }
}

/// A source that counts its calls and answers `answer(user)`.
fn counting(calls: &Arc<AtomicUsize>) -> impl muster::Fetcher<u64, Output = String, Error = std::io::Error> + use<> {
    let calls = Arc::clone(calls);
    fetcher_fn(move |user: &u64| {
        calls.fetch_add(1, Ordering::SeqCst);
        let answer = format!("balance of {user}");
        async move { Ok::<_, std::io::Error>(answer) }
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_value_written_by_one_instance_is_read_by_another_process() {
    let server = RedisServer::start();
    let calls = Arc::new(AtomicUsize::new(0));
    let tier = RedisTier::new(&server.url()).unwrap().namespace("test:balance");
    let cache = Cache::new(|user: &u64| *user).ttl(Duration::from_secs(60)).redis(tier);
    let writer = Aggregator::builder().source_with("balance", counting(&calls), cache).build().unwrap();
    assert_eq!(writer.aggregate(&7).await.unwrap().outputs.0, "balance of 7");
    assert_eq!(server.wait_for("test:balance:*"), ["test:balance:7"]);

    // The reader: this test binary again, in another process, with a source that always fails.
    let reader = Command::new(std::env::current_exe().unwrap())
        .args(["--exact", "a_second_process_reads", "--nocapture", "--test-threads", "1"])
        .env(READER, server.url())
        .output()
        .expect("the reader process");
    let output = String::from_utf8_lossy(&reader.stdout);
    assert!(reader.status.success(), "the reader failed:\n{output}\n{}", String::from_utf8_lossy(&reader.stderr));
    assert!(output.contains("reader got `balance of 7`"), "the reader did not run:\n{output}");
    assert_eq!(calls.load(Ordering::SeqCst), 1);
}

/// The reader process of `a_value_written_by_one_instance_is_read_by_another_process`; does
/// nothing unless that test starts it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_second_process_reads() {
    let Ok(url) = std::env::var(READER) else { return };
    let down = MockFetcher::<String>::script([Step::err("balance is down").error_kind(ErrorKind::Connect)]);
    let tier = RedisTier::new(&url).unwrap().namespace("test:balance");
    let cache = Cache::new(|user: &u64| *user).ttl(Duration::from_secs(60)).redis(tier.clone());
    let aggregator = Aggregator::builder().source_with("balance", down.clone(), cache).build().unwrap();
    let read = aggregator.aggregate(&7).await.expect("the value the first process wrote must answer");
    assert_eq!(down.calls(), 0, "a fresh value from the shared tier must not call the source");
    assert_eq!(read.report.sources[0].notes, ["cache hit (shared tier)"]);
    println!("reader got `{}`", read.outputs.0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_replica_answers_stale_from_the_shared_tier_when_its_source_fails() {
    let server = RedisServer::start();
    let cache = |tier: RedisTier| {
        Cache::new(|user: &u64| *user).ttl(ms(50)).stale_if_error(Duration::from_secs(60)).redis(tier)
    };
    let tier = RedisTier::new(&server.url()).unwrap().namespace("test:stale").hashed_keys();
    let calls = Arc::new(AtomicUsize::new(0));
    let first = Aggregator::builder().source_with("balance", counting(&calls), cache(tier.clone())).build().unwrap();
    first.aggregate(&7).await.unwrap();
    let keys = server.wait_for("test:stale:*");
    assert_eq!(keys.len(), 1);
    assert_eq!(keys[0].len(), "test:stale:".len() + 64, "a hashed key is the namespace and 64 hex digits: {}", keys[0]);
    tokio::time::sleep(ms(60)).await; // past the ttl, on the wall clock the tier keeps

    // Another replica: its local tier is empty, its source is down.
    let down = MockFetcher::<String>::script([Step::err("balance is down").error_kind(ErrorKind::Status)]);
    let second = Aggregator::builder().source_with("balance", down.clone(), cache(tier)).build().unwrap();
    let stale = second.aggregate(&7).await.expect("the shared stale value must answer");
    assert_eq!(stale.outputs.0, "balance of 7");
    assert_eq!(down.calls(), 1, "past the ttl the source is called");
    let age = stale.report.sources[0].stale.expect("reported stale");
    assert!(age >= ms(50), "the age is the value's, from when the first replica stored it: {age:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_killed_mid_run_every_request_still_answers_from_the_source() {
    let mut server = RedisServer::start();
    let calls = Arc::new(AtomicUsize::new(0));
    let tier = RedisTier::new(&server.url()).unwrap().namespace("test:killed");
    let cache = Cache::new(|user: &u64| *user).ttl(Duration::from_secs(60)).redis(tier.clone());
    let aggregator = Aggregator::builder().source_with("balance", counting(&calls), cache).build().unwrap();
    for user in 0..40_u64 {
        if user == 20 {
            server.kill();
        }
        let started = Instant::now();
        let answer = aggregator.aggregate(&user).await.unwrap_or_else(|error| panic!("request {user}: {error}"));
        assert_eq!(answer.outputs.0, format!("balance of {user}"));
        assert!(started.elapsed() < ms(500), "request {user} took {:?}", started.elapsed());
    }
    assert_eq!(calls.load(Ordering::SeqCst), 40, "every request answered from the source");
    assert!(tier.failures() > 0, "the failures must be counted");
    assert!(!tier.is_healthy());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_slow_redis_does_not_delay_the_answer() {
    let server = RedisServer::start();
    let calls = Arc::new(AtomicUsize::new(0));
    let tier = RedisTier::new(&server.url()).unwrap().namespace("test:slow").read_timeout(ms(30));
    let cache = Cache::new(|user: &u64| *user).ttl(Duration::from_secs(60)).redis(tier.clone());
    let aggregator = Aggregator::builder().source_with("balance", counting(&calls), cache).build().unwrap();
    aggregator.aggregate(&1).await.unwrap();
    assert!(tier.is_healthy());

    // A stopped server accepts connections and answers nothing: each read times out.
    server.signal("STOP");
    for user in 2..12_u64 {
        let started = Instant::now();
        let answer = aggregator.aggregate(&user).await.unwrap();
        let took = started.elapsed();
        assert_eq!(answer.outputs.0, format!("balance of {user}"));
        assert!(took < ms(30 + 150), "request {user} waited {took:?} on a stopped redis (read timeout 30 ms)");
    }
    assert!(tier.failures() >= 10, "each timed-out read counts: {}", tier.failures());
    server.signal("CONT");
}

#[test]
fn a_failing_redis_is_logged_once_per_transition() {
    // In a process of its own: tracing caches whether a log line is wanted per call site, and
    // the other tests, running at the same time without a subscriber, would race with this one.
    let child = Command::new(std::env::current_exe().unwrap())
        .args(["--exact", "the_logging_process", "--nocapture", "--test-threads", "1"])
        .env(LOGGING, "1")
        .output()
        .expect("the logging process");
    let output = String::from_utf8_lossy(&child.stdout);
    assert!(child.status.success(), "{output}\n{}", String::from_utf8_lossy(&child.stderr));
    assert!(output.contains("logged once per transition"), "the logging process did not run:\n{output}");
}

/// The environment variable that turns `the_logging_process` on.
const LOGGING: &str = "MUSTER_TEST_REDIS_LOGGING";

/// The body of `a_failing_redis_is_logged_once_per_transition`, in a process of its own; does
/// nothing unless that test starts it.
#[test]
fn the_logging_process() {
    if std::env::var_os(LOGGING).is_none() {
        return;
    }
    let capture = capture::Capture::default();
    let subscriber = tracing_subscriber::registry().with(capture.clone());
    let _guard = tracing::subscriber::set_default(subscriber);
    let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
    let mut server = RedisServer::start();
    let port = server.port;
    runtime.block_on(async {
        let calls = Arc::new(AtomicUsize::new(0));
        let tier = RedisTier::new(&server.url()).unwrap().namespace("test:log");
        let cache = Cache::new(|user: &u64| *user).ttl(Duration::from_secs(60)).redis(tier.clone());
        let aggregator = Aggregator::builder().source_with("balance", counting(&calls), cache).build().unwrap();
        aggregator.aggregate(&0).await.unwrap();
        server.kill();
        for user in 1..10_u64 {
            aggregator.aggregate(&user).await.unwrap();
        }
        assert!(!tier.is_healthy());
        // Back on the same port: the tier reconnects and says so once.
        let child = Command::new("redis-server")
            .args(["--port", &port.to_string(), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no"])
            .stdout(Stdio::null())
            .spawn()
            .expect("redis-server");
        server.child = child;
        let started = Instant::now();
        let mut user = 100;
        while !tier.is_healthy() {
            assert!(started.elapsed() < Duration::from_secs(10), "the tier never recovered");
            aggregator.aggregate(&user).await.unwrap();
            user += 1;
            tokio::time::sleep(ms(20)).await;
        }
    });
    let events = capture.0.lock().unwrap();
    let failing =
        capture::with_message(&events, "redis cache tier failing: answering from the source and the local tier");
    let recovered = capture::with_message(&events, "redis cache tier answers again");
    let messages: Vec<_> = events.iter().filter_map(|event| capture::field(event, "message")).collect();
    assert_eq!((failing.len(), recovered.len()), (1, 1), "one event per transition: {messages:?}");
    assert_eq!(capture::field(failing[0], "level"), Some("WARN"));
    assert_eq!(capture::field(recovered[0], "level"), Some("INFO"));
    println!("logged once per transition");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unreachable_redis_at_start_fails_open() {
    // A port nothing listens on.
    let port = TcpListener::bind("127.0.0.1:0").and_then(|listener| listener.local_addr()).unwrap().port();
    let tier = RedisTier::new(&format!("redis://127.0.0.1:{port}")).unwrap();
    assert!(tier.ping().await.is_err(), "ping must say the tier is unreachable");
    let calls = Arc::new(AtomicUsize::new(0));
    let cache = Cache::new(|user: &u64| *user).ttl(Duration::from_secs(60)).redis(tier.clone());
    let aggregator = Aggregator::builder().source_with("balance", counting(&calls), cache).build().unwrap();
    for _ in 0..3 {
        assert_eq!(aggregator.aggregate(&7).await.unwrap().outputs.0, "balance of 7");
    }
    assert_eq!(calls.load(Ordering::SeqCst), 1, "the local tier still caches");
    assert!(tier.failures() >= 1);
}

#[cfg(feature = "metrics")]
#[path = "support/recorder.rs"]
mod recorder;

#[cfg(feature = "metrics")]
#[tokio::test]
async fn the_failures_metric_says_which_tier_and_which_operation() {
    let recorder = recorder::TestRecorder::default();
    let _local = metrics::set_default_local_recorder(&recorder);
    let port = TcpListener::bind("127.0.0.1:0").and_then(|listener| listener.local_addr()).unwrap().port();
    let tier = RedisTier::new(&format!("redis://127.0.0.1:{port}")).unwrap().namespace("app:balance");
    let calls = Arc::new(AtomicUsize::new(0));
    let cache = Cache::new(|user: &u64| *user).ttl(Duration::from_secs(60)).redis(tier.clone());
    let aggregator = Aggregator::builder().source_with("balance", counting(&calls), cache).build().unwrap();
    assert_eq!(aggregator.aggregate(&7).await.unwrap().outputs.0, "balance of 7");
    // The write runs in a task of its own: wait for its failure, within a bound.
    let started = Instant::now();
    while tier.failures() < 2 && started.elapsed() < Duration::from_secs(10) {
        tokio::time::sleep(ms(5)).await;
    }
    let failures = recorder.counters_named("muster_cache_redis_failures_total");
    assert_eq!(
        failures.keys().collect::<Vec<_>>(),
        ["namespace=app:balance,operation=read", "namespace=app:balance,operation=write"],
        "{failures:?}"
    );
}

#[test]
fn an_invalid_redis_url_is_refused_when_the_tier_is_made() {
    let error = RedisTier::new("http://example.com").unwrap_err();
    assert!(matches!(error, RedisTierError::Url { .. }));
    assert_eq!(error.to_string(), "invalid redis url `http://example.com`");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_read_never_runs_into_the_deadline() {
    let server = RedisServer::start();
    let tier = RedisTier::new(&server.url()).unwrap().namespace("test:deadline").read_timeout(Duration::from_secs(5));
    let cache = Cache::new(|user: &u64| *user).ttl(Duration::from_secs(60)).redis(tier.clone());
    let calls = Arc::new(AtomicUsize::new(0));
    let aggregator = Aggregator::builder()
        .source_with("balance", counting(&calls), cache)
        .options(muster::Deadline(ms(200)))
        .build()
        .unwrap();
    aggregator.aggregate(&1).await.unwrap();
    server.signal("STOP");
    let started = Instant::now();
    let answer = aggregator.aggregate(&2).await.expect("the source must answer before the deadline");
    assert_eq!(answer.outputs.0, "balance of 2");
    // The answer is the source's, so the read gave up within the budget; the bound is loose
    // (the clock is real, and the machine may be busy): far below the 5 s read timeout.
    assert!(started.elapsed() < ms(1_000), "a 5 s read timeout must be cut to the budget: {:?}", started.elapsed());
    server.signal("CONT");
}
