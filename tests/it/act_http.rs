//! Cache warming and webhooks against real HTTP servers on loopback.

use crate::support;

use std::time::Duration;

use serde_json::json;
use support::http::{LogCapture, Recorder, Reply};
use tierguard::act::http::Backoff;
use tierguard::act::notify::{Context, ResolvedWebhook, notify};
use tierguard::act::warm::{WarmSkipped, warm_cache};
use tierguard::api::{WarmTrigger, WarmingSpec, WebhookFormat};
use tierguard::policy::Notification;
use tierguard::policy::NotifyKind;
use tierguard::secret::SecretString;

const TOKEN: &str = "admin-token-7f3a9c";
const FAST: Backoff = Backoff {
    first: Duration::from_millis(10),
    max: Duration::from_millis(40),
};

fn http() -> reqwest::Client {
    tierguard::act::http::client().unwrap()
}

fn warming(endpoint: &str, extra: serde_json::Value) -> WarmingSpec {
    let mut v = json!({"endpoint": endpoint, "timeout": "2s", "retries": 3});
    for (k, val) in extra.as_object().unwrap() {
        v[k] = val.clone();
    }
    serde_json::from_value(v).unwrap()
}

fn now() -> jiff::Timestamp {
    jiff::Timestamp::now()
}

#[tokio::test]
async fn warming_posts_batches_with_the_bearer_token_and_bounded_concurrency() {
    let server = Recorder::start().await;
    let logs = LogCapture::start();
    let spec = warming(
        &server.url("/admin/cache/warm"),
        json!({"clinicIds": [1, 2, 3, 4, 5, 6, 7], "batchSize": 2, "concurrency": 2}),
    );
    let token = SecretString::from(TOKEN);
    let run = warm_cache(
        &http(),
        &spec,
        Some(&token),
        &[],
        &[],
        WarmTrigger::Stampede,
        "stampede: hit rate 80%",
        FAST,
        now(),
    )
    .await;
    let outcome = run.outcome.as_ref().unwrap();
    assert!(outcome.ok(), "{outcome:?}");
    assert_eq!(run.record.outcome, tierguard::api::ActionOutcome::Ok);
    assert_eq!(run.record.action, tierguard::api::ActionKind::WarmCache);
    assert_eq!(run.record.reason, "stampede: hit rate 80%");

    let requests = server.requests();
    assert_eq!(requests.len(), 4);
    let mut bodies: Vec<_> = requests.iter().map(|r| r.body.clone()).collect();
    bodies.sort_by_key(|b| b["clinic_ids"][0].as_i64());
    assert_eq!(
        bodies,
        [
            json!({"clinic_ids": [1, 2]}),
            json!({"clinic_ids": [3, 4]}),
            json!({"clinic_ids": [5, 6]}),
            json!({"clinic_ids": [7]})
        ]
    );
    for r in &requests {
        assert_eq!(r.method, "POST");
        assert_eq!(r.path, "/admin/cache/warm");
        assert_eq!(r.headers["authorization"], format!("Bearer {TOKEN}"));
        assert_eq!(r.headers["content-type"], "application/json");
    }
    assert_eq!(server.max_in_flight(), 2, "two batches at once, never more");
    // The outcome keeps batch order and every batch's result.
    let ids: Vec<_> = outcome
        .batches
        .iter()
        .map(|b| b.clinic_ids.clone())
        .collect();
    assert_eq!(ids, [vec![1, 2], vec![3, 4], vec![5, 6], vec![7]]);
    assert!(
        outcome
            .batches
            .iter()
            .all(|b| b.delivery.status == Some(200) && b.delivery.attempts == 1)
    );
    assert!(outcome.batches.iter().all(|b| b.delivery.latency_ms >= 20));
    assert!(!logs.text().contains(TOKEN));
    assert!(
        logs.text().contains("warming the cache"),
        "the capture works: {}",
        logs.text()
    );
}

