//! [`Extensions`]: per-call state that hooks hand from one step of a call to the next
//! (a span started before a call and ended after it, a timestamp, a token).

use std::any::{Any, TypeId};
use std::fmt;

/// A small map from type to value, one value per type. Empty, it holds no allocation.
#[derive(Default)]
pub struct Extensions {
    items: Vec<(TypeId, Box<dyn Any + Send + Sync>)>,
}

impl Extensions {
    /// An empty map.
    pub const fn new() -> Self {
        Self { items: Vec::new() }
    }

    /// Store `value`, returning the value of the same type stored before.
    pub fn insert<T: Send + Sync + 'static>(&mut self, value: T) -> Option<T> {
        let id = TypeId::of::<T>();
        match self.items.iter_mut().find(|(t, _)| *t == id) {
            Some((_, slot)) => {
                let old = std::mem::replace(slot, Box::new(value));
                old.downcast::<T>().ok().map(|b| *b)
            }
            None => {
                self.items.push((id, Box::new(value)));
                None
            }
        }
    }

    /// The stored value of type `T`.
    pub fn get<T: Send + Sync + 'static>(&self) -> Option<&T> {
        let id = TypeId::of::<T>();
        self.items.iter().find(|(t, _)| *t == id).and_then(|(_, v)| v.downcast_ref::<T>())
    }

    /// The stored value of type `T`, mutably.
    pub fn get_mut<T: Send + Sync + 'static>(&mut self) -> Option<&mut T> {
        let id = TypeId::of::<T>();
        self.items.iter_mut().find(|(t, _)| *t == id).and_then(|(_, v)| v.downcast_mut::<T>())
    }

    /// Take the stored value of type `T` out.
    pub fn remove<T: Send + Sync + 'static>(&mut self) -> Option<T> {
        let id = TypeId::of::<T>();
        let i = self.items.iter().position(|(t, _)| *t == id)?;
        self.items.swap_remove(i).1.downcast::<T>().ok().map(|b| *b)
    }

    /// Whether nothing is stored.
    pub fn is_empty(&self) -> bool {
        self.items.is_empty()
    }

    /// How many values are stored.
    pub fn len(&self) -> usize {
        self.items.len()
    }
}

impl fmt::Debug for Extensions {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Extensions").field("len", &self.items.len()).finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_value_per_type() {
        let mut e = Extensions::new();
        assert!(e.is_empty());
        assert_eq!(e.insert(5u32), None);
        assert_eq!(e.insert("span"), None);
        assert_eq!(e.insert(7u32), Some(5));
        assert_eq!(e.get::<u32>(), Some(&7));
        *e.get_mut::<u32>().unwrap() += 1;
        assert_eq!(e.remove::<u32>(), Some(8));
        assert_eq!(e.remove::<u32>(), None);
        assert_eq!(e.get::<&str>(), Some(&"span"));
        assert_eq!(e.len(), 1);
    }
}
