//! [`JobStore`].

use super::*;

pub async fn inserting_a_job_twice_keeps_the_first(store: Arc<dyn Store>) {
    let first = job(7, "acme/app", at(0));
    assert_eq!(store.insert_job(&first).await.unwrap(), Inserted::Created);
    let redelivery = job(7, "acme/app", at(1));
    match store.insert_job(&redelivery).await.unwrap() {
        Inserted::Existing(existing) => assert_eq!(*existing, first),
        Inserted::Created => panic!("a redelivery must not create a second job"),
    }
    assert_eq!(store.get_job(&redelivery.id).await.unwrap(), None);
    assert_eq!(
        store.job_by_github_id(7).await.unwrap(),
        Some(first.clone())
    );
    assert_eq!(store.get_job(&first.id).await.unwrap(), Some(first));
}

pub async fn job_transitions_are_conditional(store: Arc<dyn Store>) {
    let queued = job(1, "acme/app", at(0));
    store.insert_job(&queued).await.unwrap();

    let mut claimed = queued.clone();
    let changes = JobChanges {
        pool_id: Some("pool_x".into()),
        ..Default::default()
    };
    claimed.apply(
        JobState::Claimed,
        TransitionCause::Orchestrator,
        &changes,
        at(1),
    );
    store
        .transition_job(JobState::Queued, &claimed)
        .await
        .unwrap();
    assert_eq!(
        store.get_job(&queued.id).await.unwrap(),
        Some(claimed.clone())
    );

    // A second orchestrator holding the same queued copy loses.
    assert!(matches!(
        store.transition_job(JobState::Queued, &claimed).await,
        Err(StoreError::Stale)
    ));
    // A transition from a state the job is not in is refused.
    let mut running = claimed.clone();
    running.apply(
        JobState::Running,
        TransitionCause::Webhook,
        &JobChanges::default(),
        at(2),
    );
    assert!(matches!(
        store.transition_job(JobState::Starting, &running).await,
        Err(StoreError::Stale)
    ));
    store
        .transition_job(JobState::Claimed, &running)
        .await
        .unwrap();

    let stored = store.get_job(&queued.id).await.unwrap().unwrap();
    assert_eq!(stored.state, JobState::Running);
    assert_eq!(
        stored
            .transitions
            .iter()
            .map(|t| t.state)
            .collect::<Vec<_>>(),
        vec![JobState::Queued, JobState::Claimed, JobState::Running]
    );
    let ghost = job(99, "acme/app", at(3));
    assert!(matches!(
        store.transition_job(JobState::Queued, &ghost).await,
        Err(StoreError::Stale | StoreError::NotFound)
    ));

    // The mark of a job handed back for a full pool is kept.
    let waiting = job(2, "acme/app", at(4));
    store.insert_job(&waiting).await.unwrap();
    let mut claimed = waiting.clone();
    claimed.apply(
        JobState::Claimed,
        TransitionCause::Orchestrator,
        &JobChanges::default(),
        at(5),
    );
    store
        .transition_job(JobState::Queued, &claimed)
        .await
        .unwrap();
    let mut handed_back = claimed.clone();
    let full = JobChanges {
        waiting_for_capacity: true,
        ..Default::default()
    };
    handed_back.apply(
        JobState::Queued,
        TransitionCause::Orchestrator,
        &full,
        at(6),
    );
    store
        .transition_job(JobState::Claimed, &handed_back)
        .await
        .unwrap();
    assert!(
        store
            .get_job(&waiting.id)
            .await
            .unwrap()
            .unwrap()
            .waiting_for_capacity
    );
}

