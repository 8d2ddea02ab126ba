//! `Slots<T>`: a persistent array (push and update in place), the storage of the cell table.
//!
//! The ingest thread updates scattered cells and publishes a snapshot every batch, so the first
//! update of an element after a publish copies what holds it. Here that is one leaf of
//! [`LEAF`] elements plus the branches above it (an imbl map copies 64-entry nodes and bumps a
//! reference count per entry). With plain-data elements a leaf copy is a memcpy. Clones of the
//! whole array are O(1) and share everything.

use std::fmt;
use std::sync::Arc;

const LEAF_BITS: u32 = 2;
/// Elements per leaf: what one update after a publish copies. With cell records of 144 bytes 4
/// beat 8 by a fifth at 10^5 scattered cells and matched 2; with 120-byte records 4 and 8, and
/// branches of 8 or 16, measured alike. At that size the tree is as deep with 4 as with 8. With
/// 36-byte records a leaf of 4 is 160 bytes with its reference counts (an allocation class of
/// that size), one of 8 is 304 (320): about the same memory per record, and half the copy per
/// update.
pub const LEAF: usize = 1 << LEAF_BITS;
const FAN_BITS: u32 = 4;
/// Children per branch.
const FAN: usize = 1 << FAN_BITS;

/// Nodes have a fixed number of places, filled from the front: a push into a node that is not
/// shared fills its next place in place, with no reallocation.
#[derive(Clone)]
enum Node<T> {
    Branch(Arc<[Option<Node<T>>; FAN]>),
    /// Places past the array's length hold `T::default()`: no `Option` per element, so an
    /// element's size is all it costs (a cell record has no spare value for `None` to use).
    Leaf(Arc<[T; LEAF]>),
}

impl<T: Default> Node<T> {
    fn empty(height: u32) -> Node<T> {
        if height == 0 {
            Node::Leaf(Arc::new(std::array::from_fn(|_| T::default())))
        } else {
            Node::Branch(Arc::new(std::array::from_fn(|_| None)))
        }
    }
}

/// An append-only, updatable persistent array of at most `u32::MAX` elements.
#[derive(Clone)]
pub struct Slots<T> {
    root: Node<T>,
    len: usize,
    /// Branch levels above the leaves (0: the root is a leaf).
    height: u32,
}

impl<T: Default> Default for Slots<T> {
    fn default() -> Self {
        Slots {
            root: Node::empty(0),
            len: 0,
            height: 0,
        }
    }
}

/// Which child of a branch at `height` (≥ 1) holds element `i`.
fn digit(i: usize, height: u32) -> usize {
    (i >> (LEAF_BITS + FAN_BITS * (height - 1))) & (FAN - 1)
}

impl<T: Clone + Default> Slots<T> {
    pub fn len(&self) -> usize {
        self.len
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    pub fn get(&self, i: usize) -> Option<&T> {
        if i >= self.len {
            return None;
        }
        let mut node = &self.root;
        let mut height = self.height;
        loop {
            match node {
                Node::Branch(children) => {
                    node = children[digit(i, height)].as_ref()?;
                    height -= 1;
                }
                Node::Leaf(items) => return Some(&items[i & (LEAF - 1)]),
            }
        }
    }

    /// The element, unshared first: copies the leaf and branches that other clones still share.
    pub fn get_mut(&mut self, i: usize) -> Option<&mut T> {
        if i >= self.len {
            return None;
        }
        Some(self.place(i))
    }

    /// The array holding `items` in order, built bottom-up in one pass: the same value as pushing
    /// them one by one, without walking down from the root for each.
    pub fn from_vec(items: Vec<T>) -> Slots<T> {
        let len = items.len();
        if len == 0 {
            return Slots::default();
        }
        // The height pushes would have reached: the lowest whose capacity holds every item.
        let mut height = 0;
        while len > LEAF << (FAN_BITS * height) {
            height += 1;
        }
        let mut items = items.into_iter();
        let mut nodes: Vec<Node<T>> = Vec::with_capacity(len.div_ceil(LEAF));
        for _ in 0..len.div_ceil(LEAF) {
            let leaf: [T; LEAF] = std::array::from_fn(|_| items.next().unwrap_or_default());
            nodes.push(Node::Leaf(Arc::new(leaf)));
        }
        for _ in 0..height {
            let mut children = nodes.into_iter();
            let count = children.len().div_ceil(FAN);
            nodes = (0..count)
                .map(|_| {
                    let branch: [Option<Node<T>>; FAN] = std::array::from_fn(|_| children.next());
                    Node::Branch(Arc::new(branch))
                })
                .collect();
        }
        Slots {
            root: nodes.pop().unwrap_or_else(|| Node::empty(0)),
            len,
            height,
        }
    }

    /// Appends `value` and returns its index.
    pub fn push(&mut self, value: T) -> usize {
        let i = self.len;
        if i == LEAF << (FAN_BITS * self.height) {
            let old = std::mem::replace(&mut self.root, Node::empty(0));
            let mut children = std::array::from_fn(|_| None);
            children[0] = Some(old);
            self.root = Node::Branch(Arc::new(children));
            self.height += 1;
        }
        *self.place(i) = value;
        self.len += 1;
        i
    }

    pub fn iter(&self) -> impl Iterator<Item = &T> + '_ {
        (0..self.len).filter_map(|i| self.get(i))
    }

