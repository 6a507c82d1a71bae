//! A client that goes away cancels its aggregation: axum drops the handler future when the
//! connection closes, which drops the aggregation, which closes the backend connections, which
//! makes the backends drop their own handlers.

mod support;

use std::time::Duration;

use support::{Dashboard, eventually, request};
use tokio::io::AsyncWriteExt;
use tokio::net::TcpStream;

#[tokio::test]
async fn a_client_that_disconnects_cancels_both_backend_calls() {
    // A deadline far away, so that only the disconnect can be what cancels the calls.
    let dashboard = Dashboard::start(Duration::from_secs(120)).await;
    let (profile, transactions) = (dashboard.profile.stats(), dashboard.transactions.stats());
    let mut client = TcpStream::connect(dashboard.addr).await.expect("connect to the dashboard");
    let head = request(dashboard.addr, "/dashboard/42?profile_delay_ms=60000&transactions_delay_ms=60000", &[]);
    client.write_all(head.as_bytes()).await.expect("send the request");
    eventually("both backends to receive their request", || profile.in_flight() == 1 && transactions.in_flight() == 1)
        .await;

    drop(client);

    eventually("both backend requests to be cancelled", || profile.cancelled() == 1 && transactions.cancelled() == 1)
        .await;
    assert_eq!((profile.completed(), transactions.completed()), (0, 0));
    assert_eq!((profile.in_flight(), transactions.in_flight()), (0, 0));
}
