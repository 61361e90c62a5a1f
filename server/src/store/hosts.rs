//! Hosts and their one-time enrolment tokens.
use std::collections::BTreeMap;

use sqlx::Row;
use sqlx::any::AnyRow;

use super::{HostRow, Store, StoreError, from_json, ms, opt_ms_out, to_json};

/// The columns [`host_from_row`] reads.
const HOST_COLS: &str = "name, labels, cert_sha256, enrolled_ms, revoked_ms, last_seen_ms";

fn host_from_row(row: &AnyRow) -> Result<HostRow, StoreError> {
    let name: String = row.try_get("name")?;
    let labels: String = row.try_get("labels")?;
    Ok(HostRow {
        labels: from_json("labels", &name, &labels)?,
        cert_sha256: row.try_get("cert_sha256")?,
        enrolled_unix_ms: opt_ms_out(row.try_get("enrolled_ms")?),
        revoked_unix_ms: opt_ms_out(row.try_get("revoked_ms")?),
        last_seen_unix_ms: opt_ms_out(row.try_get("last_seen_ms")?),
        name,
    })
}

impl Store {
    /// Creates the host row if new (not enrolled yet) with these labels, or updates its
    /// labels; stores a one-time enrolment token hash (replacing any unused one for that
    /// host). Enrolling a revoked host's name again is allowed (a fresh enrolment; the old
    /// certificate stays refused because its fingerprint is replaced when the token is
    /// redeemed, and until then the host stays revoked).
    ///
    /// The token is valid while `now < expires_unix_ms`.
    pub async fn add_enrollment(
        &self,
        name: &str,
        labels: &BTreeMap<String, String>,
        token_sha256: &str,
        expires_unix_ms: u64,
        now: u64,
    ) -> Result<(), StoreError> {
        let _turn = self.write_turn().await;
        let mut tx = self.pool.begin().await?;
        sqlx::query(
            "INSERT INTO hosts (name, labels, created_ms) VALUES ($1, $2, $3) \
             ON CONFLICT (name) DO UPDATE SET labels = excluded.labels",
        )
        .bind(name)
        .bind(to_json(labels))
        .bind(ms(now))
        .execute(&mut *tx)
        .await?;
        // One live token per host: issuing a new one retires a leaked or lost earlier one.
        sqlx::query("DELETE FROM enrollments WHERE host = $1 AND used_ms IS NULL")
            .bind(name)
            .execute(&mut *tx)
            .await?;
        sqlx::query("INSERT INTO enrollments (token_sha256, host, created_ms, expires_ms) VALUES ($1, $2, $3, $4)")
            .bind(token_sha256)
            .bind(name)
            .bind(ms(now))
            .bind(ms(expires_unix_ms))
            .execute(&mut *tx)
            .await?;
        tx.commit().await?;
        Ok(())
    }

    /// The host an unused, unexpired enrolment token was made for, without spending it (the
    /// enrolment service signs the certificate first, so a bad CSR does not burn the token;
    /// [`Store::redeem_enrollment`] alone spends it). [`StoreError::BadEnrollment`] otherwise.
    pub async fn enrollment_host(
        &self,
        token_sha256: &str,
        now: u64,
    ) -> Result<String, StoreError> {
        let host: Option<String> = sqlx::query_scalar(
            "SELECT host FROM enrollments WHERE token_sha256 = $1 AND used_ms IS NULL AND expires_ms > $2",
        )
        .bind(token_sha256)
        .bind(i64::try_from(now).unwrap_or(i64::MAX))
        .fetch_optional(&self.pool)
        .await?;
        host.ok_or(StoreError::BadEnrollment)
    }

