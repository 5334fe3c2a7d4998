//! One bounded cache for the core's three: verified tokens ([`crate::token_cache`]), the
//! profile endpoint's answers per backend and the worker's answers
//! ([`crate::profile`]). Bounded by a count and by a cost (the bytes an entry holds, as its
//! owner counts them); the oldest entry goes first (a replaced entry counts as new). Keys are hashed
//! with foldhash: they are tokens (up to 16 KiB), for which SipHash costs more than the
//! rest of a lookup, and only verified tokens (or the answers about them) are inserted, so
//! nobody can choose colliding keys.

use std::borrow::Borrow;
use std::collections::hash_map::Entry;
use std::collections::{HashMap, VecDeque};
use std::hash::Hash;

type Map<K, V> = HashMap<K, (V, usize), foldhash::fast::RandomState>;

pub struct Bounded<K, V> {
    map: Map<K, V>,
    order: VecDeque<K>,
    cost: usize,
    max_entries: usize,
    max_cost: usize,
}

impl<K: Hash + Eq + Clone, V> Bounded<K, V> {
    pub fn new(max_entries: usize, max_cost: usize) -> Self {
        Bounded {
            map: Map::default(),
            order: VecDeque::new(),
            cost: 0,
            max_entries,
            max_cost,
        }
    }

    pub fn get<Q>(&self, key: &Q) -> Option<&V>
    where
        K: Borrow<Q>,
        Q: Hash + Eq + ?Sized,
    {
        self.map.get(key).map(|(v, _)| v)
    }

    /// The entry's own key (an `Rc` for tokens: shared, not copied) and its value.
    pub fn get_key_value<Q>(&self, key: &Q) -> Option<(&K, &V)>
    where
        K: Borrow<Q>,
        Q: Hash + Eq + ?Sized,
    {
        self.map.get_key_value(key).map(|(k, (v, _))| (k, v))
    }

    pub fn get_mut<Q>(&mut self, key: &Q) -> Option<&mut V>
    where
        K: Borrow<Q>,
        Q: Hash + Eq + ?Sized,
    {
        self.map.get_mut(key).map(|(v, _)| v)
    }

    /// Insert or replace (a replaced entry moves to the back); evicts the oldest entries
    /// until both bounds hold. Returns whether the entry is kept: not when it alone exceeds
    /// the cost bound.
    pub fn insert(&mut self, key: K, value: V, cost: usize) -> bool {
        if cost > self.max_cost {
            return false;
        }
        // One hash of the key for the insert (tokens are long), one per eviction; the line
        // holds the map's own key (a clone of an `Rc` for tokens: no second copy).
        let in_line = match self.map.entry(key) {
            Entry::Occupied(mut o) => {
                let (_, old_cost) = std::mem::replace(o.get_mut(), (value, cost));
                self.cost -= old_cost;
                let key = o.key().clone();
                // Replacements are rare (a profile answer once per TTL): a linear scan of
                // at most `max_entries` keys.
                self.order.retain(|k| *k != key);
                key
            }
            Entry::Vacant(v) => {
                let key = v.key().clone();
                v.insert((value, cost));
                key
            }
        };
        self.order.push_back(in_line);
        self.cost += cost;
        let mut kept = true;
        while self.map.len() > self.max_entries || self.cost > self.max_cost {
            let Some(oldest) = self.order.pop_front() else {
                break;
            };
            // The new entry is the last in line: evicted only when nothing else is left.
            kept &= !self.order.is_empty();
            if let Some((_, c)) = self.map.remove(&oldest) {
                self.cost -= c;
            }
        }
        kept
    }

    pub fn clear(&mut self) {
        self.map.clear();
        self.order.clear();
        self.cost = 0;
    }

    pub fn len(&self) -> usize {
        self.map.len()
    }

    pub fn is_empty(&self) -> bool {
        self.map.is_empty()
    }

    pub fn cost(&self) -> usize {
        self.cost
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bounded_by_count_and_cost_oldest_first() {
        let mut c: Bounded<String, u32> = Bounded::new(3, 100);
        for i in 0..5 {
            assert!(c.insert(format!("k{i}"), i, 10));
        }
        assert_eq!(c.len(), 3);
        assert!(c.get("k1").is_none() && c.get("k2") == Some(&2));
        // A large entry evicts by cost.
        assert!(c.insert("big".into(), 9, 85));
        assert_eq!((c.len(), c.cost()), (2, 95));
        assert!(c.get("k3").is_none() && c.get("k4").is_some());
        // Too large alone: not kept, nothing evicted.
        assert!(!c.insert("huge".into(), 0, 101));
        assert_eq!(c.len(), 2);
        // Replacing keeps the count and updates the cost.
        assert!(c.insert("k4".into(), 44, 5));
        assert_eq!((c.len(), c.cost(), c.get("k4")), (2, 90, Some(&44)));
        // A replacement whose cost evicts everything else is kept; one that cannot fit
        // beside nothing is refused.
        assert!(c.insert("k4".into(), 45, 100));
        assert_eq!((c.len(), c.cost()), (1, 100));
        c.clear();
        assert!(c.is_empty() && c.cost() == 0);
        // A cache of no entries keeps nothing and says so.
        let mut none: Bounded<String, u32> = Bounded::new(0, 100);
        assert!(!none.insert("k".into(), 1, 1));
        assert!(none.is_empty() && none.cost() == 0);
    }

    #[test]
    fn a_replaced_key_moves_to_the_back() {
        let mut c: Bounded<u8, ()> = Bounded::new(2, 1000);
        c.insert(1, (), 1);
        c.insert(2, (), 1);
        c.insert(1, (), 1);
        c.insert(3, (), 1);
        assert_eq!(c.len(), 2);
        assert!(c.get(&2).is_none() && c.get(&1).is_some() && c.get(&3).is_some());
    }
}
