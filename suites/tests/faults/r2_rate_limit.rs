//! R2: a 429 storm with `Retry-After` hitting 25 concurrent callers. Each caller comes back no
//! sooner than told (every wait is the announced 30 s; an early retry would land inside the
//! 70-second storm again and run out of attempts), all succeed after it, and the request count
//! is bounded by callers x (storm / Retry-After + 1): no retry storm.
//! (ikit-client's `a_429_storm_is_obeyed_to_the_second` pins the single-caller timing exactly.)

use std::time::Duration;

use ikit_client::{Client, FolderQuery};
use ikit_emulator::Fault;

use crate::support::{Clocks, JumpSleeper, PROJECT, client_config, emulator, seed_with, universal};

const LIST: &str = "/api/v4/secrets";
const CALLERS: u64 = 25;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn r2_a_429_storm_is_waited_out_by_every_caller_without_a_storm_of_retries() {
    let emu = emulator(seed_with(vec![], vec![])).await;
    let clocks = Clocks::new(&emu);
    let sleeper = JumpSleeper::new(&clocks);
    let client =
        Client::new(client_config(&emu, &clocks, sleeper.clone(), universal())).expect("client");
    client.ensure_token().await.expect("login");
    emu.faults().add(Fault::rate_limited(LIST, 30).for_duration(Duration::from_secs(70)));

    let tasks: Vec<_> = (0..CALLERS)
        .map(|_| {
            let client = client.clone();
            tokio::spawn(async move {
                client.fetch_folder(&FolderQuery::new(PROJECT, "dev", "/app")).await.map(|_| ())
            })
        })
        .collect();
    for task in tasks {
        task.await.expect("caller finished").expect("every caller succeeds after the storm");
    }
    let requests = emu.request_count("GET", LIST);
    let waits = sleeper.waits();
    // Every retry followed exactly one wait of the announced Retry-After, never less.
    assert!(waits.iter().all(|w| *w == Duration::from_secs(30)), "{waits:?}");
    assert_eq!(requests, CALLERS + waits.len() as u64, "one request per caller plus one per wait");
    // Bounded: at most ceil(70 / 30) = 3 refusals per caller.
    assert!(requests <= CALLERS * 4, "{requests} requests for {CALLERS} callers");
    // And none succeeded inside the storm: simulated time passed its end.
    assert!(clocks.now_ms() - crate::support::START_MS >= 70_000);
}
