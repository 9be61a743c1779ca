//! Nested jagged tensors (`jagged::nested`, issue 11): each offsets rule
//! broken at either level (sessions, users) is a typed error naming the
//! level and the first bad index; empty levels are valid; nested -> flat
//! and flat + session offsets -> nested over adversarial nestings, i32 and
//! i64 offsets.

mod events_support;

use events_support::*;
use jagged::ir::DType;
use jagged::nested::{Level, NestedError, NestedJagged, OffsetsFault};
use jagged::testing::Rng;

// ---------------------------------------------------------------- nested type

fn nested(values: &[f64], sessions: &[i64], users: &[i64]) -> Result<NestedJagged, NestedError> {
    NestedJagged::new(
        tensor(DType::F32, vec![values.len()], values),
        raw_index(DType::I64, sessions),
        raw_index(DType::I32, users),
    )
}

fn offsets_error(err: NestedError) -> (Level, usize, OffsetsFault) {
    match err {
        NestedError::Offsets {
            level,
            index,
            fault,
        } => (level, index, fault),
        other => panic!("expected an offsets error, got {other}"),
    }
}

/// Each offsets rule broken at each level is a typed error naming the
/// level and the first bad index.
#[test]
fn bad_offsets_name_the_level_and_index() {
    let v = [1.0, 2.0, 3.0, 4.0, 5.0];
    let good_sessions = [0, 2, 2, 5];
    let good_users = [0, 1, 3];
    assert!(nested(&v, &good_sessions, &good_users).is_ok());
    use Level::{Sessions, Users};
    use OffsetsFault::*;
    let session_cases: [(&[i64], usize, OffsetsFault); 6] = [
        (&[], 0, Empty),
        (&[1, 2, 2, 5], 0, FirstNotZero { value: 1 }),
        (&[0, -1, 2, 5], 1, Negative { value: -1 }),
        (
            &[0, 3, 2, 5],
            2,
            Decreasing {
                value: 2,
                previous: 3,
            },
        ),
        (&[0, 2, 2, 4], 3, LastMismatch { value: 4, rows: 5 }),
        (&[0, 2, 2, 6], 3, LastMismatch { value: 6, rows: 5 }),
    ];
    for (sessions, index, fault) in session_cases {
        // Two users over however many sessions there are (the user level
        // is valid for the sessions given where it can be).
        let s = sessions.len().saturating_sub(1) as i64;
        let users = [0, s.min(1), s];
        let err = nested(&v, sessions, &users).expect_err("bad session offsets");
        assert_eq!(err.level(), Some(Sessions), "{err}");
        assert_eq!(err.index(), Some(index), "{err}");
        assert_eq!(offsets_error(err), (Sessions, index, fault));
    }
    let user_cases: [(&[i64], usize, OffsetsFault); 6] = [
        (&[], 0, Empty),
        (&[2, 3], 0, FirstNotZero { value: 2 }),
        (&[0, -2, 3], 1, Negative { value: -2 }),
        (
            &[0, 2, 1, 3],
            2,
            Decreasing {
                value: 1,
                previous: 2,
            },
        ),
        (&[0, 1, 2], 2, LastMismatch { value: 2, rows: 3 }),
        // The user level counts sessions, not events (T = 5).
        (&[0, 1, 5], 2, LastMismatch { value: 5, rows: 3 }),
    ];
    for (users, index, fault) in user_cases {
        let err = nested(&v, &good_sessions, users).expect_err("bad user offsets");
        let text = err.to_string();
        assert!(text.contains("user_offsets"), "{text}");
        assert_eq!(offsets_error(err), (Users, index, fault));
    }
    // Session errors are found first when both levels are bad.
    let err = nested(&v, &[0, 9], &[1]).expect_err("both bad");
    assert_eq!(err.level(), Some(Sessions));
    // Offsets of a float dtype or of two dims.
    let err = NestedJagged::new(
        tensor(DType::F32, vec![5], &v),
        tensor(DType::F32, vec![2], &[0.0, 5.0]),
        raw_index(DType::I32, &[0, 1]),
    )
    .expect_err("float offsets");
    assert!(
        matches!(
            err,
            NestedError::OffsetsType {
                level: Sessions,
                ..
            }
        ),
        "{err}"
    );
    let err = NestedJagged::new(
        tensor(DType::F32, vec![5], &v),
        raw_index(DType::I32, &[0, 5]),
        tensor(DType::I64, vec![1, 2], &[0.0, 1.0]),
    )
    .expect_err("2-D offsets");
    assert!(
        matches!(err, NestedError::OffsetsType { level: Users, .. }),
        "{err}"
    );
}

