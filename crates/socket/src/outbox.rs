//! A connection's queue of frames to write: bounded, one writer (the connection's task) and
//! many offerers (whoever fans a frame out to the class), never blocking an offerer — a full
//! queue is the connection's problem (it is closed as slow), not the class's.
//!
//! Why not `tokio::sync::mpsc`: an idle connection is most connections, and a tokio channel
//! costs every one of them about 700 bytes before its first frame (cache-padded halves and a
//! first block of 32 slots, kept for its life). This is a mutex around a `VecDeque` that grows
//! only as frames wait, and a `Notify` whose stored permit closes the race between an empty
//! check and the wait.

use std::collections::VecDeque;
use std::sync::{Arc, Mutex, PoisonError};

use tokio::sync::Notify;

#[derive(Debug)]
struct Shared<T> {
    state: Mutex<State<T>>,
    ready: Notify,
}

#[derive(Debug)]
struct State<T> {
    queue: VecDeque<T>,
    capacity: usize,
    /// The sender is gone (no more frames will come) or the receiver is (nobody reads).
    closed: bool,
}

/// Why a frame was not queued.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OfferError {
    Full,
    Closed,
}

/// The offering side (kept by the hub).
#[derive(Debug)]
pub struct Sender<T>(Arc<Shared<T>>);

/// The writing side (the connection's task).
#[derive(Debug)]
pub struct Receiver<T>(Arc<Shared<T>>);

/// A queue of at most `capacity` waiting frames.
pub fn outbox<T>(capacity: usize) -> (Sender<T>, Receiver<T>) {
    let shared = Arc::new(Shared {
        state: Mutex::new(State {
            queue: VecDeque::new(),
            capacity: capacity.max(1),
            closed: false,
        }),
        ready: Notify::new(),
    });
    (Sender(shared.clone()), Receiver(shared))
}

impl<T> Shared<T> {
    fn state(&self) -> std::sync::MutexGuard<'_, State<T>> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

impl<T> Sender<T> {
    /// Queues `item` unless the queue is full or its reader is gone.
    pub fn try_send(&self, item: T) -> Result<(), OfferError> {
        {
            let mut state = self.0.state();
            if state.closed {
                return Err(OfferError::Closed);
            }
            if state.queue.len() >= state.capacity {
                return Err(OfferError::Full);
            }
            state.queue.push_back(item);
        }
        self.0.ready.notify_one();
        Ok(())
    }
}

impl<T> Drop for Sender<T> {
    fn drop(&mut self) {
        self.0.state().closed = true;
        self.0.ready.notify_one();
    }
}

impl<T> Receiver<T> {
    /// The next frame; `None` once the sender is gone and the queue is empty.
    pub async fn recv(&mut self) -> Option<T> {
        loop {
            {
                let mut state = self.0.state();
                if let Some(item) = state.queue.pop_front() {
                    // A burst's buffer is not kept by a connection that went quiet again.
                    if state.queue.is_empty() && state.queue.capacity() > 64 {
                        state.queue.shrink_to(8);
                    }
                    return Some(item);
                }
                if state.closed {
                    return None;
                }
            }
            // A frame offered after the check above left a permit: this returns at once.
            self.0.ready.notified().await;
        }
    }

    /// The next frame if one is waiting.
    pub fn try_recv(&mut self) -> Option<T> {
        self.0.state().queue.pop_front()
    }
}

impl<T> Drop for Receiver<T> {
    fn drop(&mut self) {
        let mut state = self.0.state();
        state.closed = true;
        state.queue.clear();
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use std::time::Duration;

    use super::*;

    #[tokio::test]
    async fn frames_come_out_in_order_and_a_full_queue_refuses_without_waiting() {
        let (tx, mut rx) = outbox(2);
        tx.try_send(1).unwrap();
        tx.try_send(2).unwrap();
        assert_eq!(tx.try_send(3), Err(OfferError::Full));
        assert_eq!(rx.recv().await, Some(1));
        assert_eq!(rx.try_recv(), Some(2));
        assert_eq!(rx.try_recv(), None);
        tx.try_send(4).unwrap();
        assert_eq!(rx.recv().await, Some(4));
    }

    #[tokio::test]
    async fn a_waiting_reader_wakes_for_a_frame_and_ends_when_the_sender_goes() {
        let (tx, mut rx) = outbox(8);
        let reader = tokio::spawn(async move {
            let mut got = Vec::new();
            while let Some(x) = rx.recv().await {
                got.push(x);
            }
            got
        });
        tokio::time::sleep(Duration::from_millis(20)).await;
        for i in 0..5 {
            tx.try_send(i).unwrap();
            tokio::task::yield_now().await;
        }
        drop(tx);
        let got = tokio::time::timeout(Duration::from_secs(2), reader)
            .await
            .unwrap()
            .unwrap();
        assert_eq!(got, vec![0, 1, 2, 3, 4]);
    }

    #[tokio::test]
    async fn nothing_is_queued_for_a_reader_that_is_gone() {
        let (tx, rx) = outbox::<u32>(8);
        drop(rx);
        assert_eq!(tx.try_send(1), Err(OfferError::Closed));
    }

    /// Many offerers at once and one reader: every frame arrives once (no lost wake-up).
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn concurrent_offers_are_all_read() {
        let (tx, mut rx) = outbox(100_000);
        let tx = Arc::new(tx);
        let offerers: Vec<_> = (0..4)
            .map(|o| {
                let tx = tx.clone();
                tokio::spawn(async move {
                    for i in 0..10_000 {
                        tx.try_send(o * 10_000 + i).unwrap();
                        if i % 100 == 0 {
                            tokio::task::yield_now().await;
                        }
                    }
                })
            })
            .collect();
        let reader = tokio::spawn(async move {
            let mut n = 0;
            while n < 40_000 {
                tokio::time::timeout(Duration::from_secs(5), rx.recv())
                    .await
                    .unwrap()
                    .unwrap();
                n += 1;
            }
            n
        });
        for o in offerers {
            o.await.unwrap();
        }
        assert_eq!(reader.await.unwrap(), 40_000);
    }
}