/// A job that left a state and came back to it since a writer read it:
/// that writer's copy, though in the right state, must not erase what was
/// written meanwhile.
pub async fn a_job_write_from_an_older_copy_in_the_same_state_is_refused(store: Arc<dyn Store>) {
    let queued = job(3, "acme/app", at(0));
    store.insert_job(&queued).await.unwrap();
    let step = |from: &Job, to: JobState, changes: &JobChanges, t: i64| {
        let mut next = from.clone();
        next.apply(to, TransitionCause::Orchestrator, changes, at(t));
        next
    };
    // Two orchestrators read the queued job; one claims it and hands it
    // back for a full pool, leaving its mark.
    let claimed = step(&queued, JobState::Claimed, &JobChanges::default(), 1);
    store
        .transition_job(JobState::Queued, &claimed)
        .await
        .unwrap();
    let full = JobChanges {
        waiting_for_capacity: true,
        ..Default::default()
    };
    let handed_back = step(&claimed, JobState::Queued, &full, 2);
    store
        .transition_job(JobState::Claimed, &handed_back)
        .await
        .unwrap();

    // The other's claim, from its older queued copy, is refused
    let late = step(&queued, JobState::Claimed, &JobChanges::default(), 3);
    assert!(matches!(
        store.transition_job(JobState::Queued, &late).await,
        Err(StoreError::Stale)
    ));
    assert_eq!(
        store.get_job(&queued.id).await.unwrap(),
        Some(handed_back.clone())
    );

    // And a claim from the copy as written succeeds
    let claimed_again = step(&handed_back, JobState::Claimed, &JobChanges::default(), 4);
    store
        .transition_job(JobState::Queued, &claimed_again)
        .await
        .unwrap();
    assert_eq!(store.get_job(&queued.id).await.unwrap().unwrap().version, 3);
}

pub async fn jobs_page_newest_first_without_gaps_or_repeats(store: Arc<dyn Store>) {
    let mut ids = Vec::new();
    for n in 0..7 {
        let j = job(100 + n, "acme/app", at(n));
        store.insert_job(&j).await.unwrap();
        ids.push(j.id);
    }
    let listed: Vec<String> = all_pages(3, |page| {
        let store = store.clone();
        async move { store.list_jobs(&JobFilter::default(), &page).await }
    })
    .await
    .into_iter()
    .map(|j| j.id)
    .collect();
    let oldest_first: Vec<String> = all_pages(3, |page| {
        let store = store.clone();
        async move {
            store
                .list_jobs(
                    &JobFilter {
                        oldest_first: true,
                        ..Default::default()
                    },
                    &page,
                )
                .await
        }
    })
    .await
    .into_iter()
    .map(|j| j.id)
    .collect();
    assert_eq!(oldest_first, ids, "every job once, oldest first when asked");
    ids.reverse();
    assert_eq!(listed, ids, "every job once, newest first");
}

pub async fn jobs_filter_by_state_repo_pool_and_time(store: Arc<dyn Store>) {
    for n in 0..6 {
        let repo = if n % 2 == 0 { "acme/app" } else { "acme/lib" };
        let mut j = job(200 + n, repo, at(n * 60));
        if n >= 4 {
            let from = j.state;
            j.apply(
                JobState::Claimed,
                TransitionCause::Orchestrator,
                &JobChanges {
                    pool_id: Some("pool_a".into()),
                    ..Default::default()
                },
                at(n * 60 + 1),
            );
            let mut fresh = j.clone();
            fresh.state = from;
            fresh.pool_id = None;
            fresh.transitions.pop();
            fresh.updated_at = fresh.created_at;
            fresh.version = 0;
            store.insert_job(&fresh).await.unwrap();
            store.transition_job(from, &j).await.unwrap();
        } else {
            store.insert_job(&j).await.unwrap();
        }
    }
    let list = |f: JobFilter| {
        let store = store.clone();
        async move {
            all_pages(2, |page| {
                let store = store.clone();
                let f = f.clone();
                async move { store.list_jobs(&f, &page).await }
            })
            .await
            .into_iter()
            .map(|j| j.github_job_id)
            .collect::<Vec<_>>()
        }
    };
    assert_eq!(
        list(JobFilter {
            state: Some(JobState::Claimed),
            ..Default::default()
        })
        .await,
        vec![205, 204]
    );
    assert_eq!(
        list(JobFilter {
            state: Some(JobState::Queued),
            ..Default::default()
        })
        .await,
        vec![203, 202, 201, 200]
    );
    assert_eq!(
        list(JobFilter {
            repo: Some("acme/lib".into()),
            ..Default::default()
        })
        .await,
        vec![205, 203, 201]
    );
    assert_eq!(
        list(JobFilter {
            pool_id: Some("pool_a".into()),
            ..Default::default()
        })
        .await,
        vec![205, 204]
    );
    assert_eq!(
        list(JobFilter {
            github_job_id: Some(202),
            ..Default::default()
        })
        .await,
        vec![202]
    );
    assert_eq!(
        list(JobFilter {
            from: Some(at(60)),
            to: Some(at(180)),
            ..Default::default()
        })
        .await,
        vec![202, 201],
        "from is inclusive, to exclusive"
    );
    assert_eq!(
        list(JobFilter {
            state: Some(JobState::Queued),
            repo: Some("acme/app".into()),
            from: Some(at(60)),
            ..Default::default()
        })
        .await,
        vec![202]
    );
}

