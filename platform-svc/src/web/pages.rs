//! The pages' HTML, checked at compile time (maud escapes every value it inserts).

use super::authorize::ConsentView;
use super::grants::{GrantRow, GrantsView};
use crate::error::ApiError;
use consent_core::card;
use consent_core::model::{Coverage, Grant, GrantState, Scope, ScopeSet, User};
use consent_proto::platform::v1 as pb;
use maud::{DOCTYPE, Markup, html};

fn layout(title: &str, body: Markup) -> Markup {
    html! {
        (DOCTYPE)
        html lang="en" {
            head {
                meta charset="utf-8";
                meta name="viewport" content="width=device-width, initial-scale=1";
                title { (title) " · Platform" }
                link rel="stylesheet" href="/style.css";
            }
            body {
                header {
                    a href="/grants" { "Platform" }
                    nav {
                        a href="/grants" { "Apps" }
                        a href="/access-log" { "Access log" }
                        a href="/threads" { "Conversations" }
                        a href="/privacy" { "Privacy" }
                    }
                }
                main { h1 { (title) } (body) }
            }
        }
    }
}

/// A failed page: what went wrong and its reason (a storage failure's detail stays in the
/// log).
pub fn failure(error: &ApiError) -> Markup {
    error.log_detail();
    refused(&error.public_message(), error.audit_reason())
}

/// The sign-in form, returning to `next`.
pub fn sign_in(csrf: &str, next: &str, error: Option<&ApiError>) -> Markup {
    layout(
        "Sign in",
        html! {
            @if let Some(error) = error { p.error { (error.public_message()) } }
            form method="post" action="/sign-in" {
                input type="hidden" name="csrf" value=(csrf);
                input type="hidden" name="next" value=(next);
                label { "User name " input type="text" name="user_name" autocomplete="username" required; }
                label { "Password " input type="password" name="password" autocomplete="current-password" required; }
                button type="submit" { "Sign in" }
            }
        },
    )
}

fn coverage_words(coverage: Coverage, threads: usize) -> String {
    match coverage {
        Coverage::All => "all your conversations".into(),
        Coverage::Listed => format!("{threads} conversation(s) you picked"),
        Coverage::PartnerStarted => "only conversations started from the app".into(),
    }
}

fn day(ms: i64) -> String {
    time::OffsetDateTime::from_unix_timestamp(ms / 1000)
        .map(|t| {
            format!(
                "{:04}-{:02}-{:02} {:02}:{:02} UTC",
                t.year(),
                u8::from(t.month()),
                t.day(),
                t.hour(),
                t.minute()
            )
        })
        .unwrap_or_default()
}

/// The lifetimes, in days, the consent page offers: a day, a week and a month where policy
/// allows them, and the longest it allows, each once.
fn lifetime_choices(max_days: i64) -> Vec<i64> {
    let mut choices: Vec<i64> = [1, 7, 30].into_iter().filter(|d| *d < max_days).collect();
    choices.push(max_days);
    choices
}

/// Whose account the page acts for, with a way out for anyone else at the browser.
fn signed_in_as(name: &str, csrf: &str) -> Markup {
    html! {
        p { "Signed in as " strong { (name) } "." }
        form method="post" action="/sign-out" {
            input type="hidden" name="csrf" value=(csrf);
            button type="submit" { "Sign out" }
        }
    }
}

/// The consent page of one request.
pub fn consent(view: &ConsentView, csrf: &str) -> Markup {
    let access = &view.access;
    let title = format!("{} asks for access", view.partner_name);
    layout(
        &title,
        html! {
            (signed_in_as(&view.signed_in_as, csrf))
            p { strong { (view.partner_name) } " wants to use " strong { (access.feature) } ": " (view.feature_description) }
            p.purpose { "In its words: " q { (access.purpose) } }
            @if !view.card_kinds.is_empty() {
                p { "Besides text, its messages may carry: "
                    (view.card_kinds.iter().map(|k| card::plain_name(*k)).collect::<Vec<_>>().join(", ")) "." }
            }
            @if !access.binding_message.is_empty() {
                p #binding {
                    "For " strong { (access.account_label) } ". Allow only if the app shows you the code "
                    strong { (access.binding_message) } "."
                }
            }
            form method="post" action={ "/consent/" (access.id) } {
                input type="hidden" name="csrf" value=(csrf);
                fieldset {
                    legend { "It may" }
                    @for scope in view.scopes.iter() {
                        label.choice {
                            input type="checkbox" name="scope" value=(scope.name()) checked;
                            " " (scope.plain_words())
                        }
                    }
                }
                fieldset {
                    legend { "On" }
                    @if access.coverage == Coverage::Listed {
                        p { "The conversations you tick:" }
                        @if view.threads.is_empty() { p.error { "You have no conversation to pick." } }
                        @for (id, title, ticked) in &view.threads {
                            label.choice {
                                input type="checkbox" name="thread" value=(id) checked[*ticked];
                                " " (title)
                            }
                        }
                    } @else {
                        p { (coverage_words(access.coverage, 0)) }
                    }
                }
                @if access.include_history {
                    label.choice {
                        input type="checkbox" name="include_history" value="yes" checked;
                        " including messages from before today"
                    }
                } @else {
                    p { "Only messages from now on." }
                }
                label {
                    "For "
                    select name="lifetime_days" {
                        @for days in lifetime_choices(view.max_days) {
                            option value=(days) selected[days == view.max_days] { (days) " days" }
                        }
                    }
                    " at most; you can revoke it at any time."
                }
                div.actions {
                    button type="submit" name="decision" value="approve" { "Allow" }
                    button type="submit" name="decision" value="deny" { "Deny" }
                }
            }
        },
    )
}

