//! Misuses of the typed API fail to compile, with messages a user can act on: a missing or
//! extra output, a wrong output type, an optional source read as required, a fallback of the
//! wrong type, a source for another request type, a retry on an error that cannot say whether
//! it is retryable, a classifier of timeouts in a tuple written inside first (0.2's order). The
//! expected messages are in `tests/ui/*.stderr`
//! (`TRYBUILD=overwrite cargo test -p muster --test compile_fail` regenerates them).

#[test]
fn misuses_of_the_typed_api_do_not_compile() {
    let cases = trybuild::TestCases::new();
    cases.compile_fail("tests/ui/*.rs");
}
