//! The repository over one PostgreSQL connection: the writer's inside its transaction, or
//! a reader's inside its snapshot (where every write fails). The statements are those of
//! the SQLite store, in PostgreSQL's dialect: `$n` parameters, `ON CONFLICT` on the key in
//! question for SQLite's `OR IGNORE` and `OR REPLACE` and its unique-constraint errors,
//! `RETURNING` for the row id of an insert, a `seq` column where SQLite orders by `rowid`.

use super::Link;
use crate::codec::{
    encode_card, encode_card_kinds, join_ids, join_lines, limit, newer_than, split_lines,
};
use crate::records::{
    self, AUDIT_COLUMNS, CODE_COLUMNS, EVENT_COLUMNS, FEATURE_COLUMNS, GRANT_COLUMNS,
    MESSAGES_WITH_OPT_OUT, PUSHED_COLUMNS, REQUEST_COLUMNS, SESSION_COLUMNS, USER_COLUMNS,
    prefixed_user_columns,
};
use crate::{IdempotentResponse, MessageRow, Page, Paged, Repo, StoreError, StoreResult};
use consent_core::audit::{AuditKey, record_hash, record_mac};
use consent_core::authorization::{AuthorizationCode, PushedRequest};
use consent_core::model::{
    AccessRequest, AuditEntry, AuditRecord, Feature, Grant, GrantEvent, GrantState, Message,
    Partner, PrivacyChange, ReadByOthersApp, RequestStatus, Scope, ScopeSet, Thread, ThreadFilter,
    User,
};
use consent_core::session::Session;
use consent_proto::platform::v1::GrantEventKind;
use postgres::Row;
use postgres::types::ToSql;

/// Parameters of a statement.
type Params<'p> = &'p [&'p (dyn ToSql + Sync)];
/// What decoding a row gives.
type Decoded<T> = Result<T, postgres::Error>;

/// The operations of [`Repo`] over one connection inside a transaction.
pub(super) struct PgRepo<'a> {
    link: &'a mut Link,
    /// The key that MACs audit records: the writer's; readers append nothing.
    audit_key: Option<&'a AuditKey>,
    /// The newest grant event this job added.
    pub(super) last_event: Option<i64>,
}

impl<'a> PgRepo<'a> {
    pub(super) fn new(link: &'a mut Link, audit_key: Option<&'a AuditKey>) -> Self {
        PgRepo {
            link,
            audit_key,
            last_event: None,
        }
    }

    /// Runs one statement; how many rows it changed.
    fn execute(&mut self, sql: &str, params: Params<'_>) -> StoreResult<usize> {
        let statement = self.link.prepared(sql)?;
        let changed = self.link.live()?.execute(&statement, params)?;
        Ok(usize::try_from(changed).unwrap_or(usize::MAX))
    }

    /// Runs an insert that ends `ON CONFLICT (key) DO NOTHING`; a row not inserted (that key
    /// taken) is `AlreadyExists` with `what`; another key taken fails the statement. The statement does not fail, so the transaction
    /// goes on: the caller may still record its refusal.
    fn insert(&mut self, sql: &str, params: Params<'_>, what: String) -> StoreResult<()> {
        match self.execute(sql, params)? {
            0 => Err(StoreError::AlreadyExists(what)),
            _ => Ok(()),
        }
    }

    /// The rows of a query, each decoded by `decode`.
    fn rows<T>(
        &mut self,
        sql: &str,
        params: Params<'_>,
        decode: impl Fn(&Row) -> Decoded<T>,
    ) -> StoreResult<Vec<T>> {
        let statement = self.link.prepared(sql)?;
        let rows = self.link.live()?.query(&statement, params)?;
        Ok(rows.iter().map(decode).collect::<Decoded<_>>()?)
    }

    /// The first row of a query, if any.
    fn row<T>(
        &mut self,
        sql: &str,
        params: Params<'_>,
        decode: impl Fn(&Row) -> Decoded<T>,
    ) -> StoreResult<Option<T>> {
        let statement = self.link.prepared(sql)?;
        let row = self.link.live()?.query_opt(&statement, params)?;
        Ok(row.as_ref().map(decode).transpose()?)
    }

    /// Whether a query finds a row.
    fn exists(&mut self, sql: &str, params: Params<'_>) -> StoreResult<bool> {
        Ok(self.row(sql, params, |_| Ok(()))?.is_some())
    }

    /// A single number a query computes.
    fn number(&mut self, sql: &str, params: Params<'_>) -> StoreResult<i64> {
        Ok(self.row(sql, params, |r| r.try_get(0))?.unwrap_or(0))
    }

    fn participants(&mut self, thread_id: &str) -> StoreResult<Vec<String>> {
        self.rows(
            "SELECT user_id FROM thread_participants WHERE thread_id = $1 ORDER BY user_id COLLATE \"C\"",
            &[&thread_id],
            |r| r.try_get(0),
        )
    }

