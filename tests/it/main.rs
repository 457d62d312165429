//! tierguard's integration tests, in one binary: every module is one area (actuators, observers,
//! the controller, the policy's runbooks, simulate, the manifests, the drills), and `support` is
//! the harness they share (real servers on loopback, tier builders, polling).
//!
//! Run one area with `cargo test --test it <module>::`, e.g. `cargo test --test it drills::`.

mod support;

mod act_http;
mod act_kube;
mod act_redis;
mod act_report;
mod alert_rules;
mod apiserver;
mod argocd_health;
mod backtest;
mod breaker_probe;
mod check;
mod clinic_backend;
mod cohorts;
mod controller;
mod crd;
mod diagnosis;
mod drills;
mod e2e;
mod hostile_answers;
mod kubectl_plugin;
mod manifests;
mod observability;
mod observe_cli;
mod observe_clinics;
mod observe_latency;
mod observe_metrics;
mod observe_postgres;
mod observe_redis;
mod policy_properties;
mod policy_runbooks;
mod redis_diagnosis;
mod scale;
mod servers_smoke;
mod shutdown;
mod simulate;
mod soak;
mod tenancy;