fn state_words(state: GrantState) -> &'static str {
    match state {
        GrantState::Active => "active",
        GrantState::Revoked => "revoked by you",
        GrantState::Expired => "expired",
        GrantState::Lapsed => "lapsed (unused)",
        GrantState::Retired => "ended: feature retired",
        GrantState::Suspended => "ended: app suspended",
        GrantState::Released => "given up by the app",
    }
}

fn grant_row(row: &GrantRow, csrf: &str) -> Markup {
    let g: &Grant = &row.grant;
    html! {
        tr {
            td { a href={ "/grants/" (g.id) } { (row.partner_name) } br; small { (g.feature) } }
            td { ul { @for scope in g.scopes.iter() { li { (Scope::plain_words(scope)) } } } }
            td { (coverage_words(g.coverage, g.thread_ids.len())) br;
                 small { @if g.include_history { "with older messages" } @else { "from the grant on" } } }
            td { (day(g.created_ms)) }
            td { @match g.last_used_ms { Some(ms) => (day(ms)), None => "never" } }
            td { (day(g.not_after_ms)) }
            td { (state_words(g.state)) }
            td {
                @if g.state == GrantState::Active {
                    form method="post" action={ "/grants/" (g.id) "/revoke" } {
                        input type="hidden" name="csrf" value=(csrf);
                        button type="submit" { "Revoke" }
                    }
                }
            }
        }
    }
}

/// The user's grants and pending requests.
pub fn grants(view: &GrantsView, csrf: &str) -> Markup {
    let (rows, pending) = (&view.rows, &view.pending);
    layout(
        "Apps with access to your messages",
        html! {
            (signed_in_as(&view.name, csrf))
            @if !pending.is_empty() {
                h2 { "Waiting for your answer" }
                ul { @for (request, partner_name) in pending {
                    li {
                        a href={ "/consent/" (request.id) } { (partner_name) ": " (request.feature) }
                        @if !request.binding_message.is_empty() { " (code " (request.binding_message) ")" }
                    }
                } }
            }
            h2 { "Grants" }
            @if rows.is_empty() { p { "No app has access." } } @else {
                table {
                    thead { tr { th { "App" } th { "May" } th { "On" } th { "Since" } th { "Last used" } th { "Until" } th { "State" } th {} } }
                    tbody { @for row in rows { (grant_row(row, csrf)) } }
                }
                @if let Some(after) = view.next_after {
                    p { a href={ "/grants?after=" (after) } { "More grants" } }
                }
            }
        },
    )
}

/// A refusal: what went wrong, and its reason.
pub fn refused(message: &str, reason: &str) -> Markup {
    layout(
        "That did not work",
        html! {
            p.error { (message) }
            p { small { "Reason: " code { (reason) } } }
        },
    )
}

fn short_method(method: &str) -> &str {
    method.rsplit('/').next().unwrap_or(method)
}

