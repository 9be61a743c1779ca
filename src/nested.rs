//! Nested jagged tensors: events within sessions within users (DESIGN.md,
//! "Jagged tensors"; docs/ops.md, "Nested jagged tensors").
//!
//! A [`NestedJagged`] is `values [T, inner...]` with two offsets arrays,
//! one per level:
//!
//! - `session_offsets [S+1]` (event rows): session `s` is the rows
//!   `session_offsets[s] .. session_offsets[s+1]` of `values`;
//! - `user_offsets [B+1]` (session indices): user `b` is the sessions
//!   `user_offsets[b] .. user_offsets[b+1]`.
//!
//! Each level obeys the offsets rules of a flat jagged tensor
//! ([`jagged_ir::tensor::check_offsets`]): at least one entry, the first 0,
//! none negative, non-decreasing, the last equal to the row count of the
//! level below (`T` for the sessions, `S` for the users). Empty users,
//! empty sessions, `B = 0`, `S = 0` and `T = 0` are valid. A violation is a
//! [`NestedError::Offsets`] naming the [`Level`] and the index of the first
//! bad entry.
//!
//! The flat form of a nested tensor is the jagged tensor of its users'
//! events, `event_offsets[b] = session_offsets[user_offsets[b]]`
//! ([`NestedJagged::to_flat`]); [`NestedJagged::from_flat`] goes back from a
//! flat tensor and the session offsets, which must not let a session cross
//! a user boundary.
//!
//! ```
//! use jagged::ir::{DType, DenseTensor};
//! use jagged::nested::{Level, NestedError, NestedJagged};
//!
//! let t = |dtype, v: &[f64]| DenseTensor::from_f64(dtype, vec![v.len()], v).unwrap();
//! // Two users: the first with sessions of 2 and 0 events, the second with one of 3.
//! let nested = NestedJagged::new(
//!     t(DType::F32, &[1.0, 2.0, 3.0, 4.0, 5.0]),
//!     t(DType::I64, &[0.0, 2.0, 2.0, 5.0]),
//!     t(DType::I64, &[0.0, 2.0, 3.0]),
//! )?;
//! assert_eq!(nested.event_offsets(), [0, 2, 5]);
//! let bad = NestedJagged::new(
//!     t(DType::F32, &[1.0, 2.0, 3.0, 4.0, 5.0]),
//!     t(DType::I64, &[0.0, 2.0, 2.0, 5.0]),
//!     t(DType::I64, &[0.0, 2.0, 1.0, 3.0]),
//! );
//! assert!(matches!(bad, Err(NestedError::Offsets { level: Level::Users, index: 2, .. })));
//! # Ok::<(), NestedError>(())
//! ```

use std::fmt;

use jagged_ir::tensor::check_offsets;
use jagged_ir::{DType, DenseTensor, JaggedTensor, TensorData, TensorError};

/// A level of a nested jagged tensor.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Level {
    /// `session_offsets [S+1]`: event rows of each session.
    Sessions,
    /// `user_offsets [B+1]`: session indices of each user.
    Users,
}

impl Level {
    /// The name of the level's offsets argument.
    pub fn offsets_name(self) -> &'static str {
        match self {
            Level::Sessions => "session_offsets",
            Level::Users => "user_offsets",
        }
    }

    /// What the level's last offset counts: event rows or sessions.
    fn rows_name(self) -> &'static str {
        match self {
            Level::Sessions => "event rows",
            Level::Users => "sessions",
        }
    }
}

impl fmt::Display for Level {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.offsets_name())
    }
}

/// Which offsets rule an entry breaks.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum OffsetsFault {
    /// The offsets have no entry (they need `n + 1 >= 1`).
    Empty,
    /// The first entry is not 0.
    FirstNotZero {
        /// The entry.
        value: i64,
    },
    /// A negative entry.
    Negative {
        /// The entry.
        value: i64,
    },
    /// An entry less than the one before it.
    Decreasing {
        /// The entry.
        value: i64,
        /// The entry before it.
        previous: i64,
    },
    /// The last entry is not the row count of the level below.
    LastMismatch {
        /// The entry.
        value: i64,
        /// The row count (`T` for sessions, `S` for users).
        rows: usize,
    },
}

impl fmt::Display for OffsetsFault {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            OffsetsFault::Empty => write!(f, "no entry (at least one is needed)"),
            OffsetsFault::FirstNotZero { value } => write!(f, "{value}, must be 0"),
            OffsetsFault::Negative { value } => write!(f, "{value} is negative"),
            OffsetsFault::Decreasing { value, previous } => {
                write!(f, "{value} is less than the entry before it, {previous}")
            }
            OffsetsFault::LastMismatch { value, rows } => {
                write!(f, "{value} (the last entry) must equal {rows}")
            }
        }
    }
}

