//! Request validation: every string, id, page and enum a client sends is checked here, and
//! a bad one becomes `INVALID_ARGUMENT` naming the field. A handler checks all of a
//! request's fields together with [`AllFields::all`], so that one `INVALID_ARGUMENT` names
//! every bad field, not only the first.

use crate::error::ApiError;
use consent_core::authorization;
use consent_core::card::CardKind;
use consent_core::model::{
    Coverage, MAX_BODY_BYTES, Scope, ScopeSet, USER_NAME_RULE, is_user_name,
};
use consent_core::partner_view::PartnerView;
use consent_proto::platform::v1 as pb;
use consent_store::Page;
use tonic_types::FieldViolation;

/// Default page size.
pub const DEFAULT_PAGE_SIZE: usize = 20;
/// Largest page size.
pub const MAX_PAGE_SIZE: i32 = 100;

type Checked<T> = Result<T, ApiError>;

/// The checks of several fields of one request, each run whatever the others found.
pub trait AllFields {
    /// The checked values, in order.
    type Values;
    /// The values when every check passed; otherwise one `INVALID_ARGUMENT` naming every
    /// bad field.
    fn all(self) -> Checked<Self::Values>;
}

/// A check's value, or `None` with its field violations added to `violations`.
fn keep<T>(checked: Checked<T>, violations: &mut Vec<FieldViolation>) -> Checked<Option<T>> {
    match checked {
        Ok(value) => Ok(Some(value)),
        Err(ApiError::InvalidArgument(bad)) => {
            violations.extend(bad);
            Ok(None)
        }
        Err(other) => Err(other),
    }
}

/// The checks of the items of a list, each run whatever the others found: their values,
/// or one `INVALID_ARGUMENT` naming the bad fields of every item.
pub fn each<T>(checks: impl IntoIterator<Item = Checked<T>>) -> Checked<Vec<T>> {
    let (mut values, mut violations) = (Vec::new(), Vec::new());
    for checked in checks {
        values.extend(keep(checked, &mut violations)?);
    }
    if violations.is_empty() {
        Ok(values)
    } else {
        Err(ApiError::InvalidArgument(violations))
    }
}

macro_rules! all_fields {
    ($($value:ident: $type:ident),+) => {
        impl<$($type),+> AllFields for ($(Checked<$type>,)+) {
            type Values = ($($type,)+);
            fn all(self) -> Checked<Self::Values> {
                let mut violations = Vec::new();
                let ($($value,)+) = self;
                $(let $value = keep($value, &mut violations)?;)+
                match ($($value,)+) {
                    ($(Some($value),)+) => Ok(($($value,)+)),
                    _ => Err(ApiError::InvalidArgument(violations)),
                }
            }
        }
    };
}
all_fields!(a: A, b: B);
all_fields!(a: A, b: B, c: C);
all_fields!(a: A, b: B, c: C, d: D);
all_fields!(a: A, b: B, c: C, d: D, e: E);
all_fields!(a: A, b: B, c: C, d: D, e: E, f: F);
all_fields!(a: A, b: B, c: C, d: D, e: E, f: F, g: G);

/// Whether `s` is a name: 1 to 64 of a-z, 0-9, '_', '-', '.'.
pub fn is_name(s: &str) -> bool {
    (1..=64).contains(&s.len())
        && s.bytes().all(|b| {
            b.is_ascii_lowercase() || b.is_ascii_digit() || matches!(b, b'_' | b'-' | b'.')
        })
}

/// A partner id, feature or operator name.
pub fn name<'a>(field: &str, value: &'a str) -> Checked<&'a str> {
    if is_name(value) {
        Ok(value)
    } else {
        Err(ApiError::invalid(
            field,
            "must be 1 to 64 of a-z, 0-9, '_', '-', '.'",
        ))
    }
}

/// An account name ([`USER_NAME_RULE`]).
pub fn user_name<'a>(field: &str, value: &'a str) -> Checked<&'a str> {
    if is_user_name(value) {
        Ok(value)
    } else {
        Err(ApiError::invalid(
            field,
            format!("must be {USER_NAME_RULE}"),
        ))
    }
}

