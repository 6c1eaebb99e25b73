//! Cards: the typed content a message may carry besides its text (a track, a video, a
//! shared folder, a transfer receipt), the checks every card passes, and which kinds a
//! partner may send: those its feature declares.

use crate::denial::{Denied, FieldViolation, Reason};
use crate::model::{Scope, ScopeSet};
use crate::text::is_hidden;
use consent_proto::platform::v1 as pb;
pub use pb::CardKind;
use pb::card::Kind;

/// Longest title, artist, name.
const MOST_NAME_BYTES: usize = 200;
/// Longest link.
const MOST_LINK_BYTES: usize = 2048;
/// Longest receipt reference.
const MOST_REFERENCE_BYTES: usize = 64;
/// Longest track or video, in seconds.
const MOST_SECONDS: u32 = 86_400;
/// Most items in a shared folder.
const MOST_ITEMS: u32 = 1_000_000;
/// Latest receipt date: the last second of the year 9999.
const LATEST_SECONDS: i64 = 253_402_300_799;
/// Largest amount, in minor units.
const MOST_MINOR_UNITS: i64 = 1_000_000_000_000_000;

/// The ISO 4217 currencies a receipt may be in.
pub const CURRENCIES: &[&str] = &[
    "AUD", "BRL", "CAD", "CHF", "CNY", "CZK", "DKK", "EUR", "GBP", "HKD", "HUF", "INR", "JPY",
    "KRW", "MXN", "NOK", "NZD", "PLN", "SEK", "SGD", "TRY", "USD", "ZAR",
];

/// Of [`CURRENCIES`], those whose minor unit is the unit itself.
const WHOLE_UNIT_CURRENCIES: &[&str] = &["JPY", "KRW"];

/// Every kind of card.
pub const KINDS: [CardKind; 4] = [
    CardKind::Track,
    CardKind::Video,
    CardKind::Folder,
    CardKind::Receipt,
];

/// A kind by its name in a partner's profile (`track`, `video`, `folder`, `receipt`).
pub fn kind_named(name: &str) -> Option<CardKind> {
    CardKind::from_str_name(&format!("CARD_KIND_{}", name.to_uppercase()))
        .filter(|k| *k != CardKind::Unspecified)
}

/// A kind as a person reads it ("transfer receipts").
pub fn plain_name(kind: CardKind) -> &'static str {
    match kind {
        CardKind::Track => "tracks",
        CardKind::Video => "videos",
        CardKind::Folder => "shared folders",
        CardKind::Receipt => "transfer receipts",
        CardKind::Unspecified => "nothing",
    }
}

/// The checks of a card sent as `field`: every bad field of it named (`card.track.link`),
/// or its kind.
pub fn check(field: &str, card: &pb::Card) -> Result<CardKind, Vec<FieldViolation>> {
    let mut bad = Vec::new();
    let mut at = |name: &str, problem: Option<String>| {
        if let Some(problem) = problem {
            bad.push(FieldViolation::new(format!("{field}.{name}"), problem));
        }
    };
    let kind = match &card.kind {
        None => {
            at(
                "kind",
                Some("a card holds a track, a video, a folder or a receipt".into()),
            );
            CardKind::Unspecified
        }
        Some(Kind::Track(t)) => {
            at("track.title", name(&t.title));
            at("track.artist", name(&t.artist));
            at("track.link", link(&t.link));
            at("track.duration_seconds", seconds(t.duration_seconds));
            CardKind::Track
        }
        Some(Kind::Video(v)) => {
            at("video.title", name(&v.title));
            at("video.link", link(&v.link));
            at("video.duration_seconds", seconds(v.duration_seconds));
            CardKind::Video
        }
        Some(Kind::Folder(f)) => {
            at("folder.name", name(&f.name));
            at("folder.link", link(&f.link));
            at(
                "folder.item_count",
                (f.item_count > MOST_ITEMS).then(|| format!("must be at most {MOST_ITEMS}")),
            );
            CardKind::Folder
        }
        Some(Kind::Receipt(r)) => {
            match &r.amount {
                None => at("receipt.amount", Some("is required".into())),
                Some(amount) => {
                    at("receipt.amount.currency", currency(&amount.currency));
                    at(
                        "receipt.amount.minor_units",
                        minor_units(amount.minor_units),
                    );
                }
            }
            at(
                "receipt.reference",
                bounded_text(&r.reference, MOST_REFERENCE_BYTES),
            );
            at("receipt.date", date(r.date.as_ref()));
            CardKind::Receipt
        }
    };
    if bad.is_empty() { Ok(kind) } else { Err(bad) }
}

