//! Publishing a run to Confluence, Cloud or Data Center, through its REST API (`/rest/api/content`, which both
//! serve): the run's report as a page in storage format (`confluence.storage.xml.j2`) under an optional parent page,
//! its charts as the page's attachments. Publishing the same run again finds its page by title in the space and
//! makes a new version of it, and of each attachment, instead of a second page.
//!
//! Credentials come from the environment only, never from the command line (a process list or a shell history would
//! show them): `CONFLUENCE_TOKEN`, with `CONFLUENCE_USER` for Cloud's basic authentication (an account's email and an
//! API token) or alone as a Data Center personal access token (a bearer token).

use std::path::PathBuf;
use std::time::Duration;

use reqwest::header::{ACCEPT, HeaderValue};
use reqwest::{Client, RequestBuilder, Response, StatusCode, Url, multipart};
use serde_json::{Value, json};

use crate::report::{self, ReportError};
use crate::results::Results;

const TEMPLATE: &str = "confluence.storage.xml.j2";
/// Each call's limit: a page with twenty configurations' charts uploads well within it.
const CALL_TIMEOUT: Duration = Duration::from_secs(60);

/// Where to publish.
pub struct ConfluenceTarget {
    /// The site up to its REST path: `https://ORG.atlassian.net/wiki` (Cloud) or `https://confluence.example.com`.
    pub base_url: Url,
    /// The space's key.
    pub space: String,
    /// The id of the page to publish under; the space's root when none.
    pub parent: Option<String>,
    pub templates: Option<PathBuf>,
    pub credentials: Credentials,
}

/// How plateau signs in. Debug never shows the token.
pub enum Credentials {
    /// Confluence Cloud: an account's email and an API token.
    Basic { user: String, token: String },
    /// Confluence Data Center: a personal access token.
    Bearer { token: String },
}

impl std::fmt::Debug for Credentials {
    fn fmt(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Credentials::Basic { user, .. } => write!(formatter, "Basic({user}, token hidden)"),
            Credentials::Bearer { .. } => formatter.write_str("Bearer(token hidden)"),
        }
    }
}

impl Credentials {
    /// From `CONFLUENCE_TOKEN`, with `CONFLUENCE_USER` when it is set (and not empty).
    pub fn from_env() -> Result<Credentials, ConfluenceError> {
        let token = std::env::var("CONFLUENCE_TOKEN").ok().filter(|token| !token.is_empty());
        let token = token.ok_or(ConfluenceError::NoToken)?;
        Ok(match std::env::var("CONFLUENCE_USER").ok().filter(|user| !user.is_empty()) {
            Some(user) => Credentials::Basic { user, token },
            None => Credentials::Bearer { token },
        })
    }