/// An opaque id the platform issued: 1 to 64 of A-Z, a-z, 0-9, '_', '-'.
pub fn id<'a>(field: &str, value: &'a str) -> Checked<&'a str> {
    let ok = (1..=64).contains(&value.len())
        && value
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'-'));
    if ok {
        Ok(value)
    } else if value.is_empty() {
        Err(ApiError::invalid(field, "is required"))
    } else {
        Err(ApiError::invalid(field, "is not a valid id"))
    }
}

/// A list of ids, between `min` and `max` long, without duplicates.
pub fn ids(field: &str, values: &[String], min: usize, max: usize) -> Checked<Vec<String>> {
    if values.len() < min || values.len() > max {
        return Err(ApiError::invalid(
            field,
            format!("must hold {min} to {max} ids"),
        ));
    }
    each(values.iter().enumerate().map(|(index, value)| {
        let field = format!("{field}[{index}]");
        id(&field, value)?;
        not_before(values, index, &field)?;
        Ok(value.clone())
    }))
}

/// `Ok` unless `values` holds more than `most` items: checked before the items are, so
/// that a long list cannot make the refusal that names each bad item longer still.
pub fn at_most<T>(field: &str, values: &[T], most: usize, items: &str) -> Checked<()> {
    if values.len() > most {
        return Err(ApiError::invalid(
            field,
            format!("must hold at most {most} {items}"),
        ));
    }
    Ok(())
}

/// `Ok` unless the item at `index` of `values` is also one of the items before it.
pub fn not_before<T: PartialEq>(values: &[T], index: usize, field: &str) -> Checked<()> {
    match values.get(index) {
        Some(value) if values.iter().take(index).any(|v| v == value) => {
            Err(ApiError::invalid(field, "is a duplicate"))
        }
        _ => Ok(()),
    }
}

/// The threads a partner's request for `coverage` lists, each an id its view gave it, as
/// the platform's ids: up to 100 with listed coverage, none with another. With the coverage
/// itself bad, up to 100 are still checked, each as a listed one would be.
pub fn partner_threads(
    field: &str,
    coverage: &Checked<Coverage>,
    values: &[String],
    view: &PartnerView<'_>,
) -> Checked<Vec<String>> {
    let most = match coverage {
        Ok(Coverage::Listed) | Err(_) => 100,
        Ok(_) => 0,
    };
    if values.len() > most {
        return Err(ApiError::invalid(
            field,
            format!("must hold 0 to {most} ids"),
        ));
    }
    // Two forms of one id (its hex in either case) name one thread: repeats are found
    // among the threads named.
    let named: Vec<Option<String>> = values
        .iter()
        .map(|shown| view.thread_named(shown))
        .collect();
    each(values.iter().enumerate().map(|(index, shown)| {
        let field = format!("{field}[{index}]");
        id(&field, shown)?;
        let Some(Some(thread)) = named.get(index) else {
            return Err(ApiError::invalid(
                field,
                "is not a thread id this partner was given",
            ));
        };
        not_before(&named, index, &field)?;
        Ok(thread.clone())
    }))
}

/// Free text: 1 to `max` bytes, no control characters other than newline and tab.
pub fn text<'a>(field: &str, value: &'a str, max: usize) -> Checked<&'a str> {
    if value.trim().is_empty() {
        return Err(ApiError::invalid(field, "is required"));
    }
    if value.len() > max {
        return Err(ApiError::invalid(
            field,
            format!("must be at most {max} bytes"),
        ));
    }
    if value
        .chars()
        .any(|c| c.is_control() && c != '\n' && c != '\t')
    {
        return Err(ApiError::invalid(
            field,
            "must not contain control characters",
        ));
    }
    Ok(value)
}

