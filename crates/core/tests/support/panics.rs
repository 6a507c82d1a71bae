//! Deliberate panics in tests: one message, and a panic hook that keeps it out of the output.
//! Shared by the core's tests and the aggregator's model test (through `#[path]`).

/// The message of every deliberate panic.
pub(crate) const PANIC_MESSAGE: &str = "source panicked on purpose";

/// Hides the panic messages of sources that panic on purpose; every other panic is reported.
pub(crate) fn quiet_deliberate_panics() {
    static ONCE: std::sync::Once = std::sync::Once::new();
    ONCE.call_once(|| {
        let default = std::panic::take_hook();
        std::panic::set_hook(Box::new(move |info| {
            let payload = info.payload();
            let message =
                (payload.downcast_ref::<String>().map(String::as_str)).or(payload.downcast_ref::<&str>().copied());
            if message != Some(PANIC_MESSAGE) {
                default(info);
            }
        }));
    });
}
