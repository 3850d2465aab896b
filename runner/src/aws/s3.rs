//! Results folders in S3 (`--out s3://bucket/prefix`): a run writes its folder locally as always, then uploads it;
//! `plateau merge` downloads shards' folders before merging. Shards on machines that share no volume meet here.

use std::path::{Path, PathBuf};
use std::time::Duration;

use aws_sdk_s3::primitives::ByteStream;

use super::errors::error_chain;
use super::{AwsError, AwsPlace};

/// Each S3 call's bound; uploads are a results folder's files, a few MB.
const CALL_TIMEOUT: Duration = Duration::from_secs(60);

/// Why a results folder could not reach S3 or come back from it.
#[derive(Debug, thiserror::Error)]
pub enum S3Error {
    #[error("{text:?} is not an S3 location: {reason} (write s3://BUCKET/PREFIX)")]
    Location { text: String, reason: &'static str },
    #[error("cannot reach S3 for {location}: {source}")]
    Connect { location: S3Location, source: AwsError },
    #[error("cannot upload {} to {location}/{key}: {reason}", path.display())]
    Upload { path: PathBuf, location: S3Location, key: String, reason: String },
    #[error("cannot list {location}: {reason}")]
    List { location: S3Location, reason: String },
    #[error("{location} holds no results.json: no run wrote there")]
    NoResults { location: S3Location },
    #[error("cannot download {location}/{key}: {reason}")]
    Download { location: S3Location, key: String, reason: String },
    #[error("cannot read or write {}: {source}", path.display())]
    Local { path: PathBuf, source: std::io::Error },
}

/// A bucket and a key prefix (a folder's name in the bucket, without a trailing slash; empty for the bucket's root).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct S3Location {
    bucket: String,
    prefix: String,
}

impl std::fmt::Display for S3Location {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "s3://{}/{}", self.bucket, self.prefix)
    }
}

impl S3Location {
    /// `Some` when `text` names S3 (`s3://...`), checked; `None` for a local path.
    pub fn parse(text: &str) -> Option<Result<Self, S3Error>> {
        let rest = text.strip_prefix("s3://")?;
        let invalid = |reason| Some(Err(S3Error::Location { text: text.to_string(), reason }));
        let (bucket, prefix) = rest.split_once('/').unwrap_or((rest, ""));
        // S3's bucket naming rules, as far as they decide whether this can be a bucket at all.
        let valid_bucket = (3..=63).contains(&bucket.len())
            && bucket.bytes().all(|byte| byte.is_ascii_lowercase() || byte.is_ascii_digit() || b".-".contains(&byte))
            && bucket.starts_with(|c: char| c.is_ascii_alphanumeric())
            && bucket.ends_with(|c: char| c.is_ascii_alphanumeric());
        if !valid_bucket {
            return invalid("a bucket name is 3 to 63 lowercase letters, digits, dots and hyphens");
        }
        let prefix = prefix.trim_end_matches('/');
        if prefix.split('/').any(|part| part == ".." || part == ".") || prefix.contains("//") {
            return invalid("the prefix has an empty, `.` or `..` part");
        }
        Some(Ok(Self { bucket: bucket.to_string(), prefix: prefix.to_string() }))
    }

    /// Where a run bound for this location writes locally first, and keeps its copy: plateau-out/s3/BUCKET/PREFIX.
    pub fn staging_folder(&self) -> PathBuf {
        Path::new("plateau-out").join("s3").join(&self.bucket).join(&self.prefix)
    }

    /// The same location with `{shard}` in its prefix replaced, as `--out` does for a local folder.
    pub fn with_prefix(&self, prefix: String) -> Self {
        Self { bucket: self.bucket.clone(), prefix }
    }

    pub fn prefix(&self) -> &str {
        &self.prefix
    }

    fn key(&self, relative: &str) -> String {
        if self.prefix.is_empty() { relative.to_string() } else { format!("{}/{relative}", self.prefix) }
    }
}

/// A client for the SDK's default chain (AWS_REGION, the profile, AWS_ENDPOINT_URL_S3 or AWS_ENDPOINT_URL for an
/// S3-compatible store). With an endpoint of its own, buckets are addressed by path: an emulator or a MinIO on
/// 127.0.0.1 has no DNS name per bucket.
async fn client(location: &S3Location) -> Result<aws_sdk_s3::Client, S3Error> {
    let connect = |source| S3Error::Connect { location: location.clone(), source };
    let place = AwsPlace { where_to_set: "set ", region: None, profile: None, endpoint_url: None };
    let config = super::sdk_config(place, false, CALL_TIMEOUT).await.map_err(connect)?;
    super::check_credentials(&config).await.map_err(connect)?;
    let own_endpoint = ["AWS_ENDPOINT_URL_S3", "AWS_ENDPOINT_URL"].iter().any(|name| std::env::var_os(name).is_some());
    let s3_config = aws_sdk_s3::config::Builder::from(&config).force_path_style(own_endpoint).build();
    Ok(aws_sdk_s3::Client::from_conf(s3_config))
}

