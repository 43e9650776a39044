//! A second factor after the app's own password login: the app says a login needs a
//! code, the gate remembers where that code goes, sends it on request, and checks it
//! before the login is retried. The baanx dialect speaks this over HTTP.

use std::net::IpAddr;

use super::GateError;
use super::audit::{self, FailReason};
use super::guard::ChallengeCheck;
use super::{Gate, SendRequest, VerifyRequest};
use crate::identifier::Identifier;
use crate::store::{SetMode, keys};
use crate::token::{MintedToken, Subject};

/// A login waiting for its second factor.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PendingSecondFactor {
    /// The app's id of the user.
    pub user_id: String,
    /// The phone (E.164) the code goes to.
    pub phone: String,
}

impl Gate {
    /// Remembers that `login` (the app's user `user_id`) must pass a code before the app
    /// sees it again. The code goes to `phone` when it is a full number (apps often mask
    /// it for display), else to the directory's phone for the user. The wait lasts twice
    /// the code's lifetime.
    pub async fn await_second_factor(
        &self,
        login: &str,
        user_id: &str,
        phone: Option<&str>,
    ) -> Result<(), GateError> {
        let tenant = self.default_tenant();
        let from_app = phone
            .and_then(|p| Identifier::phone(p).ok())
            .map(|p| p.as_str().to_owned());
        let phone = match from_app {
            Some(phone) => phone,
            None => self
                .directory()
                .find_by_id(tenant, user_id)
                .await
                .map_err(GateError::DirectoryUnavailable)?
                .and_then(|account| account.phone)
                .ok_or_else(|| {
                    GateError::InvalidRequest(format!(
                        "no phone number is known for user {user_id}"
                    ))
                })?,
        };
        let ttl = self.policy().ttl * 2;
        let store = self.store();
        store
            .set_value(
                &keys::second_factor_user(tenant, user_id),
                &phone,
                ttl,
                SetMode::Always,
            )
            .await
            .map_err(GateError::StoreUnavailable)?;
        store
            .set_value(
                &keys::second_factor_login(tenant, login),
                user_id,
                ttl,
                SetMode::Always,
            )
            .await
            .map_err(GateError::StoreUnavailable)?;
        Ok(())
    }

    /// Sends (or resends, within the cooldown) the code of `user_id`'s pending second
    /// factor.
    pub async fn send_second_factor(
        &self,
        user_id: &str,
        client_ip: Option<IpAddr>,
        locale: Option<&str>,
    ) -> Result<(), GateError> {
        let tenant = self.default_tenant();
        let phone = self
            .store()
            .get_value(&keys::second_factor_user(tenant, user_id))
            .await
            .map_err(GateError::StoreUnavailable)?
            .ok_or_else(|| {
                GateError::InvalidRequest(
                    "no login is waiting for a second factor for this user".into(),
                )
            })?;
        let request = SendRequest {
            tenant: Some(tenant),
            identifier: Identifier::phone(&phone)?,
            client_ip,
            locale,
        };
        // The phone is the account's own, from the directory: no challenge.
        self.send_code(request, None, ChallengeCheck::Exempt)
            .await?;
        Ok(())
    }

    /// The pending second factor of `login`, if one is waiting.
    pub async fn pending_second_factor(
        &self,
        login: &str,
    ) -> Result<Option<PendingSecondFactor>, GateError> {
        let tenant = self.default_tenant();
        let store = self.store();
        let Some(user_id) = store
            .get_value(&keys::second_factor_login(tenant, login))
            .await
            .map_err(GateError::StoreUnavailable)?
        else {
            return Ok(None);
        };
        let phone = store
            .get_value(&keys::second_factor_user(tenant, &user_id))
            .await
            .map_err(GateError::StoreUnavailable)?;
        Ok(phone.map(|phone| PendingSecondFactor { user_id, phone }))
    }

    /// Checks `code` against `login`'s pending second factor and, when it is right,
    /// returns a 60-second assertion for the app that the user passed it. No pending
    /// second factor reads as a wrong code.
    pub async fn verify_second_factor(
        &self,
        login: &str,
        code: &str,
        client_ip: Option<IpAddr>,
    ) -> Result<MintedToken, GateError> {
        let tenant = self.default_tenant();
        let Some(pending) = self.pending_second_factor(login).await? else {
            audit::code_failed(tenant, None, FailReason::NoPendingLogin, client_ip);
            return Err(GateError::InvalidCode);
        };
        self.verify(VerifyRequest {
            tenant: Some(tenant),
            identifier: Identifier::phone(&pending.phone)?,
            code,
            client_ip,
        })
        .await?;
        self.mint_assertion(&Subject {
            id: pending.user_id,
            email: None,
            phone: Some(pending.phone),
            tenant: tenant.to_owned(),
        })
    }
}
