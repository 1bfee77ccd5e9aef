//! Console passwords: argon2id hashes (PHC strings) and the random
//! passwords pacer hands out once (bootstrap, reset, new local users).
//!
//! argon2id is slow and memory-hard on purpose: each hash or check takes
//! tens of milliseconds of CPU and 19 MiB. On the async workers that would
//! stall every other request (health checks, webhooks) while someone
//! guesses passwords, so the server's callers use [`hash`] and [`verify`],
//! which run on tokio's blocking pool, at most [`max_concurrent`] at a
//! time; the rest wait their turn without holding a worker.

use std::sync::OnceLock;

use tokio::sync::Semaphore;

use argon2::Argon2;
use argon2::password_hash::{PasswordHash, PasswordHasher, PasswordVerifier, SaltString};
use rand::seq::IndexedRandom;

/// Length of the passwords pacer generates.
pub const GENERATED_LENGTH: usize = 16;

/// The argon2id PHC string of `password`, with a fresh random salt.
pub fn hash_password(password: &str) -> anyhow::Result<String> {
    let salt = SaltString::encode_b64(&rand::random::<[u8; 16]>())
        .map_err(|e| anyhow::anyhow!("salt: {e}"))?;
    let hash = Argon2::default()
        .hash_password(password.as_bytes(), &salt)
        .map_err(|e| anyhow::anyhow!("hashing a password: {e}"))?;
    Ok(hash.to_string())
}

/// Whether `password` matches the stored PHC string. A malformed hash
/// matches nothing.
pub fn verify_password(stored: &str, password: &str) -> bool {
    PasswordHash::new(stored).is_ok_and(|parsed| {
        Argon2::default()
            .verify_password(password.as_bytes(), &parsed)
            .is_ok()
    })
}

/// How many hashes or checks run at once: one per CPU, so guessing cannot
/// take more than the machine has, nor more memory than that many times
/// 19 MiB.
pub fn max_concurrent() -> usize {
    std::thread::available_parallelism().map_or(2, |n| n.get())
}

/// Runs `work` on the blocking pool, holding one of `permits`: CPU-heavy
/// work that must neither stall the async workers nor pile up.
pub async fn run_bounded<T: Send + 'static>(
    permits: &Semaphore,
    work: impl FnOnce() -> T + Send + 'static,
) -> anyhow::Result<T> {
    let _permit = permits
        .acquire()
        .await
        .map_err(|_| anyhow::anyhow!("the password hashing pool is closed"))?;
    tokio::task::spawn_blocking(work)
        .await
        .map_err(|e| anyhow::anyhow!("a password hashing task failed: {e}"))
}

fn permits() -> &'static Semaphore {
    static PERMITS: OnceLock<Semaphore> = OnceLock::new();
    PERMITS.get_or_init(|| Semaphore::new(max_concurrent()))
}

/// [`hash_password`] off the async workers.
pub async fn hash(password: &str) -> anyhow::Result<String> {
    let password = password.to_owned();
    run_bounded(permits(), move || hash_password(&password)).await?
}

/// [`verify_password`] off the async workers.
pub async fn verify(stored: &str, password: &str) -> anyhow::Result<bool> {
    let (stored, password) = (stored.to_owned(), password.to_owned());
    run_bounded(permits(), move || verify_password(&stored, &password)).await
}

/// A random password of letters and digits, without look-alikes (0/O, 1/l/I).
pub fn generate_password() -> String {
    const ALPHABET: &[u8] = b"abcdefghijkmnopqrstuvwxyzABCDEFGHJKLMNPQRSTUVWXYZ23456789";
    let mut rng = rand::rng();
    (0..GENERATED_LENGTH)
        .filter_map(|_| ALPHABET.choose(&mut rng))
        .map(|&b| char::from(b))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_hash_verifies_its_password_and_nothing_else() {
        let hash = hash_password("correct horse").unwrap();
        assert!(hash.starts_with("$argon2id$"), "{hash}");
        assert!(verify_password(&hash, "correct horse"));
        assert!(!verify_password(&hash, "Correct horse"));
        assert!(!verify_password("not a hash", "correct horse"));
    }

    #[test]
    fn the_same_password_hashes_differently_each_time() {
        assert_ne!(hash_password("x").unwrap(), hash_password("x").unwrap());
    }

    /// With one runtime thread, a task that needs that thread still runs
    /// while the work is going on: the work is elsewhere. Were it run on
    /// the runtime's thread, the signal it waits for could never be sent.
    #[tokio::test(flavor = "current_thread")]
    async fn bounded_work_leaves_the_async_workers_free() {
        let (signal, signalled) = std::sync::mpsc::channel::<()>();
        let work = run_bounded(permits(), move || {
            signalled
                .recv_timeout(std::time::Duration::from_secs(10))
                .is_ok()
        });
        let other = async move {
            tokio::task::yield_now().await;
            signal.send(()).unwrap();
        };
        let (saw_signal, ()) = tokio::join!(work, other);
        assert!(
            saw_signal.unwrap(),
            "the other task ran while the work waited"
        );
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn no_more_than_the_bound_run_at_once() {
        use std::sync::Arc;
        use std::sync::atomic::{AtomicUsize, Ordering};
        let bound = Semaphore::new(2);
        let (running, most) = (Arc::new(AtomicUsize::new(0)), Arc::new(AtomicUsize::new(0)));
        let tasks = (0..6).map(|_| {
            let (running, most) = (running.clone(), most.clone());
            run_bounded(&bound, move || {
                let now = running.fetch_add(1, Ordering::SeqCst) + 1;
                most.fetch_max(now, Ordering::SeqCst);
                std::thread::sleep(std::time::Duration::from_millis(20));
                running.fetch_sub(1, Ordering::SeqCst);
            })
        });
        for done in futures::future::join_all(tasks).await {
            done.unwrap();
        }
        assert!(
            most.load(Ordering::SeqCst) <= 2,
            "at most the bound at once"
        );
    }

    #[tokio::test]
    async fn the_async_forms_hash_and_check_like_the_plain_ones() {
        let stored = hash("correct horse").await.unwrap();
        assert!(verify(&stored, "correct horse").await.unwrap());
        assert!(!verify(&stored, "wrong").await.unwrap());
    }

    #[test]
    fn generated_passwords_are_sixteen_unambiguous_characters() {
        let a = generate_password();
        assert_eq!(a.len(), GENERATED_LENGTH);
        assert!(
            a.chars()
                .all(|c| c.is_ascii_alphanumeric() && !"0O1lI".contains(c)),
            "{a}"
        );
        assert_ne!(a, generate_password());
    }
}
