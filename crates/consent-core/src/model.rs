//! The platform's domain types, independent of storage and of the wire.

use consent_proto::platform::v1 as pb;

/// A permission a partner feature may ask for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Scope {
    /// List covered threads.
    ThreadsRead,
    /// Read messages in covered threads.
    MessagesRead,
    /// Send on the user's behalf.
    MessagesWrite,
    /// Delete the user's own messages.
    MessagesDelete,
    /// See other participants' real ids.
    ParticipantsRead,
    /// Read the friends list.
    FriendsRead,
}

impl Scope {
    /// Every scope, in wire order.
    pub const ALL: [Scope; 6] = [
        Scope::ThreadsRead,
        Scope::MessagesRead,
        Scope::MessagesWrite,
        Scope::MessagesDelete,
        Scope::ParticipantsRead,
        Scope::FriendsRead,
    ];

    /// The dotted name used in documentation and logs.
    pub fn name(self) -> &'static str {
        match self {
            Scope::ThreadsRead => "threads.read",
            Scope::MessagesRead => "messages.read",
            Scope::MessagesWrite => "messages.write",
            Scope::MessagesDelete => "messages.delete",
            Scope::ParticipantsRead => "participants.read",
            Scope::FriendsRead => "friends.read",
        }
    }

    /// What the scope lets an app do, in the words of the consent page.
    pub fn plain_words(self) -> &'static str {
        match self {
            Scope::ThreadsRead => "see the list of your conversations",
            Scope::MessagesRead => "read your messages",
            Scope::MessagesWrite => "send messages as you",
            Scope::MessagesDelete => "delete messages you wrote",
            Scope::ParticipantsRead => "see who else is in your conversations",
            Scope::FriendsRead => "see your friends list",
        }
    }

    fn bit(self) -> u8 {
        1 << (self as u8)
    }

    /// The wire value.
    pub fn to_proto(self) -> pb::Scope {
        match self {
            Scope::ThreadsRead => pb::Scope::ThreadsRead,
            Scope::MessagesRead => pb::Scope::MessagesRead,
            Scope::MessagesWrite => pb::Scope::MessagesWrite,
            Scope::MessagesDelete => pb::Scope::MessagesDelete,
            Scope::ParticipantsRead => pb::Scope::ParticipantsRead,
            Scope::FriendsRead => pb::Scope::FriendsRead,
        }
    }

    /// From a wire value; `None` for unspecified or unknown values.
    pub fn from_proto(value: i32) -> Option<Scope> {
        match pb::Scope::try_from(value).ok()? {
            pb::Scope::Unspecified => None,
            pb::Scope::ThreadsRead => Some(Scope::ThreadsRead),
            pb::Scope::MessagesRead => Some(Scope::MessagesRead),
            pb::Scope::MessagesWrite => Some(Scope::MessagesWrite),
            pb::Scope::MessagesDelete => Some(Scope::MessagesDelete),
            pb::Scope::ParticipantsRead => Some(Scope::ParticipantsRead),
            pb::Scope::FriendsRead => Some(Scope::FriendsRead),
        }
    }
}

/// A set of scopes, stored as a bit mask.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct ScopeSet(u8);

impl ScopeSet {
    /// The set with these scopes.
    pub fn of(scopes: &[Scope]) -> Self {
        ScopeSet(scopes.iter().fold(0, |bits, s| bits | s.bit()))
    }
    /// From the stored mask (unknown bits dropped).
    pub fn from_bits(bits: i64) -> Self {
        ScopeSet(u8::try_from(bits & 0x3f).unwrap_or(0))
    }
    /// The stored mask.
    pub fn bits(self) -> i64 {
        i64::from(self.0)
    }
    /// Whether `scope` is in the set.
    pub fn contains(self, scope: Scope) -> bool {
        self.0 & scope.bit() != 0
    }
    /// Whether every scope of `self` is in `other`.
    pub fn is_subset_of(self, other: ScopeSet) -> bool {
        self.0 & !other.0 == 0
    }
    /// Scopes in `self` but not in `other`.
    pub fn minus(self, other: ScopeSet) -> ScopeSet {
        ScopeSet(self.0 & !other.0)
    }
    /// Whether the set is empty.
    pub fn is_empty(self) -> bool {
        self.0 == 0
    }
    /// The scopes, in wire order.
    pub fn iter(self) -> impl Iterator<Item = Scope> {
        Scope::ALL.into_iter().filter(move |s| self.contains(*s))
    }
    /// The wire values.
    pub fn to_proto(self) -> Vec<i32> {
        self.iter().map(|s| s.to_proto() as i32).collect()
    }
    /// Dotted names, comma-separated.
    pub fn names(self) -> String {
        self.iter().map(Scope::name).collect::<Vec<_>>().join(", ")
    }
}

