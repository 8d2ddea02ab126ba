//! `SortedMap<K, V>`: a persistent, insert-only B+tree, the cell index and each formation's set
//! of cells.
//!
//! Cells are never removed, and a supervisor names its cells in ascending order more often than
//! not (a counter, a timestamp prefix); a fleet interleaves several such runs. A B+tree that
//! splits a full node in half, as `imbl::OrdMap` does, leaves every node behind an ascending
//! run half empty: 40 bytes per cell id instead of 20. Here a full node splits where the new key
//! goes, the new key staying on the left: the run that sent it continues in the left node, which
//! it then fills. The split point is kept within the middle half, so no order of inserts (a
//! producer chooses the ids) leaves a node other than the rightmost ones less than a quarter
//! full: splitting exactly at the new key would let descending keys just past a full node leave
//! one key per node. A run leaves its nodes three quarters full or more, and the rightmost node
//! of the tree splits off the new key alone, so a single ascending run fills them. A leaf keeps
//! its keys and its values in two arrays, 256 bytes of keys: a cell id (8 bytes) and its slot
//! (4) take 12 bytes, where pairs would be padded to 16.
//!
//! Clones are O(1) and share every node; an insert copies the nodes on its path that a clone
//! also holds (`Arc::make_mut`). No `unsafe`.

use std::borrow::Borrow;
use std::fmt;
use std::sync::Arc;

/// Children per branch.
const BRANCH: usize = 16;

pub struct SortedMap<K, V> {
    root: Option<Node<K, V>>,
    len: usize,
}

enum Node<K, V> {
    Leaf(Arc<Leaf<K, V>>),
    Branch(Arc<Branch<K, V>>),
}

struct Leaf<K, V> {
    /// Ascending, at most `Leaf::CAP`.
    keys: Vec<K>,
    /// `values[i]` is `keys[i]`'s.
    values: Vec<V>,
}

/// `keys[i]` is the smallest key under `children[i + 1]`.
struct Branch<K, V> {
    keys: Vec<K>,
    children: Vec<Node<K, V>>,
}

/// What an insert into a full node hands its parent: the new right sibling and its smallest key.
type Split<K, V> = Option<(K, Node<K, V>)>;

impl<K, V> Leaf<K, V> {
    /// Entries per leaf: 256 bytes of keys (at least 4).
    const CAP: usize = {
        let size = std::mem::size_of::<K>();
        if size == 0 || 256 / size < 4 {
            4
        } else {
            256 / size
        }
    };

    /// An empty leaf with room for a full one.
    fn empty() -> Self {
        Leaf {
            keys: Vec::with_capacity(Self::CAP),
            values: Vec::with_capacity(Self::CAP),
        }
    }
}

impl<K: Clone, V: Clone> Clone for Leaf<K, V> {
    /// With room for a full leaf, so that the copy an insert makes does not grow again.
    fn clone(&self) -> Self {
        let mut leaf = Leaf::empty();
        leaf.keys.extend(self.keys.iter().cloned());
        leaf.values.extend(self.values.iter().cloned());
        leaf
    }
}

impl<K: Clone, V: Clone> Clone for Branch<K, V> {
    fn clone(&self) -> Self {
        let mut keys = Vec::with_capacity(BRANCH);
        keys.extend(self.keys.iter().cloned());
        let mut children = Vec::with_capacity(BRANCH + 1);
        children.extend(self.children.iter().cloned());
        Branch { keys, children }
    }
}

impl<K, V> Clone for Node<K, V> {
    fn clone(&self) -> Self {
        match self {
            Node::Leaf(l) => Node::Leaf(l.clone()),
            Node::Branch(b) => Node::Branch(b.clone()),
        }
    }
}

impl<K, V> Clone for SortedMap<K, V> {
    fn clone(&self) -> Self {
        SortedMap {
            root: self.root.clone(),
            len: self.len,
        }
    }
}

impl<K, V> Default for SortedMap<K, V> {
    fn default() -> Self {
        SortedMap { root: None, len: 0 }
    }
}