/// A launch's claim is one request: the job's move, a unit of its pool's
/// capacity and the runner's record — all three, or nothing at all.
pub async fn a_launch_claims_its_job_capacity_and_runner_at_once_or_not_at_all(
    store: Arc<dyn Store>,
) {
    let p = project("acme", at(0));
    store.create_project(&p).await.unwrap();
    let pl = pool(&p.id, "linux", 1, at(0));
    store.create_pool(&pl).await.unwrap();
    let claim_of = |j: &Job, t: i64| {
        let mut claimed = j.clone();
        claimed.apply(
            JobState::Claimed,
            TransitionCause::Orchestrator,
            &JobChanges::default(),
            at(t),
        );
        claimed
    };
    let runner_for = |j: &Job, t: i64| Runner {
        job_id: Some(j.id.clone()),
        instance_id: None,
        ..runner(&pl, "i-0none", at(t))
    };
    let active = || async {
        store
            .get_pool(&pl.id)
            .await
            .unwrap()
            .unwrap()
            .active_runners
    };

    // Given two queued jobs of a pool with one slot
    let first = job(31, "acme/app", at(1));
    let second = job(32, "acme/app", at(2));
    store.insert_job(&first).await.unwrap();
    store.insert_job(&second).await.unwrap();

    // The first claim takes all three
    let (claimed, r1) = (claim_of(&first, 3), runner_for(&first, 3));
    assert_eq!(
        store
            .claim_for_launch(JobState::Queued, &claimed, &r1)
            .await
            .unwrap(),
        Claim::Claimed
    );
    assert_eq!(
        store.get_job(&first.id).await.unwrap(),
        Some(claimed.clone())
    );
    assert_eq!(store.get_runner(&r1.id).await.unwrap(), Some(r1.clone()));
    assert_eq!(active().await, 1);

    // A second claim of the same job, from the same queued copy, writes nothing
    let r_again = runner_for(&first, 4);
    assert_eq!(
        store
            .claim_for_launch(JobState::Queued, &claim_of(&first, 4), &r_again)
            .await
            .unwrap(),
        Claim::Stale
    );
    assert_eq!(store.get_runner(&r_again.id).await.unwrap(), None);
    assert_eq!(active().await, 1);

    // A claim at a full pool writes nothing either: the job stays queued
    let r2 = runner_for(&second, 5);
    assert_eq!(
        store
            .claim_for_launch(JobState::Queued, &claim_of(&second, 5), &r2)
            .await
            .unwrap(),
        Claim::PoolFull
    );
    assert_eq!(
        store.get_job(&second.id).await.unwrap(),
        Some(second.clone())
    );
    assert_eq!(store.get_runner(&r2.id).await.unwrap(), None);
    assert_eq!(active().await, 1);

    // A job and its runner move together, or neither does
    let mut starting = claimed.clone();
    starting.apply(
        JobState::Starting,
        TransitionCause::Orchestrator,
        &JobChanges {
            runner_id: Some(r1.id.clone()),
            count_attempt: true,
            ..Default::default()
        },
        at(6),
    );
    let mut launched = r1.clone();
    launched.instance_id = Some("i-0abc".into());
    launched.version += 1;
    let mut stale_runner = launched.clone();
    stale_runner.version += 1; // as if written from a copy two writes old
    assert!(matches!(
        store
            .transition_job_and_runner(
                JobState::Claimed,
                &starting,
                RunnerState::Pending,
                &stale_runner
            )
            .await,
        Err(StoreError::Stale)
    ));
    assert_eq!(
        store.get_job(&first.id).await.unwrap(),
        Some(claimed.clone())
    );
    store
        .transition_job_and_runner(
            JobState::Claimed,
            &starting,
            RunnerState::Pending,
            &launched,
        )
        .await
        .unwrap();
    assert_eq!(store.get_job(&first.id).await.unwrap(), Some(starting));
    assert_eq!(store.get_runner(&r1.id).await.unwrap(), Some(launched));
}