#[tokio::test]
async fn warming_retries_5xx_and_timeouts_but_not_4xx_and_never_leaks_the_token() {
    let server = Recorder::start().await;
    let logs = LogCapture::start();
    let token = SecretString::from(TOKEN);
    let client = http();

    // 503, 502 then 200: three attempts, ok.
    server.script("/flaky", &[Reply::status(503), Reply::status(502)]);
    let spec = warming(&server.url("/flaky"), json!({"clinicIds": [1]}));
    let run = warm_cache(
        &client,
        &spec,
        Some(&token),
        &[],
        &[],
        WarmTrigger::ColdStart,
        "cold start",
        FAST,
        now(),
    )
    .await;
    let batch = &run.outcome.as_ref().unwrap().batches[0];
    assert!(batch.delivery.ok);
    assert_eq!(batch.delivery.attempts, 3);
    assert_eq!(server.requests_to("/flaky").len(), 3);

    // 401: final at once.
    server.default_reply("/denied", Reply::status(401));
    let spec = warming(&server.url("/denied"), json!({"clinicIds": [1]}));
    let run = warm_cache(
        &client,
        &spec,
        Some(&token),
        &[],
        &[],
        WarmTrigger::ColdStart,
        "cold start",
        FAST,
        now(),
    )
    .await;
    let batch = &run.outcome.as_ref().unwrap().batches[0];
    assert!(!batch.delivery.ok);
    assert_eq!(batch.delivery.status, Some(401));
    assert_eq!(batch.delivery.attempts, 1);
    assert_eq!(server.requests_to("/denied").len(), 1);
    assert_eq!(run.record.outcome, tierguard::api::ActionOutcome::Failed);

    // Always 500: 1 + retries attempts, then failed with the status.
    server.default_reply("/down", Reply::status(500));
    let spec = warming(
        &server.url("/down"),
        json!({"clinicIds": [1], "retries": 2}),
    );
    let run = warm_cache(
        &client,
        &spec,
        Some(&token),
        &[],
        &[],
        WarmTrigger::Deploy,
        "deploy",
        FAST,
        now(),
    )
    .await;
    let batch = &run.outcome.as_ref().unwrap().batches[0];
    assert_eq!(
        (
            batch.delivery.ok,
            batch.delivery.status,
            batch.delivery.attempts
        ),
        (false, Some(500), 3)
    );
    assert_eq!(server.requests_to("/down").len(), 3);

    // Slower than the timeout: retried, then failed as a timeout.
    server.default_reply("/slow", Reply::slow(200, Duration::from_millis(600)));
    let spec = warming(
        &server.url("/slow"),
        json!({"clinicIds": [1], "retries": 1, "timeout": "150ms"}),
    );
    let run = warm_cache(
        &client,
        &spec,
        Some(&token),
        &[],
        &[],
        WarmTrigger::Deploy,
        "deploy",
        FAST,
        now(),
    )
    .await;
    let batch = &run.outcome.as_ref().unwrap().batches[0];
    assert!(!batch.delivery.ok);
    assert_eq!(batch.delivery.attempts, 2);
    assert!(
        batch
            .delivery
            .error
            .as_deref()
            .unwrap()
            .contains("timed out"),
        "{batch:?}"
    );

    // Nobody listening: connection errors are retried too.
    let closed = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap().port()
    };
    let spec = warming(
        &format!("http://127.0.0.1:{closed}/warm"),
        json!({"clinicIds": [1], "retries": 2}),
    );
    let run = warm_cache(
        &client,
        &spec,
        Some(&token),
        &[],
        &[],
        WarmTrigger::Deploy,
        "deploy",
        FAST,
        now(),
    )
    .await;
    let batch = &run.outcome.as_ref().unwrap().batches[0];
    assert_eq!((batch.delivery.ok, batch.delivery.attempts), (false, 3));

    // The token is in no log line, outcome, record or serialized outcome.
    let everything = format!("{}{:?}", logs.text(), run);
    assert!(!everything.contains(TOKEN));
    assert!(
        !serde_json::to_string(run.outcome.as_ref().unwrap())
            .unwrap()
            .contains(TOKEN)
    );
    assert!(
        logs.text().contains("retrying"),
        "retries are logged: {}",
        logs.text()
    );
}

#[tokio::test]
async fn warming_uses_the_top_n_ids_and_skips_without_endpoint_or_clinics() {
    let server = Recorder::start().await;
    let spec = warming(
        &server.url("/warm"),
        json!({"topN": {"query": "topk(5, x)", "count": 2}}),
    );
    let run = warm_cache(
        &http(),
        &spec,
        None,
        &[],
        &[8, 5, 3],
        WarmTrigger::Stampede,
        "s",
        FAST,
        now(),
    )
    .await;
    assert!(run.outcome.unwrap().ok());
    let requests = server.requests();
    assert_eq!(requests[0].body, json!({"clinic_ids": [8, 5]}));
    assert!(!requests[0].headers.contains_key("authorization"));

    let run = warm_cache(
        &http(),
        &spec,
        None,
        &[],
        &[],
        WarmTrigger::Stampede,
        "s",
        FAST,
        now(),
    )
    .await;
    assert_eq!(run.outcome, Err(WarmSkipped::NoClinics));
    assert_eq!(run.record.outcome, tierguard::api::ActionOutcome::Skipped);
    let none: WarmingSpec = serde_json::from_value(json!({"clinicIds": [1]})).unwrap();
    let run = warm_cache(
        &http(),
        &none,
        None,
        &[],
        &[],
        WarmTrigger::Stampede,
        "s",
        FAST,
        now(),
    )
    .await;
    assert_eq!(run.outcome, Err(WarmSkipped::NoEndpoint));
    assert_eq!(server.requests().len(), 1);
}

