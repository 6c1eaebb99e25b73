//! How values the database has no type for are stored, the same in every backend: id
//! lists, cards, card kinds, and the bounds of a page.

use crate::Page;
use consent_core::card::CardKind;
use consent_proto::platform::v1 as pb;

/// Ids as stored: comma-separated.
pub(crate) fn join_ids(ids: &[String]) -> String {
    ids.join(",")
}

/// Stored ids.
pub(crate) fn split_ids(text: String) -> Vec<String> {
    if text.is_empty() {
        Vec::new()
    } else {
        text.split(',').map(str::to_string).collect()
    }
}

/// A card as stored: its protobuf encoding.
pub(crate) fn encode_card(card: Option<&pb::Card>) -> Option<Vec<u8>> {
    card.map(prost::Message::encode_to_vec)
}

/// A stored card; one that no longer decodes is left out rather than shown wrong.
pub(crate) fn decode_card(bytes: Option<Vec<u8>>) -> Option<pb::Card> {
    <pb::Card as prost::Message>::decode(bytes?.as_slice()).ok()
}

/// Card kinds as stored: their numbers, comma-separated.
pub(crate) fn encode_card_kinds(kinds: &[CardKind]) -> String {
    let numbers: Vec<String> = kinds.iter().map(|k| (*k as i32).to_string()).collect();
    numbers.join(",")
}

/// Stored card kinds; a number no kind has is left out, so a feature never gains one.
pub(crate) fn decode_card_kinds(text: &str) -> Vec<CardKind> {
    text.split(',')
        .filter_map(|n| n.parse::<i32>().ok())
        .filter_map(|n| CardKind::try_from(n).ok())
        .filter(|k| *k != CardKind::Unspecified)
        .collect()
}

/// Redirect URIs as stored: one per line.
pub(crate) fn join_lines(lines: &[String]) -> String {
    lines.join("\n")
}

/// Stored redirect URIs.
pub(crate) fn split_lines(text: &str) -> Vec<String> {
    text.split('\n')
        .filter(|u| !u.is_empty())
        .map(str::to_string)
        .collect()
}

/// The bound of a newest-first page: rows older than the cursor, or all from the start.
pub(crate) fn newer_than(page: Page) -> i64 {
    if page.after == 0 {
        i64::MAX
    } else {
        page.after
    }
}

/// A page's size as the database takes it.
pub(crate) fn limit(page: Page) -> i64 {
    i64::try_from(page.limit).unwrap_or(i64::MAX)
}
