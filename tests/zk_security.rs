//! ZooKeeper access control and TLS against a real ZooKeeper: replicas
//! with digest credentials protect the election from unauthenticated
//! clients and still elect and hand over as before; replicas elect over
//! TLS alone; wrong credentials and a wrong CA fail with a clear cause.

mod common;

use std::os::unix::fs::PermissionsExt as _;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use common::group::Group;
use common::zk::{ZkCluster, ZkOptions};
use common::{close_client, zk_client};
use election::zk::security::digest_id;
use rstest::rstest;
use zookeeper_client::{Acl, Acls, AuthId, Client, CreateMode, Error as ZkErr, Permission};

const ROOT: &str = "/election/test";

/// Writes `user:password` to a mode-0600 file in `dir`.
fn credentials_file(dir: &Path, name: &str, creds: &str) -> PathBuf {
    let path = dir.join(name);
    std::fs::write(&path, format!("{creds}\n")).unwrap();
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600)).unwrap();
    path
}

/// A standalone server with the operator identity `super:secret`.
fn zk_with_super() -> ZkCluster {
    ZkCluster::standalone_with(ZkOptions {
        super_digest: Some(digest_id("super", "secret")),
        ..ZkOptions::default()
    })
}

async fn client_as(connect: &str, creds: &str) -> Client {
    Client::connector()
        .with_session_timeout(Duration::from_secs(10))
        .with_auth("digest", creds.as_bytes())
        .connect(connect)
        .await
        .expect("authenticated client")
}