/// A short label shown to a person: 1 to `max` bytes on one line, without the invisible
/// characters that reorder or hide text (bidirectional controls, zero-width characters),
/// so that what the person reads is what was sent.
pub fn label<'a>(field: &str, value: &'a str, max: usize) -> Checked<&'a str> {
    let text = text(field, value, max)?;
    if text.chars().any(consent_core::text::is_hidden) {
        return Err(ApiError::invalid(
            field,
            "must be one line of visible characters",
        ));
    }
    Ok(text)
}

/// A message body.
pub fn body<'a>(field: &str, value: &'a str) -> Checked<&'a str> {
    text(field, value, MAX_BODY_BYTES)
}

/// A password: 8 to 256 bytes.
pub fn password<'a>(field: &str, value: &'a str) -> Checked<&'a str> {
    if (8..=256).contains(&value.len()) {
        Ok(value)
    } else {
        Err(ApiError::invalid(field, "must be 8 to 256 bytes"))
    }
}

/// An idempotency key: 1 to 128 of A-Z, a-z, 0-9, '_', '-', '.', ':'.
pub fn idempotency_key<'a>(field: &str, value: &'a str) -> Checked<&'a str> {
    let ok = (1..=128).contains(&value.len())
        && value
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'-' | b'.' | b':'));
    if ok {
        Ok(value)
    } else {
        Err(ApiError::invalid(
            field,
            "must be 1 to 128 of A-Z, a-z, 0-9, '_', '-', '.', ':'",
        ))
    }
}

/// The redirect URIs of a registration: 0 to [`authorization::MAX_REDIRECT_URIS`] exact
/// https URIs, without duplicates.
pub fn redirect_uris(field: &str, values: &[String]) -> Checked<Vec<String>> {
    at_most(field, values, authorization::MAX_REDIRECT_URIS, "URIs")?;
    each(values.iter().enumerate().map(|(index, value)| {
        let field = format!("{field}[{index}]");
        checked(&field, value, authorization::redirect_uri_problem)?;
        not_before(values, index, &field)?;
        Ok(value.clone())
    }))
}

/// A value that `problem` finds nothing wrong with.
pub fn checked<'a>(
    field: &str,
    value: &'a str,
    problem: impl FnOnce(&str) -> Option<&'static str>,
) -> Checked<&'a str> {
    match problem(value) {
        None => Ok(value),
        Some(problem) => Err(ApiError::invalid(field, problem)),
    }
}

/// A page size and token.
pub fn page(page_size: i32, page_token: &str) -> Checked<Page> {
    let (limit, after) = (page_limit(page_size), page_cursor(page_token)).all()?;
    Ok(Page { after, limit })
}

/// A page size and a token as a partner holds them: its own form of the platform's token
/// ([`PartnerView::page_token`]).
pub fn partner_page(page_size: i32, page_token: &str, view: &PartnerView<'_>) -> Checked<Page> {
    if page_token.is_empty() {
        return page(page_size, "");
    }
    let token = view.page_token_named(page_token);
    let (limit, after) = (
        page_limit(page_size),
        token
            .as_deref()
            .map_or_else(|| page_cursor("not issued"), page_cursor),
    )
        .all()?;
    Ok(Page { after, limit })
}

/// A page size: 0 (the default) to [`MAX_PAGE_SIZE`].
fn page_limit(page_size: i32) -> Checked<usize> {
    match page_size {
        0 => Ok(DEFAULT_PAGE_SIZE),
        1..=MAX_PAGE_SIZE => Ok(usize::try_from(page_size).unwrap_or(DEFAULT_PAGE_SIZE)),
        _ => Err(ApiError::invalid(
            "page_size",
            format!("must be 0 to {MAX_PAGE_SIZE}"),
        )),
    }
}

/// Decodes a page token ("" = from the start).
pub fn page_cursor(page_token: &str) -> Checked<i64> {
    if page_token.is_empty() {
        return Ok(0);
    }
    page_token
        .strip_prefix("c")
        .and_then(|n| n.parse::<i64>().ok())
        .filter(|n| *n > 0)
        .ok_or_else(|| ApiError::invalid("page_token", "is not a token this service issued"))
}

/// Bytes of a reply kept for everything but its list: the page token, the field tags and
/// the gRPC frame.
const REPLY_RESERVE_BYTES: usize = 1024;

