//! Live search subscriptions: a query on a topic, told of every newly
//! indexed record that matches it, in offset order per partition.

use std::sync::Mutex;

use super::{Doc, Query};

/// Receives a matching document; returns false once the subscriber is gone.
pub type Sink = Box<dyn Fn(&Doc) -> bool + Send + Sync>;

struct Sub {
    id: u64,
    topic: String,
    query: Query,
    sink: Sink,
}

#[derive(Default)]
pub struct Live {
    /// (last id, subscriptions, closed): once closed, nothing subscribes.
    subs: Mutex<(u64, Vec<Sub>, bool)>,
}

impl Live {
    /// Starts a subscription; records indexed from now on are offered to it.
    /// `None` once [`Live::close_all`] ran (the broker is stopping).
    pub fn subscribe(&self, topic: &str, query: Query, sink: Sink) -> Option<u64> {
        let mut s = self.subs.lock().expect("live subscriptions poisoned");
        if s.2 {
            return None;
        }
        s.0 += 1;
        let id = s.0;
        s.1.push(Sub { id, topic: topic.to_string(), query, sink });
        Some(id)
    }

    pub fn unsubscribe(&self, id: u64) {
        self.subs.lock().expect("live subscriptions poisoned").1.retain(|s| s.id != id);
    }

    /// Ends every subscription (at shutdown): their sinks are dropped.
    pub fn close_all(&self) {
        let mut s = self.subs.lock().expect("live subscriptions poisoned");
        s.1.clear();
        s.2 = true;
    }

    pub fn count(&self) -> usize {
        self.subs.lock().expect("live subscriptions poisoned").1.len()
    }

    /// Offers newly indexed documents of `topic` to its subscriptions.
    pub fn publish(&self, topic: &str, docs: &[Doc]) {
        let mut s = self.subs.lock().expect("live subscriptions poisoned");
        s.1.retain(|sub| sub.topic != topic || docs.iter().filter(|d| sub.query.matches(d)).all(|d| (sub.sink)(d)));
    }
}