    fn sign(&self, request: RequestBuilder) -> RequestBuilder {
        match self {
            Credentials::Basic { user, token } => request.basic_auth(user, Some(token)),
            Credentials::Bearer { token } => request.bearer_auth(token),
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum ConfluenceError {
    #[error(
        "CONFLUENCE_TOKEN is not set: set it to an API token, with CONFLUENCE_USER (your account's email) on \
         Confluence Cloud, or alone to a personal access token on Data Center"
    )]
    NoToken,
    #[error(
        "--url {url:?} must be an http:// or https:// address without credentials or a query, such as \
         https://ORG.atlassian.net/wiki (credentials go in CONFLUENCE_USER and CONFLUENCE_TOKEN)"
    )]
    Url { url: String },
    #[error(transparent)]
    Report(#[from] ReportError),
    #[error("cannot {what}: no answer from {url}: {source}")]
    Unreachable { what: String, url: String, source: reqwest::Error },
    #[error("cannot {what}: Confluence answered {status}{message}{hint}")]
    Refused { what: String, status: StatusCode, message: String, hint: &'static str },
    #[error("cannot {what}: Confluence's answer is not its REST API's: {detail}")]
    Unexpected { what: String, detail: String },
}

/// What a publish did.
#[derive(Debug)]
pub struct PublishedPage {
    pub title: String,
    /// Where to read it.
    pub url: String,
    /// The page's version now: 1 when it was created.
    pub version: u64,
    pub attachments: usize,
}

/// Checks `--url`: an http(s) address without credentials or a query; a trailing slash is dropped.
pub fn base_url(text: &str) -> Result<Url, ConfluenceError> {
    let invalid = || ConfluenceError::Url { url: crate::git::redact_url(text, text) };
    let url = Url::parse(text.trim_end_matches('/')).map_err(|_| invalid())?;
    let plain = matches!(url.scheme(), "http" | "https")
        && url.username().is_empty()
        && url.password().is_none()
        && url.query().is_none()
        && url.fragment().is_none();
    if plain { Ok(url) } else { Err(invalid()) }
}

/// The run's page title: unique in a space, as Confluence requires, and the same each time the run is published.
pub fn page_title(results: &Results) -> String {
    let started = results.manifest.started_at.replace('T', " ").replace('Z', " UTC");
    format!("plateau: {} run of {started}", results.job.name)
}

/// Publishes `results` as a page with its charts attached.
pub async fn publish(results: &Results, target: &ConfluenceTarget) -> Result<PublishedPage, ConfluenceError> {
    let env = report::environment(target.templates.as_deref());
    let mut view = report::view(results, &env)?;
    // A page's attachments have no folders: each chart by its file's name, unique within a run.
    for chart in super::charts_mut(&mut view) {
        chart.file = chart.file.rsplit('/').next().unwrap_or(&chart.file).to_string();
    }
    let body = report::render(&env, TEMPLATE, &view)?;
    let title = page_title(results);
    let api = Api::new(target)?;

    let found = api.find_page(&target.space, &title).await?;
    let page = match &found {
        Some(page) => api.update_page(page, &title, &body).await?,
        None => api.create_page(&title, &body).await?,
    };
    // The page is rendered: the charts' SVG can move out of the view.
    let charts: Vec<(String, String)> =
        super::charts_mut(&mut view).map(|chart| (chart.file.clone(), std::mem::take(&mut chart.svg))).collect();
    let attachments = charts.len();
    for (name, svg) in charts {
        api.attach(&page.id, &name, svg.into_bytes()).await?;
    }
    Ok(PublishedPage { title, url: page.url, version: page.version, attachments })
}

/// A page as the REST API describes it.
struct Page {
    id: String,
    version: u64,
    url: String,
}

struct Api<'a> {
    client: Client,
    target: &'a ConfluenceTarget,
}