/// The access log of my data.
pub fn access_log(
    log: &pb::ReadAccessLogResponse,
    others: &pb::ListReadsByOthersAppsResponse,
) -> Markup {
    let reads = &others.reads;
    let at = |t: &Option<prost_types::Timestamp>| {
        t.as_ref()
            .map(|t| day(t.seconds * 1000))
            .unwrap_or_default()
    };
    layout(
        "Access log of your data",
        html! {
            p { "Every call an app made on your data, allowed or refused." }
            table #access-log {
                thead { tr { th { "When" } th { "App" } th { "Did" } th { "On" } th { "Decision" } } }
                tbody { @for r in &log.records {
                    tr {
                        td { (at(&r.at)) }
                        td { (r.partner_id) }
                        td { (short_method(&r.method)) }
                        td { small { (r.resource) } }
                        td { @if r.decision == "allow" { "allowed" } @else { strong { "refused" } " (" (r.reason) ")" } }
                    }
                } }
            }
            @if !log.next_page_token.is_empty() {
                p { a href={ "/access-log?page=" (log.next_page_token) } { "Older entries" } }
            }
            h2 { "Apps that read your messages through someone else's grant" }
            @if reads.is_empty() { p { "None." } } @else {
                ul { @for read in reads {
                    li { (at(&read.at)) ": " (read.partner_name) " read " (read.messages) " of your messages in conversation " (read.thread_id) }
                } }
                @if !others.next_page_token.is_empty() {
                    p { a href={ "/access-log?others=" (others.next_page_token) } { "Older reads" } }
                }
            }
        },
    )
}

/// Which apps can read each of my conversations.
pub fn threads(rows: &[(pb::Thread, Vec<pb::ThreadApp>)], next_page: &str) -> Markup {
    layout(
        "Who can read your conversations",
        html! {
            @if rows.is_empty() { p { "You have no conversations." } }
            @for (thread, apps) in rows {
                h2 { a href={ "/threads/" (thread.thread_id) } { (thread.title) } }
                @if apps.is_empty() { p { "No app can read it." } } @else {
                    ul { @for app in apps {
                        li {
                            (app.partner_name) " (" (app.feature) "), "
                            @if app.granted_by_me { "granted by you" } @else { "granted by another participant" }
                            @if app.my_messages_redacted { "; your messages are hidden from it" }
                        }
                    } }
                }
            }
            @if !next_page.is_empty() {
                p { a href={ "/threads?page=" (next_page) } { "More conversations" } }
            }
        },
    )
}

/// A conversation's messages, oldest first, each card as what it is.
pub fn conversation(thread_id: &str, messages: &[pb::Message], next_page: &str) -> Markup {
    layout(
        "A conversation",
        html! {
            p { a href="/threads" { "All your conversations" } }
            @if messages.is_empty() { p { "No messages." } }
            ul #messages { @for m in messages {
                li {
                    (m.sender) ": " (m.body)
                    @if !m.sent_by_partner.is_empty() { " " small { "(sent by " (m.sent_by_partner) ")" } }
                    @if let Some((text, link)) = m.card.as_ref().and_then(card::describe) {
                        div.card {
                            (text)
                            @if !link.is_empty() { " " a href=(link) rel="noopener noreferrer" { "open" } }
                        }
                    }
                }
            } }
            @if !next_page.is_empty() {
                p { a href={ "/threads/" (thread_id) "?page=" (next_page) } { "Later messages" } }
            }
        },
    )
}

/// My privacy settings.
pub fn privacy(user: &User, csrf: &str) -> Markup {
    layout(
        "Privacy",
        html! {
            form method="post" action="/privacy" {
                input type="hidden" name="csrf" value=(csrf);
                label.choice {
                    input type="checkbox" name="hide_from_others_apps" value="yes" checked[user.hide_from_others_apps];
                    " Hide my messages from apps that other people in my conversations use"
                }
                label.choice {
                    input type="checkbox" name="show_name_to_friends_apps" value="yes" checked[user.name_to_friends_apps];
                    " Apps my friends use may see my name (otherwise they see a handle)"
                }
                button type="submit" { "Save" }
            }
        },
    )
}

/// The consent receipt of one grant.
pub fn receipt(grant: &Grant, partner_name: &str, summary: &str, used: ScopeSet) -> Markup {
    layout(
        &format!("Your consent to {partner_name}"),
        html! {
            p #summary { (summary) }
            table {
                tr { th { "Grant" } td { code { (grant.id) } } }
                tr { th { "Feature" } td { (grant.feature) } }
                tr { th { "May" } td { ul { @for scope in grant.scopes.iter() {
                    li { (scope.plain_words()) @if !used.contains(scope) { small { " (never used)" } } }
                } } } }
                tr { th { "On" } td { (coverage_words(grant.coverage, grant.thread_ids.len())) } }
                tr { th { "Given" } td { (day(grant.created_ms)) } }
                tr { th { "Until" } td { (day(grant.not_after_ms)) } }
                tr { th { "State" } td { (state_words(grant.state)) } }
            }
            p { a href="/grants" { "All apps" } }
        },
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_lifetime_is_offered_once_up_to_the_longest_policy_allows() {
        assert_eq!(lifetime_choices(90), [1, 7, 30, 90]);
        assert_eq!(lifetime_choices(30), [1, 7, 30]);
        assert_eq!(lifetime_choices(7), [1, 7]);
        assert_eq!(lifetime_choices(1), [1]);
    }
}