/// Why a nested jagged tensor could not be built or converted.
#[derive(Debug, PartialEq, Eq, thiserror::Error)]
pub enum NestedError {
    /// The offsets of `level` break a rule at `index`, the first bad entry
    /// (0 for empty offsets).
    #[error("{level}[{index}] = {fault} (level {level:?}; its last entry counts the {rows})", rows = level.rows_name())]
    Offsets {
        /// The level whose offsets are bad.
        level: Level,
        /// The index of the first bad entry.
        index: usize,
        /// The rule it breaks.
        fault: OffsetsFault,
    },
    /// Offsets that are not i32 or i64, or not one-dimensional.
    #[error("{level}: dtype {dtype} shape {shape:?}; offsets are a 1-D i32 or i64 tensor")]
    OffsetsType {
        /// The level.
        level: Level,
        /// The dtype given.
        dtype: DType,
        /// The shape given.
        shape: Vec<usize>,
    },
    /// `values` has no leading row dim.
    #[error("values: shape {shape:?}; nested values are [T, inner...]")]
    ValuesShape {
        /// The shape given.
        shape: Vec<usize>,
    },
    /// The flat offsets given to [`NestedJagged::from_flat`] (the user level
    /// in event rows) are not valid offsets of the values.
    #[error("event_offsets[{index}] = {fault}")]
    EventOffsets {
        /// The index of the first bad entry.
        index: usize,
        /// The rule it breaks.
        fault: OffsetsFault,
    },
    /// A user boundary of the flat tensor falls inside a session (a session
    /// would span two users).
    #[error(
        "event_offsets[{user}] = {row} falls inside session {session} \
         (event rows {start}..{end}): a session may not span two users"
    )]
    SessionSpansUsers {
        /// The user boundary (index into the event offsets).
        user: usize,
        /// Its event row.
        row: usize,
        /// The session it splits.
        session: usize,
        /// The session's first row.
        start: usize,
        /// The session's end row.
        end: usize,
    },
}

impl NestedError {
    /// The level of an offsets error (`None` for other errors).
    pub fn level(&self) -> Option<Level> {
        match self {
            NestedError::Offsets { level, .. } | NestedError::OffsetsType { level, .. } => {
                Some(*level)
            }
            _ => None,
        }
    }

    /// The index of the first bad offset (`None` for other errors).
    pub fn index(&self) -> Option<usize> {
        match self {
            NestedError::Offsets { index, .. } | NestedError::EventOffsets { index, .. } => {
                Some(*index)
            }
            NestedError::SessionSpansUsers { user, .. } => Some(*user),
            _ => None,
        }
    }
}

/// The fault and index of a [`check_offsets`] error.
fn fault_of(err: TensorError) -> (usize, OffsetsFault) {
    match err {
        TensorError::EmptyOffsets { .. } => (0, OffsetsFault::Empty),
        TensorError::FirstOffsetNotZero { value, .. } => (0, OffsetsFault::FirstNotZero { value }),
        TensorError::NegativeOffset { index, value, .. } => {
            (index, OffsetsFault::Negative { value })
        }
        TensorError::DecreasingOffsets {
            index,
            value,
            previous,
            ..
        } => (index, OffsetsFault::Decreasing { value, previous }),
        TensorError::LastOffsetMismatch {
            index, value, rows, ..
        } => (index, OffsetsFault::LastMismatch { value, rows }),
        // check_offsets returns only the variants above.
        other => unreachable!("check_offsets returned {other}"),
    }
}

/// Checks one level's offsets (`rows`: the row count of the level below);
/// returns them as `usize`.
pub fn check_level(level: Level, offsets: &[i64], rows: usize) -> Result<Vec<usize>, NestedError> {
    check_offsets(level.offsets_name(), offsets, Some(rows)).map_err(|e| {
        let (index, fault) = fault_of(e);
        NestedError::Offsets {
            level,
            index,
            fault,
        }
    })?;
    // Checked: non-negative.
    Ok(offsets.iter().map(|&o| o as usize).collect())
}

/// The entries of a level's offsets tensor (1-D, i32 or i64).
fn index_entries(level: Level, offsets: &DenseTensor) -> Result<Vec<i64>, NestedError> {
    match offsets.data().to_i64() {
        Some(v) if offsets.shape().len() == 1 => Ok(v),
        _ => Err(NestedError::OffsetsType {
            level,
            dtype: offsets.dtype(),
            shape: offsets.shape().to_vec(),
        }),
    }
}

