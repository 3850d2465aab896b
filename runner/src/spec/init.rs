//! `plateau init`: a job file from a few answers, commented so it teaches the keys a first edit needs. The caller
//! validates the text with `parse` before writing it, so `init` never writes a job that `run` would refuse.

/// What the new job benchmarks.
pub enum NewTarget {
    /// plateau's built-in reference endpoint: runs anywhere, no server needed.
    Reference,
    /// An HTTP model server at this URL.
    Http { url: String },
    /// An existing SageMaker real-time endpoint.
    SageMaker { endpoint_name: String, region: String },
    /// A server plateau starts for each configuration: the program and its arguments, `{port}` among them.
    Command { command: Vec<String> },
}

/// The answers a new job is made from.
pub struct NewJob {
    pub name: String,
    pub target: NewTarget,
    pub instance_type: String,
    /// The hourly price; without one a SageMaker instance type is priced from the built-in table.
    pub price_per_hour_usd: Option<f64>,
    /// The p99 latency goal.
    pub latency_ms: f64,
}

/// A TOML string, quoted and escaped.
fn quoted(text: &str) -> String {
    toml::Value::String(text.to_string()).to_string()
}

/// The job file's text.
pub fn job_text(new: &NewJob) -> String {
    let target = match &new.target {
        NewTarget::Reference => {
            "kind = \"reference\"                 # plateau's built-in endpoint of known capacity\n".to_string()
        }
        NewTarget::Http { url } => format!(
            "kind = \"http\"\nurl = {}\nmethod = \"POST\"\ntimeout = \"10s\"\n# check = {{ status = 200, body_contains = \"outputs\" }}   # what counts as a good answer\n",
            quoted(url)
        ),
        NewTarget::SageMaker { region, .. } => format!(
            "kind = \"sagemaker\"                 # credentials come from the AWS SDK's default chain\nregion = {}\ntimeout = \"10s\"\n",
            quoted(region)
        ),
        NewTarget::Command { command } => {
            let words: Vec<String> = command.iter().map(|word| quoted(word)).collect();
            format!(
                "kind = \"command\"                   # plateau starts this server for each configuration\ncommand = [{}]\nreadiness = {{ http_path = \"/\", timeout = \"60s\" }}\n",
                words.join(", ")
            )
        }
    };
    let mut configuration = format!(
        "[[configurations]]\nname = {}\ninstance_type = {}\n",
        quoted(&configuration_name(&new.instance_type)),
        quoted(&new.instance_type)
    );
    match (&new.target, new.price_per_hour_usd) {
        (_, Some(price)) => configuration.push_str(&format!("price_per_hour_usd = {price}\n")),
        (NewTarget::SageMaker { .. }, None) => configuration
            .push_str("# price_per_hour_usd = 0.2            # else the built-in price of the instance type\n"),
        (_, None) => configuration.push_str("price_per_hour_usd = 1.0             # the instance's hourly price\n"),
    }
    match &new.target {
        NewTarget::Reference => {
            configuration.push_str("reference = { workers = 4, service_time_ms = 20 }   # 200 requests/s at most\n");
        }
        NewTarget::SageMaker { endpoint_name, .. } => {
            configuration.push_str(&format!("endpoint_name = {}\n", quoted(endpoint_name)));
        }
        NewTarget::Http { .. } | NewTarget::Command { .. } => {}
    }
    format!(
        "# Made by `plateau init`. `plateau validate` checks it, `plateau plan` shows what it will run and cost, and
# `plateau run` runs it. docs/job-file.schema.json describes every key.
version = 1

[job]
name = {name}

[target]
{target}
[payload]
content_type = \"application/json\"
body = '{{\"inputs\": [[0.1, 0.2, 0.3, 0.4]]}}'   # or plugin = \"payload.wasm\", or samples = \"samples/\"

[traffic.stairs]                      # 2, 4, 6 ... virtual users, each step 10 s or until precise
users_per_step = 2
step_duration = \"10s\"
steps = 10

[stopping]
flat_invocations = \"stop\"             # end a ramp once its plateau is confirmed

[requirements]
latency_ms = {latency_ms}
percentile = \"p99\"
objective = \"cost-per-inference\"
# expected_peak_rps = 300             # to size InitialInstanceCount

{configuration}",
        name = quoted(&new.name),
        latency_ms = new.latency_ms,
    )
}

/// A configuration's name from its instance type: `ml.g5.xlarge` gives `g5-xlarge`.
fn configuration_name(instance_type: &str) -> String {
    let name = instance_type.strip_prefix("ml.").unwrap_or(instance_type).replace('.', "-");
    if name.is_empty() { "default".to_string() } else { name }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn job(target: NewTarget, price: Option<f64>) -> String {
        job_text(&NewJob {
            name: "new \"job\"".to_string(),
            target,
            instance_type: "ml.c6i.xlarge".to_string(),
            price_per_hour_usd: price,
            latency_ms: 150.0,
        })
    }

    #[test]
    fn every_kind_makes_a_job_that_validates() {
        let path = std::path::Path::new("plateau.toml");
        let kinds = [
            (NewTarget::Reference, Some(0.5)),
            (NewTarget::Http { url: "http://127.0.0.1:8080/invocations".to_string() }, None),
            (NewTarget::SageMaker { endpoint_name: "xgb".to_string(), region: "eu-west-1".to_string() }, None),
            (NewTarget::Command { command: vec!["python".into(), "serve.py".into(), "{port}".into()] }, Some(1.0)),
        ];
        for (target, price) in kinds {
            let text = job(target, price);
            let parsed = super::super::parse(path, &text).unwrap_or_else(|error| panic!("{error}\n{text}"));
            assert_eq!(parsed.name, "new \"job\"");
            assert_eq!(parsed.configurations[0].name, "c6i-xlarge");
            assert_eq!(parsed.requirements.slo.unwrap().latency_ms, 150.0);
        }
    }
}
