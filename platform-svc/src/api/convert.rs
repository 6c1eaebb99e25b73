//! Domain types to wire types.

use consent_core::clock::timestamp;
use consent_core::model::{
    AccessRequest, AuditRecord, Feature, Grant, GrantEvent, Message, Partner, Thread,
};
use consent_core::partner_view::PartnerView;
use consent_core::rules::{must_redact, requires_deletion, shows_participants};
use consent_proto::platform::v1 as pb;
use consent_store::MessageRow;

pub fn grant(g: &Grant) -> pb::Grant {
    pb::Grant {
        grant_id: g.id.clone(),
        user_id: g.user_id.clone(),
        partner_id: g.partner_id.clone(),
        feature: g.feature.clone(),
        scopes: g.scopes.to_proto(),
        coverage: g.coverage.to_i32(),
        thread_ids: g.thread_ids.clone(),
        include_history: g.include_history,
        created_at: Some(timestamp(g.created_ms)),
        not_after: Some(timestamp(g.not_after_ms)),
        last_used_at: g.last_used_ms.map(timestamp),
        state: g.state.to_i32(),
        ended_at: g.ended_ms.map(timestamp),
        deletion_attested_at: g.attested_ms.map(timestamp),
    }
}

/// A grant as its partner sees it: the threads it lists by the partner's ids.
pub fn grant_for_partner(g: &Grant, view: &PartnerView<'_>) -> pb::Grant {
    pb::Grant {
        thread_ids: g.thread_ids.iter().map(|t| view.thread(t)).collect(),
        ..grant(g)
    }
}

/// A thread as the platform's own client shows it to a participant.
pub fn thread(t: &Thread) -> pb::Thread {
    pb::Thread {
        thread_id: t.id.clone(),
        title: t.title.clone(),
        participants: t.participants.clone(),
        started_by_partner: t.started_by_partner.clone().unwrap_or_default(),
        created_at: Some(timestamp(t.created_ms)),
    }
}

/// A thread as the partner of `grant` may see it: by the partner's id, with the other
/// participants as handles if the grant shows them, else the granting user alone; which
/// app started it only if that app is this partner (no partner learns which other apps
/// a person uses).
pub fn thread_for_partner(t: &Thread, g: &Grant, view: &PartnerView<'_>) -> pb::Thread {
    pb::Thread {
        thread_id: view.thread(&t.id),
        started_by_partner: own_partner(t.started_by_partner.as_deref(), g),
        participants: t
            .participants
            .iter()
            .filter(|p| shows_participants(g) || **p == g.user_id)
            .map(|p| view.person(&g.user_id, p))
            .collect(),
        ..thread(t)
    }
}

/// A message as its thread's participants see it.
pub fn message(m: &Message) -> pb::Message {
    pb::Message {
        message_id: m.id.clone(),
        thread_id: m.thread_id.clone(),
        sender: m.sender_id.clone(),
        body: m.body.clone(),
        redacted: false,
        created_at: Some(timestamp(m.created_ms)),
        sent_by_partner: m.sent_by_partner.clone().unwrap_or_default(),
        card: m.card.clone(),
    }
}

/// Who the partner of `grant` is shown as having sent or started something: itself, or
/// nobody.
fn own_partner(partner_id: Option<&str>, g: &Grant) -> String {
    partner_id
        .filter(|p| *p == g.partner_id)
        .unwrap_or_default()
        .to_string()
}

/// A message as the partner of `grant` may see it: by the partner's ids, the author as a
/// handle unless it is the granting user, the body redacted if the author opted out of
/// others' apps (its card with it), the sending app only if it is this partner. Takes
/// the row, so the body is moved, not copied.
pub fn message_for_partner(row: MessageRow, g: &Grant, view: &PartnerView<'_>) -> pb::Message {
    let m = row.message;
    let redacted = must_redact(g, &m.sender_id, row.sender_hides);
    pb::Message {
        message_id: view.message(&m.id),
        thread_id: view.thread(&m.thread_id),
        sender: view.person(&g.user_id, &m.sender_id),
        body: if redacted { String::new() } else { m.body },
        card: if redacted { None } else { m.card },
        redacted,
        created_at: Some(timestamp(m.created_ms)),
        sent_by_partner: own_partner(m.sent_by_partner.as_deref(), g),
    }
}

/// A message a partner just sent for the granting user, by the partner's ids.
pub fn sent_message(m: &Message, view: &PartnerView<'_>) -> pb::Message {
    pb::Message {
        message_id: view.message(&m.id),
        thread_id: view.thread(&m.thread_id),
        ..message(m)
    }
}

pub fn access_request(
    r: &AccessRequest,
    partner: &Partner,
    feature: &Feature,
) -> pb::AccessRequest {
    pb::AccessRequest {
        request_id: r.id.clone(),
        partner_id: r.partner_id.clone(),
        partner_name: partner.display_name.clone(),
        feature: r.feature.clone(),
        scopes: feature.scopes.to_proto(),
        coverage: r.coverage.to_i32(),
        thread_ids: r.thread_ids.clone(),
        include_history: r.include_history,
        purpose: r.purpose.clone(),
        status: r.status as i32,
        created_at: Some(timestamp(r.created_ms)),
        user_id: String::new(),
        binding_message: r.binding_message.clone(),
        account_label: r.account_label.clone(),
    }
}

pub fn grant_event(e: &GrantEvent) -> pb::GrantEvent {
    pb::GrantEvent {
        sequence: u64::try_from(e.seq).unwrap_or(0),
        kind: e.kind as i32,
        grant_id: e.grant_id.clone(),
        user_id: e.user_id.clone(),
        at: Some(timestamp(e.at_ms)),
        deletion_required: requires_deletion(e.kind),
    }
}

pub fn audit_record(r: &AuditRecord) -> pb::AuditRecord {
    pb::AuditRecord {
        seq: u64::try_from(r.seq).unwrap_or(0),
        at: Some(timestamp(r.at_ms)),
        partner_id: r.entry.partner_id.clone(),
        user_id: r.entry.user_id.clone(),
        grant_id: r.entry.grant_id.clone(),
        method: r.entry.method.clone(),
        resource: r.entry.resource.clone(),
        decision: r.entry.decision.clone(),
        reason: r.entry.reason.clone(),
        prev_hash: r.prev_hash.clone(),
        hash: r.hash.clone(),
        mac: r.mac.clone(),
    }
}

pub fn feature(f: &Feature) -> pb::Feature {
    pb::Feature {
        name: f.name.clone(),
        description: f.description.clone(),
        scopes: f.scopes.to_proto(),
        retired: f.retired,
        card_kinds: f.card_kinds.iter().map(|k| *k as i32).collect(),
    }
}

pub fn partner(p: &Partner, features: &[Feature], spiffe_id: String) -> pb::Partner {
    pb::Partner {
        partner_id: p.id.clone(),
        display_name: p.display_name.clone(),
        allowed_scopes: p.allowed_scopes.to_proto(),
        features: features.iter().map(feature).collect(),
        suspended: p.suspended,
        spiffe_id,
        blocked: p.blocked,
        redirect_uris: p.redirect_uris.clone(),
    }
}