    /// One transaction: token unknown/used/expired → BadEnrollment (which of them is not
    /// told); else marks it used, sets the host's `cert_sha256` and enrolled time, clears
    /// `revoked`; returns the host.
    pub async fn redeem_enrollment(
        &self,
        token_sha256: &str,
        cert_sha256: &str,
        now: u64,
    ) -> Result<HostRow, StoreError> {
        let _turn = self.write_turn().await;
        let mut tx = self.pool.begin().await?;
        // The conditional UPDATE is the check: two concurrent redeems of one token cannot
        // both match `used_ms IS NULL`.
        let host: Option<String> = sqlx::query_scalar(
            "UPDATE enrollments SET used_ms = $2 \
             WHERE token_sha256 = $1 AND used_ms IS NULL AND expires_ms > $2 RETURNING host",
        )
        .bind(token_sha256)
        .bind(ms(now))
        .fetch_optional(&mut *tx)
        .await?;
        let Some(host) = host else {
            return Err(StoreError::BadEnrollment);
        };
        let row = sqlx::query(&format!(
            "UPDATE hosts SET cert_sha256 = $2, enrolled_ms = $3, revoked_ms = NULL WHERE name = $1 RETURNING {HOST_COLS}"
        ))
        .bind(&host)
        .bind(cert_sha256)
        .bind(ms(now))
        .fetch_one(&mut *tx)
        .await?;
        let host = host_from_row(&row)?;
        tx.commit().await?;
        Ok(host)
    }

    /// The host holding the certificate with this fingerprint (revoked or not: the caller
    /// decides, and can say why it refuses).
    pub async fn host_by_cert(&self, cert_sha256: &str) -> Result<Option<HostRow>, StoreError> {
        let row = sqlx::query(&format!(
            "SELECT {HOST_COLS} FROM hosts WHERE cert_sha256 = $1"
        ))
        .bind(cert_sha256)
        .fetch_optional(&self.pool)
        .await?;
        row.as_ref().map(host_from_row).transpose()
    }

    /// One host by name.
    pub async fn host(&self, name: &str) -> Result<Option<HostRow>, StoreError> {
        let row = sqlx::query(&format!("SELECT {HOST_COLS} FROM hosts WHERE name = $1"))
            .bind(name)
            .fetch_optional(&self.pool)
            .await?;
        row.as_ref().map(host_from_row).transpose()
    }

    /// Every host, by name.
    pub async fn hosts(&self) -> Result<Vec<HostRow>, StoreError> {
        let rows = sqlx::query(&format!("SELECT {HOST_COLS} FROM hosts ORDER BY name"))
            .fetch_all(&self.pool)
            .await?;
        rows.iter().map(host_from_row).collect()
    }

    /// Revokes a host: its certificate is refused from now on, and its unused enrolment token
    /// (if any) is deleted, so a leaked token cannot bring it back; enrolling it again needs a
    /// new [`Store::add_enrollment`]. Revoking again keeps the first time. Unknown host →
    /// [`StoreError::NoSuch`].
    pub async fn revoke_host(&self, name: &str, now: u64) -> Result<(), StoreError> {
        let _turn = self.write_turn().await;
        let mut tx = self.pool.begin().await?;
        let done =
            sqlx::query("UPDATE hosts SET revoked_ms = COALESCE(revoked_ms, $2) WHERE name = $1")
                .bind(name)
                .bind(ms(now))
                .execute(&mut *tx)
                .await?;
        if done.rows_affected() == 0 {
            return Err(StoreError::NoSuch {
                what: "host",
                name: name.to_string(),
            });
        }
        sqlx::query("DELETE FROM enrollments WHERE host = $1 AND used_ms IS NULL")
            .bind(name)
            .execute(&mut *tx)
            .await?;
        tx.commit().await?;
        Ok(())
    }

    /// Records that the host was seen (its link connected). Unknown host →
    /// [`StoreError::NoSuch`].
    pub async fn touch_host(&self, name: &str, now: u64) -> Result<(), StoreError> {
        let _turn = self.write_turn().await;
        let done = sqlx::query("UPDATE hosts SET last_seen_ms = $2 WHERE name = $1")
            .bind(name)
            .bind(ms(now))
            .execute(&self.pool)
            .await?;
        if done.rows_affected() == 0 {
            return Err(StoreError::NoSuch {
                what: "host",
                name: name.to_string(),
            });
        }
        Ok(())
    }
}