/// The page to answer from `rows` (each row with its cursor), each turned into its reply
/// item by `convert`: as many items as fit in a reply of `reply_bytes` (at least one), and
/// the token of the page after them — also when the page was cut short to fit, so that no
/// item is skipped and no reply grows past the transport's limit.
pub fn fit_page<T, P: prost::Message>(
    rows: Vec<(i64, T)>,
    page: Page,
    reply_bytes: usize,
    mut convert: impl FnMut(T) -> P,
) -> (Vec<P>, String) {
    fit_page_where(rows, page, reply_bytes, |row| Some(convert(row)))
}

/// Like [`fit_page`], for rows that `convert` may leave out (`None`): a row left out still
/// moves the page on, so the next page starts after it.
pub fn fit_page_where<T, P: prost::Message>(
    rows: Vec<(i64, T)>,
    page: Page,
    reply_bytes: usize,
    mut convert: impl FnMut(T) -> Option<P>,
) -> (Vec<P>, String) {
    let budget = reply_bytes.saturating_sub(REPLY_RESERVE_BYTES);
    let full = rows.len() == page.limit;
    let (mut used, mut items, mut last_cursor) = (0, Vec::with_capacity(rows.len()), None);
    let mut cut = false;
    for (cursor, row) in rows {
        let Some(item) = convert(row) else {
            last_cursor = Some(cursor);
            continue;
        };
        let len = item.encoded_len();
        let size = 1 + prost::length_delimiter_len(len) + len;
        if !items.is_empty() && used + size > budget {
            cut = true;
            break;
        }
        used += size;
        items.push(item);
        last_cursor = Some(cursor);
    }
    let token = match last_cursor {
        Some(cursor) if cut || full => format!("c{cursor}"),
        _ => String::new(),
    };
    (items, token)
}

/// Card kinds a feature declares: each known, none twice (none at all is text only).
pub fn card_kinds(field: &str, values: &[i32]) -> Checked<Vec<CardKind>> {
    at_most(field, values, consent_core::card::KINDS.len(), "kinds")?;
    each(values.iter().enumerate().map(|(index, value)| {
        let field = format!("{field}[{index}]");
        let kind = CardKind::try_from(*value)
            .ok()
            .filter(|k| *k != CardKind::Unspecified)
            .ok_or_else(|| ApiError::invalid(&field, "is not a kind of card"))?;
        not_before(values, index, &field)?;
        Ok(kind)
    }))
}

/// A card a message carries: every bad field named.
pub fn card(field: &str, card: &pb::Card) -> Checked<CardKind> {
    consent_core::card::check(field, card).map_err(|violations| {
        ApiError::InvalidArgument(
            violations
                .into_iter()
                .map(|v| FieldViolation::new(v.field, v.description))
                .collect(),
        )
    })
}

/// A set of known scopes (empty when `values` is).
pub fn scopes(field: &str, values: &[i32]) -> Checked<ScopeSet> {
    at_most(field, values, Scope::ALL.len(), "scopes")?;
    let set = each(values.iter().enumerate().map(|(index, value)| {
        let field = format!("{field}[{index}]");
        not_before(values, index, &field)?;
        Scope::from_proto(*value).ok_or_else(|| ApiError::invalid(field, "is not a known scope"))
    }))?;
    Ok(ScopeSet::of(&set))
}

