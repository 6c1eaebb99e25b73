//! The web app's HTML, checked at compile time (maud escapes every value it inserts).

use consent_proto::partner::v1 as api;
use maud::{DOCTYPE, Markup, html};

fn layout(app_name: &str, title: &str, body: Markup) -> Markup {
    html! {
        (DOCTYPE)
        html lang="en" {
            head {
                meta charset="utf-8";
                meta name="viewport" content="width=device-width, initial-scale=1";
                title { (title) " · " (app_name) }
                link rel="stylesheet" href="/style.css";
            }
            body {
                header { a href="/" { (app_name) } }
                main { h1 { (title) } (body) }
            }
        }
    }
}

/// A refused or failed action.
pub fn failure(reason: &str, message: &str) -> Markup {
    layout(
        "",
        "That did not work",
        html! {
            p.error { (message) }
            p { small { "Reason: " code { (reason) } } }
            p { a href="/" { "Back" } }
        },
    )
}

/// Sign-in and sign-up.
pub fn signed_out(app_name: &str, csrf: &str) -> Markup {
    let form = |action: &str, button: &str| {
        html! {
            form method="post" action=(action) {
                input type="hidden" name="csrf" value=(csrf);
                label { "Name " input type="text" name="name" autocomplete="username" required; }
                label { "Password " input type="password" name="password" required; }
                button type="submit" { (button) }
            }
        }
    };
    layout(
        app_name,
        &format!("Welcome to {app_name}"),
        html! {
            h2 { "Sign in" } (form("/sign-in", "Sign in"))
            h2 { "New here?" } (form("/sign-up", "Create an account"))
        },
    )
}

/// What the signed-in page shows.
#[derive(Debug)]
pub struct Home<'a> {
    /// The app's name.
    pub app_name: &'a str,
    /// The signed-in account.
    pub name: &'a str,
    /// Its connection to the platform.
    pub status: &'a api::ConnectionStatusResponse,
    /// The thread shown, if any.
    pub thread_id: &'a str,
    /// A page of its messages, when the app may read them.
    pub inbox: Option<&'a api::InboxResponse>,
}

fn hidden_csrf(csrf: &str) -> Markup {
    html! { input type="hidden" name="csrf" value=(csrf); }
}

/// The signed-in account's page.
pub fn home(view: &Home<'_>, csrf: &str) -> Markup {
    let connected = view.status.status == "CONNECTED";
    let deletes = view.status.scopes.iter().any(|s| s == "MESSAGES_DELETE");
    layout(
        view.app_name,
        &format!("Hello, {}", view.name),
        html! {
            form method="post" action="/sign-out" { (hidden_csrf(csrf)) button type="submit" { "Sign out" } }
            h2 { "Platform connection" }
            p #connection { "Status: " strong { (view.status.status) } }
            @if connected {
                p { "This app may: " (view.status.scopes.join(", ")) }
                form method="post" action="/disconnect" { (hidden_csrf(csrf)) button type="submit" { "Disconnect" } }
                h2 { "Share" }
                form method="post" action="/share" {
                    (hidden_csrf(csrf))
                    input type="hidden" name="client_key" value=(consent_core::secret::new_token("web_"));
                    label { "Into thread " input type="text" name="thread_id" value=(view.thread_id); }
                    label { "Or to friend (handle) " input type="text" name="friend_id"; }
                    label { "Message " input type="text" name="body" required; }
                    button type="submit" { "Share" }
                }
                @if let Some(inbox) = view.inbox {
                    h2 { "Thread " (view.thread_id) }
                    ul #inbox { @for m in &inbox.messages {
                        li {
                            strong { (m.sender) } ": "
                            @if m.redacted { em { "(hidden by its author)" } } @else { (m.body) }
                            @if let Some((text, link)) = m.card.as_ref().and_then(consent_core::card::describe) {
                                " " span.card {
                                    (text)
                                    @if !link.is_empty() { " " a href=(link) rel="noopener noreferrer" { "open" } }
                                }
                            }
                            @if deletes {
                                form.inline method="post" action="/unsend" {
                                    (hidden_csrf(csrf))
                                    input type="hidden" name="message_id" value=(m.message_id);
                                    input type="hidden" name="thread_id" value=(view.thread_id);
                                    button type="submit" { "Unsend" }
                                }
                            }
                        }
                    } }
                    @if !inbox.next_page_token.is_empty() {
                        p { a href={ "/?thread_id=" (view.thread_id) "&page=" (inbox.next_page_token) } { "Later messages" } }
                    }
                }
            } @else {
                form method="post" action="/connect" {
                    (hidden_csrf(csrf))
                    button type="submit" { "Connect with the platform" }
                }
            }
        },
    )
}