/// Why a feature granted `scopes` may not declare card `kinds`, or `None`: a feature that
/// sends no messages sends no cards.
pub fn declare_problem(scopes: ScopeSet, kinds: &[CardKind]) -> Option<&'static str> {
    (!kinds.is_empty() && !scopes.contains(Scope::MessagesWrite))
        .then_some("a feature that sends no messages sends no cards")
}

/// Refuses a card of `kind` from a feature that does not declare it (a bank's receipts
/// feature cannot post a folder).
pub fn may_send(declared: &[CardKind], kind: CardKind) -> Result<(), Denied> {
    if declared.contains(&kind) {
        Ok(())
    } else {
        Err(Denied::new(
            Reason::CardKindNotDeclared,
            format!(
                "this feature does not send {} cards",
                kind.as_str_name()
                    .trim_start_matches("CARD_KIND_")
                    .to_lowercase()
            ),
        ))
    }
}

/// A card in words (a link's host included), and the link it carries (https, checked
/// when it was sent), as the platform's and partners' pages show it.
pub fn describe(card: &pb::Card) -> Option<(String, &str)> {
    let length = |s: u32| match (s / 3600, s % 3600 / 60, s % 60) {
        (0, m, s) => format!("{m}:{s:02}"),
        (h, m, s) => format!("{h}:{m:02}:{s:02}"),
    };
    let host = |link: &str| {
        url::Url::parse(link)
            .ok()
            .and_then(|u| u.host_str().map(str::to_string))
            .unwrap_or_default()
    };
    Some(match card.kind.as_ref()? {
        Kind::Track(t) => (
            format!(
                "Track: {} by {} ({}), on {}",
                t.title,
                t.artist,
                length(t.duration_seconds),
                host(&t.link)
            ),
            t.link.as_str(),
        ),
        Kind::Video(v) => (
            format!(
                "Video: {} ({}), on {}",
                v.title,
                length(v.duration_seconds),
                host(&v.link)
            ),
            v.link.as_str(),
        ),
        Kind::Folder(f) => (
            format!(
                "Shared folder: {} ({} items), on {}",
                f.name,
                f.item_count,
                host(&f.link)
            ),
            f.link.as_str(),
        ),
        Kind::Receipt(r) => {
            let amount = r.amount.as_ref().map_or(String::new(), |a| {
                if WHOLE_UNIT_CURRENCIES.contains(&a.currency.as_str()) {
                    format!("{} {}", a.currency, a.minor_units)
                } else {
                    let (units, cents) = (a.minor_units / 100, a.minor_units % 100);
                    format!("{} {units}.{cents:02}", a.currency)
                }
            });
            let day = r
                .date
                .as_ref()
                .and_then(|t| time::OffsetDateTime::from_unix_timestamp(t.seconds).ok())
                .map(|t| t.date().to_string())
                .unwrap_or_default();
            (
                format!(
                    "Transfer receipt: {amount} on {day}, reference {}",
                    r.reference
                ),
                "",
            )
        }
    })
}

fn name(value: &str) -> Option<String> {
    bounded_text(value, MOST_NAME_BYTES)
}

fn bounded_text(value: &str, most: usize) -> Option<String> {
    if value.trim().is_empty() {
        Some("is required".into())
    } else if value.len() > most {
        Some(format!("must be at most {most} bytes"))
    } else if value.chars().any(is_hidden) {
        Some("must be one line of visible characters".into())
    } else {
        None
    }
}

fn date(value: Option<&prost_types::Timestamp>) -> Option<String> {
    match value {
        None => Some("is required".into()),
        Some(t)
            if !(0..=LATEST_SECONDS).contains(&t.seconds)
                || !(0..1_000_000_000).contains(&t.nanos) =>
        {
            Some("must be a time from 1970 to 9999".into())
        }
        Some(_) => None,
    }
}

