//! `airlock-server collector`: the audit collector alone, beside an approval server whose CA
//! and database it shares. Guarded: a host enrolled at the approval server ships its audit
//! batches to the collector, which stores them where the approval server's queries see
//! them; everything else (requests, outcomes, approvals, enrolment) is refused there as not
//! served, and no settings or decisions come down its link.
use std::time::Duration;

use airlock_proto::v1 as pb;
use airlock_server::cli::serve::Services;
use airlock_server::store::AuditFilter;
use airlock_server::testing::audit::{HostChain, batch};
use airlock_server::testing::{self, FakeHost, Options, TestServer};
use tonic::Code;

const T: Duration = Duration::from_secs(5);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_collector_stores_audit_batches_and_serves_nothing_else() {
    let approvals = TestServer::start().await.unwrap();
    let collector = TestServer::with(Options {
        database: Some(approvals.database.clone()),
        pki_dir: Some(approvals.pki_dir().to_path_buf()),
        services: Services::Collector,
        ..Options::default()
    })
    .await
    .unwrap();
    let mut chain = HostChain::new("web-1");
    let id = approvals.enroll("web-1").await.unwrap();
    let mut host = FakeHost::connect_raw(&collector.url, &collector.ca_pem, &id)
        .await
        .unwrap();
    host.send(pb::HostMessage {
        body: Some(pb::host_message::Body::Hello(pb::Hello {
            version: "test".into(),
            pending: Vec::new(),
            audit_key: chain.verifier_key(),
        })),
    })
    .unwrap();
    let records = chain.records(5);
    let ack = host
        .audit(batch(&records, &[chain.checkpoint()]), T)
        .await
        .unwrap();
    assert_eq!((ack.up_to_seq, ack.refused.as_str()), (5, ""));
    assert!(host.settings.is_none(), "a collector sends no settings");
    // Stored where the approval server reads.
    let stored = approvals
        .store
        .audit_records(&AuditFilter {
            host: Some("web-1".into()),
            limit: 100,
            ..Default::default()
        })
        .await
        .unwrap();
    assert_eq!(
        stored.iter().map(|r| r.seq).collect::<Vec<_>>(),
        [1, 2, 3, 4, 5]
    );

    // A request sent to the collector is refused as not served; the link stays up.
    host.opened(testing::request("web-1", &testing::new_id()))
        .unwrap();
    let r = host.rejected(T).await.unwrap();
    assert_eq!(r.code, Code::Unimplemented as i32, "{r:?}");
    assert!(r.message.contains("audit collector only"), "{}", r.message);
    let more = chain.records(1);
    let ack = host.audit(batch(&more, &[]), T).await.unwrap();
    assert_eq!((ack.up_to_seq, ack.refused.as_str()), (6, ""));

    // The approver's API: audit queries only.
    let token = approvals.issue_token("alice").await.unwrap();
    let mut c = collector.approver(&token).await.unwrap();
    let e = c
        .list_pending(pb::ListPendingRequest::default())
        .await
        .unwrap_err();
    assert_eq!(e.code(), Code::Unimplemented, "{e:?}");
    let mut q = c
        .audit_query(pb::AuditQueryRequest {
            host: "web-1".into(),
            limit: 100,
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    let mut n = 0;
    while let Some(e) = q.message().await.unwrap() {
        n += 1;
        assert_eq!(e.seq, n);
    }
    assert_eq!(n, 6);

    // No enrolment at the collector: it signs no certificates.
    let ch = testing::channel(&collector.url, &collector.ca_pem, None)
        .await
        .unwrap();
    let e = airlock_proto::EnrollmentClient::new(ch)
        .enroll(pb::EnrollRequest {
            token: "any".into(),
            csr_der: vec![1, 2, 3],
        })
        .await
        .unwrap_err();
    assert_eq!(e.code(), Code::Unimplemented, "{e:?}");
}
