//! The cases outside testers met on real, noisy servers (issue 15), each a test named after what broke.

use std::path::Path;

use plateau::recommend::recommend;
use plateau::results::Results;

fn quickstart_results() -> Results {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../tests/fixtures/quickstart-results.json");
    serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap()
}

#[test]
fn a_configuration_failing_a_fifth_of_its_requests_is_not_recommended() {
    let mut results = quickstart_results();
    assert_eq!(recommend(&results.configurations, &results.job.requirements).configuration.as_deref(), Some("medium"));
    let medium = results.configurations.iter_mut().find(|result| result.name == "medium").unwrap();
    for step in &mut medium.steps {
        step.error_rate_percent = 19.7;
    }
    medium.metrics.as_mut().unwrap().error_rate_percent = 19.7;
    let recommendation = recommend(&results.configurations, &results.job.requirements);
    assert_ne!(recommendation.configuration.as_deref(), Some("medium"), "{}", recommendation.reason);
    let verdict = recommendation.ranking.iter().find(|verdict| verdict.configuration == "medium").unwrap();
    assert!(!verdict.meets_requirements);
    assert!(
        verdict.verdict.contains("19.7% of its requests") && verdict.verdict.contains("error budget of 1%"),
        "{}",
        verdict.verdict
    );

    // Within a budget the job file widens, it may be recommended again.
    results.job.requirements.max_error_rate_percent = 25.0;
    let recommendation = recommend(&results.configurations, &results.job.requirements);
    assert_eq!(recommendation.configuration.as_deref(), Some("medium"));
}