/// An `https` URL naming its host by a domain name, with no user information and nothing
/// hidden or blank in it (the URL parser would quietly drop such characters, so the link
/// stored would not be the one shown), at most [`MOST_LINK_BYTES`].
fn link(value: &str) -> Option<String> {
    if value.len() > MOST_LINK_BYTES {
        return Some(format!("must be at most {MOST_LINK_BYTES} bytes"));
    }
    if value.chars().any(|c| is_hidden(c) || c.is_whitespace()) {
        return Some("must not hold blank or hidden characters".into());
    }
    let Ok(url) = url::Url::parse(value) else {
        return Some("is not a URL".into());
    };
    if url.scheme() != "https" {
        Some("must be an https URL".into())
    } else if !matches!(url.host(), Some(url::Host::Domain(d)) if !d.is_empty()) {
        Some("must name its host by a domain name".into())
    } else if !url.username().is_empty() || url.password().is_some() {
        Some("must not carry user information".into())
    } else {
        None
    }
}

fn seconds(value: u32) -> Option<String> {
    (value > MOST_SECONDS).then(|| format!("must be at most {MOST_SECONDS}"))
}

fn currency(code: &str) -> Option<String> {
    (!CURRENCIES.contains(&code))
        .then(|| "is not a currency the platform knows (ISO 4217, e.g. EUR)".into())
}