/// Which threads a grant covers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Coverage {
    /// Every thread the user is in.
    All,
    /// The listed threads.
    Listed,
    /// Threads the partner's app started.
    PartnerStarted,
}

impl Coverage {
    /// The stored and wire value.
    pub fn to_i32(self) -> i32 {
        match self {
            Coverage::All => pb::ThreadCoverage::AllThreads as i32,
            Coverage::Listed => pb::ThreadCoverage::ListedThreads as i32,
            Coverage::PartnerStarted => pb::ThreadCoverage::PartnerStartedThreads as i32,
        }
    }
    /// From a stored value; an unknown one fails closed, as listed coverage (only the
    /// threads stored with it).
    pub fn from_stored(value: i32) -> Coverage {
        Coverage::from_i32(value).unwrap_or(Coverage::Listed)
    }
    /// From the stored or wire value.
    pub fn from_i32(value: i32) -> Option<Coverage> {
        match pb::ThreadCoverage::try_from(value).ok()? {
            pb::ThreadCoverage::Unspecified => None,
            pb::ThreadCoverage::AllThreads => Some(Coverage::All),
            pb::ThreadCoverage::ListedThreads => Some(Coverage::Listed),
            pb::ThreadCoverage::PartnerStartedThreads => Some(Coverage::PartnerStarted),
        }
    }
}

/// Where a grant is in its life; every state but `Active` is final.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum GrantState {
    /// Usable.
    Active,
    /// Revoked by the user.
    Revoked,
    /// Past `not_after`.
    Expired,
    /// Unused too long.
    Lapsed,
    /// Feature retired.
    Retired,
    /// Partner suspended.
    Suspended,
    /// Released by the partner.
    Released,
}

impl GrantState {
    /// Every state, in wire order.
    pub const ALL: [GrantState; 7] = [
        GrantState::Active,
        GrantState::Revoked,
        GrantState::Expired,
        GrantState::Lapsed,
        GrantState::Retired,
        GrantState::Suspended,
        GrantState::Released,
    ];

    /// The state's name in lower case, as metrics label it.
    pub fn name(self) -> &'static str {
        match self {
            GrantState::Active => "active",
            GrantState::Revoked => "revoked",
            GrantState::Expired => "expired",
            GrantState::Lapsed => "lapsed",
            GrantState::Retired => "retired",
            GrantState::Suspended => "suspended",
            GrantState::Released => "released",
        }
    }
    /// The stored and wire value.
    pub fn to_i32(self) -> i32 {
        self.to_proto() as i32
    }
    fn to_proto(self) -> pb::GrantState {
        match self {
            GrantState::Active => pb::GrantState::Active,
            GrantState::Revoked => pb::GrantState::Revoked,
            GrantState::Expired => pb::GrantState::Expired,
            GrantState::Lapsed => pb::GrantState::Lapsed,
            GrantState::Retired => pb::GrantState::Retired,
            GrantState::Suspended => pb::GrantState::Suspended,
            GrantState::Released => pb::GrantState::Released,
        }
    }
    /// From a stored value; an unknown one fails closed, as an ended (revoked) grant.
    pub fn from_stored(value: i32) -> GrantState {
        GrantState::from_i32(value).unwrap_or(GrantState::Revoked)
    }
    /// From the stored value.
    pub fn from_i32(value: i32) -> Option<GrantState> {
        Some(match pb::GrantState::try_from(value).ok()? {
            pb::GrantState::Unspecified => return None,
            pb::GrantState::Active => GrantState::Active,
            pb::GrantState::Revoked => GrantState::Revoked,
            pb::GrantState::Expired => GrantState::Expired,
            pb::GrantState::Lapsed => GrantState::Lapsed,
            pb::GrantState::Retired => GrantState::Retired,
            pb::GrantState::Suspended => GrantState::Suspended,
            pb::GrantState::Released => GrantState::Released,
        })
    }
    /// The event that announces a grant entering this state.
    pub fn event(self) -> pb::GrantEventKind {
        match self {
            GrantState::Active => pb::GrantEventKind::GrantApproved,
            GrantState::Revoked => pb::GrantEventKind::GrantRevoked,
            GrantState::Expired => pb::GrantEventKind::GrantExpired,
            GrantState::Lapsed => pb::GrantEventKind::GrantLapsed,
            GrantState::Retired => pb::GrantEventKind::GrantRetired,
            GrantState::Suspended => pb::GrantEventKind::GrantSuspended,
            GrantState::Released => pb::GrantEventKind::GrantReleased,
        }
    }
}

