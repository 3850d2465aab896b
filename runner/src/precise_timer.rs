//! A timer thread that wakes tasks within tens of microseconds of their deadline. tokio's timer has 1 ms
//! resolution and rounds sleeps up, which would add up to a millisecond to every simulated service time of the
//! reference endpoint; its latency figures are checked against the model to within a few percent.

use std::cmp::Reverse;
use std::collections::BinaryHeap;
use std::sync::OnceLock;
use std::sync::mpsc::{self, RecvTimeoutError};
use std::time::Instant;

use tokio::sync::oneshot;

struct Wake {
    due: Instant,
    sequence: u64,
    sender: oneshot::Sender<()>,
}

impl PartialEq for Wake {
    fn eq(&self, other: &Self) -> bool {
        (self.due, self.sequence) == (other.due, other.sequence)
    }
}
impl Eq for Wake {}
impl PartialOrd for Wake {
    fn partial_cmp(&self, other: &Self) -> Option<std::cmp::Ordering> {
        Some(self.cmp(other))
    }
}
impl Ord for Wake {
    fn cmp(&self, other: &Self) -> std::cmp::Ordering {
        (self.due, self.sequence).cmp(&(other.due, other.sequence))
    }
}

fn timer_thread() -> &'static mpsc::Sender<(Instant, oneshot::Sender<()>)> {
    static SENDER: OnceLock<mpsc::Sender<(Instant, oneshot::Sender<()>)>> = OnceLock::new();
    SENDER.get_or_init(|| {
        let (sender, requests) = mpsc::channel::<(Instant, oneshot::Sender<()>)>();
        std::thread::Builder::new()
            .name("plateau-precise-timer".into())
            .spawn(move || {
                let mut pending: BinaryHeap<Reverse<Wake>> = BinaryHeap::new();
                let mut sequence = 0;
                loop {
                    let request = match pending.peek() {
                        None => requests.recv().map_err(|_| RecvTimeoutError::Disconnected),
                        Some(Reverse(next)) => {
                            requests.recv_timeout(next.due.saturating_duration_since(Instant::now()))
                        }
                    };
                    match request {
                        Ok((due, sender)) => {
                            sequence += 1;
                            pending.push(Reverse(Wake { due, sequence, sender }));
                        }
                        Err(RecvTimeoutError::Timeout) => {}
                        Err(RecvTimeoutError::Disconnected) => return,
                    }
                    let now = Instant::now();
                    while pending.peek().is_some_and(|Reverse(next)| next.due <= now) {
                        let Reverse(wake) = pending.pop().expect("peeked");
                        let _ = wake.sender.send(());
                    }
                }
            })
            .expect("the timer thread starts");
        sender
    })
}

/// Resolves at `due`, within tens of microseconds on an idle machine.
pub async fn sleep_until(due: Instant) {
    if due <= Instant::now() {
        return;
    }
    let (sender, receiver) = oneshot::channel();
    if timer_thread().send((due, sender)).is_err() {
        tokio::time::sleep_until(due.into()).await;
        return;
    }
    let _ = receiver.await;
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[tokio::test]
    async fn wakes_close_to_the_deadline_and_in_order() {
        let mut lateness_us = Vec::new();
        for delay_us in [300u64, 1_500, 4_700, 10_200] {
            let due = Instant::now() + Duration::from_micros(delay_us);
            sleep_until(due).await;
            lateness_us.push(Instant::now().duration_since(due).as_micros());
        }
        lateness_us.sort();
        // tokio's own timer would be up to ~1000 us late here.
        assert!(lateness_us[1] < 500, "median lateness {lateness_us:?} us");
    }
}