    fn with_participants(&mut self, rows: Vec<(i64, Thread)>) -> StoreResult<Paged<Thread>> {
        rows.into_iter()
            .map(|(seq, mut thread)| {
                thread.participants = self.participants(&thread.id)?;
                Ok((seq, thread))
            })
            .collect()
    }

    fn grants_where(&mut self, condition: &str, params: Params<'_>) -> StoreResult<Vec<Grant>> {
        let sql = format!("SELECT {GRANT_COLUMNS} FROM grants WHERE {condition} ORDER BY seq");
        self.rows(&sql, params, records::grant)
    }

    /// A page of the grants matching `condition` (over `params`), newest first: the
    /// cursor is the grant's `seq`.
    fn grants_page(
        &mut self,
        condition: &str,
        params: &[&(dyn ToSql + Sync)],
        page: Page,
    ) -> StoreResult<Paged<Grant>> {
        let (before, limit) = (newer_than(page), limit(page));
        let n = params.len();
        let sql = format!(
            "SELECT {GRANT_COLUMNS}, seq FROM grants WHERE {condition} AND seq < ${} \
             ORDER BY seq DESC LIMIT ${}",
            n + 1,
            n + 2
        );
        let mut all: Vec<&(dyn ToSql + Sync)> = params.to_vec();
        all.push(&before);
        all.push(&limit);
        self.rows(&sql, &all, |r| Ok((r.try_get(14)?, records::grant(r)?)))
    }

    /// A page of the users (`u`) that `from_where` finds for `user_id` (as `$1`), in the
    /// order of `cursor`, after `page.after`.
    fn users_page(
        &mut self,
        from_where: &str,
        cursor: &str,
        user_id: &str,
        page: Page,
    ) -> StoreResult<Paged<User>> {
        let sql = format!(
            "SELECT {}, {cursor} FROM {from_where} AND {cursor} > $2 ORDER BY {cursor} LIMIT $3",
            prefixed_user_columns()
        );
        self.rows(&sql, &[&user_id, &page.after, &limit(page)], |r| {
            Ok((r.try_get(6)?, records::user(r)?))
        })
    }

    fn events_where(
        &mut self,
        condition: &str,
        params: Params<'_>,
        limit: usize,
    ) -> StoreResult<Vec<GrantEvent>> {
        let sql = format!(
            "SELECT {EVENT_COLUMNS} FROM grant_events WHERE {condition} ORDER BY seq LIMIT {limit}"
        );
        self.rows(&sql, params, records::event)
    }

    fn audit_where(
        &mut self,
        condition: &str,
        params: Params<'_>,
    ) -> StoreResult<Vec<AuditRecord>> {
        let sql = format!("SELECT {AUDIT_COLUMNS} FROM audit WHERE {condition}");
        self.rows(&sql, params, records::audit)
    }

    /// The authorization code whose `column` is `value`.
    fn code_where(&mut self, column: &str, value: &str) -> StoreResult<Option<AuthorizationCode>> {
        let sql = format!("SELECT {CODE_COLUMNS} FROM authorization_codes WHERE {column} = $1");
        self.row(&sql, &[&value], records::code)
    }
}

const THREAD_COLUMNS: &str = "t.seq, t.id, t.title, t.started_by_partner, t.created_ms";
/// A thread without its participants, with its cursor.
fn thread_row(r: &Row) -> Decoded<(i64, Thread)> {
    Ok((
        r.try_get(0)?,
        Thread {
            id: r.try_get(1)?,
            title: r.try_get(2)?,
            started_by_partner: r.try_get(3)?,
            created_ms: r.try_get(4)?,
            participants: Vec::new(),
        },
    ))
}

fn partner_row(r: &Row) -> Decoded<Partner> {
    Ok(Partner {
        id: r.try_get(0)?,
        display_name: r.try_get(1)?,
        allowed_scopes: ScopeSet::from_bits(r.try_get(2)?),
        suspended: r.try_get(3)?,
        blocked: r.try_get(4)?,
        redirect_uris: split_lines(r.try_get(5)?),
    })
}

/// A count as the interface gives it.
fn count(n: i64) -> usize {
    usize::try_from(n).unwrap_or(usize::MAX)
}

