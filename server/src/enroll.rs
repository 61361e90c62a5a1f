//! `airlock.v1.Enrollment`: a host trades a one-time token for a certificate.
//!
//! The token (`airlock-server hosts enroll NAME` printed it, see [`crate::pki`]) names the host;
//! the CSR only proves the host holds its key — the subject and names it asks for are ignored.
//!
//! Order of the steps, and why:
//! 1. size limits and token syntax (cheap, before any lookup);
//! 2. look the token up without spending it, to learn the host name;
//! 3. sign the CSR for that name — a malformed CSR fails here, so it does not burn the token
//!    and the operator does not have to make a new one for a host that sent garbage;
//! 4. redeem the token with the new certificate's fingerprint: one atomic store update, so of
//!    two concurrent calls with the same token exactly one gets a certificate the server will
//!    recognise (the other's certificate is signed but never recorded, hence useless).
//!
//! Every call is recorded with `store.record_attempt` (channel "enroll", action "enroll").
use std::sync::Arc;

use airlock_proto::v1 as pb;
use tonic::{Code, Request, Response, Status};

use crate::error::{Fault, code_name};
use crate::pki::{Ca, EnrollmentToken, PkiError};
use crate::store::{Attempt, Store};

/// Longest token accepted (a real one is 138 bytes).
pub const MAX_TOKEN_BYTES: usize = 256;
/// Largest CSR accepted (a P-256 CSR is about 300 bytes).
pub const MAX_CSR_BYTES: usize = 16 * 1024;

const CHANNEL: &str = "enroll";
const ACTION: &str = "enroll";

/// The Enrollment service: the store (tokens, hosts, attempts) and the CA that signs.
pub struct EnrollService {
    /// Where tokens are redeemed and attempts recorded.
    pub store: Store,
    /// Signs host certificates.
    pub ca: Arc<Ca>,
}

#[tonic::async_trait]
impl airlock_proto::Enrollment for EnrollService {
    async fn enroll(
        &self,
        req: Request<pb::EnrollRequest>,
    ) -> Result<Response<pb::EnrollResponse>, Status> {
        let now = crate::broker::now_ms();
        let req = req.into_inner();
        // `who` starts as "unknown" and becomes the host once the token names one.
        let mut who = String::from("unknown");
        match self.enroll_checked(&req, now, &mut who).await {
            Ok(resp) => {
                tracing::info!(host = resp.host, "host enrolled");
                self.record(
                    &who,
                    now,
                    Code::Ok,
                    &format!("certificate issued for {}", resp.host),
                )
                .await;
                Ok(Response::new(resp))
            }
            Err(f) => {
                let status = Status::from(f);
                tracing::warn!(
                    who,
                    code = code_name(status.code()),
                    message = status.message(),
                    "enrolment refused"
                );
                self.record(&who, now, status.code(), status.message())
                    .await;
                Err(status)
            }
        }
    }
}

impl EnrollService {
    async fn enroll_checked(
        &self,
        req: &pb::EnrollRequest,
        now: u64,
        who: &mut String,
    ) -> Result<pb::EnrollResponse, Fault> {
        if req.token.len() > MAX_TOKEN_BYTES {
            return Err(Fault::invalid(
                "token",
                format!("longer than {MAX_TOKEN_BYTES} bytes"),
            ));
        }
        if req.csr_der.len() > MAX_CSR_BYTES {
            return Err(Fault::invalid(
                "csr_der",
                format!("larger than {MAX_CSR_BYTES} bytes"),
            ));
        }
        if req.csr_der.is_empty() {
            return Err(Fault::invalid(
                "csr_der",
                "empty: expected a DER PKCS#10 certificate signing request",
            ));
        }
        let token = EnrollmentToken::parse(&req.token).ok_or_else(|| {
            Fault::Unauthenticated(
                "enrolment token is malformed: expected airlock1.SECRET.CA_SHA256 as printed by `airlock-server hosts enroll`".into(),
            )
        })?;
        if token.ca_sha256_hex != self.ca.sha256_hex() {
            // The host's TLS check already failed if this were a real mismatch; a caller that
            // got here skipped it. Same answer as an unknown token.
            return Err(Fault::Unauthenticated(
                "enrolment token was made for another airlock-server CA".into(),
            ));
        }
        let hash = token.secret_hash();
        let host = self.store.enrollment_host(&hash, now).await?;
        *who = format!("host:{host}");
        let issued = self
            .ca
            .sign_host(&req.csr_der, &host, now)
            .map_err(|e| match e {
                PkiError::InvalidCsr(why) => Fault::invalid("csr_der", why),
                other => Fault::Internal(format!("signing the certificate for {host}: {other}")),
            })?;
        let row = self
            .store
            .redeem_enrollment(&hash, &issued.sha256_hex, now)
            .await?;
        Ok(pb::EnrollResponse {
            host: row.name,
            certificate_der: issued.cert_der,
            ca_der: self.ca.cert_der().to_vec(),
        })
    }

    async fn record(&self, who: &str, now: u64, code: Code, message: &str) {
        let a = Attempt {
            at_unix_ms: now,
            who: who.to_string(),
            channel: CHANNEL.into(),
            request_id: None,
            action: ACTION.into(),
            result: code_name(code).into(),
            message: message.to_string(),
        };
        if let Err(e) = self.store.record_attempt(&a).await {
            tracing::error!(error = %e, who, "cannot record an enrolment attempt");
        }
    }
}