impl<K: Ord + Clone, V: Clone> SortedMap<K, V> {
    pub fn len(&self) -> usize {
        self.len
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    pub fn get<Q: Ord + ?Sized>(&self, key: &Q) -> Option<&V>
    where
        K: Borrow<Q>,
    {
        self.get_key_value(key).map(|(_, v)| v)
    }

    pub fn get_key_value<Q: Ord + ?Sized>(&self, key: &Q) -> Option<(&K, &V)>
    where
        K: Borrow<Q>,
    {
        let mut node = self.root.as_ref()?;
        loop {
            match node {
                Node::Branch(b) => {
                    node = &b.children[b.keys.partition_point(|k| k.borrow() <= key)];
                }
                Node::Leaf(l) => {
                    let i = l.keys.binary_search_by(|k| k.borrow().cmp(key)).ok()?;
                    return Some((&l.keys[i], &l.values[i]));
                }
            }
        }
    }

    /// Inserts or replaces; returns the value replaced.
    pub fn insert(&mut self, key: K, value: V) -> Option<V> {
        let Some(root) = self.root.as_mut() else {
            let mut leaf = Leaf::empty();
            leaf.keys.push(key);
            leaf.values.push(value);
            self.root = Some(Node::Leaf(Arc::new(leaf)));
            self.len = 1;
            return None;
        };
        let (old, split) = insert(root, key, value, true);
        if let Some((separator, right)) = split {
            let left = self.root.take().expect("the root was just split");
            let mut keys = Vec::with_capacity(BRANCH);
            keys.push(separator);
            let mut children = Vec::with_capacity(BRANCH + 1);
            children.extend([left, right]);
            self.root = Some(Node::Branch(Arc::new(Branch { keys, children })));
        }
        if old.is_none() {
            self.len += 1;
        }
        old
    }

    /// Every entry in ascending key order.
    pub fn iter(&self) -> Iter<'_, K, V> {
        Iter {
            branches: Vec::new(),
            leaf: [].iter().zip([].iter()),
            root: self.root.as_ref(),
            remaining: self.len,
        }
    }

    pub fn values(&self) -> impl Iterator<Item = &V> + '_ {
        self.iter().map(|(_, v)| v)
    }

    pub fn keys(&self) -> impl Iterator<Item = &K> + '_ {
        self.iter().map(|(k, _)| k)
    }

    /// Builds the tree from entries in strictly ascending key order, every node full (the last
    /// of each level excepted). What a checkpoint restore does.
    fn from_sorted(entries: Vec<(K, V)>) -> Self {
        let len = entries.len();
        let mut level: Vec<(K, Node<K, V>)> = Vec::new();
        let mut entries = entries.into_iter().peekable();
        while entries.peek().is_some() {
            let mut leaf = Leaf::empty();
            for (k, v) in entries.by_ref().take(Leaf::<K, V>::CAP) {
                leaf.keys.push(k);
                leaf.values.push(v);
            }
            let first = leaf.keys[0].clone();
            level.push((first, Node::Leaf(Arc::new(leaf))));
        }
        while level.len() > 1 {
            let mut above = Vec::with_capacity(level.len().div_ceil(BRANCH));
            let mut nodes = level.into_iter().peekable();
            while nodes.peek().is_some() {
                let mut keys = Vec::with_capacity(BRANCH);
                let mut children = Vec::with_capacity(BRANCH + 1);
                let mut first = None;
                for (key, node) in nodes.by_ref().take(BRANCH) {
                    match first {
                        None => first = Some(key),
                        Some(_) => keys.push(key),
                    }
                    children.push(node);
                }
                let first = first.expect("a chunk has a node");
                above.push((first, Node::Branch(Arc::new(Branch { keys, children }))));
            }
            level = above;
        }
        SortedMap {
            root: level.pop().map(|(_, node)| node),
            len,
        }
    }
}

/// Where a full node of `cap` entries splits when a new one goes at `at` (see the module docs):
/// the entries from the returned index on move to a new right sibling, and the new entry goes
/// left when the flag says so, else right.
fn split_point(at: usize, cap: usize, rightmost: bool) -> (usize, bool) {
    if rightmost && at == cap {
        return (cap, false);
    }
    let mid = at.clamp(cap / 4, cap - cap / 4);
    (mid, at <= mid)
}

