//! Kafka records shaped exactly like the gateway's, for the benchmarks that feed the worker
//! straight from the topic: the same event ids, routes and provider payloads, read by the
//! gateway's own routing code.

use callgate_contract::envelope::{ENVELOPE_VERSION, EventEnvelope, Payload, Route, event_id, record_key};
use callgate_contract::{E164, PhoneNumberId, Provider};
use callgate_gateway::providers;

use rdkafka::config::ClientConfig;
use rdkafka::producer::FutureProducer;

use crate::calls::{FUTURE_LOCAL, Webhook, appointment_analysis, retell_call, twilio_call, vapi_call};
use crate::{Tenant, kafka_brokers};

/// An idempotent producer to the test broker, batching for `linger_ms`.
pub fn producer(linger_ms: u32) -> FutureProducer {
    ClientConfig::new()
        .set("bootstrap.servers", kafka_brokers())
        .set("linger.ms", linger_ms.to_string())
        .set("enable.idempotence", "true")
        .create()
        .expect("a producer for the test broker")
}

/// The records (key, value) of the `i`th round of calls: a whole Retell, Vapi and Twilio call
/// (3, 4 and 3 events); one round in three asks for an appointment on Retell and Vapi.
pub fn calls(tenant: &Tenant, i: usize) -> Vec<(String, String)> {
    // A caller per call: one caller's concurrent calls on several partitions would make
    // their transactions wait on the customer row, which real traffic rarely does.
    let caller = |area: u32| format!("+1{area}{i:07}");
    let booking = i.is_multiple_of(3).then(|| appointment_analysis(FUTURE_LOCAL, "cleaning"));
    let calls: [(Provider, Vec<Webhook>, (PhoneNumberId, E164)); 3] = [
        (
            Provider::Retell,
            retell_call(tenant, &format!("call_{i}"), &caller(202), booking.clone()),
            tenant.retell_number,
        ),
        (Provider::Vapi, vapi_call(tenant, &format!("vapi-{i}"), &caller(203), booking), tenant.vapi_number),
        (Provider::Twilio, twilio_call(tenant, &format!("CA{i:032}"), &caller(204)), tenant.twilio_number),
    ];
    let mut records = Vec::new();
    for (provider, webhooks, number) in calls {
        for webhook in webhooks {
            records.push(envelope(tenant, provider, number, &webhook));
        }
    }
    records
}

/// The record the gateway would publish for `webhook`: event type and call id read by the
/// gateway's own routing code.
pub fn envelope(
    tenant: &Tenant,
    provider: Provider,
    number: (PhoneNumberId, E164),
    webhook: &Webhook,
) -> (String, String) {
    let body = webhook.body.as_bytes();
    let routing = match provider {
        Provider::Retell => providers::retell::routing(body).map(|(routing, _legacy)| routing),
        Provider::Vapi => providers::vapi::routing(body),
        Provider::Twilio => providers::twilio::routing(Some(webhook.content_type), body, None),
    }
    .unwrap();
    let payload = match provider {
        Provider::Twilio => Payload::Form(webhook.body.clone()),
        _ => Payload::Json(serde_json::value::RawValue::from_string(webhook.body.clone()).unwrap()),
    };
    let account = match provider {
        Provider::Retell => tenant.retell_account,
        Provider::Vapi => tenant.vapi_account,
        Provider::Twilio => tenant.twilio_account,
    };
    let env = EventEnvelope {
        version: ENVELOPE_VERSION,
        event_id: event_id(provider, &routing.call_id, &routing.event_type, body),
        provider,
        event_type: routing.event_type,
        provider_call_id: routing.call_id,
        received_at: chrono::Utc::now(),
        trace_id: "bench".into(),
        route: Route {
            company_id: tenant.company,
            branch_id: tenant.branch,
            phone_number_id: number.0,
            provider_account_id: account,
            number: number.1,
        },
        redacted: false,
        payload,
    };
    (record_key(provider, &env.provider_call_id), serde_json::to_string(&env).unwrap())
}