fn minor_units(value: i64) -> Option<String> {
    if value <= 0 {
        Some("must be positive".into())
    } else if value > MOST_MINOR_UNITS {
        Some(format!("must be at most {MOST_MINOR_UNITS}"))
    } else {
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn track(link: &str) -> pb::Card {
        pb::Card {
            kind: Some(Kind::Track(pb::Track {
                title: "Blue in Green".into(),
                artist: "Miles Davis".into(),
                link: link.into(),
                duration_seconds: 337,
            })),
        }
    }

    fn fields(result: Result<CardKind, Vec<FieldViolation>>) -> Vec<String> {
        result.unwrap_err().into_iter().map(|v| v.field).collect()
    }

    #[test]
    fn each_kind_passes_when_well_formed() {
        assert_eq!(
            check("card", &track("https://music.example/t/1")),
            Ok(CardKind::Track)
        );
        let video = pb::Card {
            kind: Some(Kind::Video(pb::Video {
                title: "Kind of Blue".into(),
                link: "https://video.example/v/9".into(),
                duration_seconds: 0,
            })),
        };
        assert_eq!(check("card", &video), Ok(CardKind::Video));
        let folder = pb::Card {
            kind: Some(Kind::Folder(pb::SharedFolder {
                name: "Holiday photos".into(),
                item_count: 120,
                link: "https://files.example/f/7".into(),
            })),
        };
        assert_eq!(check("card", &folder), Ok(CardKind::Folder));
        assert_eq!(check("card", &receipt("EUR", 2000)), Ok(CardKind::Receipt));
    }

    fn receipt(currency: &str, minor_units: i64) -> pb::Card {
        pb::Card {
            kind: Some(Kind::Receipt(pb::TransferReceipt {
                amount: Some(pb::Money {
                    currency: currency.into(),
                    minor_units,
                }),
                reference: "TX-42".into(),
                date: Some(prost_types::Timestamp::default()),
            })),
        }
    }

    #[test]
    fn links_are_https_urls_with_a_host_and_nothing_else() {
        for bad in [
            "http://music.example/t/1",
            "javascript:alert(1)",
            "data:text/html,hi",
            "https://user:pw@music.example/",
            "not a url",
            "",
        ] {
            assert_eq!(
                fields(check("card", &track(bad))),
                ["card.track.link"],
                "{bad}"
            );
        }
        for hidden in [
            "\u{1}https://music.example/t/1",
            "https://music.example/t/1\n",
            "https://music.example/\u{1b}[2J",
            "https://music.example/a b",
            "https://music.example/\u{202E}1",
            "https://127.0.0.1/t/1",
            "https://[::1]/t/1",
        ] {
            assert_eq!(
                fields(check("card", &track(hidden))),
                ["card.track.link"],
                "{hidden:?}"
            );
        }
        let long = format!("https://music.example/{}", "a".repeat(MOST_LINK_BYTES));
        assert_eq!(fields(check("card", &track(&long))), ["card.track.link"]);
    }

    #[test]
    fn only_a_feature_that_sends_messages_declares_cards() {
        let write = ScopeSet::of(&[Scope::MessagesWrite]);
        let read = ScopeSet::of(&[Scope::MessagesRead]);
        assert_eq!(declare_problem(write, &[CardKind::Track]), None);
        assert_eq!(declare_problem(read, &[]), None);
        assert!(declare_problem(read, &[CardKind::Track]).is_some());
    }

    #[test]
    fn a_receipt_names_every_bad_field() {
        assert_eq!(
            fields(check("card", &receipt("XXX", -5))),
            [
                "card.receipt.amount.currency",
                "card.receipt.amount.minor_units"
            ]
        );
        assert_eq!(
            fields(check("card", &receipt("EUR", 0))),
            ["card.receipt.amount.minor_units"]
        );
        let bare = pb::Card {
            kind: Some(Kind::Receipt(pb::TransferReceipt::default())),
        };
        assert_eq!(
            fields(check("card", &bare)),
            [
                "card.receipt.amount",
                "card.receipt.reference",
                "card.receipt.date"
            ]
        );
        assert_eq!(fields(check("card", &pb::Card::default())), ["card.kind"]);
        let oversized = pb::Card {
            kind: Some(Kind::Folder(pb::SharedFolder {
                name: "n".repeat(MOST_NAME_BYTES + 1),
                item_count: MOST_ITEMS + 1,
                link: "https://files.example/f".into(),
            })),
        };
        assert_eq!(
            fields(check("card", &oversized)),
            ["card.folder.name", "card.folder.item_count"]
        );
    }

    #[test]
    fn cards_read_as_what_they_are() {
        let shared = track("https://music.example/t/1");
        let (text, link) = describe(&shared).unwrap();
        assert_eq!(
            text,
            "Track: Blue in Green by Miles Davis (5:37), on music.example"
        );
        assert_eq!(link, "https://music.example/t/1");
        let paid = receipt("EUR", 2005);
        let (text, link) = describe(&paid).unwrap();
        assert_eq!(
            (text.as_str(), link),
            (
                "Transfer receipt: EUR 20.05 on 1970-01-01, reference TX-42",
                ""
            )
        );
        assert_eq!(
            describe(&receipt("JPY", 500)).unwrap().0,
            "Transfer receipt: JPY 500 on 1970-01-01, reference TX-42"
        );
        assert!(describe(&pb::Card::default()).is_none());
    }

    #[test]
    fn names_hide_nothing_and_dates_are_real() {
        let mut card = receipt("EUR", 100);
        if let Some(Kind::Receipt(r)) = card.kind.as_mut() {
            r.reference = "TX\u{202E}24".into();
            r.date = Some(prost_types::Timestamp {
                seconds: 0,
                nanos: -1,
            });
        }
        assert_eq!(
            fields(check("card", &card)),
            ["card.receipt.reference", "card.receipt.date"]
        );
        if let Some(Kind::Receipt(r)) = card.kind.as_mut() {
            r.reference = "TX-1".into();
            r.date = Some(prost_types::Timestamp {
                seconds: LATEST_SECONDS + 1,
                nanos: 0,
            });
        }
        assert_eq!(fields(check("card", &card)), ["card.receipt.date"]);
        assert_eq!(kind_named("folder"), Some(CardKind::Folder));
        assert_eq!(kind_named("folders"), None);
        assert_eq!(kind_named("unspecified"), None);
    }

    #[test]
    fn a_feature_sends_only_the_kinds_it_declares() {
        let bank = [CardKind::Receipt];
        assert!(may_send(&bank, CardKind::Receipt).is_ok());
        let refused = may_send(&bank, CardKind::Folder).unwrap_err();
        assert_eq!(refused.reason, Reason::CardKindNotDeclared);
        assert!(refused.message.contains("folder"), "{}", refused.message);
        let refused = may_send(&[], CardKind::Track).unwrap_err();
        assert_eq!(refused.reason, Reason::CardKindNotDeclared);
    }
}
