//! The shared counters against a real Redis (a throwaway `redis-server` this test
//! starts, or the machine's at 127.0.0.1:6379 when the binary is missing): buckets hold
//! a minute's allowance across handles, admission is all or nothing, leases of a
//! replica that stops renewing free themselves, refunds give the cost back, and an
//! unreachable Redis says so at once.

#![allow(clippy::unwrap_used)]

mod support;

use std::net::TcpListener;
use std::sync::Arc;
use std::time::{Duration, Instant};

use support::redis::OwnRedis;
use warden_config::{Cluster, OnRedisDown};
use warden_limits::{Admission, Admitted, Bucket, Layer, SharedCounters, Taken, Unreachable};

fn cluster(url: &str, prefix: &str, lease_secs: u64) -> Cluster {
    let text = format!(
        "[cluster]\nredis = \"env:R\"\nkey_prefix = \"{prefix}\"\nlease_secs = {lease_secs}\n"
    );
    warden_config::Config::from_text(&text, std::path::Path::new("t.toml"), |name| {
        (name == "R").then(|| url.to_owned())
    })
    .unwrap()
    .cluster
    .unwrap()
}

fn counters(url: &str, prefix: &str, lease_secs: u64) -> Arc<warden_cluster::RedisCounters> {
    let config = cluster(url, prefix, lease_secs);
    assert_eq!(config.on_redis_down, OnRedisDown::Refuse);
    warden_cluster::RedisCounters::start(warden_cluster::Redis::new(&config).unwrap(), config.lease)
}

fn unique(prefix: &str) -> String {
    format!("{prefix}{:x}", rand::random::<u64>())
}

fn admission<'a>(key_id: &'a str, session: &'a str) -> Admission<'a> {
    Admission {
        key_id,
        tenant: "acme",
        session,
        max_session_calls: 1_000,
        tool_rate: None,
        max_per_key: 2,
        max_total: 3,
        cost: 1,
        cap: 1_000,
        day: 20_000,
    }
}

#[tokio::test]
async fn a_bucket_holds_across_replicas() {
    let redis = OwnRedis::start();
    let prefix = unique("t");
    let (one, two) = (
        counters(&redis.url, &prefix, 30),
        counters(&redis.url, &prefix, 30),
    );
    let mut passed = 0;
    for n in 0..90 {
        let replica = if n % 2 == 0 { &one } else { &two };
        if replica
            .take(Bucket::Key("key_a"), 60)
            .await
            .unwrap()
            .is_none()
        {
            passed += 1;
        }
    }
    assert_eq!(passed, 60);
    let wait = one.take(Bucket::Key("key_a"), 60).await.unwrap().unwrap();
    assert!(wait <= Duration::from_secs(1), "{wait:?}");
    // Another key, and an address, have buckets of their own.
    assert!(two.take(Bucket::Key("key_b"), 60).await.unwrap().is_none());
    assert!(
        two.take(Bucket::Address("127.0.0.1"), 60)
            .await
            .unwrap()
            .is_none()
    );
}