/// Empty everything is valid: no user, users without sessions, empty
/// sessions, `T = 0`.
#[test]
fn empty_levels_are_valid() {
    let n = nested(&[], &[0], &[0]).expect("B = 0");
    assert_eq!((n.users(), n.sessions(), n.events()), (0, 0, 0));
    assert_eq!(n.event_offsets(), [0]);
    let n = nested(&[], &[0, 0, 0], &[0, 0, 2, 2]).expect("empty sessions");
    assert_eq!((n.users(), n.sessions(), n.events()), (3, 2, 0));
    assert_eq!(n.event_offsets(), [0, 0, 0, 0]);
    assert_eq!(n.to_flat().offsets_usize(), [0, 0, 0, 0]);
}

/// nested -> flat: `event_offsets[b] = session_offsets[user_offsets[b]]`;
/// flat + session offsets -> nested gives the nesting back (up to where
/// empty sessions on a user boundary go), in both offsets dtypes.
#[test]
fn flat_and_nested_convert_both_ways() {
    let mut rng = Rng::new(21);
    for index in [DType::I32, DType::I64] {
        for nesting in adversarial_nestings(&mut rng) {
            let (sessions, users) = nesting_offsets(&nesting);
            let t = sessions[sessions.len() - 1];
            let values = random_values(&mut rng, DType::F32, t * 3);
            let n = NestedJagged::new(
                tensor(DType::F32, vec![t, 3], &values),
                index_tensor(index, &sessions),
                index_tensor(index, &users),
            )
            .unwrap_or_else(|e| panic!("{nesting:?}: {e}"));
            // The users' events, counted independently.
            let expected = offsets_of(nesting.iter().map(|u| u.iter().sum::<usize>()));
            assert_eq!(n.event_offsets(), expected, "{nesting:?}");
            let flat = n.to_flat();
            assert_eq!(flat.offsets_usize(), expected);
            assert_eq!(flat.offsets().dtype(), index);
            assert_eq!(flat.values().to_f64(), values);
            let back = NestedJagged::from_flat(&flat, n.session_offsets().clone())
                .unwrap_or_else(|e| panic!("{nesting:?}: {e}"));
            assert_eq!(back.session_offsets_usize(), &sessions[..]);
            assert_eq!(back.user_offsets().dtype(), index);
            // Every user keeps its events; sessions keep their rows.
            assert_eq!(back.event_offsets(), expected, "{nesting:?}");
            for b in 0..nesting.len() {
                let rows: Vec<_> = back.user_sessions(b).filter(|r| !r.is_empty()).collect();
                let want: Vec<_> = n.user_sessions(b).filter(|r| !r.is_empty()).collect();
                assert_eq!(rows, want, "{nesting:?} user {b}");
            }
            if nesting.iter().flatten().all(|&l| l > 0) {
                assert_eq!(back.user_offsets_usize(), &users[..], "{nesting:?}");
            }
        }
    }
    // An empty session on a user boundary goes to the later user, trailing
    // ones to the last user.
    let flat = jagged::ir::JaggedTensor::from_offsets(
        jagged::ir::TensorData::F32(vec![1.0, 2.0, 3.0]),
        &[],
        jagged::ir::TensorData::I64(vec![0, 2, 3]),
    )
    .unwrap();
    let n = NestedJagged::from_flat(&flat, raw_index(DType::I32, &[0, 2, 2, 3, 3])).unwrap();
    assert_eq!(n.user_offsets_usize(), [0, 1, 4]);
    // A session across a user boundary.
    let err = NestedJagged::from_flat(&flat, raw_index(DType::I32, &[0, 1, 3])).unwrap_err();
    assert_eq!(
        err,
        NestedError::SessionSpansUsers {
            user: 1,
            row: 2,
            session: 1,
            start: 1,
            end: 3
        }
    );
    // Bad session offsets, and bad flat offsets.
    let err = NestedJagged::from_flat(&flat, raw_index(DType::I32, &[0, 2])).unwrap_err();
    assert_eq!(err.level(), Some(Level::Sessions));
    let err = NestedJagged::from_flat_parts(
        tensor(DType::F32, vec![3], &[1.0, 2.0, 3.0]),
        &raw_index(DType::I64, &[0, 4, 3]),
        raw_index(DType::I32, &[0, 3]),
    )
    .unwrap_err();
    assert_eq!(
        err,
        NestedError::EventOffsets {
            index: 2,
            fault: OffsetsFault::Decreasing {
                value: 3,
                previous: 4
            }
        }
    );
}