/// What an account name is: 3 to 32 of a-z, 0-9, '_', '-', '.'.
pub const USER_NAME_RULE: &str = "3 to 32 of a-z, 0-9, '_', '-', '.'";

/// Whether `name` is an account name ([`USER_NAME_RULE`]): the platform's, and the one a
/// partner names when it asks for that user's consent.
pub fn is_user_name(name: &str) -> bool {
    (3..=32).contains(&name.len())
        && name.bytes().all(|b| {
            b.is_ascii_lowercase() || b.is_ascii_digit() || matches!(b, b'_' | b'-' | b'.')
        })
}

/// A registered user.
#[derive(Debug, Clone)]
pub struct User {
    /// Id.
    pub id: String,
    /// Account name.
    pub name: String,
    /// Name shown to friends.
    pub display_name: String,
    /// Argon2id PHC string.
    pub password_hash: String,
    /// Hide my messages from apps that other participants use.
    pub hide_from_others_apps: bool,
    /// Apps my friends use may see my name (off by default): otherwise they see only a
    /// per-app handle.
    pub name_to_friends_apps: bool,
}

/// A user's privacy settings; `None` leaves a setting as it is.
#[derive(Debug, Clone, Copy, Default)]
pub struct PrivacyChange {
    /// See [`User::hide_from_others_apps`].
    pub hide_from_others_apps: Option<bool>,
    /// See [`User::name_to_friends_apps`].
    pub name_to_friends_apps: Option<bool>,
}

/// A registered partner.
#[derive(Debug, Clone)]
pub struct Partner {
    /// Id, as in its certificate.
    pub id: String,
    /// Name shown to users.
    pub display_name: String,
    /// Scopes it may ever be granted.
    pub allowed_scopes: ScopeSet,
    /// Suspended partners are refused, and their grants ended, for good.
    pub suspended: bool,
    /// Blocked partners are refused until an operator unblocks them; their grants stay.
    pub blocked: bool,
    /// Where the consent page may send a browser back, exactly.
    pub redirect_uris: Vec<String>,
}

/// A partner feature.
#[derive(Debug, Clone)]
pub struct Feature {
    /// Owning partner.
    pub partner_id: String,
    /// Name.
    pub name: String,
    /// What it does.
    pub description: String,
    /// Scopes it needs.
    pub scopes: ScopeSet,
    /// Retired features end their grants and take no new ones.
    pub retired: bool,
    /// The kinds of card its messages may carry.
    pub card_kinds: Vec<crate::card::CardKind>,
}

/// Which of a user's threads to list.
#[derive(Debug, Clone)]
pub enum ThreadFilter {
    /// All of them.
    All,
    /// Only these ids.
    Ids(Vec<String>),
    /// Only those started by this partner's app.
    StartedBy(String),
}

/// Status of an access request.
pub use pb::RequestStatus;

/// A request status from a stored value; an unknown one fails closed, as denied.
pub fn request_status_from_stored(value: i32) -> RequestStatus {
    RequestStatus::try_from(value).unwrap_or(RequestStatus::Denied)
}