#[tokio::test]
async fn admission_is_all_or_nothing_and_leases_expire_with_their_replica() {
    let redis = OwnRedis::start();
    let prefix = unique("t");
    let (one, two) = (
        counters(&redis.url, &prefix, 3),
        counters(&redis.url, &prefix, 3),
    );
    let lease = |admitted| match admitted {
        Admitted::Yes(lease) => lease,
        other => panic!("not admitted: {other:?}"),
    };
    // Two slots per key, three in all, across both replicas.
    let a1 = lease(one.admit(admission("key_a", "s1")).await.unwrap());
    let _a2 = lease(two.admit(admission("key_a", "s2")).await.unwrap());
    assert!(matches!(
        one.admit(admission("key_a", "s1")).await.unwrap(),
        Admitted::Busy(Taken::Key)
    ));
    let b1 = lease(two.admit(admission("key_b", "s3")).await.unwrap());
    assert!(matches!(
        one.admit(admission("key_c", "s4")).await.unwrap(),
        Admitted::Busy(Taken::All)
    ));
    // A release frees the slot at once (it happens in the background).
    one.release(a1, false);
    let deadline = Instant::now() + Duration::from_secs(5);
    let c1 = loop {
        if let Admitted::Yes(lease) = one.admit(admission("key_c", "s4")).await.unwrap() {
            break lease;
        }
        assert!(Instant::now() < deadline, "the released slot stayed taken");
        tokio::time::sleep(Duration::from_millis(20)).await;
    };

    // Replica two dies (its counters are dropped, so nothing renews its leases): its
    // slots free themselves within the lease; replica one's, renewed, stay.
    drop(two);
    drop(b1);
    let started = Instant::now();
    loop {
        if let Admitted::Yes(_) = one.admit(admission("key_a", "s5")).await.unwrap() {
            break;
        }
        assert!(
            started.elapsed() < Duration::from_secs(8),
            "a dead replica's slots were never freed"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(
        started.elapsed() >= Duration::from_secs(1),
        "freed too soon"
    );
    // Past several lease times, replica one's own lease is still held (renewed).
    tokio::time::sleep(Duration::from_secs(4)).await;
    let mut free = Vec::new();
    for session in ["x1", "x2", "x3"] {
        if let Admitted::Yes(lease) = one.admit(admission("key_d", session)).await.unwrap() {
            free.push(lease);
        }
    }
    assert_eq!(
        free.len(),
        1,
        "the renewed leases of key_c and key_a hold two of three"
    );
    drop(c1);
}

#[tokio::test]
async fn rates_sessions_and_the_daily_cost_refuse_without_charging_anything_else() {
    let redis = OwnRedis::start();
    let prefix = unique("t");
    let one = counters(&redis.url, &prefix, 30);
    let costly = Admission {
        cost: 4,
        cap: 10,
        max_per_key: 100,
        max_total: 100,
        ..admission("key_a", "s1")
    };
    let first = match one.admit(costly).await.unwrap() {
        Admitted::Yes(lease) => lease,
        other => panic!("{other:?}"),
    };
    let _second = one.admit(costly).await.unwrap();
    match one.admit(costly).await.unwrap() {
        Admitted::Limited(Layer::DailyCost, _) => {}
        other => panic!("{other:?}"),
    }
    // A refund (the call never reached its upstream) makes room for one more.
    one.release(first, true);
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert!(matches!(one.admit(costly).await.unwrap(), Admitted::Yes(_)));
    match one.admit(costly).await.unwrap() {
        Admitted::Limited(Layer::DailyCost, _) => {}
        other => panic!("{other:?}"),
    }
    // Another tenant has its own ledger.
    let other = Admission {
        tenant: "globex",
        ..costly
    };
    assert!(matches!(one.admit(other).await.unwrap(), Admitted::Yes(_)));

    // One call a minute to this tool: the second is refused by the tool's rate.
    let tool = Admission {
        tool_rate: Some(("notes__delete", 1)),
        cost: 0,
        ..costly
    };
    assert!(matches!(one.admit(tool).await.unwrap(), Admitted::Yes(_)));
    match one.admit(tool).await.unwrap() {
        Admitted::Limited(Layer::PerTool, wait) => assert!(wait > Duration::from_secs(50)),
        other => panic!("{other:?}"),
    }
    // Two calls per session: the third is refused.
    let session = Admission {
        max_session_calls: 2,
        cost: 0,
        max_total: 100,
        ..admission("key_s", "one-session")
    };
    for _ in 0..2 {
        assert!(matches!(
            one.admit(session).await.unwrap(),
            Admitted::Yes(_)
        ));
    }
    match one.admit(session).await.unwrap() {
        Admitted::Limited(Layer::PerSession, _) => {}
        other => panic!("{other:?}"),
    }
}

#[tokio::test]
async fn an_unreachable_redis_says_so_quickly() {
    let port = TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let down = counters(&format!("redis://127.0.0.1:{port}"), "t", 30);
    let started = Instant::now();
    assert_eq!(
        down.take(Bucket::Key("k"), 60).await.unwrap_err(),
        Unreachable
    );
    assert!(down.ping().await.is_err());
    assert!(matches!(
        down.admit(admission("k", "s")).await,
        Err(Unreachable)
    ));
    assert!(started.elapsed() < Duration::from_secs(5));
}

#[tokio::test]
async fn a_redis_that_comes_back_is_used_again_without_a_restart() {
    let mut redis = OwnRedis::own();
    let one = counters(&redis.url, &unique("t"), 30);
    assert!(one.take(Bucket::Key("k"), 60).await.unwrap().is_none());
    redis.halt();
    assert_eq!(one.take(Bucket::Key("k"), 60).await, Err(Unreachable));
    assert!(one.ping().await.is_err());
    redis.resume();
    let deadline = Instant::now() + Duration::from_secs(10);
    while one.ping().await.is_err() {
        assert!(Instant::now() < deadline, "never reconnected");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(one.take(Bucket::Key("k"), 60).await.unwrap().is_none());
}

#[tokio::test]
async fn a_key_that_fills_its_slots_queues_in_its_own_line_not_another_keys() {
    let redis = OwnRedis::start();
    let shared = warden_limits::Shared {
        counters: counters(&redis.url, &unique("q"), 5),
        on_down: OnRedisDown::Refuse,
        expected_replicas: 1,
    };
    // One slot per key and a queue of one.
    let rate = warden_config::Rate {
        per_key_rpm: 1_000,
        per_ip_rpm: 1_000,
        max_concurrent_per_key: 1,
        max_concurrent_total: 10,
        queue_depth: 1,
        queue_timeout: Duration::from_secs(20),
        per_session_calls: 1_000,
        daily_cost_cap: 1_000_000,
        tenant_caps: std::collections::BTreeMap::new(),
        max_streams_per_key: 1,
        ipv4_prefix: 32,
        ipv6_prefix: 64,
    };
    let limiter = Arc::new(
        warden_limits::Limiter::new(
            &rate,
            &std::collections::BTreeMap::new(),
            &[100],
            None,
            Some(shared),
        )
        .await
        .unwrap(),
    );
    let admit = |key_id: &'static str| {
        let limiter = limiter.clone();
        async move {
            let call = warden_limits::Call {
                key_id,
                tenant: "acme",
                session: key_id,
                tool: None,
                policy_cost: 0,
            };
            limiter.admit_call(call, 0).await
        }
    };
    let a1 = admit("key_a").await.unwrap();
    let b1 = admit("key_b").await.unwrap();
    // key_a's second call waits in key_a's queue, which fills it.
    let a2 = tokio::spawn(admit("key_a"));
    tokio::time::sleep(Duration::from_millis(500)).await;
    // key_b's second call still finds a place in its own queue, and gets in when
    // key_b's first call ends.
    let b2 = tokio::spawn(admit("key_b"));
    tokio::time::sleep(Duration::from_millis(200)).await;
    drop(b1);
    let b2 = b2.await.unwrap();
    assert!(b2.is_ok(), "{:?}", b2.err().map(|refusal| refusal.message));
    // key_a's own queue is full: a third call of key_a is refused at once.
    let a3 = admit("key_a").await.unwrap_err();
    assert_eq!(a3.layer, Layer::Concurrency, "{}", a3.message);
    drop(a1);
    assert!(a2.await.unwrap().is_ok());
}
