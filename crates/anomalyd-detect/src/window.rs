//! Per-key sliding windows of one metric: the last `size` values of a key (or their first
//! differences) form its vector. Each new value yields one vector, so every record gets
//! one score: a key's first values are padded with its earliest value. Key state is
//! bounded by an LRU: the least recently seen key goes first.

use std::collections::VecDeque;
use std::num::NonZeroUsize;

use lru::LruCache;

#[derive(Debug)]
pub struct Windower {
    size: usize,
    differences: bool,
    keys: LruCache<Box<str>, VecDeque<f32>>,
    evictions: u64,
}

impl Windower {
    /// An upper bound on one key's window state in bytes: its values (f32), the deque, and
    /// the key and LRU entry (128 bytes allowed for a key).
    pub fn key_bytes(size: usize, differences: bool) -> usize {
        4 * (size + usize::from(differences)) + std::mem::size_of::<VecDeque<f32>>() + 128 + 64
    }

    pub fn new(size: usize, differences: bool, max_keys: usize) -> Self {
        let cap = NonZeroUsize::new(max_keys).unwrap_or(NonZeroUsize::MIN);
        Windower {
            size,
            differences,
            keys: LruCache::new(cap),
            evictions: 0,
        }
    }

    /// Values kept per key: one more than the vector when it holds differences.
    fn span(&self) -> usize {
        self.size + usize::from(self.differences)
    }

    /// Adds a value for `key` and returns the key's current vector.
    pub fn push(&mut self, key: Option<&str>, value: f32) -> Vec<f32> {
        let key = key.unwrap_or("");
        let span = self.span();
        if let Some(w) = self.keys.get_mut(key) {
            w.pop_front();
            w.push_back(value);
        } else {
            if self.keys.len() == self.keys.cap().get() {
                self.evictions += 1;
            }
            self.keys
                .push(key.into(), std::iter::repeat_n(value, span).collect());
        }
        let w = self.keys.peek(key).expect("window was just inserted");
        if self.differences {
            w.iter().zip(w.iter().skip(1)).map(|(a, b)| b - a).collect()
        } else {
            w.iter().copied().collect()
        }
    }

    /// Keys evicted to stay within `max_keys` since the last call (for a counter that its
    /// owner increments by what happened, never sets).
    pub fn take_evictions(&mut self) -> u64 {
        std::mem::take(&mut self.evictions)
    }

    pub fn keys(&self) -> usize {
        self.keys.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pads_then_slides_per_key() {
        let mut w = Windower::new(3, false, 10);
        assert_eq!(w.push(Some("a"), 1.0), vec![1.0, 1.0, 1.0]);
        assert_eq!(w.push(Some("b"), 9.0), vec![9.0, 9.0, 9.0]);
        assert_eq!(w.push(Some("a"), 2.0), vec![1.0, 1.0, 2.0]);
        assert_eq!(w.push(Some("a"), 3.0), vec![1.0, 2.0, 3.0]);
        assert_eq!(w.push(Some("a"), 4.0), vec![2.0, 3.0, 4.0]);
        assert_eq!(w.push(Some("b"), 8.0), vec![9.0, 9.0, 8.0]);
    }

    #[test]
    fn differences() {
        let mut w = Windower::new(2, true, 10);
        assert_eq!(w.push(None, 5.0), vec![0.0, 0.0]);
        assert_eq!(w.push(None, 7.0), vec![0.0, 2.0]);
        assert_eq!(w.push(None, 4.0), vec![2.0, -3.0]);
    }

    #[test]
    fn key_state_is_bounded_and_evictions_counted() {
        let mut w = Windower::new(2, false, 2);
        w.push(Some("a"), 1.0);
        w.push(Some("b"), 1.0);
        w.push(Some("a"), 2.0);
        w.push(Some("c"), 1.0); // evicts b, the least recently seen
        assert_eq!(w.keys(), 2);
        assert_eq!(w.take_evictions(), 1);
        assert_eq!(w.take_evictions(), 0);
        assert_eq!(w.push(Some("a"), 3.0), vec![2.0, 3.0]);
        assert_eq!(w.push(Some("b"), 5.0), vec![5.0, 5.0], "b starts over");
    }
}