    /// The place of element `i` (which fits under the root), unsharing the path to it and
    /// creating the nodes it lacks.
    fn place(&mut self, i: usize) -> &mut T {
        let mut node = &mut self.root;
        let mut height = self.height;
        loop {
            match node {
                Node::Branch(children) => {
                    node = Arc::make_mut(children)[digit(i, height)]
                        .get_or_insert_with(|| Node::empty(height - 1));
                    height -= 1;
                }
                Node::Leaf(items) => return &mut Arc::make_mut(items)[i & (LEAF - 1)],
            }
        }
    }
}

impl<T: Clone + Default + PartialEq> PartialEq for Slots<T> {
    fn eq(&self, other: &Self) -> bool {
        self.len == other.len && self.iter().eq(other.iter())
    }
}

impl<T: Clone + Default + Eq> Eq for Slots<T> {}

impl<T: Clone + Default + fmt::Debug> fmt::Debug for Slots<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_list().entries(self.iter()).finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn grows_through_several_heights() {
        let mut s = Slots::default();
        let n = LEAF * FAN * FAN + 3;
        for i in 0..n {
            assert_eq!(s.push(i), i);
        }
        assert_eq!(s.height, 3);
        let snapshot = s.clone();
        *s.get_mut(5).unwrap() = 0;
        assert_eq!((s.get(5), snapshot.get(5)), (Some(&0), Some(&5)));
        assert!((0..n).all(|i| snapshot.get(i) == Some(&i)));
        assert_eq!(s.get(n), None);
    }

    #[derive(Debug, Clone)]
    enum Op {
        Push(u16),
        Set(usize, u16),
        Snapshot,
    }

    fn op() -> impl Strategy<Value = Op> {
        prop_oneof![
            any::<u16>().prop_map(Op::Push),
            (any::<usize>(), any::<u16>()).prop_map(|(i, v)| Op::Set(i, v)),
            Just(Op::Snapshot),
        ]
    }

    proptest! {
        /// Built in one pass, it is the array pushes build: same elements, and further pushes
        /// and updates land where they would.
        #[test]
        fn from_vec_is_what_pushes_build(items in prop::collection::vec(any::<u16>(), 0..1200)) {
            let mut built = Slots::from_vec(items.clone());
            let mut pushed = Slots::default();
            for &v in &items {
                pushed.push(v);
            }
            prop_assert_eq!(built.height, pushed.height);
            prop_assert_eq!(&built, &pushed);
            for v in 0..70u16 {
                prop_assert_eq!(built.push(v), pushed.push(v));
            }
            if let Some(first) = built.get_mut(0) {
                *first = 9;
            }
            if let Some(first) = pushed.get_mut(0) {
                *first = 9;
            }
            prop_assert_eq!(built.iter().collect::<Vec<_>>(), pushed.iter().collect::<Vec<_>>());
        }

        /// Behaves as a `Vec`, and a clone taken earlier never sees later changes.
        #[test]
        fn matches_a_vec_and_snapshots_stay_put(ops in prop::collection::vec(op(), 0..700)) {
            let mut slots = Slots::default();
            let mut model: Vec<u16> = Vec::new();
            let mut snapshots = Vec::new();
            for op in ops {
                match op {
                    Op::Push(v) => {
                        prop_assert_eq!(slots.push(v), model.len());
                        model.push(v);
                    }
                    Op::Set(i, v) if !model.is_empty() => {
                        let i = i % model.len();
                        *slots.get_mut(i).unwrap() = v;
                        model[i] = v;
                    }
                    Op::Set(i, _) => prop_assert!(slots.get_mut(i).is_none()),
                    Op::Snapshot => snapshots.push((slots.clone(), model.clone())),
                }
            }
            prop_assert_eq!(slots.iter().copied().collect::<Vec<_>>(), model);
            for (snap, expected) in snapshots {
                prop_assert_eq!(snap.iter().copied().collect::<Vec<_>>(), expected);
            }
        }
    }
}