fn notification(level: u8, kind: NotifyKind) -> Notification {
    Notification {
        level,
        kind,
        incident_id: "2026-11-25-0312-redis-memory".into(),
        runbook: tierguard::api::Runbook::RedisMemory,
        trigger: "Redis memory 93% > 90% (critical)".into(),
        escalated_because: None,
        escalation_plan: "level 2 (senior engineer) is notified if it is still unresolved 15m after its automatic response started".into(),
        message: "unlinking session:* and old cache generations".into(),
    }
}

#[tokio::test]
async fn webhooks_get_their_format_by_level_and_a_failure_blocks_nothing() {
    let server = Recorder::start().await;
    let logs = LogCapture::start();
    let slack_secret_path = "/services/T000/B000/slack-secret-xyz";
    let routing_key = "pd-routing-key-123";
    server.default_reply("/broken", Reply::status(500));
    let webhooks = vec![
        ResolvedWebhook {
            name: "slack".into(),
            format: WebhookFormat::Slack,
            url: SecretString::from(server.url(slack_secret_path)),
            routing_key: None,
            levels: vec![],
        },
        ResolvedWebhook {
            name: "pagerduty".into(),
            format: WebhookFormat::PagerDuty,
            url: SecretString::from(server.url("/v2/enqueue")),
            routing_key: Some(SecretString::from(routing_key)),
            levels: vec![1, 2, 3],
        },
        ResolvedWebhook {
            name: "leads".into(),
            format: WebhookFormat::Generic,
            url: SecretString::from(server.url("/generic")),
            routing_key: None,
            levels: vec![3],
        },
        ResolvedWebhook {
            name: "broken".into(),
            format: WebhookFormat::Generic,
            url: SecretString::from(server.url("/broken")),
            routing_key: None,
            levels: vec![],
        },
    ];
    let ctx = Context {
        namespace: "clinic",
        tier: "backend",
        now: "2026-11-25T03:12:00Z".parse().unwrap(),
        incident: None,
        observed: None,
        mitigations: &[],
    };
    let n = notification(1, NotifyKind::Opened);
    let outcome = notify(
        &http(),
        &webhooks,
        &n,
        &ctx,
        Duration::from_secs(2),
        2,
        FAST,
    )
    .await;

    let slack = server.requests_to(slack_secret_path);
    assert_eq!(slack.len(), 1);
    assert_eq!(slack[0].method, "POST");
    assert_eq!(slack[0].headers["content-type"], "application/json");
    // Slack's text is escaped (`&`, `<`, `>`), and the message comes as Block Kit blocks too.
    let text = slack[0].body["text"].as_str().unwrap();
    assert!(text.starts_with("Subject: [INCIDENT] Redis Memory - clinic/backend\n\nTimeline:\n- 03:12 UTC - Issue detected: Redis memory 93% &gt; 90% (critical)\n"), "{text}");
    let blocks = slack[0].body["blocks"].as_array().unwrap();
    assert_eq!(
        blocks[0]["text"]["text"],
        "[INCIDENT] Redis Memory - clinic/backend"
    );
    assert!(
        blocks[1]["text"]["text"]
            .as_str()
            .unwrap()
            .contains("Redis memory 93% &gt; 90% (critical)")
    );
    assert!(
        text.contains("\nImpact:\n")
            && text.contains("\nNext Steps:\n")
            && text.ends_with("Status: MITIGATING")
    );

    let pd = server.requests_to("/v2/enqueue");
    assert_eq!(pd.len(), 1);
    assert_eq!(pd[0].body["routing_key"], routing_key);
    assert_eq!(pd[0].body["event_action"], "trigger");
    assert_eq!(pd[0].body["dedup_key"], "2026-11-25-0312-redis-memory");
    assert_eq!(pd[0].body["payload"]["severity"], "warning");
    assert_eq!(pd[0].body["payload"]["source"], "tierguard/clinic/backend");
    assert_eq!(
        pd[0].body["payload"]["custom_details"]["runbook"],
        "RedisMemory"
    );
    assert_eq!(pd[0].body["payload"]["timestamp"], "2026-11-25T03:12:00Z");
    assert_eq!(pd[0].body["client"], "tierguard");
    assert!(
        pd[0].body["links"][0]["href"]
            .as_str()
            .unwrap()
            .ends_with("/docs/runbooks.md#redismemory")
    );

    assert!(
        server.requests_to("/generic").is_empty(),
        "level 1 is not for the leads"
    );
    assert_eq!(
        server.requests_to("/broken").len(),
        3,
        "1 attempt + 2 retries"
    );

    let by_name = |name: &str| {
        outcome
            .webhooks
            .iter()
            .find(|w| w.name == name)
            .unwrap()
            .clone()
    };
    assert!(by_name("slack").delivery.ok && by_name("pagerduty").delivery.ok);
    assert!(!by_name("leads").sent);
    assert_eq!(by_name("broken").delivery.status, Some(500));
    let record = outcome.record(ctx.now, "incident opened");
    assert_eq!(record.outcome, tierguard::api::ActionOutcome::Failed);
    assert!(
        record
            .detail
            .as_deref()
            .unwrap()
            .contains("broken: failed: HTTP 500"),
        "{record:?}"
    );

    // Level 3 reaches the leads in the generic format; resolve goes to PagerDuty as "resolve".
    let outcome = notify(
        &http(),
        &webhooks[..3],
        &notification(3, NotifyKind::Escalated),
        &ctx,
        Duration::from_secs(2),
        0,
        FAST,
    )
    .await;
    assert_eq!(
        outcome.record(ctx.now, "x").outcome,
        tierguard::api::ActionOutcome::Ok
    );
    let generic = server.requests_to("/generic");
    assert_eq!(generic.len(), 1);
    assert_eq!(generic[0].body["level"], 3);
    assert_eq!(generic[0].body["kind"], "escalated");
    assert_eq!(generic[0].body["status"], "ESCALATED (level 3)");
    assert_eq!(
        server.requests_to("/v2/enqueue")[1].body["payload"]["severity"],
        "critical"
    );
    notify(
        &http(),
        &webhooks[1..2],
        &notification(1, NotifyKind::Resolved),
        &ctx,
        Duration::from_secs(2),
        0,
        FAST,
    )
    .await;
    let resolve = &server.requests_to("/v2/enqueue")[2].body;
    assert_eq!(resolve["event_action"], "resolve");
    assert_eq!(resolve["dedup_key"], "2026-11-25-0312-redis-memory");

    // Secrets stay out of logs and outcomes.
    let everything = format!(
        "{}{:?}{}",
        logs.text(),
        outcome,
        serde_json::to_string(&outcome).unwrap()
    );
    assert!(!everything.contains("slack-secret-xyz"));
    assert!(!everything.contains(routing_key));
    assert!(logs.text().contains("notification sent"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_error_answer_is_quoted_from_its_start_never_read_whole() {
    use support::hostile::{Answer, HostileHttp};
    let server = HostileHttp::start().await;
    // 100 MB of error page behind an escape sequence, sent as fast as it is read.
    server.answer(
        "/hooks/slack",
        Answer::huge(
            400,
            "\u{1b}[2Jinvalid_payload\nsee the docs ",
            "x",
            "",
            100 << 20,
        ),
    );
    let url = SecretString::from(server.url() + "/hooks/slack");
    let started = std::time::Instant::now();
    let delivery = tierguard::act::http::post_json(
        &http(),
        &url,
        None,
        &json!({"text": "hello"}),
        Duration::from_secs(20),
        0,
        FAST,
    )
    .await;
    let elapsed = started.elapsed();
    let error = delivery.error.clone().unwrap_or_default();
    assert!(!delivery.ok);
    assert_eq!(delivery.status, Some(400));
    assert!(
        error.starts_with("HTTP 400 Bad Request: \\u{1b}[2Jinvalid_payload\\nsee the docs x"),
        "{error}"
    );
    assert!(
        error.chars().count() < 200,
        "{} characters",
        error.chars().count()
    );
    assert!(
        elapsed < Duration::from_secs(5),
        "took {elapsed:?}: the body was read whole"
    );
}
