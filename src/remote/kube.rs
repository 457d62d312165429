//! The Kubernetes client, with the API server's error answers read within a bound.
//!
//! kube's client reads an error answer whole to build its `Status`; a proxy or a broken server
//! in front of the API could send megabytes there. Successful answers (lists, gets and the endless
//! bodies of watches) are left alone: they are the API server's own, and a watch must not end at
//! a byte count.

use http_body_util::{Either, Limited};
use kube::client::ClientBuilder;

/// The largest error body read from the API server (a `Status` is well under a kilobyte).
pub const MAX_ERROR_BODY_BYTES: usize = 64 << 10;

/// A client for `config` whose error answers are cut at [`MAX_ERROR_BODY_BYTES`]. Needs a Tokio
/// runtime.
pub fn client(config: kube::Config) -> Result<kube::Client, kube::Error> {
    crate::install_crypto_provider();
    let builder = ClientBuilder::try_from(config)?;
    Ok(builder
        .with_layer(&tower::util::MapResponseLayer::new(limit_error_body))
        .build())
}

fn limit_error_body<B>(response: http::Response<B>) -> http::Response<Either<B, Limited<B>>> {
    if response.status().is_success() || response.status().is_informational() {
        response.map(Either::Left)
    } else {
        response.map(|body| Either::Right(Limited::new(body, MAX_ERROR_BODY_BYTES)))
    }
}