impl<'a> Api<'a> {
    fn new(target: &'a ConfluenceTarget) -> Result<Api<'a>, ConfluenceError> {
        let client = Client::builder()
            .timeout(CALL_TIMEOUT)
            .user_agent(concat!("plateau/", env!("CARGO_PKG_VERSION")))
            .build()
            .map_err(|source| ConfluenceError::Unreachable {
                what: "start an HTTP client".into(),
                url: target.base_url.to_string(),
                source,
            })?;
        Ok(Api { client, target })
    }

    /// `path` under the site's REST API, with `query`.
    fn url(&self, path: &str, query: &[(&str, &str)]) -> Url {
        let mut url = self.target.base_url.clone();
        url.set_path(&format!("{}/rest/api/{path}", self.target.base_url.path().trim_end_matches('/')));
        if !query.is_empty() {
            url.query_pairs_mut().extend_pairs(query);
        }
        url
    }

    /// Sends a signed request and reads a JSON answer, turning refusals into errors that say what to check.
    async fn call(&self, what: &str, request: RequestBuilder) -> Result<Value, ConfluenceError> {
        let request =
            self.target.credentials.sign(request).header(ACCEPT, HeaderValue::from_static("application/json"));
        let response = request.send().await.map_err(|source| ConfluenceError::Unreachable {
            what: what.into(),
            url: self.target.base_url.to_string(),
            source: source.without_url(),
        })?;
        let status = response.status();
        if !status.is_success() {
            return Err(refused(what, status, response).await);
        }
        response
            .json()
            .await
            .map_err(|error| ConfluenceError::Unexpected { what: what.into(), detail: error.to_string() })
    }

    async fn find_page(&self, space: &str, title: &str) -> Result<Option<Page>, ConfluenceError> {
        let what = format!("look for page {title:?} in space {space}");
        let url =
            self.url("content", &[("spaceKey", space), ("title", title), ("type", "page"), ("expand", "version")]);
        let answer = self.call(&what, self.client.get(url)).await?;
        let Some(results) = answer["results"].as_array() else {
            return Err(ConfluenceError::Unexpected { what, detail: "no `results` list".into() });
        };
        results.first().map(|page| self.page(&what, page, &answer)).transpose()
    }

    async fn create_page(&self, title: &str, body: &str) -> Result<Page, ConfluenceError> {
        let target = self.target;
        let what = format!("create page {title:?} in space {}", target.space);
        let mut content = json!({
            "type": "page",
            "title": title,
            "space": { "key": target.space },
            "body": { "storage": { "value": body, "representation": "storage" } },
        });
        if let Some(parent) = &target.parent {
            content["ancestors"] = json!([{ "id": parent }]);
        }
        let answer = self.call(&what, self.client.post(self.url("content", &[])).json(&content)).await?;
        self.page(&what, &answer, &answer)
    }

    async fn update_page(&self, page: &Page, title: &str, body: &str) -> Result<Page, ConfluenceError> {
        let what = format!("update page {title:?} (id {})", page.id);
        let content = json!({
            "id": page.id,
            "type": "page",
            "title": title,
            "space": { "key": self.target.space },
            "body": { "storage": { "value": body, "representation": "storage" } },
            "version": { "number": page.version + 1, "message": "published again by plateau" },
        });
        let url = self.url(&format!("content/{}", page.id), &[]);
        let answer = self.call(&what, self.client.put(url).json(&content)).await?;
        self.page(&what, &answer, &answer)
    }

    /// Attaches `name`, or makes a new version of the attachment of that name.
    async fn attach(&self, page_id: &str, name: &str, bytes: Vec<u8>) -> Result<(), ConfluenceError> {
        let what = format!("attach {name} to page {page_id}");
        let attachments = format!("content/{page_id}/child/attachment");
        let existing = self.call(&what, self.client.get(self.url(&attachments, &[("filename", name)]))).await?;
        let existing_id =
            existing["results"].as_array().and_then(|found| found.first()).and_then(|found| found["id"].as_str());
        let url = match existing_id {
            Some(id) => self.url(&format!("{attachments}/{id}/data"), &[]),
            None => self.url(&attachments, &[]),
        };
        let file = multipart::Part::bytes(bytes)
            .file_name(name.to_string())
            .mime_str("image/svg+xml")
            .map_err(|error| ConfluenceError::Unexpected { what: what.clone(), detail: error.to_string() })?;
        let form = multipart::Form::new().part("file", file).text("minorEdit", "true");
        // Confluence refuses uploads without this header (its guard against cross-site requests).
        let request = self.client.post(url).header("X-Atlassian-Token", "no-check").multipart(form);
        self.call(&what, request).await.map(|_| ())
    }

    /// A page from an answer: its id, version and the address a reader opens (`_links`, else the view action).
    fn page(&self, what: &str, page: &Value, answer: &Value) -> Result<Page, ConfluenceError> {
        let unexpected = |detail: &str| ConfluenceError::Unexpected { what: what.into(), detail: detail.into() };
        let id = page["id"].as_str().ok_or_else(|| unexpected("a page without an `id`"))?.to_string();
        let version =
            page["version"]["number"].as_u64().ok_or_else(|| unexpected("a page without `version.number`"))?;
        let base = answer["_links"]["base"].as_str().or_else(|| page["_links"]["base"].as_str());
        let url = match (base, page["_links"]["webui"].as_str()) {
            (Some(base), Some(webui)) => format!("{base}{webui}"),
            _ => format!("{}/pages/viewpage.action?pageId={id}", self.target.base_url.as_str().trim_end_matches('/')),
        };
        Ok(Page { id, version, url })
    }
}

/// A refusal with Confluence's own message, and what to check for the usual ones.
async fn refused(what: &str, status: StatusCode, response: Response) -> ConfluenceError {
    let text = response.text().await.unwrap_or_default();
    let message = serde_json::from_str::<Value>(&text)
        .ok()
        .and_then(|answer| answer["message"].as_str().map(str::to_string))
        .map(|message| format!(": {}", message.chars().take(300).collect::<String>()))
        .unwrap_or_default();
    let hint = match status {
        StatusCode::UNAUTHORIZED => {
            " (check CONFLUENCE_USER and CONFLUENCE_TOKEN: Cloud takes your email and an API token, Data Center a \
             personal access token without CONFLUENCE_USER)"
        }
        StatusCode::FORBIDDEN => " (the account may not add pages or attachments in this space)",
        StatusCode::NOT_FOUND => " (check --url, --space and --parent: the space or page is missing or not visible)",
        StatusCode::CONFLICT => " (someone changed the page at the same moment: publish again)",
        _ => "",
    };
    ConfluenceError::Refused { what: what.into(), status, message, hint }
}