/// Offsets of `dtype` (i32 or i64) from indices.
fn offsets_tensor(dtype: DType, offsets: &[usize]) -> DenseTensor {
    let data = if dtype == DType::I32 {
        TensorData::I32(offsets.iter().map(|&o| o as i32).collect())
    } else {
        TensorData::I64(offsets.iter().map(|&o| o as i64).collect())
    };
    DenseTensor::new(vec![offsets.len()], data)
        .unwrap_or_else(|e| unreachable!("a 1-D tensor of its own length: {e}"))
}

/// Checks both levels of a nested tensor with `events` event rows; returns
/// `(session_offsets, user_offsets)` as indices.
pub fn check_nested(
    events: usize,
    session_offsets: &[i64],
    user_offsets: &[i64],
) -> Result<(Vec<usize>, Vec<usize>), NestedError> {
    let sessions = check_level(Level::Sessions, session_offsets, events)?;
    let users = check_level(Level::Users, user_offsets, sessions.len() - 1)?;
    Ok((sessions, users))
}

/// `event_offsets[b] = session_offsets[user_offsets[b]]`: the users' event
/// rows, from checked offsets.
pub fn event_offsets_of(session_offsets: &[usize], user_offsets: &[usize]) -> Vec<usize> {
    user_offsets.iter().map(|&u| session_offsets[u]).collect()
}

/// The user offsets (session indices) of sessions `session_offsets` within
/// users `event_offsets` (both in event rows, both checked):
/// `user_offsets[b]` is the first session starting at or after
/// `event_offsets[b]` (an empty session on a user boundary belongs to the
/// later user). Every user boundary must be a session boundary.
pub fn user_offsets_of(
    session_offsets: &[usize],
    event_offsets: &[usize],
) -> Result<Vec<usize>, NestedError> {
    let sessions = session_offsets.len() - 1;
    let mut out = Vec::with_capacity(event_offsets.len());
    let mut s = 0;
    for (user, &row) in event_offsets.iter().enumerate() {
        // Both are non-decreasing: one pass.
        while s < sessions && session_offsets[s] < row {
            s += 1;
        }
        if session_offsets[s] != row {
            // session_offsets[s] > row > session_offsets[s - 1] (s >= 1: the
            // first offset is 0 <= row).
            return Err(NestedError::SessionSpansUsers {
                user,
                row,
                session: s - 1,
                start: session_offsets[s - 1],
                end: session_offsets[s],
            });
        }
        out.push(s);
    }
    // The last user boundary is T = session_offsets[S]: s = S unless
    // trailing empty sessions sit at T; they belong to the last user. With
    // no user (B = 0) there may be no session either.
    if out.len() == 1 {
        if sessions > 0 {
            return Err(NestedError::Offsets {
                level: Level::Users,
                index: 0,
                fault: OffsetsFault::LastMismatch {
                    value: 0,
                    rows: sessions,
                },
            });
        }
    } else if let Some(last) = out.last_mut() {
        *last = sessions;
    }
    Ok(out)
}

/// A nested jagged tensor on the host, always valid: `values [T, inner...]`,
/// `session_offsets [S+1]` (event rows) and `user_offsets [B+1]` (session
/// indices), each offsets array i32 or i64.
#[derive(Clone, Debug, PartialEq)]
pub struct NestedJagged {
    values: DenseTensor,
    session_offsets: DenseTensor,
    user_offsets: DenseTensor,
    sessions: Vec<usize>,
    users: Vec<usize>,
}

impl NestedJagged {
    /// A nested tensor from its values `[T, inner...]` and the two levels'
    /// offsets; each level is checked (sessions against `T`, users against
    /// `S`), and the first bad entry is a [`NestedError::Offsets`] naming
    /// the level and the index.
    pub fn new(
        values: DenseTensor,
        session_offsets: DenseTensor,
        user_offsets: DenseTensor,
    ) -> Result<NestedJagged, NestedError> {
        let Some(&events) = values.shape().first() else {
            return Err(NestedError::ValuesShape {
                shape: values.shape().to_vec(),
            });
        };
        let s = index_entries(Level::Sessions, &session_offsets)?;
        let u = index_entries(Level::Users, &user_offsets)?;
        let (sessions, users) = check_nested(events, &s, &u)?;
        Ok(NestedJagged {
            values,
            session_offsets,
            user_offsets,
            sessions,
            users,
        })
    }

