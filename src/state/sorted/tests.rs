use std::collections::BTreeMap;

use proptest::prelude::*;

use super::*;
use crate::state::CellId;

/// Entries of a leaf of `u64` keys: 256 bytes / 8.
const CAP: usize = 32;

#[test]
fn ascending_inserts_fill_every_leaf() {
    let mut map = SortedMap::default();
    for i in 0..10_000u64 {
        map.insert(i, i);
    }
    let sizes = map.leaf_sizes();
    assert_eq!(sizes.len(), 10_000usize.div_ceil(CAP));
    assert!(
        sizes[..sizes.len() - 1].iter().all(|&n| n == CAP),
        "{sizes:?}"
    );
    assert!(map.iter().map(|(k, _)| *k).eq(0..10_000));
}

/// Keys just above a full leaf's last one, in descending order, would leave one key per leaf if
/// every full leaf split at the insert point.
#[test]
fn no_insert_order_leaves_inner_leaves_under_a_quarter_full() {
    let mut map = SortedMap::default();
    for i in 0..CAP as u64 {
        map.insert(i * 1_000_000, 0);
    }
    map.insert(u64::MAX, 0);
    for i in (0..5_000u64).rev() {
        map.insert(15_000_000 + i, 0);
    }
    let sizes = map.leaf_sizes();
    assert!(
        sizes[..sizes.len() - 1].iter().all(|&n| n > CAP / 4),
        "{sizes:?}"
    );
}

/// Several supervisors, each naming its cells in ascending order, interleaved.
#[test]
fn interleaved_ascending_runs_fill_leaves_three_quarters() {
    let mut map = SortedMap::default();
    for i in 0..4_000u64 {
        for run in 0..4u64 {
            map.insert(run * 1_000_000 + i, 0);
        }
    }
    let sizes = map.leaf_sizes();
    let inner = &sizes[..sizes.len() - 1];
    let mean = inner.iter().sum::<usize>() as f64 / inner.len() as f64;
    assert!(mean >= 0.74 * CAP as f64, "{mean} of {CAP}: {sizes:?}");
}

#[test]
fn a_sorted_collect_is_packed_and_equals_inserts() {
    let entries: Vec<(u64, u64)> = (0..1_000).map(|i| (i * 3, i)).collect();
    let built: SortedMap<u64, u64> = entries.iter().copied().collect();
    let mut inserted = SortedMap::default();
    for &(k, v) in entries.iter().rev() {
        inserted.insert(k, v);
    }
    assert_eq!(built, inserted);
    assert_eq!(built.len(), 1_000);
    assert!(built.leaf_sizes().iter().rev().skip(1).all(|&n| n == CAP));
    assert_eq!(built.get(&300), Some(&100));
    assert_eq!(built.get(&301), None);
    let unsorted: SortedMap<u64, u64> = [(2, 0), (1, 0), (2, 5)].into_iter().collect();
    assert_eq!(format!("{unsorted:?}"), "{1: 0, 2: 5}");
}

#[test]
fn borrowed_lookups_find_shared_string_keys() {
    let mut map: SortedMap<CellId, u32> = SortedMap::default();
    for i in 0..500u32 {
        map.insert(CellId::new(&format!("cell-{i:04}")).unwrap(), i);
    }
    let (key, value) = map.get_key_value("cell-0042").unwrap();
    assert_eq!((key.as_str(), *value), ("cell-0042", 42));
    assert_eq!(map.get("cell-9999"), None);
    let snapshot = map.clone();
    map.insert(CellId::new("cell-0042").unwrap(), 7);
    assert_eq!(
        snapshot.get("cell-0042"),
        Some(&42),
        "clones share nothing they can change"
    );
    assert_eq!(map.get("cell-0042"), Some(&7));
}

proptest! {
    /// Against a `BTreeMap`: every insert's answer, every lookup, the order, and clones taken
    /// along the way staying what they were.
    #[test]
    fn matches_a_btree_map_and_clones_stay_put(
        ops in prop::collection::vec((0u16..2_000, any::<u8>(), any::<bool>()), 0..3_000),
    ) {
        let mut map = SortedMap::default();
        let mut model = BTreeMap::new();
        let mut snapshots = Vec::new();
        for (i, &(k, v, snap)) in ops.iter().enumerate() {
            // u64 keys: 32 to a leaf, so that thousands of keys make several branch levels.
            let k = u64::from(k);
            prop_assert_eq!(map.insert(k, v), model.insert(k, v));
            if snap && i % 7 == 0 {
                snapshots.push((map.clone(), model.clone()));
            }
        }
        prop_assert_eq!(map.len(), model.len());
        prop_assert!(map.iter().map(|(k, v)| (*k, *v)).eq(model.iter().map(|(k, v)| (*k, *v))));
        for k in 0..2_000u64 {
            prop_assert_eq!(map.get(&k), model.get(&k));
        }
        for (snapshot, then) in snapshots {
            prop_assert_eq!(snapshot.len(), then.len());
            prop_assert!(snapshot.iter().map(|(k, v)| (*k, *v)).eq(then.into_iter()));
        }
        let rebuilt: SortedMap<u64, u8> = model.iter().map(|(k, v)| (*k, *v)).collect();
        prop_assert_eq!(rebuilt, map);
    }
}