/// A partner's request for access to a user's data.
#[derive(Debug, Clone)]
pub struct AccessRequest {
    /// Id.
    pub id: String,
    /// Asking partner.
    pub partner_id: String,
    /// Feature asked for.
    pub feature: String,
    /// User asked; empty when no user has the name asked for (such a request is answered,
    /// and expires, like any other, so that the answer tells nothing).
    pub user_id: String,
    /// The account name the partner asked for.
    pub user_name: String,
    /// A code the partner also shows its own user (decoupled flow; empty otherwise).
    pub binding_message: String,
    /// The partner-side account the grant will belong to (decoupled flow; empty
    /// otherwise).
    pub account_label: String,
    /// Coverage asked for.
    pub coverage: Coverage,
    /// With `Listed`: threads asked for.
    pub thread_ids: Vec<String>,
    /// History asked for.
    pub include_history: bool,
    /// Why, in the partner's words.
    pub purpose: String,
    /// Where it stands.
    pub status: RequestStatus,
    /// The grant, once approved.
    pub grant_id: Option<String>,
    /// When it was made.
    pub created_ms: i64,
}

/// A user's consent to one partner feature.
#[derive(Debug, Clone)]
pub struct Grant {
    /// Id.
    pub id: String,
    /// Granting user.
    pub user_id: String,
    /// Partner it was issued to.
    pub partner_id: String,
    /// Feature it belongs to.
    pub feature: String,
    /// Scopes approved.
    pub scopes: ScopeSet,
    /// Thread coverage.
    pub coverage: Coverage,
    /// With `Listed`: the threads.
    pub thread_ids: Vec<String>,
    /// Whether older messages may be read.
    pub include_history: bool,
    /// Approval time.
    pub created_ms: i64,
    /// Hard end.
    pub not_after_ms: i64,
    /// Last partner use.
    pub last_used_ms: Option<i64>,
    /// Current state.
    pub state: GrantState,
    /// When it left `Active`.
    pub ended_ms: Option<i64>,
    /// When the partner attested deletion.
    pub attested_ms: Option<i64>,
}

/// A thread and its participants.
#[derive(Debug, Clone)]
pub struct Thread {
    /// Id.
    pub id: String,
    /// Title.
    pub title: String,
    /// Partner whose app started it.
    pub started_by_partner: Option<String>,
    /// Creation time.
    pub created_ms: i64,
    /// Participants' user ids.
    pub participants: Vec<String>,
}

/// Largest message body, in bytes.
pub const MAX_BODY_BYTES: usize = 4096;

/// A message.
#[derive(Debug, Clone)]
pub struct Message {
    /// Id.
    pub id: String,
    /// Thread.
    pub thread_id: String,
    /// Author's user id.
    pub sender_id: String,
    /// Text.
    pub body: String,
    /// Send time.
    pub created_ms: i64,
    /// Partner that sent it on the author's behalf.
    pub sent_by_partner: Option<String>,
    /// What it shares besides its text (checked by [`crate::card::check`]).
    pub card: Option<pb::Card>,
}

/// An event on a grant, delivered to its partner.
#[derive(Debug, Clone)]
pub struct GrantEvent {
    /// Global sequence.
    pub seq: i64,
    /// Partner to deliver to.
    pub partner_id: String,
    /// Grant concerned.
    pub grant_id: String,
    /// Its user.
    pub user_id: String,
    /// What happened.
    pub kind: pb::GrantEventKind,
    /// When.
    pub at_ms: i64,
}

/// What an audit record says, before it is chained.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct AuditEntry {
    /// Calling partner, if any.
    pub partner_id: String,
    /// User whose data was concerned.
    pub user_id: String,
    /// Grant used.
    pub grant_id: String,
    /// Full gRPC method.
    pub method: String,
    /// Resource ids, comma-separated.
    pub resource: String,
    /// "allow" or "deny".
    pub decision: String,
    /// Denial reason or "".
    pub reason: String,
}

/// A partner's read of someone's messages through another person's grant, as that
/// someone sees it in their access log: which app, which thread, how many messages, when;
/// not whose grant it was.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReadByOthersApp {
    /// The person whose messages were read.
    pub user_id: String,
    /// The app that read them.
    pub partner_id: String,
    /// The thread they were read in.
    pub thread_id: String,
    /// How many of the person's messages the app received.
    pub messages: u32,
    /// When.
    pub at_ms: i64,
}

/// A chained audit record.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AuditRecord {
    /// Position in the chain, from 1.
    pub seq: i64,
    /// Decision time.
    pub at_ms: i64,
    /// Content.
    pub entry: AuditEntry,
    /// Previous record's hash, "" for the first.
    pub prev_hash: String,
    /// This record's hash.
    pub hash: String,
    /// MAC of its position and hash under the audit key (hex).
    pub mac: String,
}
