//! Secret values (Redis URLs with passwords, bearer tokens, webhook URLs, routing keys) are held
//! as [`SecretString`], whose `Debug` is redacted. These helpers keep them out of every text the
//! observers and actuators produce: logs, errors, Events and status.

pub use secrecy::{ExposeSecret, SecretString};

/// What a removed secret is replaced with.
pub const REDACTED: &str = "***";

/// A URL fit for logs and status: the password (and any query string, which often carries tokens)
/// replaced by `***`; the user name, host, port and path kept so operators know which server it is.
/// A string that does not parse as a URL is not echoed at all.
pub fn redact_url(raw: &str) -> String {
    match url::Url::parse(raw) {
        // Without a host ("garbage:s3cret" parses as scheme and path) it is not a server address.
        Ok(mut url) if url.has_host() => {
            if url.password().is_some() {
                let _ = url.set_password(Some(REDACTED));
            } else if !url.username().is_empty() && url.scheme().starts_with("redis") {
                // redis://secret@host: Redis tools read a lone user part as the password.
                let _ = url.set_username(REDACTED);
            }
            if url.query().is_some() {
                url.set_query(Some(REDACTED));
            }
            url.set_fragment(None);
            url.to_string()
        }
        _ => "<unparseable URL>".to_owned(),
    }
}

/// Only the scheme, host and port of a URL (`https://hooks.slack.com`), for URLs whose path is
/// itself a credential, such as Slack webhook URLs.
pub fn url_origin(raw: &str) -> String {
    match url::Url::parse(raw) {
        Ok(url) => url.origin().ascii_serialization(),
        Err(_) => "<unparseable URL>".to_owned(),
    }
}

/// Remove every occurrence of the given secrets (and a URL's password) from a text, e.g. an error
/// message a library built from its input.
pub fn scrub(text: &str, secrets: &[&SecretString]) -> String {
    let mut out = text.to_owned();
    for secret in secrets {
        let exposed = secret.expose_secret();
        // A one- or two-character secret would mangle the whole message; such a secret is weak
        // anyway and is still never printed by the actuators themselves.
        if exposed.len() >= 3 {
            out = out.replace(exposed, REDACTED);
        }
        if let Ok(url) = url::Url::parse(exposed)
            && let Some(password) = url.password().filter(|p| p.len() >= 3)
        {
            out = out.replace(password, REDACTED);
            if let Ok(decoded) = urlencoding_decode(password)
                && decoded.len() >= 3
            {
                out = out.replace(&decoded, REDACTED);
            }
        }
    }
    out
}

/// An error and its causes on one line ("error sending request: connection refused"), for
/// messages that go to status: the top-level text of many errors hides the useful cause.
pub fn error_chain(error: &dyn std::error::Error) -> String {
    let mut out = error.to_string();
    let mut source = error.source();
    while let Some(cause) = source {
        let text = cause.to_string();
        if !out.contains(&text) {
            out.push_str(": ");
            out.push_str(&text);
        }
        source = cause.source();
    }
    out
}

/// Percent-decode a URL component (a password may be written percent-encoded in the URL).
fn urlencoding_decode(text: &str) -> Result<String, std::string::FromUtf8Error> {
    let bytes: Vec<u8> = url::form_urlencoded::parse(format!("x={text}").as_bytes())
        .next()
        .map(|(_, v)| v.into_owned().into_bytes())
        .unwrap_or_default();
    String::from_utf8(bytes)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_redis_password_is_redacted_and_the_host_kept() {
        assert_eq!(
            redact_url("redis://:s3cret@10.0.0.7:6379/0"),
            "redis://:***@10.0.0.7:6379/0"
        );
        assert_eq!(
            redact_url("rediss://admin:s3cret@redis.example:6380"),
            "rediss://admin:***@redis.example:6380"
        );
        assert_eq!(
            redact_url("redis://127.0.0.1:6379/"),
            "redis://127.0.0.1:6379/"
        );
        assert_eq!(redact_url("redis://token@h:6379"), "redis://***@h:6379");
        assert_eq!(
            redact_url("rediss://user:pa:ss@h:1"),
            "rediss://user:***@h:1"
        );
    }

    #[test]
    fn query_tokens_are_redacted_and_garbage_is_not_echoed() {
        assert_eq!(
            redact_url("https://hooks.example/x?token=abc"),
            "https://hooks.example/x?***"
        );
        assert_eq!(redact_url("not a url s3cret"), "<unparseable URL>");
        assert_eq!(redact_url("garbage:s3cret"), "<unparseable URL>");
    }

    #[test]
    fn the_origin_hides_the_path() {
        assert_eq!(
            url_origin("https://hooks.example/services/T0/B0/s3cret"),
            "https://hooks.example"
        );
        assert_eq!(
            url_origin("http://127.0.0.1:8080/x"),
            "http://127.0.0.1:8080"
        );
    }

    #[test]
    fn scrub_removes_secrets_and_url_passwords() {
        let token = SecretString::from("tok-123456");
        let url = SecretString::from("redis://:pa%40ss@h:1/");
        let text = "auth tok-123456 failed for pa%40ss and pa@ss";
        assert_eq!(
            scrub(text, &[&token, &url]),
            "auth *** failed for *** and ***"
        );
    }

    #[test]
    fn debug_of_a_secret_is_redacted() {
        let token = SecretString::from("tok-123456");
        assert!(!format!("{token:?}").contains("tok-123456"));
    }
}