/// Every file under `folder`, as paths relative to it with `/` separators, in a stable order.
fn files_under(folder: &Path) -> Result<Vec<String>, S3Error> {
    let mut files = Vec::new();
    let mut pending = vec![PathBuf::new()];
    while let Some(relative) = pending.pop() {
        let here = folder.join(&relative);
        let entries = std::fs::read_dir(&here).map_err(|source| S3Error::Local { path: here.clone(), source })?;
        for entry in entries {
            let entry = entry.map_err(|source| S3Error::Local { path: here.clone(), source })?;
            let path = relative.join(entry.file_name());
            let kind = entry.file_type().map_err(|source| S3Error::Local { path: folder.join(&path), source })?;
            if kind.is_dir() {
                pending.push(path);
            } else if kind.is_file() {
                files.push(path.to_string_lossy().replace(std::path::MAIN_SEPARATOR, "/"));
            }
        }
    }
    files.sort();
    Ok(files)
}

/// Uploads every file of `folder` under `location`; returns how many. `results.json` goes last, so a reader that
/// finds it finds the series it names.
pub async fn upload_folder(folder: &Path, location: &S3Location) -> Result<usize, S3Error> {
    let client = client(location).await?;
    let mut files = files_under(folder)?;
    files.sort_by_key(|file| file == "results.json");
    for file in &files {
        let path = folder.join(file);
        let body = ByteStream::from_path(&path).await.map_err(|error| S3Error::Upload {
            path: path.clone(),
            location: location.clone(),
            key: file.clone(),
            reason: error_chain(&error),
        })?;
        client.put_object().bucket(&location.bucket).key(location.key(file)).body(body).send().await.map_err(
            |error| S3Error::Upload {
                path: path.clone(),
                location: location.clone(),
                key: file.clone(),
                reason: error_chain(&error),
            },
        )?;
    }
    Ok(files.len())
}

/// Downloads every object under `location` into `folder` (created); returns how many. A location without a
/// `results.json` is refused: it is a typo or a shard that never ran.
pub async fn download_folder(location: &S3Location, folder: &Path) -> Result<usize, S3Error> {
    let client = client(location).await?;
    let list_prefix = location.key("");
    let mut keys = Vec::new();
    let mut pages = client.list_objects_v2().bucket(&location.bucket).prefix(&list_prefix).into_paginator().send();
    while let Some(page) = pages.next().await {
        let page = page.map_err(|error| S3Error::List { location: location.clone(), reason: error_chain(&error) })?;
        keys.extend(page.contents().iter().filter_map(|object| object.key().map(str::to_string)));
    }
    let relative: Vec<(String, String)> = keys
        .into_iter()
        .filter_map(|key| {
            let name = key.strip_prefix(&list_prefix)?.to_string();
            // Only what a results folder holds: no `..`, no absolute names, nothing that escapes `folder`.
            let safe = !name.is_empty() && name.split('/').all(|part| !part.is_empty() && part != "..");
            safe.then_some((key, name))
        })
        .collect();
    if !relative.iter().any(|(_, name)| name == "results.json") {
        return Err(S3Error::NoResults { location: location.clone() });
    }
    for (key, name) in &relative {
        let download = |reason| S3Error::Download { location: location.clone(), key: name.clone(), reason };
        let object = client
            .get_object()
            .bucket(&location.bucket)
            .key(key)
            .send()
            .await
            .map_err(|error| download(error_chain(&error)))?;
        let bytes = object.body.collect().await.map_err(|error| download(error_chain(&error)))?.into_bytes();
        let path = folder.join(name);
        if let Some(parent) = path.parent() {
            std::fs::create_dir_all(parent).map_err(|source| S3Error::Local { path: parent.to_path_buf(), source })?;
        }
        std::fs::write(&path, &bytes).map_err(|source| S3Error::Local { path: path.clone(), source })?;
    }
    Ok(relative.len())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn locations_are_checked_and_keys_sit_under_their_prefix() {
        assert!(S3Location::parse("results/shard-0").is_none(), "a local path");
        let location = S3Location::parse("s3://plateau-results/runs/shard-{shard}/").unwrap().unwrap();
        assert_eq!(location.to_string(), "s3://plateau-results/runs/shard-{shard}");
        assert_eq!(location.key("series/01-a.jsonl"), "runs/shard-{shard}/series/01-a.jsonl");
        let root = S3Location::parse("s3://bucket").unwrap().unwrap();
        assert_eq!(root.key("results.json"), "results.json");
        for bad in ["s3://", "s3://Upper/x", "s3://ab/x", "s3://bucket/../x", "s3://bucket/a//b", "s3://-bucket/x"] {
            let error = S3Location::parse(bad).unwrap().unwrap_err();
            assert!(error.to_string().contains("write s3://BUCKET/PREFIX"), "{bad}: {error}");
        }
    }
}
