//! HTTP bodies read up to a limit: a peer that announces or sends more is cut off at the limit
//! instead of being buffered whole.

/// Why a body could not be read.
#[derive(Debug, thiserror::Error)]
pub enum BodyError {
    #[error("the answer is larger than {limit} bytes{}", announced_text(*.announced))]
    TooLarge {
        limit: usize,
        announced: Option<u64>,
    },
    #[error("{0}")]
    Transport(#[from] reqwest::Error),
}

fn announced_text(announced: Option<u64>) -> String {
    announced
        .map(|n| format!(" (it announced {n})"))
        .unwrap_or_default()
}

/// Read `response`'s body, at most `limit` bytes. A `Content-Length` above the limit is refused
/// before anything is read; a body that grows past it is dropped at the first chunk beyond it
/// (which closes the connection).
pub async fn read_limited(
    mut response: reqwest::Response,
    limit: usize,
) -> Result<Vec<u8>, BodyError> {
    if let Some(announced) = response.content_length()
        && announced > limit as u64
    {
        return Err(BodyError::TooLarge {
            limit,
            announced: Some(announced),
        });
    }
    let capacity = response
        .content_length()
        .map_or(8 * 1024, |n| n as usize)
        .min(limit);
    let mut body = Vec::with_capacity(capacity);
    while let Some(chunk) = response.chunk().await? {
        if body.len() + chunk.len() > limit {
            return Err(BodyError::TooLarge {
                limit,
                announced: None,
            });
        }
        body.extend_from_slice(&chunk);
    }
    Ok(body)
}

/// The first `max` bytes of `response`'s body (all of it when shorter), for quoting in an error;
/// the rest is not read. A transport error ends the prefix where it happened.
pub async fn read_prefix(mut response: reqwest::Response, max: usize) -> Vec<u8> {
    let mut prefix = Vec::new();
    while prefix.len() < max {
        match response.chunk().await {
            Ok(Some(chunk)) => {
                let room = max - prefix.len();
                prefix.extend_from_slice(&chunk[..chunk.len().min(room)]);
            }
            Ok(None) | Err(_) => break,
        }
    }
    prefix
}