    /// The nested form of a flat jagged tensor (users' events on
    /// `flat.offsets()`) cut into sessions by `session_offsets` (event
    /// rows): `user_offsets[b]` is the first session that starts at or after
    /// the user's first event (an empty session on a user boundary goes to
    /// the later user; trailing empty sessions to the last user). A session
    /// crossing a user boundary is [`NestedError::SessionSpansUsers`]. The
    /// user offsets get the flat offsets' dtype.
    pub fn from_flat(
        flat: &JaggedTensor,
        session_offsets: DenseTensor,
    ) -> Result<NestedJagged, NestedError> {
        let events = flat.values().shape()[0];
        let s = index_entries(Level::Sessions, &session_offsets)?;
        let sessions = check_level(Level::Sessions, &s, events)?;
        let event_offsets = flat.offsets_usize();
        let users = user_offsets_of(&sessions, &event_offsets)?;
        let user_offsets = offsets_tensor(flat.offsets().dtype(), &users);
        Ok(NestedJagged {
            values: flat.values().clone(),
            session_offsets,
            user_offsets,
            sessions,
            users,
        })
    }

    /// [`from_flat`](Self::from_flat) with the flat form as values and
    /// event offsets `[B+1]` (checked as offsets of the values: an error is
    /// [`NestedError::EventOffsets`]).
    pub fn from_flat_parts(
        values: DenseTensor,
        event_offsets: &DenseTensor,
        session_offsets: DenseTensor,
    ) -> Result<NestedJagged, NestedError> {
        let Some(&events) = values.shape().first() else {
            return Err(NestedError::ValuesShape {
                shape: values.shape().to_vec(),
            });
        };
        let e = event_offsets
            .data()
            .to_i64()
            .filter(|_| event_offsets.shape().len() == 1)
            .ok_or_else(|| NestedError::OffsetsType {
                level: Level::Users,
                dtype: event_offsets.dtype(),
                shape: event_offsets.shape().to_vec(),
            })?;
        check_offsets("event_offsets", &e, Some(events)).map_err(|err| {
            let (index, fault) = fault_of(err);
            NestedError::EventOffsets { index, fault }
        })?;
        let s = index_entries(Level::Sessions, &session_offsets)?;
        let sessions = check_level(Level::Sessions, &s, events)?;
        let flat: Vec<usize> = e.iter().map(|&o| o as usize).collect();
        let users = user_offsets_of(&sessions, &flat)?;
        let user_offsets = offsets_tensor(event_offsets.dtype(), &users);
        Ok(NestedJagged {
            values,
            session_offsets,
            user_offsets,
            sessions,
            users,
        })
    }

    /// The values `[T, inner...]`.
    pub fn values(&self) -> &DenseTensor {
        &self.values
    }

    /// `session_offsets [S+1]`, event rows.
    pub fn session_offsets(&self) -> &DenseTensor {
        &self.session_offsets
    }

    /// `user_offsets [B+1]`, session indices.
    pub fn user_offsets(&self) -> &DenseTensor {
        &self.user_offsets
    }

    /// The inner dims of the values.
    pub fn inner(&self) -> &[usize] {
        &self.values.shape()[1..]
    }

    /// `T`, the number of events.
    pub fn events(&self) -> usize {
        self.values.shape()[0]
    }

    /// `S`, the number of sessions.
    pub fn sessions(&self) -> usize {
        self.sessions.len() - 1
    }

    /// `B`, the number of users.
    pub fn users(&self) -> usize {
        self.users.len() - 1
    }

    /// The session offsets as indices.
    pub fn session_offsets_usize(&self) -> &[usize] {
        &self.sessions
    }

    /// The user offsets as indices.
    pub fn user_offsets_usize(&self) -> &[usize] {
        &self.users
    }

    /// The users' event rows, `event_offsets[b] = session_offsets[user_offsets[b]]`.
    pub fn event_offsets(&self) -> Vec<usize> {
        event_offsets_of(&self.sessions, &self.users)
    }

    /// The event rows of user `b`'s sessions, one range per session.
    pub fn user_sessions(&self, b: usize) -> impl Iterator<Item = std::ops::Range<usize>> + '_ {
        (self.users[b]..self.users[b + 1]).map(|s| self.sessions[s]..self.sessions[s + 1])
    }

    /// The flat form: the values on the users' event offsets (in the
    /// session offsets' dtype).
    pub fn to_flat(&self) -> JaggedTensor {
        let offsets = offsets_tensor(self.session_offsets.dtype(), &self.event_offsets());
        JaggedTensor::from_offsets(
            self.values.data().clone(),
            self.inner(),
            offsets.data().clone(),
        )
        .unwrap_or_else(|e| unreachable!("checked nested offsets give valid flat ones: {e}"))
    }

    /// The sessions as a flat jagged tensor: the values on `session_offsets`.
    pub fn to_sessions(&self) -> JaggedTensor {
        JaggedTensor::from_offsets(
            self.values.data().clone(),
            self.inner(),
            self.session_offsets.data().clone(),
        )
        .unwrap_or_else(|e| unreachable!("checked session offsets: {e}"))
    }
}