/// The candidate nodes under [`ROOT`].
async fn candidates(client: &Client) -> Vec<String> {
    let mut c: Vec<String> = client
        .list_children(ROOT)
        .await
        .unwrap()
        .into_iter()
        .filter(|n| n.starts_with("c_"))
        .collect();
    c.sort();
    c
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unauthenticated_clients_can_neither_delete_candidates_nor_change_the_floor() {
    // Given two replicas with credentials on a ZooKeeper with a super identity
    let zk = zk_with_super();
    let mut g = Group::new(&zk.connect_string());
    let file = credentials_file(g.dir.path(), "zk-auth", "election:pw-1");
    g.extra = vec!["--zk-auth-file".into(), file.display().to_string()];
    g.spawn(2);
    let leader = g.wait_leader(Duration::from_secs(20));
    let anyone = zk_client(&zk.connect_string()).await;
    let nodes = candidates(&anyone).await;
    assert_eq!(nodes.len(), 2, "{}", g.logs());
    // Then every node of the election is the replicas' and readable by all
    // (ZooKeeper shows the digest as `x` to clients without ADMIN on it),
    // and the parent they created lets others read and create, no more
    assert_eq!(
        acl_of(&anyone, "/election").await,
        vec!["world:anyone=READ|CREATE".to_owned()]
    );
    let want = "election:x";
    for path in [
        ROOT.to_owned(),
        format!("{ROOT}/fencing"),
        format!("{ROOT}/writer"),
        format!("{ROOT}/{}", nodes[0]),
    ] {
        let (acl, _) = anyone.get_acl(&path).await.unwrap();
        let shown: Vec<String> = acl
            .iter()
            .map(|a| format!("{}:{}={}", a.scheme(), a.id(), a.permission()))
            .collect();
        assert_eq!(
            shown,
            vec![format!("digest:{want}=ALL"), "world:anyone=READ".into()],
            "{path}"
        );
    }
    let (floor, _) = anyone.get_data(&format!("{ROOT}/fencing")).await.unwrap();
    assert!(!floor.is_empty(), "the floor stays readable");
    // When an unauthenticated client tries to break the election
    // Then ZooKeeper refuses every change
    let leader_node = format!("{ROOT}/{}", nodes[0]);
    assert_eq!(anyone.delete(&leader_node, None).await, Err(ZkErr::NoAuth));
    assert_eq!(
        anyone.delete(&format!("{ROOT}/writer"), None).await,
        Err(ZkErr::NoAuth)
    );
    assert_eq!(
        anyone
            .set_data(&format!("{ROOT}/fencing"), b"0", None)
            .await
            .map(|_| ()),
        Err(ZkErr::NoAuth)
    );
    let squat = anyone
        .create(
            &format!("{ROOT}/c_0000000000000000_"),
            b"",
            &CreateMode::EphemeralSequential.with_acls(Acls::anyone_all()),
        )
        .await;
    assert_eq!(squat.map(|_| ()), Err(ZkErr::NoAuth));
    assert_eq!(
        anyone
            .set_acl(ROOT, &Acls::anyone_all(), None)
            .await
            .map(|_| ()),
        Err(ZkErr::NoAuth)
    );
    // And other credentials are no better
    let stranger = client_as(&zk.connect_string(), "election:wrong").await;
    assert_eq!(
        stranger.delete(&leader_node, None).await,
        Err(ZkErr::NoAuth)
    );
    close_client(stranger).await;
    // And the operator's super identity can still intervene
    let operator = client_as(&zk.connect_string(), "super:secret").await;
    let (acl, stat) = operator.get_acl(ROOT).await.unwrap();
    assert_eq!(acl[0].id(), digest_id("election", "pw-1"));
    assert!(stat.num_children >= 3);
    close_client(operator).await;
    close_client(anyone).await;
    // And the authenticated replicas hand over on SIGTERM as before
    let old_token = g.newest_record().unwrap().token;
    g.replica(leader).signal(libc::SIGTERM);
    let status = g.replica(leader).wait_exit(Duration::from_secs(10));
    assert_eq!(status.and_then(|s| s.code()), Some(0), "{}", g.logs());
    g.replicas[leader] = None;
    let new = g.wait_leader(Duration::from_secs(10));
    assert_ne!(new, leader);
    assert!(g.newest_record().unwrap().token > old_token);
    g.stop_all();
    g.assert_invariants();
}

/// The ACL of `path` as `scheme:id=PERMS` strings (ZooKeeper shows a
/// digest as `user:x` to clients without ADMIN on the node).
async fn acl_of(client: &Client, path: &str) -> Vec<String> {
    let (acl, _) = client.get_acl(path).await.unwrap();
    acl.iter()
        .map(|a| format!("{}:{}={}", a.scheme(), a.id(), a.permission()))
        .collect()
}

/// A group of replicas under `root`, with `user:password` credentials or none.
fn release(zk: &ZkCluster, root: &str, creds: Option<&str>) -> Group {
    let mut g = Group::new(&zk.connect_string());
    g.extra = vec!["--zk-root".into(), root.into()];
    if let Some(creds) = creds {
        g.env = vec![("ELECTION_ZK_AUTH".into(), creds.into())];
    }
    g
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn releases_with_other_credentials_or_none_share_one_ensemble() {
    // Given one ensemble and three releases side by side under /election
    // (the chart's default layout): `a` and `b` with credentials of their
    // own, `c` without any; `a` starts first and so creates /election
    let zk = zk_with_super();
    let mut a = release(&zk, "/election/a", Some("release-a:pw-a"));
    a.spawn(2);
    a.wait_leader(Duration::from_secs(20));
    let mut b = release(&zk, "/election/b", Some("release-b:pw-b"));
    b.spawn(2);
    let mut c = release(&zk, "/election/c", None);
    c.spawn(1);
    // When they all run
    // Then each of them elects a leader that writes
    b.wait_leader(Duration::from_secs(20));
    c.wait_leader(Duration::from_secs(20));
    for g in [&a, &b, &c] {
        let token = g.newest_record().unwrap().token;
        g.wait_more_files_of(token, 2, Duration::from_secs(10));
    }
    // And the shared parent lets everyone read it and create a child,
    // nothing more (no delete, no write, no setAcl)
    let anyone = zk_client(&zk.connect_string()).await;
    assert_eq!(
        acl_of(&anyone, "/election").await,
        vec!["world:anyone=READ|CREATE".to_owned()]
    );
    assert_eq!(
        anyone
            .set_acl("/election", &Acls::anyone_all(), None)
            .await
            .map(|_| ()),
        Err(ZkErr::NoAuth)
    );
    // And each protected release's nodes stay its own: an unauthenticated
    // client, or the other release, can neither delete a candidate, the
    // writer node or the election path, nor move the floor
    let stranger_of = |user| {
        if user == "release-a" {
            "release-b:pw-b"
        } else {
            "release-a:pw-a"
        }
    };
    for (root, user) in [("/election/a", "release-a"), ("/election/b", "release-b")] {
        let nodes: Vec<String> = anyone
            .list_children(root)
            .await
            .unwrap()
            .into_iter()
            .filter(|n| n.starts_with("c_"))
            .collect();
        assert_eq!(nodes.len(), 2, "{root}: {nodes:?}");
        let candidate = format!("{root}/{}", nodes[0]);
        let fencing = format!("{root}/fencing");
        let writer = format!("{root}/writer");
        for path in [root, &fencing, &writer, &candidate] {
            assert_eq!(
                acl_of(&anyone, path).await,
                vec![format!("digest:{user}:x=ALL"), "world:anyone=READ".into()],
                "{path}"
            );
        }
        let other = client_as(&zk.connect_string(), stranger_of(user)).await;
        for client in [&anyone, &other] {
            assert_eq!(client.delete(&candidate, None).await, Err(ZkErr::NoAuth));
            assert_eq!(client.delete(&writer, None).await, Err(ZkErr::NoAuth));
            assert_eq!(
                client.set_data(&fencing, b"0", None).await.map(|_| ()),
                Err(ZkErr::NoAuth),
                "{fencing}"
            );
            assert_eq!(client.delete(root, None).await, Err(ZkErr::NoAuth));
            assert_eq!(
                client
                    .set_acl(root, &Acls::anyone_all(), None)
                    .await
                    .map(|_| ()),
                Err(ZkErr::NoAuth)
            );
        }
        close_client(other).await;
    }
    close_client(anyone).await;
    for g in [&mut a, &mut b, &mut c] {
        g.stop_all();
        g.assert_invariants();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_election_path_left_open_by_an_older_version_is_restricted() {
    // Given an election path and fencing node created open to everyone
    let zk = ZkCluster::standalone();
    let anyone = zk_client(&zk.connect_string()).await;
    let open = CreateMode::Persistent.with_acls(Acls::anyone_all());
    anyone.mkdir(ROOT, &open).await.unwrap();
    anyone
        .create(&format!("{ROOT}/fencing"), b"7", &open)
        .await
        .unwrap();
    // When a replica with credentials starts on it
    let mut g = Group::new(&zk.connect_string());
    g.env = vec![("ELECTION_ZK_AUTH".into(), "election:pw-2".into())];
    g.spawn(1);
    g.wait_leader(Duration::from_secs(20));
    // Then it restricted both (it may: world ALL includes ADMIN), said so,
    // and kept the floor it found
    let replica = client_as(&zk.connect_string(), "election:pw-2").await;
    for path in [ROOT.to_owned(), format!("{ROOT}/fencing")] {
        let (acl, _) = replica.get_acl(&path).await.unwrap();
        assert_eq!(acl[0].id(), digest_id("election", "pw-2"), "{path}");
        assert_eq!(acl[1].permission(), Permission::READ, "{path}");
    }
    // And it left the parent above its election path as it found it:
    // others' elections may live there
    assert_eq!(
        acl_of(&anyone, "/election").await,
        vec!["world:anyone=ALL".to_owned()]
    );
    assert!(g.newest_record().unwrap().token > 7);
    assert!(
        g.logs().contains("restricted it to our ACL"),
        "{}",
        g.logs()
    );
    // And the password appears nowhere in its output
    assert!(!g.logs().contains("pw-2"), "{}", g.logs());
    close_client(replica).await;
    close_client(anyone).await;
    g.stop_all();
    g.assert_invariants();
}

#[test]
fn a_replica_with_wrong_credentials_never_leads_and_says_why() {
    // Given a leader with credentials
    let zk = ZkCluster::standalone();
    let mut g = Group::new(&zk.connect_string());
    g.env = vec![("ELECTION_ZK_AUTH".into(), "election:pw-right-7".into())];
    g.spawn(1);
    g.wait_leader(Duration::from_secs(20));
    // When a replica with the wrong password joins, and the leader stops
    g.env = vec![("ELECTION_ZK_AUTH".into(), "election:pw-wrong-7".into())];
    g.extra = vec!["--failover-give-up".into(), "3s".into()];
    g.spawn(1);
    let cause = g
        .replica(1)
        .wait_for_line("not authorized", Duration::from_secs(20));
    // Then it cannot create its candidate node, says what to check (in
    // its log: the line is the contract), and gives up (exit 1) with
    // --failover-give-up; it never wrote a file
    assert!(cause.is_some(), "{}", g.logs());
    eprintln!("{}", cause.unwrap_or_default());
    let status = g.replica(1).wait_exit(Duration::from_secs(30));
    assert_eq!(status.and_then(|s| s.code()), Some(1), "{}", g.logs());
    assert!(g.records().iter().all(|r| r.node_id == "r0"));
    assert!(!g.logs().contains("pw-right-7") && !g.logs().contains("pw-wrong-7"));
    g.replicas[1] = None;
    g.stop_all();
    g.assert_invariants();
}

/// A group on the TLS ports only, with the client certificate.
fn tls_group(zk: &ZkCluster) -> Group {
    let tls = zk.tls_material();
    let mut g = Group::new(&zk.secure_connect_string());
    g.extra = [
        "--zk-tls-ca-file",
        tls.ca.to_str().unwrap(),
        "--zk-tls-cert-file",
        tls.client_cert.to_str().unwrap(),
        "--zk-tls-key-file",
        tls.client_key.to_str().unwrap(),
    ]
    .map(String::from)
    .to_vec();
    g
}

#[test]
fn replicas_elect_over_tls_alone_and_hand_over() {
    // Given a ZooKeeper that requires TLS client certificates on its
    // secure port, and replicas that know only that port
    let zk = ZkCluster::standalone_with(ZkOptions {
        tls: true,
        tls_client_auth: true,
        ..ZkOptions::default()
    });
    let mut g = tls_group(&zk);
    g.spawn(2);
    // When they run, and the leader gets SIGTERM
    let leader = g.wait_leader(Duration::from_secs(30));
    // (the port they know is the server's TLS one)
    let log = std::fs::read_to_string(zk.log_path(0)).unwrap();
    assert!(
        log.contains(&format!("secure: true on addr /{}", g.servers)),
        "{}",
        zk.log_tail(0, 40)
    );
    g.replica(leader).signal(libc::SIGTERM);
    assert_eq!(
        g.replica(leader)
            .wait_exit(Duration::from_secs(10))
            .and_then(|s| s.code()),
        Some(0),
        "{}",
        g.logs()
    );
    g.replicas[leader] = None;
    // Then the other one takes over (both only ever had the TLS port)
    let new = g.wait_leader(Duration::from_secs(10));
    assert_ne!(new, leader);
    g.stop_all();
    g.assert_invariants();
}

#[test]
fn a_wrong_ca_or_a_missing_client_certificate_is_a_clear_error() {
    let zk = ZkCluster::standalone_with(ZkOptions {
        tls: true,
        tls_client_auth: true,
        ..ZkOptions::default()
    });
    let tls = zk.tls_material();
    let status = |extra: &[&Path]| {
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_election"));
        cmd.args(["status", "--zk-servers", &zk.secure_connect_string()])
            // Generous: a TLS handshake with a loaded JVM can take seconds,
            // and a deadline that passes before the first handshake ends
            // reports a timeout instead of the certificate problem.
            .args(["--zk-connect-timeout", "10s", "--zk-tls-ca-file"])
            .arg(extra[0]);
        if extra.len() == 3 {
            cmd.arg("--zk-tls-cert-file")
                .arg(extra[1])
                .arg("--zk-tls-key-file")
                .arg(extra[2]);
        }
        cmd.output().unwrap()
    };
    // Given the servers' CA and a client certificate, status works
    let ok = status(&[&tls.ca, &tls.client_cert, &tls.client_key]);
    assert!(
        ok.status.success(),
        "{}",
        String::from_utf8_lossy(&ok.stderr)
    );
    // When the CA is another one
    let out = status(&[&tls.wrong_ca, &tls.client_cert, &tls.client_key]);
    // Then status exits 1 and names the certificate problem
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(
        err.contains("invalid peer certificate: UnknownIssuer"),
        "{err}"
    );
    assert_eq!(err.matches("last connection error").count(), 1, "{err}");
    eprintln!("with another CA: {err}");
    // When the client shows no certificate to a server that needs one
    let out = status(&[&tls.ca]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{err}");
    eprintln!("without a client certificate: {err}");
}

#[test]
fn status_reads_a_protected_election_with_or_without_credentials() {
    // Given a leader with credentials
    let zk = ZkCluster::standalone();
    let mut g = Group::new(&zk.connect_string());
    let file = credentials_file(g.dir.path(), "zk-auth", "election:pw-3");
    g.extra = vec!["--zk-auth-file".into(), file.display().to_string()];
    g.spawn(1);
    g.wait_leader(Duration::from_secs(20));
    for with_auth in [true, false] {
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_election"));
        cmd.args([
            "status",
            "--zk-servers",
            &zk.connect_string(),
            "--zk-root",
            ROOT,
        ]);
        if with_auth {
            cmd.arg("--zk-auth-file").arg(&file);
        }
        let out = cmd.output().unwrap();
        let text = String::from_utf8_lossy(&out.stdout);
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        assert!(text.contains("leader") && text.contains("r0"), "{text}");
    }
    // A credentials file others can read is refused before connecting
    std::fs::set_permissions(&file, std::fs::Permissions::from_mode(0o644)).unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_election"))
        .args(["status", "--zk-servers", &zk.connect_string()])
        .arg("--zk-auth-file")
        .arg(&file)
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{err}");
    assert!(
        err.contains("other users") && !err.contains("pw-3"),
        "{err}"
    );
    g.stop_all();
    g.assert_invariants();
}

#[rstest]
fn help_never_shows_credentials_from_the_environment(#[values("run", "status")] sub: &str) {
    let out = Command::new(env!("CARGO_BIN_EXE_election"))
        .args([sub, "--help"])
        .env("ELECTION_ZK_AUTH", "election:pw-in-env")
        .output()
        .unwrap();
    let help = String::from_utf8_lossy(&out.stdout);
    assert!(help.contains("[env: ELECTION_ZK_AUTH]"), "{help}");
    assert!(!help.contains("pw-in-env"), "{help}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_fencing_node_of_other_credentials_stops_the_leader_without_spinning() {
    // Given an election path that grants the replicas' identity, and a
    // fencing node that names another one (a password changed without
    // `setAcl` on it, say), prepared by the operator
    let zk = zk_with_super();
    let operator = client_as(&zk.connect_string(), "super:secret").await;
    let acl = |user: &str, pw: &str| {
        [
            Acl::new(Permission::ALL, AuthId::new("digest", &digest_id(user, pw))),
            Acl::new(Permission::READ, AuthId::anyone()),
        ]
    };
    let ours = acl("election", "pw-new");
    let old = acl("election", "pw-old");
    operator
        .mkdir(ROOT, &CreateMode::Persistent.with_acls(Acls::new(&ours)))
        .await
        .unwrap();
    operator
        .create(
            &format!("{ROOT}/fencing"),
            b"5",
            &CreateMode::Persistent.with_acls(Acls::new(&old)),
        )
        .await
        .unwrap();
    close_client(operator).await;
    // When a replica with the new password becomes first in the queue
    let mut g = Group::new(&zk.connect_string());
    g.env = vec![("ELECTION_ZK_AUTH".into(), "election:pw-new".into())];
    g.spawn(1);
    g.replica(0).wait_status(
        |s| {
            s.state == "failover"
                && s.cause == "zookeeper-error"
                && s.cause_detail.contains("not authorized")
        },
        Duration::from_secs(20),
    );
    // Then it never writes, and it retries with Failover's backoff
    // (at most every failover-max-backoff = 500 ms), not in a tight loop
    std::thread::sleep(Duration::from_secs(4));
    assert!(g.records().is_empty(), "{}", g.logs());
    let claims = g.times_leader(0);
    assert!(claims <= 15.0, "{claims} claims in ~4 s\n{}", g.logs());
    g.stop_all();
}
