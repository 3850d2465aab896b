//! Where a job reaches a service: absolute URLs and AWS region names, checked the same way for every table that
//! takes them.

use toml::Spanned;

use super::diagnostic::DiagnosticSink;
use super::span_of;

pub(super) const AWS_ENDPOINT_HINT: &str = "e.g. \"https://runtime.sagemaker.us-east-1.amazonaws.com\"";

/// AWS region names look like `us-east-1`, `eu-central-2`, `us-gov-west-1`, `cn-north-1`.
pub(super) fn check_region(region: &Spanned<String>, key: &str, sink: &mut DiagnosticSink<'_>) {
    let name = region.get_ref();
    let parts: Vec<&str> = name.split('-').collect();
    let plausible = parts.len() >= 3
        && parts
            .iter()
            .all(|part| !part.is_empty() && part.chars().all(|c| c.is_ascii_lowercase() || c.is_ascii_digit()))
        && parts.last().is_some_and(|last| last.chars().all(|c| c.is_ascii_digit()));
    if !plausible {
        sink.error(
            span_of(region),
            key,
            format!("`{name}` is not an AWS region name"),
            Some("e.g. \"us-east-1\"".into()),
        );
    }
}

/// An absolute http or https URL with a host.
pub(super) fn check_absolute_url(url: &Spanned<String>, key: &str, hint: &str, sink: &mut DiagnosticSink<'_>) {
    let parsed = url.get_ref().parse::<hyper::Uri>().ok();
    let valid = parsed.as_ref().is_some_and(|uri| {
        matches!(uri.scheme_str(), Some("http" | "https")) && uri.host().is_some_and(|host| !host.is_empty())
    });
    if !valid {
        sink.error(
            span_of(url),
            key,
            format!("`{}` is not an absolute http or https URL", url.get_ref()),
            Some(hint.into()),
        );
    }
}
