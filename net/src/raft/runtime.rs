//! openraft's async runtime over the workspace `tokio`: real tokio in
//! production, madsim's under `--cfg madsim`, so the controller quorum runs
//! unchanged in the simulation. The one difference between the two builds is
//! the random source of election timeouts: madsim's seeded RNG in the
//! simulation (openraft's own runtime would use `rand::thread_rng()`, which
//! madsim cannot make deterministic).

use std::future::Future;
use std::ops::{Add, AddAssign, Sub, SubAssign};
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use openraft::async_runtime::TokioOneShotSender;
use openraft::{AsyncRuntime, OptionalSend};

/// A point in (possibly simulated) time: `std::time::Instant`, which madsim
/// intercepts.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub struct RtInstant(std::time::Instant);

impl Add<Duration> for RtInstant {
    type Output = RtInstant;
    fn add(self, d: Duration) -> RtInstant {
        RtInstant(self.0 + d)
    }
}

impl AddAssign<Duration> for RtInstant {
    fn add_assign(&mut self, d: Duration) {
        self.0 += d;
    }
}

impl Sub<Duration> for RtInstant {
    type Output = RtInstant;
    fn sub(self, d: Duration) -> RtInstant {
        RtInstant(self.0 - d)
    }
}

impl Sub<RtInstant> for RtInstant {
    type Output = Duration;
    fn sub(self, other: RtInstant) -> Duration {
        self.0.saturating_duration_since(other.0)
    }
}

impl SubAssign<Duration> for RtInstant {
    fn sub_assign(&mut self, d: Duration) {
        self.0 -= d;
    }
}

impl openraft::Instant for RtInstant {
    fn now() -> RtInstant {
        RtInstant(std::time::Instant::now())
    }
}

type BoxSleep = Pin<Box<dyn Future<Output = ()> + Send + Sync>>;

fn sleep_until(deadline: std::time::Instant) -> BoxSleep {
    #[cfg(not(madsim))]
    {
        Box::pin(tokio::time::sleep_until(tokio::time::Instant::from_std(deadline)))
    }
    #[cfg(madsim)]
    {
        Box::pin(tokio::time::sleep_until(deadline))
    }
}

/// A future with a deadline.
pub struct RtTimeout<T> {
    future: Pin<Box<T>>,
    sleep: BoxSleep,
}

impl<R, T: Future<Output = R>> Future for RtTimeout<T> {
    type Output = Result<R, Elapsed>;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        if let Poll::Ready(r) = self.future.as_mut().poll(cx) {
            return Poll::Ready(Ok(r));
        }
        match self.sleep.as_mut().poll(cx) {
            Poll::Ready(()) => Poll::Ready(Err(Elapsed)),
            Poll::Pending => Poll::Pending,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Elapsed;

impl std::fmt::Display for Elapsed {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("deadline elapsed")
    }
}

#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Runtime;

impl AsyncRuntime for Runtime {
    type JoinError = tokio::task::JoinError;
    type JoinHandle<T: OptionalSend + 'static> = tokio::task::JoinHandle<T>;
    type Sleep = BoxSleep;
    type Instant = RtInstant;
    type TimeoutError = Elapsed;
    type Timeout<R, T: Future<Output = R> + OptionalSend> = RtTimeout<T>;
    #[cfg(not(madsim))]
    type ThreadLocalRng = rand::rngs::ThreadRng;
    #[cfg(madsim)]
    type ThreadLocalRng = tokio::madsim::rand::GlobalRng;
    type OneshotSender<T: OptionalSend> = TokioOneShotSender<T>;
    type OneshotReceiverError = tokio::sync::oneshot::error::RecvError;
    type OneshotReceiver<T: OptionalSend> = tokio::sync::oneshot::Receiver<T>;

    fn spawn<T>(future: T) -> Self::JoinHandle<T::Output>
    where
        T: Future + OptionalSend + 'static,
        T::Output: OptionalSend + 'static,
    {
        tokio::spawn(future)
    }

    fn sleep(duration: Duration) -> Self::Sleep {
        sleep_until(std::time::Instant::now() + duration)
    }

    fn sleep_until(deadline: Self::Instant) -> Self::Sleep {
        sleep_until(deadline.0)
    }

    fn timeout<R, F: Future<Output = R> + OptionalSend>(duration: Duration, future: F) -> Self::Timeout<R, F> {
        RtTimeout { future: Box::pin(future), sleep: Self::sleep(duration) }
    }

    fn timeout_at<R, F: Future<Output = R> + OptionalSend>(deadline: Self::Instant, future: F) -> Self::Timeout<R, F> {
        RtTimeout { future: Box::pin(future), sleep: Self::sleep_until(deadline) }
    }

    fn is_panic(join_error: &Self::JoinError) -> bool {
        join_error.is_panic()
    }

    fn thread_rng() -> Self::ThreadLocalRng {
        #[cfg(not(madsim))]
        {
            rand::thread_rng()
        }
        #[cfg(madsim)]
        {
            tokio::madsim::rand::thread_rng()
        }
    }

    fn oneshot<T: OptionalSend>() -> (Self::OneshotSender<T>, Self::OneshotReceiver<T>) {
        let (tx, rx) = tokio::sync::oneshot::channel();
        (TokioOneShotSender(tx), rx)
    }
}
