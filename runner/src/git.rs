//! git, through the user's own `git` command: which commit a job file ran from, and the clone, commit and push that
//! `plateau publish` makes to a wiki. The command, not a library, because what makes a push work is the user's
//! configuration: credential helpers, SSH agents and keys, proxies, `insteadOf` rewrites, signing. (gitoxide cannot
//! push; libgit2 would need OpenSSL for HTTPS and would ignore most of that configuration.)
//!
//! A remote's URL may carry a token (`https://x-access-token:TOKEN@github.com/...`): it is never shown. Every
//! message that names the URL, or repeats what git printed, has the credentials replaced by `***`.

use std::path::{Path, PathBuf};
use std::process::Command;

use serde::{Deserialize, Serialize};

/// The commit a run was made from, recorded in its manifest for the wiki's index and for history.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Revision {
    /// The full commit hash.
    pub commit: String,
    /// The branch, when one is checked out (CI systems check out a detached HEAD and name the branch in the
    /// environment).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub branch: Option<String>,
    /// Tracked files had changes that were not committed: the commit alone does not say what ran.
    #[serde(default)]
    pub dirty: bool,
}

impl Revision {
    /// The revision of the repository holding `folder`: from the CI system's environment when it names one (GitHub
    /// Actions, GitLab CI), else from git; none outside a repository or without git.
    pub fn of(folder: &Path) -> Option<Revision> {
        let variable = |name: &str| std::env::var(name).ok().filter(|value| !value.is_empty());
        // A pull request's GITHUB_REF_NAME is `123/merge`; its branch is GITHUB_HEAD_REF.
        let from_ci = variable("GITHUB_SHA")
            .map(|commit| (commit, variable("GITHUB_HEAD_REF").or_else(|| variable("GITHUB_REF_NAME"))))
            .or_else(|| variable("CI_COMMIT_SHA").map(|commit| (commit, variable("CI_COMMIT_REF_NAME"))));
        let repository = Repository { folder: folder.to_path_buf(), remote: None };
        let dirty = || {
            repository.output(&["status", "--porcelain", "--untracked-files=no"]).is_ok_and(|status| !status.is_empty())
        };
        if let Some((commit, branch)) = from_ci {
            return Some(Revision { commit, branch, dirty: dirty() });
        }
        let commit = repository.output(&["rev-parse", "--verify", "HEAD"]).ok()?;
        let branch = repository.output(&["symbolic-ref", "--quiet", "--short", "HEAD"]).ok();
        Some(Revision { commit, branch, dirty: dirty() })
    }

    /// The commit's first 7 characters, as git abbreviates it.
    pub fn short(&self) -> &str {
        self.commit.get(..7).unwrap_or(&self.commit)
    }
}

#[derive(Debug, thiserror::Error)]
pub enum GitError {
    #[error("cannot run git: {source}; plateau publishes through the git command, so install git and try again")]
    Missing { source: std::io::Error },
    #[error("`git {command}` failed: {message}")]
    Failed { command: String, message: String },
}

/// A git working copy, and the remote URL it came from (kept to redact it).
pub struct Repository {
    folder: PathBuf,
    remote: Option<String>,
}

impl Repository {
    /// A shallow clone of `url` into `folder` (which must not exist yet); an empty repository clones too.
    pub fn clone(url: &str, branch: Option<&str>, folder: &Path) -> Result<Repository, GitError> {
        let parent = folder.parent().unwrap_or(Path::new("."));
        let repository = Repository { folder: parent.to_path_buf(), remote: Some(url.to_string()) };
        let target = folder.to_string_lossy().into_owned();
        let mut arguments = vec!["clone", "--quiet", "--depth", "1"];
        if let Some(branch) = branch {
            arguments.extend(["--branch", branch]);
        }
        arguments.extend(["--", url, &target]);
        repository.output(&arguments)?;
        Ok(Repository { folder: folder.to_path_buf(), remote: Some(url.to_string()) })
    }

    pub fn folder(&self) -> &Path {
        &self.folder
    }

    /// Runs git in the working copy and returns what it printed, trimmed; an error carries its message, redacted.
    pub fn output(&self, arguments: &[&str]) -> Result<String, GitError> {
        let mut command = Command::new("git");
        command
            .arg("-C")
            .arg(&self.folder)
            .args(arguments)
            // Never wait for a password or passphrase on a terminal nobody watches; fail and say so instead.
            .env("GIT_TERMINAL_PROMPT", "0")
            .env("LC_ALL", "C");
        if std::env::var_os("GIT_SSH_COMMAND").is_none() {
            command.env("GIT_SSH_COMMAND", "ssh -o BatchMode=yes");
        }
        let output = command.output().map_err(|source| GitError::Missing { source })?;
        if output.status.success() {
            return Ok(String::from_utf8_lossy(&output.stdout).trim().to_string());
        }
        let printed = String::from_utf8_lossy(&output.stderr);
        let message = printed.lines().map(str::trim).filter(|line| !line.is_empty()).collect::<Vec<_>>().join("; ");
        Err(GitError::Failed { command: self.redact(&arguments.join(" ")), message: self.redact(&message) })
    }

    /// `text` without the remote's credentials.
    fn redact(&self, text: &str) -> String {
        match &self.remote {
            Some(url) => redact_url(text, url),
            None => text.to_string(),
        }
    }
}

/// `text` with the credentials of `url` (its `user:password@`) replaced by `***`: the pair, then each part, since git
/// may print the user alone and a token is often given as the user (`https://TOKEN@host/...`).
pub fn redact_url(text: &str, url: &str) -> String {
    let Some((_, rest)) = url.split_once("://") else { return text.to_string() };
    let authority = rest.split('/').next().unwrap_or_default();
    let Some((credentials, _host)) = authority.rsplit_once('@') else { return text.to_string() };
    let mut redacted = text.to_string();
    for secret in std::iter::once(credentials).chain(credentials.split(':')).filter(|secret| secret.len() >= 4) {
        redacted = redacted.replace(secret, "***");
    }
    redacted
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn credentials_in_a_remote_url_never_reach_a_message() {
        let url = "https://x-access-token:ghp_secret123@github.com/acme/models.wiki.git";
        let message = format!("fatal: unable to access '{url}': The requested URL returned error: 403");
        let redacted = redact_url(&message, url);
        assert!(!redacted.contains("ghp_secret123"), "{redacted}");
        assert!(redacted.contains("https://***@github.com/acme/models.wiki.git"), "{redacted}");
        // A token alone as the user, as GitLab's oauth2 or a PAT is often given.
        let url = "https://glpat-abcdef@gitlab.example.com/team/wiki.git";
        assert_eq!(redact_url("remote: glpat-abcdef denied", url), "remote: *** denied");
        // No credentials: nothing to hide.
        assert_eq!(redact_url("x /srv/wiki.git", "/srv/wiki.git"), "x /srv/wiki.git");
    }
}