/// Inserts under `node`; `rightmost` says no key in the tree is above this node's.
fn insert<K: Ord + Clone, V: Clone>(
    node: &mut Node<K, V>,
    key: K,
    value: V,
    rightmost: bool,
) -> (Option<V>, Split<K, V>) {
    match node {
        Node::Leaf(leaf) => {
            let leaf = Arc::make_mut(leaf);
            let at = match leaf.keys.binary_search(&key) {
                Ok(i) => return (Some(std::mem::replace(&mut leaf.values[i], value)), None),
                Err(at) => at,
            };
            let cap = Leaf::<K, V>::CAP;
            if leaf.keys.len() < cap {
                leaf.keys.insert(at, key);
                leaf.values.insert(at, value);
                return (None, None);
            }
            let (mid, left) = split_point(at, cap, rightmost);
            let mut right = Leaf::empty();
            right.keys.extend(leaf.keys.drain(mid..));
            right.values.extend(leaf.values.drain(mid..));
            let side = if left { &mut *leaf } else { &mut right };
            let at = if left { at } else { at - mid };
            side.keys.insert(at, key);
            side.values.insert(at, value);
            let separator = right.keys[0].clone();
            let right = Node::Leaf(Arc::new(right));
            (None, Some((separator, right)))
        }
        Node::Branch(branch) => {
            let branch = Arc::make_mut(branch);
            let i = branch.keys.partition_point(|k| *k <= key);
            let last = i == branch.children.len() - 1;
            let (old, split) = insert(&mut branch.children[i], key, value, rightmost && last);
            let Some((separator, child)) = split else {
                return (old, None);
            };
            if branch.children.len() < BRANCH {
                branch.keys.insert(i, separator);
                branch.children.insert(i + 1, child);
                return (old, None);
            }
            // Full: the new child (at `i + 1`) and `BRANCH` others, split as a leaf would be.
            let (mid, left) = split_point(i + 1, BRANCH, rightmost);
            let mid = mid + usize::from(left);
            branch.keys.insert(i, separator);
            branch.children.insert(i + 1, child);
            let mut keys = Vec::with_capacity(BRANCH);
            keys.extend(branch.keys.drain(mid..));
            let separator = branch.keys.pop().expect("a split branch keeps a key");
            let mut children = Vec::with_capacity(BRANCH + 1);
            children.extend(branch.children.drain(mid..));
            let right = Node::Branch(Arc::new(Branch { keys, children }));
            (old, Some((separator, right)))
        }
    }
}

/// Entries in ascending key order (see [`SortedMap::iter`]).
pub struct Iter<'a, K, V> {
    /// Per branch level above the current leaf, the children not visited yet.
    branches: Vec<std::slice::Iter<'a, Node<K, V>>>,
    leaf: std::iter::Zip<std::slice::Iter<'a, K>, std::slice::Iter<'a, V>>,
    root: Option<&'a Node<K, V>>,
    remaining: usize,
}

impl<K, V> ExactSizeIterator for Iter<'_, K, V> {}

impl<'a, K, V> Iterator for Iter<'a, K, V> {
    type Item = (&'a K, &'a V);

    fn size_hint(&self) -> (usize, Option<usize>) {
        (self.remaining, Some(self.remaining))
    }

    fn next(&mut self) -> Option<Self::Item> {
        loop {
            if let Some((k, v)) = self.leaf.next() {
                self.remaining -= 1;
                return Some((k, v));
            }
            let node = match self.root.take() {
                Some(root) => root,
                None => loop {
                    let level = self.branches.last_mut()?;
                    match level.next() {
                        Some(node) => break node,
                        None => {
                            self.branches.pop();
                        }
                    }
                },
            };
            let mut node = node;
            loop {
                match node {
                    Node::Leaf(l) => {
                        self.leaf = l.keys.iter().zip(l.values.iter());
                        break;
                    }
                    Node::Branch(b) => {
                        let mut children = b.children.iter();
                        let Some(first) = children.next() else { break };
                        self.branches.push(children);
                        node = first;
                    }
                }
            }
        }
    }
}

impl<K: Ord + Clone, V: Clone> FromIterator<(K, V)> for SortedMap<K, V> {
    /// In one pass when the keys come strictly ascending (a checkpoint's order), else one insert
    /// at a time (a later equal key replacing an earlier one).
    fn from_iter<I: IntoIterator<Item = (K, V)>>(iter: I) -> Self {
        let entries: Vec<(K, V)> = iter.into_iter().collect();
        if entries.windows(2).all(|w| w[0].0 < w[1].0) {
            return SortedMap::from_sorted(entries);
        }
        let mut map = SortedMap::default();
        for (k, v) in entries {
            map.insert(k, v);
        }
        map
    }
}

impl<K: Ord + Clone, V: Clone + PartialEq> PartialEq for SortedMap<K, V> {
    fn eq(&self, other: &Self) -> bool {
        self.len == other.len && self.iter().eq(other.iter())
    }
}

impl<K: Ord + Clone, V: Clone + Eq> Eq for SortedMap<K, V> {}

impl<K: Ord + Clone + fmt::Debug, V: Clone + fmt::Debug> fmt::Debug for SortedMap<K, V> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_map().entries(self.iter()).finish()
    }
}

#[cfg(test)]
impl<K, V> SortedMap<K, V> {
    /// Entries per leaf, for every leaf in order.
    fn leaf_sizes(&self) -> Vec<usize> {
        fn walk<K, V>(node: &Node<K, V>, out: &mut Vec<usize>) {
            match node {
                Node::Leaf(l) => out.push(l.keys.len()),
                Node::Branch(b) => b.children.iter().for_each(|c| walk(c, out)),
            }
        }
        let mut out = Vec::new();
        if let Some(root) = &self.root {
            walk(root, &mut out);
        }
        out
    }
}

#[cfg(test)]
mod tests;