/// A known thread coverage.
pub fn coverage(field: &str, value: i32) -> Checked<Coverage> {
    Coverage::from_i32(value).ok_or_else(|| ApiError::invalid(field, "must be a known coverage"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn labels_are_one_line_of_visible_characters() {
        assert!(label("l", "4821-0937", 32).is_ok());
        for bad in [
            "",
            "a\nb",
            "abc\u{202E}dcb",
            "zero\u{200B}width",
            &"x".repeat(33),
        ] {
            assert!(label("l", bad, 32).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn page_bounds_and_tokens() {
        assert_eq!(page(0, "").unwrap().limit, DEFAULT_PAGE_SIZE);
        assert!(page(101, "").is_err());
        assert!(page(-1, "").is_err());
        assert_eq!(page(5, "c42").unwrap().after, 42);
        for bad in ["42", "c", "c-1", "cx", "c99999999999999999999"] {
            assert!(page(5, bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn a_page_is_cut_to_fit_the_reply_and_its_token_continues_after_the_cut() {
        let row = |n: i64| (n * 10, "x".repeat(1000));
        let page = page(100, "").unwrap();
        let (items, token) = fit_page((1..=50).map(row).collect(), page, 1024 + 10 * 1006, |s| s);
        assert_eq!(items.len(), 10);
        assert_eq!(token, "c100");
        // A page that fits and is not full is the last one.
        let (items, token) = fit_page((1..=5).map(row).collect(), page, 1 << 20, |s| s);
        assert_eq!((items.len(), token.as_str()), (5, ""));
        // One item is answered even when it alone is over the budget.
        let (items, token) = fit_page(vec![row(1), row(2)], page, 10, |s| s);
        assert_eq!((items.len(), token.as_str()), (1, "c10"));
    }

    #[test]
    fn every_bad_field_is_named() {
        let err = (id("thread_id", ""), body("body", ""), page(101, "garbage"))
            .all()
            .unwrap_err();
        let ApiError::InvalidArgument(violations) = err else {
            panic!("{err:?}");
        };
        let fields: Vec<_> = violations.iter().map(|v| v.field.as_str()).collect();
        assert_eq!(fields, ["thread_id", "body", "page_size", "page_token"]);
        let (thread, text) = (id("thread_id", "thr_1"), body("body", "hi"))
            .all()
            .unwrap();
        assert_eq!((thread, text), ("thr_1", "hi"));
    }

    #[test]
    fn every_bad_item_of_a_list_is_named() {
        let fields = |checked: Checked<_>| match checked {
            Err(ApiError::InvalidArgument(violations)) => violations
                .into_iter()
                .map(|v| format!("{} {}", v.field, v.description))
                .collect::<Vec<_>>(),
            other => panic!("{other:?}"),
        };
        let values = ["thr_1", "", "thr_1", "no way", "thr_2"].map(String::from);
        assert_eq!(
            fields(ids("thread_ids", &values, 1, 10).map(drop)),
            [
                "thread_ids[1] is required",
                "thread_ids[2] is a duplicate",
                "thread_ids[3] is not a valid id",
            ]
        );
        let uris = [
            "http://a.example/cb",
            "https://b.example/cb",
            "https://b.example/cb",
        ]
        .map(String::from);
        assert_eq!(
            fields(redirect_uris("redirect_uris", &uris).map(drop)).len(),
            2
        );
        assert_eq!(
            fields(card_kinds("card_kinds", &[0, 1, 1, 99]).map(drop)),
            [
                "card_kinds[0] is not a kind of card",
                "card_kinds[2] is a duplicate",
                "card_kinds[3] is not a kind of card",
            ]
        );
        assert_eq!(fields(scopes("scopes", &[0, 1, 999]).map(drop)).len(), 2);
        assert_eq!(
            fields(scopes("scopes", &[1, 2, 1]).map(drop)),
            ["scopes[2] is a duplicate"]
        );
        // A list longer than any good one is refused as a whole, not item by item.
        assert_eq!(
            fields(scopes("scopes", &[0; 100_000]).map(drop)),
            ["scopes must hold at most 6 scopes"]
        );
        assert_eq!(fields(card_kinds("card_kinds", &[0; 5]).map(drop)).len(), 1);
        assert_eq!(
            ids("thread_ids", &values[4..], 1, 10).unwrap(),
            ["thr_2".to_string()]
        );
    }

    #[test]
    fn text_rules() {
        assert!(body("body", "").is_err());
        assert!(body("body", "   ").is_err());
        assert!(body("body", "a\u{0}b").is_err());
        assert!(body("body", &"x".repeat(MAX_BODY_BYTES + 1)).is_err());
        assert!(body("body", "hello\nthere").is_ok());
    }
}