impl Repo for PgRepo<'_> {
    fn insert_user(&mut self, user: &User, now_ms: i64) -> StoreResult<()> {
        self.insert(
            "INSERT INTO users (id, name, display_name, password_hash, hide_from_others_apps, name_to_friends_apps, created_ms) VALUES ($1, $2, $3, $4, $5, $6, $7) ON CONFLICT (name) DO NOTHING",
            &[&user.id, &user.name, &user.display_name, &user.password_hash, &user.hide_from_others_apps, &user.name_to_friends_apps, &now_ms],
            format!("user name {} is taken", user.name),
        )
    }

    fn user_by_name(&mut self, name: &str) -> StoreResult<Option<User>> {
        let sql = format!("SELECT {USER_COLUMNS} FROM users WHERE name = $1");
        self.row(&sql, &[&name], records::user)
    }

    fn user_by_id(&mut self, id: &str) -> StoreResult<Option<User>> {
        let sql = format!("SELECT {USER_COLUMNS} FROM users WHERE id = $1");
        self.row(&sql, &[&id], records::user)
    }

    fn set_privacy(&mut self, user_id: &str, change: PrivacyChange) -> StoreResult<()> {
        self.execute(
            "UPDATE users SET hide_from_others_apps = COALESCE($2, hide_from_others_apps), \
             name_to_friends_apps = COALESCE($3, name_to_friends_apps) WHERE id = $1",
            &[
                &user_id,
                &change.hide_from_others_apps,
                &change.name_to_friends_apps,
            ],
        )?;
        Ok(())
    }

    fn insert_session(
        &mut self,
        token_hash: &str,
        user_id: &str,
        expires_ms: i64,
    ) -> StoreResult<()> {
        self.execute(
            "INSERT INTO sessions (token_hash, user_id, expires_ms) VALUES ($1, $2, $3)",
            &[&token_hash, &user_id, &expires_ms],
        )?;
        Ok(())
    }

    fn delete_session(&mut self, token_hash: &str) -> StoreResult<()> {
        self.execute("DELETE FROM sessions WHERE token_hash = $1", &[&token_hash])?;
        Ok(())
    }

    fn forget_sessions(&mut self, before_ms: i64) -> StoreResult<usize> {
        self.execute("DELETE FROM sessions WHERE expires_ms < $1", &[&before_ms])
    }

    fn session(&mut self, token_hash: &str) -> StoreResult<Option<Session>> {
        let sql = format!("SELECT {SESSION_COLUMNS} FROM sessions WHERE token_hash = $1");
        self.row(&sql, &[&token_hash], records::session)
    }

    fn add_friendship(&mut self, a: &str, b: &str) -> StoreResult<()> {
        let befriend =
            "INSERT INTO friends (user_id, friend_id) VALUES ($1, $2) ON CONFLICT DO NOTHING";
        self.execute(befriend, &[&a, &b])?;
        self.execute(befriend, &[&b, &a])?;
        self.execute(
            "DELETE FROM friend_requests WHERE (from_id = $1 AND to_id = $2) OR (from_id = $2 AND to_id = $1)",
            &[&a, &b],
        )?;
        Ok(())
    }

    fn add_friend_request(&mut self, from: &str, to: &str, now_ms: i64) -> StoreResult<()> {
        self.execute(
            "INSERT INTO friend_requests (from_id, to_id, created_ms) VALUES ($1, $2, $3) ON CONFLICT DO NOTHING",
            &[&from, &to, &now_ms],
        )?;
        Ok(())
    }

    fn friend_request_exists(&mut self, from: &str, to: &str) -> StoreResult<bool> {
        self.exists(
            "SELECT 1 FROM friend_requests WHERE from_id = $1 AND to_id = $2",
            &[&from, &to],
        )
    }

    fn friend_requests_from(&mut self, user_id: &str, since_ms: i64) -> StoreResult<usize> {
        let n = self.number(
            "SELECT COUNT(*) FROM friend_requests WHERE from_id = $1 AND created_ms >= $2",
            &[&user_id, &since_ms],
        )?;
        Ok(count(n))
    }

    fn friend_requests_to(&mut self, user_id: &str, page: Page) -> StoreResult<Paged<User>> {
        self.users_page(
            "friend_requests r JOIN users u ON u.id = r.from_id WHERE r.to_id = $1",
            "r.seq",
            user_id,
            page,
        )
    }

    fn friend_ids(&mut self, user_id: &str) -> StoreResult<Vec<String>> {
        self.rows(
            "SELECT friend_id FROM friends WHERE user_id = $1",
            &[&user_id],
            |r| r.try_get(0),
        )
    }

    fn are_friends(&mut self, a: &str, b: &str) -> StoreResult<bool> {
        self.exists(
            "SELECT 1 FROM friends WHERE user_id = $1 AND friend_id = $2",
            &[&a, &b],
        )
    }

    fn friends(&mut self, user_id: &str, page: Page) -> StoreResult<Paged<User>> {
        self.users_page(
            "friends f JOIN users u ON u.id = f.friend_id WHERE f.user_id = $1",
            "u.seq",
            user_id,
            page,
        )
    }

    fn insert_thread(&mut self, thread: &Thread) -> StoreResult<()> {
        self.execute(
            "INSERT INTO threads (id, title, started_by_partner, created_ms) VALUES ($1, $2, $3, $4)",
            &[&thread.id, &thread.title, &thread.started_by_partner, &thread.created_ms],
        )?;
        for user_id in &thread.participants {
            self.execute(
                "INSERT INTO thread_participants (thread_id, user_id) VALUES ($1, $2) ON CONFLICT DO NOTHING",
                &[&thread.id, user_id],
            )?;
        }
        Ok(())
    }

    fn thread(&mut self, id: &str) -> StoreResult<Option<Thread>> {
        let sql = format!("SELECT {THREAD_COLUMNS} FROM threads t WHERE t.id = $1");
        let found = self.row(&sql, &[&id], thread_row)?;
        Ok(self
            .with_participants(found.into_iter().collect())?
            .pop()
            .map(|(_, thread)| thread))
    }

    fn threads_of(
        &mut self,
        user_id: &str,
        filter: &ThreadFilter,
        page: Page,
    ) -> StoreResult<Paged<Thread>> {
        let base = format!(
            "SELECT {THREAD_COLUMNS} FROM threads t JOIN thread_participants p ON p.thread_id = t.id \
             WHERE p.user_id = $1 AND t.seq > $2"
        );
        let order = "ORDER BY t.seq LIMIT $3";
        let limit = limit(page);
        let rows = match filter {
            ThreadFilter::All => self.rows(
                &format!("{base} {order}"),
                &[&user_id, &page.after, &limit],
                thread_row,
            )?,
            ThreadFilter::Ids(ids) => self.rows(
                &format!("{base} AND t.id = ANY($4) {order}"),
                &[&user_id, &page.after, &limit, ids],
                thread_row,
            )?,
            ThreadFilter::StartedBy(partner) => self.rows(
                &format!("{base} AND t.started_by_partner = $4 {order}"),
                &[&user_id, &page.after, &limit, partner],
                thread_row,
            )?,
        };
        self.with_participants(rows)
    }

    fn insert_message(&mut self, message: &Message) -> StoreResult<()> {
        self.execute(
            "INSERT INTO messages (id, thread_id, sender_id, body, created_ms, sent_by_partner, card) VALUES ($1, $2, $3, $4, $5, $6, $7)",
            &[&message.id, &message.thread_id, &message.sender_id, &message.body, &message.created_ms, &message.sent_by_partner, &encode_card(message.card.as_ref())],
        )?;
        Ok(())
    }

    fn message(&mut self, id: &str) -> StoreResult<Option<MessageRow>> {
        let sql = format!("{MESSAGES_WITH_OPT_OUT} WHERE m.id = $1");
        Ok(self
            .row(&sql, &[&id], records::message_row)?
            .map(|(_, row)| row))
    }

    fn messages(
        &mut self,
        thread_id: &str,
        since_ms: i64,
        page: Page,
    ) -> StoreResult<Paged<MessageRow>> {
        let sql = format!(
            "{MESSAGES_WITH_OPT_OUT} WHERE m.thread_id = $1 AND m.seq > $2 AND m.created_ms >= $3 \
             ORDER BY m.seq LIMIT $4"
        );
        self.rows(
            &sql,
            &[&thread_id, &page.after, &since_ms, &limit(page)],
            records::message_row,
        )
    }

    fn delete_message(&mut self, id: &str) -> StoreResult<()> {
        self.execute("DELETE FROM messages WHERE id = $1", &[&id])?;
        Ok(())
    }

    fn insert_partner(&mut self, partner: &Partner, now_ms: i64) -> StoreResult<()> {
        self.insert(
            "INSERT INTO partners (id, display_name, allowed_scopes, suspended, blocked, redirect_uris, created_ms) VALUES ($1, $2, $3, $4, $5, $6, $7) ON CONFLICT (id) DO NOTHING",
            &[&partner.id, &partner.display_name, &partner.allowed_scopes.bits(), &partner.suspended, &partner.blocked, &join_lines(&partner.redirect_uris), &now_ms],
            format!("partner {} is already registered", partner.id),
        )
    }

    fn partner(&mut self, id: &str) -> StoreResult<Option<Partner>> {
        self.row(
            "SELECT id, display_name, allowed_scopes, suspended, blocked, redirect_uris FROM partners WHERE id = $1",
            &[&id],
            partner_row,
        )
    }

    fn suspend_partner(&mut self, id: &str) -> StoreResult<()> {
        self.execute("UPDATE partners SET suspended = TRUE WHERE id = $1", &[&id])?;
        Ok(())
    }

    fn set_partner_blocked(&mut self, id: &str, blocked: bool) -> StoreResult<()> {
        self.execute(
            "UPDATE partners SET blocked = $2 WHERE id = $1",
            &[&id, &blocked],
        )?;
        Ok(())
    }

    fn insert_feature(&mut self, feature: &Feature) -> StoreResult<()> {
        self.insert(
            "INSERT INTO features (partner_id, name, description, scopes, retired, card_kinds) VALUES ($1, $2, $3, $4, $5, $6) ON CONFLICT (partner_id, name) DO NOTHING",
            &[&feature.partner_id, &feature.name, &feature.description, &feature.scopes.bits(), &feature.retired, &encode_card_kinds(&feature.card_kinds)],
            format!("feature {} already exists", feature.name),
        )
    }

    fn feature(&mut self, partner_id: &str, name: &str) -> StoreResult<Option<Feature>> {
        let sql =
            format!("SELECT {FEATURE_COLUMNS} FROM features WHERE partner_id = $1 AND name = $2");
        self.row(&sql, &[&partner_id, &name], records::feature)
    }

    fn features_of(&mut self, partner_id: &str) -> StoreResult<Vec<Feature>> {
        let sql = format!(
            "SELECT {FEATURE_COLUMNS} FROM features WHERE partner_id = $1 ORDER BY name COLLATE \"C\""
        );
        self.rows(&sql, &[&partner_id], records::feature)
    }

    fn retire_feature(&mut self, partner_id: &str, name: &str) -> StoreResult<()> {
        self.execute(
            "UPDATE features SET retired = TRUE WHERE partner_id = $1 AND name = $2",
            &[&partner_id, &name],
        )?;
        Ok(())
    }

    fn insert_request(&mut self, request: &AccessRequest) -> StoreResult<()> {
        self.execute(
            "INSERT INTO access_requests (id, partner_id, feature, user_id, coverage, thread_ids, include_history, purpose, status, grant_id, created_ms, user_name, binding_message, account_label) \
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14)",
            &[
                &request.id, &request.partner_id, &request.feature,
                &Some(request.user_id.as_str()).filter(|id| !id.is_empty()),
                &request.coverage.to_i32(), &join_ids(&request.thread_ids), &request.include_history,
                &request.purpose, &(request.status as i32), &request.grant_id, &request.created_ms,
                &request.user_name, &request.binding_message, &request.account_label,
            ],
        )?;
        Ok(())
    }

    fn request(&mut self, id: &str) -> StoreResult<Option<AccessRequest>> {
        let sql = format!("SELECT {REQUEST_COLUMNS} FROM access_requests WHERE id = $1");
        self.row(&sql, &[&id], records::request)
    }

    fn pending_requests(
        &mut self,
        user_id: &str,
        created_after_ms: i64,
        page: Page,
    ) -> StoreResult<Paged<AccessRequest>> {
        let sql = format!(
            "SELECT {REQUEST_COLUMNS}, seq FROM access_requests WHERE user_id = $1 AND status = $2 \
             AND created_ms >= $3 AND seq > $4 ORDER BY seq LIMIT $5"
        );
        let pending = RequestStatus::Pending as i32;
        self.rows(
            &sql,
            &[
                &user_id,
                &pending,
                &created_after_ms,
                &page.after,
                &limit(page),
            ],
            |r| Ok((r.try_get(14)?, records::request(r)?)),
        )
    }

    fn pending_requests_from(
        &mut self,
        partner_id: &str,
        user_name: &str,
        created_after_ms: i64,
    ) -> StoreResult<Vec<AccessRequest>> {
        let sql = format!(
            "SELECT {REQUEST_COLUMNS} FROM access_requests WHERE partner_id = $1 AND user_name = $2 \
             AND status = $3 AND created_ms >= $4 ORDER BY created_ms, id COLLATE \"C\""
        );
        let pending = RequestStatus::Pending as i32;
        self.rows(
            &sql,
            &[&partner_id, &user_name, &pending, &created_after_ms],
            records::request,
        )
    }

    fn expire_requests(&mut self, created_before_ms: i64) -> StoreResult<usize> {
        self.execute(
            "UPDATE access_requests SET status = $1 WHERE status = $2 AND created_ms < $3",
            &[
                &(RequestStatus::RequestExpired as i32),
                &(RequestStatus::Pending as i32),
                &created_before_ms,
            ],
        )
    }

    fn set_request_status(
        &mut self,
        id: &str,
        status: RequestStatus,
        grant_id: Option<&str>,
    ) -> StoreResult<()> {
        self.execute(
            "UPDATE access_requests SET status = $2, grant_id = COALESCE($3, grant_id) WHERE id = $1",
            &[&id, &(status as i32), &grant_id],
        )?;
        Ok(())
    }

    fn insert_grant(&mut self, g: &Grant) -> StoreResult<()> {
        self.execute(
            "INSERT INTO grants (id, user_id, partner_id, feature, scopes, coverage, thread_ids, include_history, created_ms, not_after_ms, last_used_ms, state, ended_ms, attested_ms) \
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14)",
            &[
                &g.id, &g.user_id, &g.partner_id, &g.feature, &g.scopes.bits(), &g.coverage.to_i32(),
                &join_ids(&g.thread_ids), &g.include_history, &g.created_ms, &g.not_after_ms,
                &g.last_used_ms, &g.state.to_i32(), &g.ended_ms, &g.attested_ms,
            ],
        )?;
        Ok(())
    }

    fn set_grant_token(&mut self, grant_id: &str, token_hash: &str) -> StoreResult<()> {
        self.execute(
            "UPDATE grants SET token_hash = $2 WHERE id = $1",
            &[&grant_id, &token_hash],
        )?;
        Ok(())
    }

    fn grant(&mut self, id: &str) -> StoreResult<Option<Grant>> {
        Ok(self.grants_where("id = $1", &[&id])?.pop())
    }

    fn grant_by_token(&mut self, token_hash: &str) -> StoreResult<Option<Grant>> {
        Ok(self.grants_where("token_hash = $1", &[&token_hash])?.pop())
    }

    fn grants_of_partner(
        &mut self,
        partner_id: &str,
        active_only: bool,
        page: Page,
    ) -> StoreResult<Paged<Grant>> {
        self.grants_page(
            "partner_id = $1 AND (NOT $2 OR state = $3)",
            &[&partner_id, &active_only, &GrantState::Active.to_i32()],
            page,
        )
    }

    fn grants_of_user(&mut self, user_id: &str, page: Page) -> StoreResult<Paged<Grant>> {
        self.grants_page("user_id = $1", &[&user_id], page)
    }

    fn active_grants_on_thread(
        &mut self,
        thread_id: &str,
        page: Page,
    ) -> StoreResult<Paged<Grant>> {
        self.grants_page(
            "user_id IN (SELECT user_id FROM thread_participants WHERE thread_id = $1) AND state = $2",
            &[&thread_id, &GrantState::Active.to_i32()],
            page,
        )
    }

    fn active_grants_of(
        &mut self,
        partner_id: &str,
        feature: Option<&str>,
    ) -> StoreResult<Vec<Grant>> {
        self.grants_where(
            "partner_id = $1 AND ($2::TEXT IS NULL OR feature = $2) AND state = $3",
            &[&partner_id, &feature, &GrantState::Active.to_i32()],
        )
    }

    fn grants_due_to_end(&mut self, now_ms: i64, idle_before_ms: i64) -> StoreResult<Vec<Grant>> {
        self.grants_where(
            "state = $1 AND (not_after_ms <= $2 OR COALESCE(last_used_ms, created_ms) <= $3)",
            &[&GrantState::Active.to_i32(), &now_ms, &idle_before_ms],
        )
    }

    fn all_grants(&mut self, page: Page) -> StoreResult<Paged<Grant>> {
        self.grants_page("TRUE", &[], page)
    }

    fn end_grant(&mut self, id: &str, state: GrantState, now_ms: i64) -> StoreResult<()> {
        self.execute(
            "UPDATE grants SET state = $2, ended_ms = $3 WHERE id = $1 AND state = $4",
            &[&id, &state.to_i32(), &now_ms, &GrantState::Active.to_i32()],
        )?;
        Ok(())
    }

    fn touch_grant(&mut self, id: &str, scope: Scope, now_ms: i64) -> StoreResult<()> {
        self.execute(
            "UPDATE grants SET last_used_ms = GREATEST(last_used_ms, $2) WHERE id = $1",
            &[&id, &now_ms],
        )?;
        self.execute(
            "INSERT INTO grant_scope_use (grant_id, scope, last_used_ms) VALUES ($1, $2, $3) \
             ON CONFLICT (grant_id, scope) DO UPDATE \
             SET last_used_ms = GREATEST(grant_scope_use.last_used_ms, EXCLUDED.last_used_ms)",
            &[&id, &ScopeSet::of(&[scope]).bits(), &now_ms],
        )?;
        Ok(())
    }

    fn used_scopes(&mut self, id: &str) -> StoreResult<ScopeSet> {
        let bits = self.number(
            "SELECT COALESCE(SUM(scope), 0)::BIGINT FROM grant_scope_use WHERE grant_id = $1",
            &[&id],
        )?;
        Ok(ScopeSet::from_bits(bits))
    }

    fn grants_by_state(&mut self) -> StoreResult<Vec<(GrantState, usize)>> {
        self.rows(
            "SELECT state, COUNT(*) FROM grants GROUP BY state",
            &[],
            |r| Ok((GrantState::from_stored(r.try_get(0)?), count(r.try_get(1)?))),
        )
    }

    fn unattested_grants_ended_by(&mut self, ended_by_ms: i64) -> StoreResult<usize> {
        let n = self.number(
            "SELECT COUNT(*) FROM grants WHERE state <> $1 AND attested_ms IS NULL AND ended_ms <= $2",
            &[&GrantState::Active.to_i32(), &ended_by_ms],
        )?;
        Ok(count(n))
    }

    fn attest_deletion(&mut self, id: &str, now_ms: i64) -> StoreResult<()> {
        self.execute(
            "UPDATE grants SET attested_ms = COALESCE(attested_ms, $2) WHERE id = $1",
            &[&id, &now_ms],
        )?;
        Ok(())
    }

    fn push_event(&mut self, grant: &Grant, kind: GrantEventKind, now_ms: i64) -> StoreResult<i64> {
        let seq = self.number(
            "INSERT INTO grant_events (partner_id, grant_id, user_id, kind, at_ms) VALUES ($1, $2, $3, $4, $5) RETURNING seq",
            &[&grant.partner_id, &grant.id, &grant.user_id, &(kind as i32), &now_ms],
        )?;
        self.last_event = Some(seq);
        Ok(seq)
    }

    fn events_after(
        &mut self,
        partner_id: &str,
        after_seq: i64,
        limit: usize,
    ) -> StoreResult<Vec<GrantEvent>> {
        self.events_where(
            "partner_id = $1 AND seq > $2",
            &[&partner_id, &after_seq],
            limit,
        )
    }

    fn events_since(&mut self, after_seq: i64, limit: usize) -> StoreResult<Vec<GrantEvent>> {
        self.events_where("seq > $1", &[&after_seq], limit)
    }

    fn append_audit(&mut self, entry: &AuditEntry, now_ms: i64) -> StoreResult<()> {
        let key = self
            .audit_key
            .ok_or_else(|| StoreError::Failed("audit records are appended on the writer".into()))?;
        let (prev_seq, prev_hash): (i64, String) = self
            .row(
                "SELECT seq, hash FROM audit ORDER BY seq DESC LIMIT 1",
                &[],
                |r| Ok((r.try_get(0)?, r.try_get(1)?)),
            )?
            .unwrap_or_default();
        let seq = prev_seq + 1;
        let hash = record_hash(seq, now_ms, entry, &prev_hash);
        let mac = record_mac(key, seq, &hash);
        self.execute(
            "INSERT INTO audit (seq, at_ms, partner_id, user_id, grant_id, method, resource, decision, reason, prev_hash, hash, mac) \
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12)",
            &[
                &seq, &now_ms, &entry.partner_id, &entry.user_id, &entry.grant_id, &entry.method,
                &entry.resource, &entry.decision, &entry.reason, &prev_hash, &hash, &mac,
            ],
        )?;
        Ok(())
    }

    fn audit_records(&mut self, after_seq: i64, limit: usize) -> StoreResult<Vec<AuditRecord>> {
        let limit = i64::try_from(limit).unwrap_or(i64::MAX);
        self.audit_where("seq > $1 ORDER BY seq LIMIT $2", &[&after_seq, &limit])
    }

    fn audit_records_of_user(
        &mut self,
        user_id: &str,
        after_seq: i64,
        limit: usize,
    ) -> StoreResult<Vec<AuditRecord>> {
        let limit = i64::try_from(limit).unwrap_or(i64::MAX);
        self.audit_where(
            "user_id = $1 AND seq > $2 ORDER BY seq LIMIT $3",
            &[&user_id, &after_seq, &limit],
        )
    }

    fn audit_record(&mut self, seq: i64) -> StoreResult<Option<AuditRecord>> {
        Ok(self.audit_where("seq = $1", &[&seq])?.pop())
    }

    fn record_read_by_others_app(&mut self, read: &ReadByOthersApp) -> StoreResult<()> {
        self.execute(
            "INSERT INTO reads_by_others_apps (user_id, partner_id, thread_id, messages, at_ms) \
             VALUES ($1, $2, $3, $4, $5)",
            &[
                &read.user_id,
                &read.partner_id,
                &read.thread_id,
                &i64::from(read.messages),
                &read.at_ms,
            ],
        )?;
        Ok(())
    }

    fn reads_by_others_apps(
        &mut self,
        user_id: &str,
        page: Page,
    ) -> StoreResult<Paged<ReadByOthersApp>> {
        self.rows(
            "SELECT seq, user_id, partner_id, thread_id, messages, at_ms FROM reads_by_others_apps \
             WHERE user_id = $1 AND seq > $2 ORDER BY seq LIMIT $3",
            &[&user_id, &page.after, &limit(page)],
            |r| {
                Ok((
                    r.try_get(0)?,
                    ReadByOthersApp {
                        user_id: r.try_get(1)?,
                        partner_id: r.try_get(2)?,
                        thread_id: r.try_get(3)?,
                        messages: u32::try_from(r.try_get::<_, i64>(4)?).unwrap_or(u32::MAX),
                        at_ms: r.try_get(5)?,
                    },
                ))
            },
        )
    }

    fn audit_head(&mut self) -> StoreResult<Option<AuditRecord>> {
        Ok(self
            .audit_where("TRUE ORDER BY seq DESC LIMIT 1", &[])?
            .pop())
    }

    fn idempotent_response(
        &mut self,
        grant_id: &str,
        key: &str,
        since_ms: i64,
    ) -> StoreResult<Option<IdempotentResponse>> {
        self.row(
            "SELECT request_hash, response FROM idempotency \
             WHERE grant_id = $1 AND key = $2 AND created_ms >= $3",
            &[&grant_id, &key, &since_ms],
            |r| {
                Ok(IdempotentResponse {
                    request_hash: r.try_get(0)?,
                    response: r.try_get(1)?,
                })
            },
        )
    }

    fn save_idempotent_response(
        &mut self,
        grant_id: &str,
        key: &str,
        response: &IdempotentResponse,
        now_ms: i64,
    ) -> StoreResult<()> {
        // A record past its window may still be there: the new one takes its place.
        self.execute(
            "INSERT INTO idempotency (grant_id, key, request_hash, response, created_ms) \
             VALUES ($1, $2, $3, $4, $5) ON CONFLICT (grant_id, key) DO UPDATE SET \
             request_hash = EXCLUDED.request_hash, response = EXCLUDED.response, \
             created_ms = EXCLUDED.created_ms",
            &[
                &grant_id,
                &key,
                &response.request_hash,
                &response.response,
                &now_ms,
            ],
        )?;
        Ok(())
    }

    fn forget_idempotent_responses(&mut self, before_ms: i64) -> StoreResult<usize> {
        self.execute(
            "DELETE FROM idempotency WHERE created_ms < $1",
            &[&before_ms],
        )
    }

    fn insert_pushed_request(&mut self, uri_hash: &str, pushed: &PushedRequest) -> StoreResult<()> {
        self.execute(
            "INSERT INTO pushed_requests (uri_hash, partner_id, feature, coverage, thread_ids, include_history, purpose, redirect_uri, state, code_challenge, expires_ms, access_request_id) \
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12)",
            &[
                &uri_hash, &pushed.partner_id, &pushed.feature, &pushed.coverage.to_i32(),
                &join_ids(&pushed.thread_ids), &pushed.include_history, &pushed.purpose,
                &pushed.redirect_uri, &pushed.state, &pushed.code_challenge, &pushed.expires_ms,
                &pushed.access_request_id,
            ],
        )?;
        Ok(())
    }

    fn pushed_request(&mut self, uri_hash: &str) -> StoreResult<Option<PushedRequest>> {
        let sql = format!("SELECT {PUSHED_COLUMNS} FROM pushed_requests WHERE uri_hash = $1");
        self.row(&sql, &[&uri_hash], records::pushed)
    }

    fn pushed_request_of(&mut self, access_request_id: &str) -> StoreResult<Option<PushedRequest>> {
        let sql =
            format!("SELECT {PUSHED_COLUMNS} FROM pushed_requests WHERE access_request_id = $1");
        self.row(&sql, &[&access_request_id], records::pushed)
    }

    fn open_pushed_request(&mut self, uri_hash: &str, access_request_id: &str) -> StoreResult<()> {
        self.execute(
            "UPDATE pushed_requests SET access_request_id = $2 WHERE uri_hash = $1",
            &[&uri_hash, &access_request_id],
        )?;
        Ok(())
    }

    fn insert_code(&mut self, code_hash: &str, code: &AuthorizationCode) -> StoreResult<()> {
        self.execute(
            "INSERT INTO authorization_codes (code_hash, partner_id, grant_id, redirect_uri, code_challenge, expires_ms, redeemed_ms) \
             VALUES ($1, $2, $3, $4, $5, $6, $7)",
            &[
                &code_hash, &code.partner_id, &code.grant_id, &code.redirect_uri,
                &code.code_challenge, &code.expires_ms, &code.redeemed_ms,
            ],
        )?;
        Ok(())
    }

    fn code(&mut self, code_hash: &str) -> StoreResult<Option<AuthorizationCode>> {
        self.code_where("code_hash", code_hash)
    }

    fn code_of_grant(&mut self, grant_id: &str) -> StoreResult<Option<AuthorizationCode>> {
        self.code_where("grant_id", grant_id)
    }

    fn rehash_code_of_grant(&mut self, grant_id: &str, new_hash: &str) -> StoreResult<()> {
        self.execute(
            "UPDATE authorization_codes SET code_hash = $2 WHERE grant_id = $1",
            &[&grant_id, &new_hash],
        )?;
        Ok(())
    }

    fn redeem_code(&mut self, code_hash: &str, now_ms: i64) -> StoreResult<()> {
        self.execute(
            "UPDATE authorization_codes SET redeemed_ms = $2 WHERE code_hash = $1",
            &[&code_hash, &now_ms],
        )?;
        Ok(())
    }

    fn forget_authorization_flows(&mut self, before_ms: i64) -> StoreResult<usize> {
        let pushed = self.execute(
            "DELETE FROM pushed_requests WHERE expires_ms < $1",
            &[&before_ms],
        )?;
        let codes = self.execute(
            "DELETE FROM authorization_codes WHERE expires_ms < $1",
            &[&before_ms],
        )?;
        Ok(pushed + codes)
    }
}
